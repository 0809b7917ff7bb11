"""LatentSync's fixed mouth mask at image and latent size, and the per-frame masking around it.

The mask is the official `mask.png` (assets/, 256×256, 1 = keep, 0 = regenerate). The pipeline
resizes the RGB image with `cv2.resize(INTER_LANCZOS4)` on uint8 and divides by 255 (binary at
256, 136 grey levels at 512), and shrinks it to latent size with nearest sampling (pixel 8i).
Frames entering the UNet are (face / 255 − 0.5) / 0.5 and the masked image is that times the mask;
after decoding, `composite_in_crop` puts the original pixels back wherever the mask keeps them.
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import torch

from lipsync.latentsync.align import match_color

MASK_PATH = Path(__file__).parent / "assets" / "latentsync_mask.png"
LATENT_DOWNSCALE = 8  # VAE: latent = image / 8


def _check_resolution(resolution: int) -> None:
    if resolution <= 0 or resolution % LATENT_DOWNSCALE:
        raise ValueError(f"resolution must be a positive multiple of {LATENT_DOWNSCALE}, got {resolution}")


@functools.lru_cache(maxsize=4)
def _mask_u8(resolution: int) -> np.ndarray:
    bgr = cv2.imread(str(MASK_PATH), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"mouth mask not found or unreadable: {MASK_PATH}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    # Resize the 3-channel image, as the official loader does, then keep channel 0 (all equal).
    resized = cv2.resize(rgb, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    out = np.ascontiguousarray(resized[:, :, 0])
    out.setflags(write=False)
    return out


def load_mask_u8(resolution: int) -> np.ndarray:
    """(R, R) uint8 official mask resized to `resolution` (255 = keep, 0 = regenerate)."""
    _check_resolution(resolution)
    return _mask_u8(resolution).copy()


def load_mask(resolution: int) -> np.ndarray:
    """(R, R) float32 mask in [0, 1] (1 = keep the original pixel, 0 = generated mouth)."""
    return load_mask_u8(resolution).astype(np.float32) / np.float32(255.0)


def latent_mask(resolution: int) -> np.ndarray:
    """(R/8, R/8) float32 mask as concatenated into the UNet input (nearest: source pixel 8i)."""
    return np.ascontiguousarray(load_mask(resolution)[::LATENT_DOWNSCALE, ::LATENT_DOWNSCALE])


def mask_faces(faces: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Aligned uint8 faces → (pixels, masked pixels, mask) as the VAE and UNet take them.

    Args:
        faces: (F, R, R, 3) or (F, 3, R, R) uint8 aligned faces.
        mask: (R, R) float mask from `load_mask` (same R).
    Returns:
        pixels (F, 3, R, R) float32 in [-1, 1]; masked = pixels × mask (all channels);
        mask (F, 1, R, R) float32 (1 = keep). All on the faces' device.
    """
    faces_t = torch.as_tensor(faces)
    if faces_t.ndim != 4:
        raise ValueError(f"expected a batch of faces (F, R, R, 3), got {tuple(faces_t.shape)}")
    if faces_t.shape[-1] == 3 and faces_t.shape[1] != 3:
        faces_t = faces_t.permute(0, 3, 1, 2)
    mask_t = torch.as_tensor(mask, dtype=torch.float32, device=faces_t.device)
    if mask_t.shape != faces_t.shape[-2:]:
        raise ValueError(f"mask {tuple(mask_t.shape)} does not match faces {tuple(faces_t.shape[-2:])}")
    pixels = (faces_t.float() / 255.0 - 0.5) / 0.5
    masked = pixels * mask_t
    return pixels, masked, mask_t.expand(faces_t.shape[0], 1, *mask_t.shape).contiguous()


def mask_edge_band(mask: np.ndarray, width_px: int) -> np.ndarray:
    """(R, R) bool: pixels within `width_px` of the keep/regenerate boundary (both sides)."""
    if width_px < 1:
        raise ValueError(f"band width must be at least 1 pixel, got {width_px}")
    keep = (np.asarray(mask) >= 0.5).astype(np.uint8)
    kernel = np.ones((2 * width_px + 1, 2 * width_px + 1), np.uint8)
    near_keep = cv2.dilate(keep, kernel, borderType=cv2.BORDER_REPLICATE) > 0
    near_gen = cv2.dilate(1 - keep, kernel, borderType=cv2.BORDER_REPLICATE) > 0
    return near_keep & near_gen


def composite_in_crop(decoded: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor,
                      color_band_px: int = 0) -> torch.Tensor:
    """Official in-crop paste-back: decoded · (1 − mask) + pixels · mask, all (F, C, R, R).

    `color_band_px` > 0 first shifts the decoded colours (per frame and channel mean/std, gain
    limited) to match the original pixels inside a band of that width around the mask edge, so
    that a colour drift of the VAE/UNet does not show as a seam. 0 is the official behaviour.
    """
    mask = mask.to(decoded.dtype)
    if color_band_px > 0:
        m2d = mask.reshape(-1, *mask.shape[-2:])[0].detach().float().cpu().numpy()
        band = torch.from_numpy(mask_edge_band(m2d, color_band_px)).to(decoded.device)
        decoded = match_color(decoded, pixels.to(decoded.dtype), band)
    return decoded * (1.0 - mask) + pixels.to(decoded.dtype) * mask
