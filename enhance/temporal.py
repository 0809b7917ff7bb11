"""Temporal stabilisation of face restoration (GFPGAN flicker between frames).

Why GFPGAN flickers: it hallucinates skin, hair and eye detail from the input, and tiny input
changes (sensor or codec noise, the lip-sync model's per-frame variation) pick different details
frame to frame, so a still head "boils". Two counter-measures:

1. Fixed noise: the decoder uses the noise maps stored with the weights (GFPGANv1Clean's
   `randomize_noise=False`), so equal inputs give equal outputs.
2. Motion-gated residual hold (this module): per pixel, the restore residual
   r_t = restored_t - input_t is only refreshed where the input has really changed since the
   residual was last taken; elsewhere the previous residual is kept, so the output moves exactly
   as much as the input does. "Really changed" is measured on a blurred signed difference (noise
   averages out, moving edges do not) against a per-pixel reference input that is updated with
   the same gate, so slow drift accumulates until it triggers a refresh instead of never doing so.
   Where the mouth moves (the lip-sync region) the gate opens fully and every frame is fresh.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class StabilizerOptions:
    """Thresholds are in 8-bit pixel levels of the blurred input change, at crop resolution."""

    motion_lo: float = 1.5  # below this the previous residual is held
    motion_hi: float = 6.0  # above this the residual is fully refreshed
    blur_sigma: float = 2.0  # crop px; also dilates the gate around moving features
    min_update: float = 0.0  # floor on the per-frame refresh (0 = hold indefinitely while still)


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) float32 with reflect borders."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel(sigma, x.device)
    c, r = x.shape[1], (k.numel() - 1) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class ResidualStabilizer:
    """Holds state across calls for ONE face track; call `reset()` at a cut or a new track."""

    def __init__(self, options: StabilizerOptions = StabilizerOptions()) -> None:
        if options.motion_hi <= options.motion_lo:
            raise ValueError("motion_hi must be greater than motion_lo")
        self.options = options
        self.reference: torch.Tensor | None = None  # input at which each pixel's residual was taken
        self.residual: torch.Tensor | None = None

    def reset(self) -> None:
        self.reference = None
        self.residual = None

    def gate(self, inputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Refresh weight in [min_update, 1] per pixel, (1, 1, H, W)."""
        opts = self.options
        change = gaussian_blur(inputs - reference, opts.blur_sigma).abs().mean(dim=1, keepdim=True)
        change = gaussian_blur(change, opts.blur_sigma)
        t = ((change - opts.motion_lo) / (opts.motion_hi - opts.motion_lo)).clamp(0, 1)
        return (t * t * (3 - 2 * t)).clamp(min=opts.min_update)  # smoothstep: no hard gate edges

    def __call__(self, inputs: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
        """Stabilise consecutive frames: inputs and residuals (N, 3, H, W) float32 in 0..255 units."""
        out = torch.empty_like(residuals)
        for i in range(inputs.shape[0]):
            x, r = inputs[i:i + 1], residuals[i:i + 1]
            if self.reference is None or self.reference.shape != x.shape:
                self.reference, self.residual = x.clone(), r.clone()
            else:
                a = self.gate(x, self.reference)
                self.residual = self.residual + a * (r - self.residual)
                self.reference = self.reference + a * (x - self.reference)
            out[i:i + 1] = self.residual
        return out
