"""Paste-back in torch, on the renders' own device: a batch of rendered 512 crops -> a batch of
full frames of one still.

The still's frame never changes, so everything that depends only on it is made once
(`FramePaster.__init__`): the region of the frame the crop can touch (crop.PasteBack's `roi`),
the feathered mask warped into that region, the region's base pixels, and the sampling grid that
maps each region pixel to its place in the crop. Per batch the work is one grid_sample of the
crops into the region, one blend, and one copy of the region into the frames; every pixel
outside the region is the still's own, bit for bit.

Coordinates: crop.Crop maps image pixels to crop pixels with pixel centres at integers (OpenCV's
convention); grid_sample with align_corners=False puts pixel i's centre at (2 i + 1) / size - 1.
Outside the crop samples are 0, as OpenCV's BORDER_CONSTANT, and the mask is 0 there anyway.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .crop import Crop, PasteBack


class FramePaster:
    """Blend (B, 3, S, S) crops in 0..1 into (B, H, W, 3) uint8 frames of `frame`, on `device`.

    frame: the still (H, W, 3) uint8; crop: its Crop (crop.size = S); mask: optional (S, S)
    mask in crop space (default crop.feather_mask()).
    """

    def __init__(self, frame: np.ndarray, crop: Crop, device: torch.device | str = "cpu",
                 mask: np.ndarray | None = None):
        # 1. The region and the warped mask, as the numpy reference computes them.
        ref = PasteBack(frame, crop, mask)
        self.roi = ref.roi
        self.size = crop.size
        self.device = torch.device(device)
        self.frame = torch.from_numpy(np.ascontiguousarray(ref.frame)).to(self.device)
        x0, y0, x1, y1 = self.roi
        self.empty = x1 <= x0 or y1 <= y0
        if self.empty:
            return
        # 2. Region pixel -> crop pixel -> grid_sample's normalised coordinates.
        ys, xs = np.mgrid[y0:y1, x0:x1]
        in_crop = crop.to_crop(np.stack([xs, ys], axis=-1).astype(np.float64))
        grid = (2.0 * in_crop + 1.0) / crop.size - 1.0
        self.grid = torch.from_numpy(grid.astype(np.float32))[None].to(self.device)
        # 3. Mask and base pixels in (1, C, h, w) float32, the blend's layout.
        self.mask = torch.from_numpy(ref.mask[..., 0].copy())[None, None].to(self.device)
        base = ref.frame[y0:y1, x0:x1].astype(np.float32).transpose(2, 0, 1)
        self.base = torch.from_numpy(np.ascontiguousarray(base))[None].to(self.device)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        return tuple(self.frame.shape[:2])

    def region(self, crops: torch.Tensor) -> torch.Tensor:
        """The blended region of each frame, (B, h, w, 3) uint8."""
        b = crops.shape[0]
        warped = F.grid_sample(crops.float(), self.grid.expand(b, -1, -1, -1), mode="bilinear",
                               padding_mode="zeros", align_corners=False)
        mixed = self.base + self.mask * (warped * 255.0 - self.base)
        return mixed.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) renders -> (B, H, W, 3) uint8 frames on the paster's device."""
        if crops.shape[-2:] != (self.size, self.size):
            raise ValueError(f"renders must be {self.size}x{self.size}, got {tuple(crops.shape)}")
        b = crops.shape[0]
        frames = self.frame.expand(b, -1, -1, -1).clone()
        if not self.empty:
            x0, y0, x1, y1 = self.roi
            frames[:, y0:y1, x0:x1] = self.region(crops)
        return frames
