"""The Stable Diffusion VAE as LatentSync uses it: faces in [-1, 1] <-> scaled latents (image / 8).

LatentSync loads `stabilityai/sd-vae-ft-mse` (diffusers AutoencoderKL) and fixes scaling 0.18215,
shift 0 (docs/latentsync.md §1). Encoding takes a *sample* of the latent distribution, not its mean, as
the official pipeline does; we draw it from a caller-given generator so runs are reproducible.

    vae = load_vae(models_dir / "sd-vae-ft-mse", "cuda", torch.bfloat16)   # once
    z = vae.encode(pixels, generator)                                      # many times
    faces = vae.decode(z)

`load_vae(None, ...)` and `tiny_vae()` build random weights: for benches and tests only, never a
real model. Nothing here touches the network: the folder must hold config.json and
diffusion_pytorch_model.safetensors.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

VAE_SCALING = 0.18215
VAE_SHIFT = 0.0
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"

# The published config.json of stabilityai/sd-vae-ft-mse (architecture keys only).
SD_VAE_FT_MSE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# Same block types and depth of down/up sampling (latent = image / 8), a few channels only.
TINY_VAE_CONFIG: dict[str, Any] = {
    **SD_VAE_FT_MSE_CONFIG,
    "block_out_channels": [16, 16, 32, 32],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
}


class LatentVAE:
    """AutoencoderKL plus LatentSync's latent scaling; batched encode/decode of (N, 3, R, R) faces."""

    def __init__(self, model: Any, scaling: float = VAE_SCALING, shift: float = VAE_SHIFT,
                 channels_last: bool = False):
        self.model = model.eval().requires_grad_(False)
        self.scaling = scaling
        self.shift = shift
        self.channels_last = channels_last
        self.fast = False  # True once vae_fast.enable_fast_vae switched it to the fused CUDA path
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=self.device, dtype=self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, 3, R, R) in [-1, 1] -> (N, 4, R/8, R/8) float32 scaled latents (a posterior sample)."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected faces (N, 3, R, R), got {tuple(pixels.shape)}")
        posterior = self.model.encode(self._input(pixels)).latent_dist
        return ((posterior.sample(generator=generator) - self.shift) * self.scaling).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, 4, h, w) scaled latents -> (N, 3, 8h, 8w) faces, about [-1, 1] (unclamped), float32."""
        if latents.ndim != 4:
            raise ValueError(f"expected latents (N, 4, h, w), got {tuple(latents.shape)}")
        z = self._input(latents / self.scaling + self.shift)
        return self.model.decode(z).sample.float()


def _autoencoder_class():
    # diffusers is imported lazily: the rest of the package (and the CPU fallback) does not need it.
    from diffusers import AutoencoderKL

    return AutoencoderKL


def build_vae(config: dict[str, Any] = SD_VAE_FT_MSE_CONFIG, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32, seed: int = 0, channels_last: bool = False) -> LatentVAE:
    """A randomly initialised (seeded) AutoencoderKL of `config`: timing and tests only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _autoencoder_class()(**config)
    return LatentVAE(_cast(model, device, dtype), channels_last=channels_last)


def _cast(model: Any, device: str | torch.device, dtype: torch.dtype) -> Any:
    # nn.Module.to, not diffusers' override: that one warns about fp32-only modules on every dtype
    # cast even when the model declares none (diffusers 0.42).
    return torch.nn.Module.to(model, device=device, dtype=dtype)


def tiny_vae(seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LatentVAE:
    """Tiny random VAE (same block types, 16-32 channels): CPU tests only."""
    return build_vae(TINY_VAE_CONFIG, device, dtype, seed)


def load_vae(folder: str | os.PathLike | None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, channels_last: bool = False) -> LatentVAE:
    """Load sd-vae-ft-mse from a local folder (config.json + diffusion_pytorch_model.safetensors).

    None builds the same architecture with random weights (benches only). Never downloads.
    """
    if folder is None:
        return build_vae(SD_VAE_FT_MSE_CONFIG, device, dtype, channels_last=channels_last)
    folder = Path(folder)
    missing = [name for name in ("config.json", WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"VAE folder {folder} lacks {', '.join(missing)}")
    model = _autoencoder_class().from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                                 torch_dtype=dtype)
    return LatentVAE(_cast(model, device, dtype), channels_last=channels_last)
