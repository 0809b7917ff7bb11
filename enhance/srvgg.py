"""SRVGGNetCompact: the small Real-ESRGAN generator (realesr-general-x4v3, realesr-animevideov3).

Same parameter names and shapes as the official `SRVGGNetCompact`: `body` is a flat list
alternating conv and activation (PReLU activations carry weights, so their indices matter for
the state dict), the last conv emits `3 * upscale**2` channels for a pixel shuffle, and the
network predicts a residual over the nearest-upsampled input. RGB in [0, 1] in and out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACT_TYPES = ("relu", "prelu", "leakyrelu")


def _activation(act_type: str, num_feat: int) -> nn.Module:
    if act_type == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if act_type == "relu":
        return nn.ReLU()
    return nn.LeakyReLU(negative_slope=0.1)


class SRVGGNetCompact(nn.Module):
    """conv-act, `num_conv` x (conv-act), conv to `out*upscale^2` channels, pixel shuffle, + nearest(x)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4, act_type: str = "prelu") -> None:
        super().__init__()
        if act_type not in ACT_TYPES:
            raise ValueError(f"act_type must be one of {ACT_TYPES}, got {act_type!r}")
        self.upscale = upscale
        self.scale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    @property
    def size_multiple(self) -> int:
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        # The body learns only the detail on top of a nearest upsample of the input.
        return F.pixel_shuffle(out, self.upscale) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")
