"""Load LatentSync UNet weights: official `latentsync_unet.pt`, a plain state dict, or safetensors.

The official file is a `torch.save` dict {"global_step": int, "state_dict": unet.state_dict()} whose keys
are exactly our model's (1246 entries incl. the motion modules' `pos_encoder.pe` buffers). Unlike the
official loader (strict=False after silently dropping mismatching conv_in/conv_out/attn2 tensors), we
check strictly and fail with a message naming the offending keys.

Loading is cheap on host memory: the model is built on the meta device, the file is memory-mapped
(torch zip format / safetensors) and its tensors are assigned in place, then cast/moved once.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from lipsync.latentsync.config import UNetConfig
from lipsync.latentsync.unet import LatentSyncUNet, build_unet

_SHOW = 5  # how many offending keys an error message lists per kind


class CheckpointMismatchError(ValueError):
    """The state dict does not have exactly the model's keys and shapes."""


def read_state_dict(
    path: str | os.PathLike, *, key_prefix: str | None = None, allow_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """Read the tensors of a UNet checkpoint on CPU (memory-mapped where the format allows).

    Args:
        path: `.pt`/`.pth`/`.bin` (official {"global_step", "state_dict"} dict or a bare state dict) or
            `.safetensors`.
        key_prefix: keep only keys starting with it and strip it (e.g. "unet." for a pipeline dump);
            otherwise a "module." prefix shared by every key (DDP) is stripped.
        allow_pickle: fall back to full unpickling when the file holds non-tensor objects. Only for
            trusted files: unpickling can run arbitrary code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"UNet checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: object = load_file(str(path), device="cpu")
    else:
        raw = _torch_load(path, allow_pickle)

    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]  # official training-script format
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a state dict or {{'state_dict': ...}}, found {type(raw).__name__}")
    state = {str(k): v for k, v in raw.items()}
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: {len(not_tensors)} entries are not tensors, e.g. {not_tensors[:_SHOW]}")

    if key_prefix is not None:
        state = {k[len(key_prefix):]: v for k, v in state.items() if k.startswith(key_prefix)}
        if not state:
            raise ValueError(f"{path}: no key starts with {key_prefix!r}")
    elif state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _torch_load(path: Path, allow_pickle: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        # Legacy (pre-zip) torch.save files cannot be memory-mapped.
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as inner:
            return _unpickle_or_raise(path, allow_pickle, inner)
    except pickle.UnpicklingError as err:
        return _unpickle_or_raise(path, allow_pickle, err)


def _unpickle_or_raise(path: Path, allow_pickle: bool, err: Exception) -> object:
    if not allow_pickle:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} holds objects other than tensors and plain containers, so it was not unpickled "
            f"(weights_only load failed: {first_line}). Re-save it as a plain state dict or safetensors, "
            f"or pass allow_pickle=True if you trust the file."
        ) from err
    return torch.load(path, map_location="cpu", weights_only=False)


def check_state_dict(expected: nn.Module | Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise CheckpointMismatchError unless `state_dict` has exactly the expected keys and shapes.

    dtypes are not compared: checkpoints may be stored in fp16/bf16 and are cast on load.
    """
    reference = expected.state_dict() if isinstance(expected, nn.Module) else expected
    missing = sorted(set(reference) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(reference))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(reference[k].shape)}"
        for k in set(reference) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(reference[k].shape)
    )
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
            problems.append(f"{len(items)} {label}: " + ", ".join(items[:_SHOW]) + more)
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint does not match the LatentSync UNet ({len(reference)} entries expected, "
            f"{len(state_dict)} given): " + "; ".join(problems)
        )


def load_unet(
    path: str | os.PathLike,
    config: UNetConfig,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    key_prefix: str | None = None,
    allow_pickle: bool = False,
) -> LatentSyncUNet:
    """Build the UNet for `config`, load `path` strictly, move to `device`/`dtype`, eval mode, no grads.

    Raises CheckpointMismatchError naming missing/unexpected keys and shape mismatches.
    """
    state = read_state_dict(path, key_prefix=key_prefix, allow_pickle=allow_pickle)
    model = build_unet(config, device="meta")
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
