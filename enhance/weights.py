"""Load official checkpoints (.pth / .safetensors) into our architectures, strictly.

GFPGAN releases store the generator under 'params_ema'; Real-ESRGAN releases under 'params_ema'
(x4plus, x2plus) or 'params' (realesr-general-x4v3, animevideov3). Mismatches are reported by
name (missing, unexpected, wrong shape) instead of torch's wall of text.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

CHECKPOINT_KEYS = ("params_ema", "params")  # preferred first: EMA weights are the released ones
MAX_LISTED = 8  # names shown per category in an error


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return the generator's flat state dict (CPU tensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    # weights_only: a checkpoint is data, never code to run.
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path.name}: expected a dict checkpoint, got {type(ckpt).__name__}")
    for key in CHECKPOINT_KEYS:
        if key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key]
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    raise ValueError(f"{path.name}: none of {CHECKPOINT_KEYS} in checkpoint (top-level keys: {sorted(ckpt)[:10]})")


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" ... (+{len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def state_dict_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """Describe how `state` differs from `model`'s state dict, or None when keys and shapes agree."""
    # listed in the network's (and the file's) own order: the first names say where it breaks
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {shape}" for k, shape in expected.items()
             if k in state and tuple(state[k].shape) != shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_listed(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {_listed(wrong)}")
    return "; ".join(problems) or None


def load_weights(model: nn.Module, source: str | os.PathLike | dict[str, torch.Tensor], what: str = "") -> nn.Module:
    """Load a checkpoint file (or state dict) into `model` strictly; returns the model in eval mode."""
    state = source if isinstance(source, dict) else read_state_dict(source)
    label = what or (Path(source).name if not isinstance(source, dict) else type(model).__name__)
    problem = state_dict_mismatch(model, state)
    if problem:
        raise ValueError(f"{label} does not fit {type(model).__name__}: {problem}")
    # A model built on the meta device (no random init) takes the loaded tensors as they are.
    assign = any(t.is_meta for t in model.state_dict().values())
    model.load_state_dict(state, strict=True, assign=assign)
    return model.eval()
