"""GFPGANv1Clean: U-Net encoder + StyleGAN2 decoder with SFT, the architecture of GFPGAN v1.3 / v1.4.

Parameter names and shapes follow the official `GFPGANv1Clean`, so `GFPGANv1.4.pth['params_ema']`
loads strictly. Input and output: RGB normalised to [-1, 1], size `out_size` (512 for v1.4).

The U-Net's intermediate RGB heads (`toRGB.*`) exist only for training losses; they are kept
so the official state dict loads strictly, and never run here.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from enhance.stylegan2 import LEAKY_SLOPE, StyleGAN2DecoderSFT, stylegan_channels


@dataclass(frozen=True)
class GFPGANConfig:
    """Constructor arguments; the defaults are what GFPGANer builds for GFPGANv1.4.pth."""

    out_size: int = 512
    num_style_feat: int = 512
    channel_multiplier: int = 2
    num_mlp: int = 8
    input_is_latent: bool = True  # the encoder emits W+ latents directly (mapping MLP unused)
    different_w: bool = True  # one latent per decoder layer
    narrow: float = 1.0
    sft_half: bool = True  # SFT on half of the decoder channels


class ResBlock(nn.Module):
    """conv-lrelu, bilinear resize (x0.5 or x2), conv-lrelu, plus a resized 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int, mode: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale_factor = 0.5 if mode == "down" else 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), LEAKY_SLOPE)
        out = F.interpolate(out, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), LEAKY_SLOPE)
        x = F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return out + self.skip(x)


def _sft_branch(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(LEAKY_SLOPE),
                         nn.Conv2d(channels, out_channels, 3, 1, 1))


class GFPGANv1Clean(nn.Module):
    """Blind face restoration generator. `forward(x)` returns the restored face only."""

    def __init__(self, out_size: int = 512, num_style_feat: int = 512, channel_multiplier: int = 2,
                 num_mlp: int = 8, input_is_latent: bool = True, different_w: bool = True, narrow: float = 1.0,
                 sft_half: bool = True) -> None:
        super().__init__()
        if out_size < 8 or out_size & (out_size - 1):
            raise ValueError(f"out_size must be a power of two >= 8, got {out_size}")
        self.config = GFPGANConfig(out_size, num_style_feat, channel_multiplier, num_mlp, input_is_latent,
                                   different_w, narrow, sft_half)
        self.out_size = out_size
        self.num_style_feat = num_style_feat
        self.input_is_latent = input_is_latent
        self.different_w = different_w
        self.log_size = int(math.log2(out_size))
        ch = stylegan_channels(channel_multiplier, narrow * 0.5)  # the U-Net is half as wide as the decoder

        # 1. Encoder: 1x1 stem, then ResBlocks halving the resolution down to 4x4.
        self.conv_body_first = nn.Conv2d(3, ch[out_size], 1)
        self.conv_body_down = nn.ModuleList()
        in_ch = ch[out_size]
        for log_res in range(self.log_size, 2, -1):
            self.conv_body_down.append(ResBlock(in_ch, ch[2 ** (log_res - 1)], "down"))
            in_ch = ch[2 ** (log_res - 1)]
        self.final_conv = nn.Conv2d(in_ch, ch[4], 3, 1, 1)

        # 2. Decoder half of the U-Net: ResBlocks doubling back up; each level yields SFT scale/shift.
        self.conv_body_up = nn.ModuleList()
        self.toRGB = nn.ModuleList()
        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        in_ch = ch[4]
        for log_res in range(3, self.log_size + 1):
            out_ch = ch[2**log_res]
            self.conv_body_up.append(ResBlock(in_ch, out_ch, "up"))
            self.toRGB.append(nn.Conv2d(out_ch, 3, 1))
            sft_out = out_ch if sft_half else out_ch * 2
            self.condition_scale.append(_sft_branch(out_ch, sft_out))
            self.condition_shift.append(_sft_branch(out_ch, sft_out))
            in_ch = out_ch

        # 3. Style code from the 4x4 bottleneck, then the StyleGAN2 decoder.
        num_latent = (self.log_size * 2 - 2) if different_w else 1
        self.final_linear = nn.Linear(ch[4] * 4 * 4, num_latent * num_style_feat)
        self.stylegan_decoder = StyleGAN2DecoderSFT(out_size, num_style_feat, num_mlp, channel_multiplier,
                                                    narrow, sft_half)

    def config_dict(self) -> dict:
        return asdict(self.config)

    def forward(self, x: torch.Tensor, randomize_noise: bool = False) -> torch.Tensor:
        """Restore faces x (b, 3, out_size, out_size) in [-1, 1].

        `randomize_noise=False` (our default; the official inference default is True) uses the
        noise maps stored with the weights, so the same input always gives the same output.
        """
        if x.shape[-2:] != (self.out_size, self.out_size):
            raise ValueError(f"GFPGAN expects {self.out_size}x{self.out_size} faces, got {tuple(x.shape[-2:])}")
        # 1. Encode, keeping the skips deepest-first.
        feat = F.leaky_relu(self.conv_body_first(x), LEAKY_SLOPE)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), LEAKY_SLOPE)

        # 2. Style latents.
        style = self.final_linear(feat.flatten(1))
        decoder = self.stylegan_decoder
        if self.different_w:
            style = style.view(style.shape[0], -1, self.num_style_feat)
        if not self.input_is_latent:
            # As upstream: the MLP sees the (b, n, c) tensor as is (its pixel-norm then runs over dim 1).
            style = decoder.style_mlp(style)
        latent = style if style.ndim == 3 else style[:, None, :].expand(-1, decoder.num_latent, -1)

        # 3. Up the U-Net, collecting SFT conditions per resolution.
        conditions = []
        for i, block in enumerate(self.conv_body_up):
            feat = block(feat + skips[i])
            conditions += [self.condition_scale[i](feat), self.condition_shift[i](feat)]

        # 4. Decode.
        noise = None if randomize_noise else [n.to(x.dtype) for n in decoder.stored_noise()]
        return decoder(latent, conditions, noise)
