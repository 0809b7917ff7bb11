"""Conv building blocks shared by LivePortrait's networks: 2D/3D down/up/same blocks, the 3D
residual block, the 3D hourglass (W's dense motion), and SPADE with its spectrally normalised
residual block (G).

Attribute names (`conv`, `norm`, `conv1`, `mlp_shared`, `weight_orig`, ...) are the official
state-dict names, so the released checkpoints load strictly. All blocks run in eval mode:
BatchNorm uses its running statistics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SameBlock2d(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU (or LeakyReLU, slope 0.01), resolution kept."""

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.leaky_relu(x) if self.lrelu else F.relu(x)


class DownBlock2d(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class DownBlock3d(nn.Module):
    """conv 3x3x3 -> BatchNorm -> ReLU -> average pool over H and W only (depth is kept)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest 2x upsampling of H and W -> conv 3x3x3 -> BatchNorm -> ReLU."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2))
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: (BN -> ReLU -> conv 3x3x3) twice, plus the input."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(features)
        self.norm2 = nn.BatchNorm3d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def _width(block_expansion: int, level: int, max_features: int) -> int:
    """Channel count at hourglass level `level` (level 0 = the first block's input side)."""
    return min(max_features, block_expansion * 2 ** level)


class HourglassEncoder(nn.Module):
    """3D U-Net encoder: `num_blocks` down blocks; returns every level's output, input first."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(in_features if i == 0 else _width(block_expansion, i, max_features),
                        _width(block_expansion, i + 1, max_features))
            for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """3D U-Net decoder: up blocks each followed by a concat with the encoder skip, down to the
    input itself; then conv 3x3x3 -> BN -> ReLU at width block_expansion + in_features."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            # Every up block but the deepest also receives the skip it was concatenated with.
            fan = 1 if i == num_blocks - 1 else 2
            blocks.append(UpBlock3d(fan * _width(block_expansion, i + 1, max_features),
                                    _width(block_expansion, i, max_features)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """The 3D hourglass of W's dense motion network."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class SpectralNormConv2d(nn.Module):
    """Conv2d whose weight is divided by an estimate of its largest singular value.

    Stores what torch's `spectral_norm` stores (`weight_orig`, the power-iteration vectors
    `weight_u`, `weight_v`) and, like it in eval mode, divides by sigma = u . (W v) with the
    stored vectors, no further iteration. `fold()` bakes the division into a plain weight for
    fast inference once loading is done.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        # Registration order (bias first) reproduces the official state-dict key order.
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.weight_orig = nn.Parameter(
            torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.register_buffer("weight_u", torch.empty(out_channels))
        self.register_buffer("weight_v", torch.empty(in_channels * kernel_size * kernel_size))
        self.padding = padding
        self._folded: torch.Tensor | None = None

    def normalized_weight(self) -> torch.Tensor:
        # sigma in float32 even for a half-precision model: it is a long dot product.
        w = self.weight_orig.float()
        sigma = torch.dot(self.weight_u.float(), torch.mv(w.flatten(1), self.weight_v.float()))
        return (w / sigma).to(self.weight_orig.dtype)

    def fold(self) -> None:
        """Cache the normalised weight (call after loading; weights are then frozen)."""
        with torch.no_grad():
            self._folded = self.normalized_weight()

    def _apply(self, fn, recurse=True):
        # A device or dtype move invalidates the cached weight.
        self._folded = None
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._folded if self._folded is not None else self.normalized_weight()
        return F.conv2d(x, w, self.bias, padding=self.padding)


class SPADE(nn.Module):
    """Spatially-adaptive norm: instance norm (no affine), then a per-pixel scale and shift
    predicted from the segmentation-like map `seg` (resized to x by nearest)."""

    HIDDEN = 128

    def __init__(self, norm_nc: int, label_nc: int):
        super().__init__()
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_nc, self.HIDDEN, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(self.HIDDEN, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(self.HIDDEN, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        if seg.shape[-2:] != x.shape[-2:]:
            seg = F.interpolate(seg, size=x.shape[-2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResBlock(nn.Module):
    """SPADE residual block with spectrally normalised convs; a learned 1x1 shortcut (no bias)
    when the width changes. Activations are LeakyReLU(0.2)."""

    def __init__(self, fin: int, fout: int, label_nc: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = SpectralNormConv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmiddle, fout, kernel_size=3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, kernel_size=1, bias=False)
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmiddle, label_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx
