"""Derive the RayService schema the deploy tests validate against, from KubeRay's CRD.

    python scripts/derive_kuberay_schema.py path/to/ray.io_rayservices.v1.7.0.yaml

Writes tests/fixtures/kuberay/rayservice.v1.schema.json: the CRD's stored version (v1)
`openAPIV3Schema` without `status` (the operator writes it; a manifest never carries it), as
compact sorted JSON (a sixth of the CRD file). Nothing else is changed: the tests add
Kubernetes' own strictness (unknown fields rejected) when they load it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kuberay" / "rayservice.v1.schema.json"


def derive(crd: dict, source: str) -> dict:
    if crd.get("kind") != "CustomResourceDefinition" or crd["spec"]["names"]["kind"] != "RayService":
        raise ValueError("not the RayService CustomResourceDefinition")
    stored = [v for v in crd["spec"]["versions"] if v.get("storage")]
    if len(stored) != 1 or stored[0]["name"] != "v1":
        raise ValueError("expected exactly one stored version, v1")
    schema = dict(stored[0]["schema"]["openAPIV3Schema"])
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k != "status"}
    schema["$comment"] = (f"Derived from {source} (spec.versions[v1].schema.openAPIV3Schema, status "
                          "removed) by scripts/derive_kuberay_schema.py; KubeRay is Apache-2.0.")
    return schema


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("crd", type=Path, help="ray.io_rayservices.vX.Y.Z.yaml from ray-project/kuberay")
    p.add_argument("-o", "--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    crd = yaml.safe_load(args.crd.read_text())
    schema = derive(crd, f"ray-project/kuberay {args.crd.name}")
    args.out.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
