"""F, LivePortrait's appearance feature extractor: the 256x256 source crop -> a 3D feature
volume (full size 32 channels x 16 depth x 64 x 64) that W warps for every driving frame.

Run once per source portrait.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import DownBlock2d, ResBlock3d, SameBlock2d
from .config import AppearanceConfig


class AppearanceFeatureExtractor(nn.Module):
    """2D encoder (same block, down blocks, 1x1 conv to `max_features`), the channels viewed as
    (reshape_channel x reshape_depth), then 3D residual blocks."""

    def __init__(self, cfg: AppearanceConfig):
        super().__init__()
        self.cfg = cfg
        be, mx = cfg.block_expansion, cfg.max_features
        if cfg.reshape_channel * cfg.reshape_depth != mx:
            raise ValueError("appearance: reshape_channel x reshape_depth must equal max_features")
        self.first = SameBlock2d(cfg.image_channel, be)
        widths = [min(mx, be * 2 ** i) for i in range(cfg.num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1]) for i in range(cfg.num_down_blocks))
        self.second = nn.Conv2d(widths[-1], mx, kernel_size=1)
        # Official names: a Sequential whose children are '3dr0', '3dr1', ...
        self.resblocks_3d = nn.Sequential()
        for i in range(cfg.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(cfg.reshape_channel))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: (B, 3, H, W) RGB in 0..1 -> (B, reshape_channel, reshape_depth, H/4, W/4)."""
        out = self.first(image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        b, _, h, w = out.shape
        volume = out.view(b, self.cfg.reshape_channel, self.cfg.reshape_depth, h, w)
        return self.resblocks_3d(volume)
