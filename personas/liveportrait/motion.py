"""M, LivePortrait's motion extractor: a ConvNeXt-V2 backbone on the 256x256 crop with seven
linear heads - canonical keypoints (3 x num_kp), expression offsets (3 x num_kp), pitch / yaw /
roll as 66-bin logits, translation (3) and scale (1).

The heads come back raw; `keypoints.refine_kp_info` turns them into degrees and (B, N, 3)
keypoints as the official wrapper does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MotionConfig

HEADS = ("kp", "scale", "pitch", "yaw", "roll", "t", "exp")


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (ConvNeXt's stem and downsamplers).
    Written out (biased variance, eps inside the root) exactly as the official layer."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2) on NHWC: scale each channel by its spatial
    L2 norm relative to the mean over channels."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv -> LayerNorm -> Linear x4 -> GELU -> GRN -> Linear, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # the MLP part runs channels-last
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    """ConvNeXt-V2 (stem 4x4/4, three 2x2/2 downsamplers, stages of blocks), global average
    pool, LayerNorm, then LivePortrait's heads in place of a classifier."""

    def __init__(self, cfg: MotionConfig):
        super().__init__()
        dims = cfg.dims
        if len(cfg.depths) != len(dims):
            raise ValueError("motion: depths and dims must have the same length")
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(cfg.in_chans, dims[0], kernel_size=4, stride=4),
            ChannelsFirstLayerNorm(dims[0]))])
        for i in range(len(dims) - 1):
            self.downsample_layers.append(nn.Sequential(
                ChannelsFirstLayerNorm(dims[i]),
                nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth)))
            for dim, depth in zip(dims, cfg.depths))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        width = dims[-1]
        self.fc_kp = nn.Linear(width, 3 * cfg.num_kp)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, cfg.num_bins)
        self.fc_yaw = nn.Linear(width, cfg.num_bins)
        self.fc_roll = nn.Linear(width, cfg.num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, 3 * cfg.num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        feat = self.norm(x.mean(dim=(-2, -1)))
        return {name: getattr(self, f"fc_{name}")(feat) for name in HEADS}


class MotionExtractor(nn.Module):
    """M. Holds the backbone as `detector` (the official checkpoint's key prefix)."""

    def __init__(self, cfg: MotionConfig):
        super().__init__()
        self.cfg = cfg
        self.detector = ConvNeXtV2(cfg)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image: (B, 3, 256, 256) RGB in 0..1 -> raw heads: kp, exp (B, 3N); pitch, yaw, roll
        (B, num_bins) logits; t (B, 3); scale (B, 1)."""
        return self.detector(image)
