"""S, LivePortrait's stitching and retargeting MLPs.

- stitching: (x_s, x_d) flattened -> 3N expression deltas + (tx, ty) for the driving keypoints,
  so the animated crop pastes back without seams at the shoulders.
- lip: (x_s, [c_s_lip, c_d_lip]) -> 3N deltas that open or close the mouth.
- eye: (x_s, [c_s_eye_l, c_s_eye_r, c_d_eye]) -> 3N deltas that open or close the eyes.
How the outputs are applied is in `keypoints.py`.
"""
from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from .config import MLPConfig, StitchingConfig


class RetargetingMLP(nn.Module):
    """Linear layers with ReLU between them, held as `mlp` (official key names mlp.0, mlp.2, ...)."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        sizes = [cfg.input_size, *cfg.hidden_sizes]
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise(sizes):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], cfg.output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class StitchingRetargeting(nn.Module):
    """The three MLPs of S. The official checkpoint names them retarget_shoulder (stitching),
    retarget_mouth (lip) and retarget_eye (eye)."""

    def __init__(self, cfg: StitchingConfig):
        super().__init__()
        self.cfg = cfg
        self.stitching = RetargetingMLP(cfg.stitching)
        self.lip = RetargetingMLP(cfg.lip)
        self.eye = RetargetingMLP(cfg.eye)
