"""Shared readers for the deployment tests: the repo's deploy files, parsed, and the checks that
more than one test applies (secrets by reference, the RayService schema with Kubernetes'
strictness). Nothing here reads outside the repository."""
from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"
SCHEMA = ROOT / "tests" / "fixtures" / "kuberay" / "rayservice.v1.schema.json"
SECRET_ENV = ("R2_ENDPOINT", "R2_ACCESS_KEY", "R2_SECRET_KEY", "R2_BUCKET", "PF_API_KEY")
SECRET_ENV_PATTERN = re.compile(r"^(R2_.*|PF_API_KEY)$")


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def ray_pin() -> str:
    """The Ray version requirements.txt pins (ray[serve]==X.Y.Z)."""
    m = re.search(r"^ray\[serve\]==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert m, "requirements.txt must pin ray[serve]"
    return m.group(1)


def torch_pin() -> str:
    m = re.search(r"^torch==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert m, "requirements.txt must pin torch"
    return m.group(1)


def strict(schema: dict) -> dict:
    """The CRD schema as the API server applies it: an object schema that lists its properties
    accepts no others (unknown fields are pruned or, with strict field validation, rejected),
    unless it says x-kubernetes-preserve-unknown-fields. Plain JSON Schema would let a typo such
    as `rayStartParam` through."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@lru_cache(maxsize=1)
def rayservice_schema() -> dict:
    return strict(json.loads(SCHEMA.read_text()))


def rayservice_errors(manifest: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(rayservice_schema())
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(manifest))


def pod_template_schema() -> dict:
    """The CRD's embedded PodTemplateSpec (the head group's `template`): the Kubernetes pod schema,
    reused to check the download Job's pod, for which no CRD is at hand."""
    spec = rayservice_schema()["properties"]["spec"]["properties"]["rayClusterConfig"]
    return spec["properties"]["headGroupSpec"]["properties"]["template"]


def containers(pod_template: dict) -> list[dict]:
    spec = pod_template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def rayservice_pod_templates(manifest: dict) -> dict[str, dict]:
    cluster = manifest["spec"]["rayClusterConfig"]
    out = {"head": cluster["headGroupSpec"]["template"]}
    for group in cluster.get("workerGroupSpecs", []):
        out[group["groupName"]] = group["template"]
    return out


def secret_env_problems(container: dict) -> list[str]:
    """Each credential variable must come from a Secret by reference, never as a literal."""
    problems = []
    for var in container.get("env", []):
        if not SECRET_ENV_PATTERN.match(var["name"]):
            continue
        if "value" in var:
            problems.append(f"{container['name']}: {var['name']} has a literal value")
        elif "secretKeyRef" not in var.get("valueFrom", {}):
            problems.append(f"{container['name']}: {var['name']} is not from a secretKeyRef")
    return problems


def serve_config_differences(serve_config: dict, serve_config_v2: dict) -> list[str]:
    """Where a RayService's serveConfigV2 departs from serve_config.yaml: the applications must
    be equal as data (order of keys, quoting and comments do not matter), and any cluster-wide
    option both give must agree."""
    diffs = []
    if serve_config.get("applications") != serve_config_v2.get("applications"):
        mine = {a["name"]: a for a in serve_config.get("applications", [])}
        theirs = {a["name"]: a for a in serve_config_v2.get("applications", [])}
        for name in sorted(mine.keys() | theirs.keys()):
            if mine.get(name) != theirs.get(name):
                diffs.append(f"application {name!r} differs")
        diffs = diffs or ["applications differ in order"]
    for key in sorted((serve_config.keys() & serve_config_v2.keys()) - {"applications"}):
        if serve_config[key] != serve_config_v2[key]:
            diffs.append(f"{key} differs")
    return diffs
