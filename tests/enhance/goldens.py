"""Shared test data for enhance/: the official-code goldens (copied fixtures) and small images."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file

from enhance.gfpgan import GFPGANv1Clean
from enhance.rrdbnet import RRDBNet
from enhance.srvgg import SRVGGNetCompact

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "enhance"
PARITY = FIXTURES / "restore_upscale_tiny_parity.safetensors"
PARITY_CONFIG = FIXTURES / "restore_upscale_tiny_parity.json"
CLASSES = {"RRDBNet": RRDBNet, "SRVGGNetCompact": SRVGGNetCompact, "GFPGANv1Clean": GFPGANv1Clean}
UPSTREAM_ONLY_KWARGS = ("decoder_load_path", "fix_decoder")  # training-time options of the official class



def read_schema(name: str) -> dict[str, tuple[int, ...]]:
    """An official checkpoint's key -> shape table (fixtures/enhance/*_schema.tsv), in file order."""
    schema = {}
    for line in (FIXTURES / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype = line.split("\t")
        schema[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return schema


@lru_cache(maxsize=1)
def goldens() -> dict[str, torch.Tensor]:
    return load_file(str(PARITY))


def golden_config() -> dict:
    return {k: v for k, v in json.loads(PARITY_CONFIG.read_text()).items() if not k.startswith("_")}


def golden_model(name: str) -> torch.nn.Module:
    """Our class built with the golden's config, holding the golden's (official-code) weights."""
    cfg = golden_config()[name]
    kwargs = {k: v for k, v in cfg["kwargs"].items() if k not in UPSTREAM_ONLY_KWARGS}
    model = CLASSES[cfg["class"]](**kwargs)
    prefix = f"{name}.weights."
    model.load_state_dict({k[len(prefix):]: v for k, v in goldens().items() if k.startswith(prefix)}, strict=True)
    return model.eval()
