"""The parity fixtures' weight rule: every state-dict entry regenerated from its key alone.

The official goldens (tests/fixtures/liveportrait/parity.json) store no weights; each tensor was
made by the rule quoted in the json's `weights_rule`, keyed by a module prefix plus the module's
own state-dict key. Test-only: product code never depends on this file.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import torch

# The key fed to the rule is one of these prefixes + the network's own state-dict key.
PREFIXES = {
    "F": "appearance_feature_extractor.",
    "M": "motion_extractor.",
    "W": "warping_module.",
    "G": "spade_generator.",
}
# S's three MLPs, by their key in the official checkpoint dict.
S_PREFIX = "stitching_retargeting_module.{}."


def make_weight(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """One state-dict entry by the rule (float32 on CPU; int64 zero for BN step counters)."""
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.int64)
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    r = torch.randn(shape, generator=gen)
    if name == "running_mean":
        return 0.05 * r
    if name == "running_var":
        return 1 + 0.2 * r.abs()
    if name in ("weight_u", "weight_v"):
        return r / r.norm()
    if name in ("gamma", "beta"):
        return 0.1 * r
    if name == "bias":
        return 0.02 * r
    if name == "weight" and r.dim() == 1:
        return 1 + 0.1 * r
    if name in ("weight", "weight_orig") and r.dim() >= 2:
        fan_in = r.numel() / shape[0]
        return r / math.sqrt(fan_in)
    raise ValueError(f"the weight rule does not cover {key!r} of shape {tuple(shape)}")


def fill_state_dict(prefix: str, template: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with `template`'s keys and shapes (meta tensors are fine), filled by the rule."""
    return {k: make_weight(prefix + k, tuple(v.shape)) for k, v in template.items()}


def official_state_dicts(models) -> dict[str, object]:
    """The five official checkpoint payloads for `models` (a LivePortraitModels, any device),
    keyed like checkpoint.write_official_checkpoints expects: F, M, W, G as flat state dicts,
    S as {retarget_shoulder, retarget_mouth, retarget_eye}."""
    from personas.liveportrait.checkpoint import S_CHECKPOINT_KEYS

    out: dict[str, object] = {
        tag: fill_state_dict(PREFIXES[tag], getattr(models, tag).state_dict())
        for tag in ("F", "M", "W", "G")
    }
    out["S"] = {
        official: fill_state_dict(S_PREFIX.format(official), getattr(models.S, ours).state_dict())
        for official, ours in S_CHECKPOINT_KEYS.items()
    }
    return out
