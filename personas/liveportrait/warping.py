"""W, LivePortrait's warping module: from F's feature volume and the source / driving implicit
keypoints, a dense 3D deformation field and an occlusion map (the dense motion network), then
the warped volume flattened to a 2D feature map for G.

Keypoints live in the volume's normalised coordinates: x to the right, y down, z inwards, each
in -1..1 across (W, H, D) - grid_sample's convention with align_corners=False.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Hourglass, SameBlock2d
from .config import DenseMotionConfig, WarpingConfig

# The Gaussian width of a keypoint's heatmap, in normalised units squared.
KP_VARIANCE = 0.01


def coordinate_grid(d: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(D, H, W, 3) grid of (x, y, z), each axis spanning -1..1 inclusive."""
    def axis(n: int) -> torch.Tensor:
        return 2 * (torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1)) - 1

    z, y, x = torch.meshgrid(axis(d), axis(h), axis(w), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def keypoint_heatmaps(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) keypoints -> (B, N, D, H, W) unnormalised Gaussians on `grid`."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * diff.pow(2).sum(-1) / KP_VARIANCE)


class DenseMotionNetwork(nn.Module):
    """Predicts, for every voxel of the driving frame, where to sample the source volume: a
    softmax blend (over background + one candidate per keypoint) of per-keypoint translations,
    plus an occlusion map."""

    def __init__(self, cfg: DenseMotionConfig, num_kp: int, feature_channel: int,
                 estimate_occlusion_map: bool):
        super().__init__()
        self.num_kp = num_kp
        in_features = (num_kp + 1) * (cfg.compress + 1)  # per candidate: heatmap + features
        self.hourglass = Hourglass(cfg.block_expansion, in_features, cfg.num_blocks,
                                   cfg.max_features)
        width = self.hourglass.out_filters
        self.mask = nn.Conv3d(width, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, cfg.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(cfg.compress)
        # The occlusion conv sees the hourglass output with depth folded into channels.
        self.occlusion = (nn.Conv2d(width * cfg.reshape_depth, 1, kernel_size=7, padding=3)
                          if estimate_occlusion_map else None)

    def sparse_motions(self, grid: torch.Tensor, kp_source: torch.Tensor,
                       kp_driving: torch.Tensor) -> torch.Tensor:
        """(B, N+1, D, H, W, 3) sampling grids: identity (background), then for each keypoint
        the translation that carries its driving position onto its source position."""
        b = kp_source.shape[0]
        # (grid - driving) + source, in this order: the official rounding.
        per_kp = grid[None, None] - kp_driving[:, :, None, None, None, :]
        per_kp = per_kp + kp_source[:, :, None, None, None, :]
        identity = grid[None, None].expand(b, 1, *grid.shape)
        return torch.cat([identity, per_kp], dim=1)

    def forward(self, feature: torch.Tensor, kp_source: torch.Tensor,
                kp_driving: torch.Tensor) -> dict[str, torch.Tensor]:
        feature = F.relu(self.norm(self.compress(feature)))
        b, c, d, h, w = feature.shape
        k = self.num_kp + 1
        grid = coordinate_grid(d, h, w, feature)
        motions = self.sparse_motions(grid, kp_source, kp_driving)

        # The compressed volume sampled once per candidate motion.
        repeated = feature.unsqueeze(1).expand(b, k, c, d, h, w).reshape(b * k, c, d, h, w)
        deformed = F.grid_sample(repeated, motions.reshape(b * k, d, h, w, 3),
                                 align_corners=False).view(b, k, c, d, h, w)

        heat = keypoint_heatmaps(kp_driving, grid) - keypoint_heatmaps(kp_source, grid)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1)  # background: none

        net_in = torch.cat([heat.unsqueeze(2), deformed], dim=2).view(b, -1, d, h, w)
        prediction = self.hourglass(net_in)

        mask = F.softmax(self.mask(prediction), dim=1)  # (B, N+1, D, H, W)
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)  # (B, D, H, W, 3)
        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            folded = prediction.reshape(b, -1, h, w)
            out["occlusion_map"] = torch.sigmoid(self.occlusion(folded))
        return out


class WarpingNetwork(nn.Module):
    """W: dense motion, grid_sample of F's volume, depth folded into channels, SameBlock2d
    (LeakyReLU) and a 1x1 conv, multiplied by the occlusion map."""

    def __init__(self, cfg: WarpingConfig):
        super().__init__()
        self.cfg = cfg
        self.dense_motion_network = DenseMotionNetwork(
            cfg.dense_motion_params, cfg.num_kp, cfg.reshape_channel, cfg.estimate_occlusion_map)
        width = cfg.block_expansion * 2 ** cfg.num_down_blocks
        self.third = SameBlock2d(cfg.max_features, width, lrelu=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def forward(self, feature_3d: torch.Tensor, kp_source: torch.Tensor,
                kp_driving: torch.Tensor) -> dict[str, torch.Tensor]:
        """feature_3d (B, C, D, H, W) from F; kp_source, kp_driving (B, N, 3) -> dict with
        `out` (B, width, H, W) for G, `deformation` (B, D, H, W, 3), `occlusion_map`
        (B, 1, H, W) when estimated, and the blend `mask`.

        A batch of driving frames of one source: expand feature_3d and kp_source to B (views,
        no copy)."""
        dense = self.dense_motion_network(feature_3d, kp_source, kp_driving)
        warped = F.grid_sample(feature_3d, dense["deformation"], align_corners=False)
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.reshape(b, c * d, h, w)))
        occlusion = dense.get("occlusion_map")
        if occlusion is not None:
            out = out * occlusion
        return {**dense, "out": out}
