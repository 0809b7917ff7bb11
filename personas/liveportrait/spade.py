"""G, LivePortrait's SPADE decoder: W's 2D feature map (full size 256 x 64 x 64) -> the RGB
crop (3 x 512 x 512 in 0..1). The feature map is both the decoder's input and the SPADE
conditioning map of every residual block.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SPADEResBlock, SpectralNormConv2d
from .config import SpadeConfig

NUM_MIDDLE_BLOCKS = 6


class SPADEDecoder(nn.Module):
    """conv 3x3 to twice the width, six SPADE residual blocks, two (nearest 2x up, SPADE block)
    stages, LeakyReLU(0.2), conv to RGB (x4 channels and a pixel shuffle when upscale > 1),
    sigmoid."""

    def __init__(self, cfg: SpadeConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.input_channels
        self.fc = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1)
        for i in range(NUM_MIDDLE_BLOCKS):
            self.add_module(f"G_middle_{i}", SPADEResBlock(2 * width, 2 * width, width))
        self.up_0 = SPADEResBlock(2 * width, width, width)
        self.up_1 = SPADEResBlock(width, cfg.out_channels, width)
        if cfg.upscale is None or cfg.upscale <= 1:
            self.conv_img = nn.Conv2d(cfg.out_channels, 3, kernel_size=3, padding=1)
        else:
            # The official decoder always shuffles by 2 when upscaling at all.
            self.conv_img = nn.Sequential(
                nn.Conv2d(cfg.out_channels, 3 * 4, kernel_size=3, padding=1),
                nn.PixelShuffle(2))

    def logits(self, feature: torch.Tensor) -> torch.Tensor:
        """The pre-sigmoid image, (B, 3, H', W')."""
        seg = feature
        x = self.fc(feature)
        for i in range(NUM_MIDDLE_BLOCKS):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2), seg)
        return self.conv_img(F.leaky_relu(x, 0.2))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """feature (B, C, 64, 64) from W -> RGB (B, 3, 512, 512) in 0..1 (full size)."""
        return torch.sigmoid(self.logits(feature))

    def fold_spectral_norm(self) -> None:
        """Cache every spectrally normalised weight (inference after loading)."""
        for module in self.modules():
            if isinstance(module, SpectralNormConv2d):
                module.fold()
