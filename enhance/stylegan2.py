"""StyleGAN2 generator with spatial feature transform (SFT): the decoder inside GFPGAN v1.x "clean".

Parameter names and shapes follow the official `StyleGAN2GeneratorCSFT` (the "clean" variant:
no compiled CUDA ops), so `stylegan_decoder.*` keys of GFPGANv1.4.pth load strictly.

One deliberate difference in *how* (not what) we compute: the official modulated conv builds a
per-sample weight and runs one grouped conv over the whole batch. We use the equivalent
"scale input, shared conv, scale output" form: conv(x * s, W) * d with
d = rsqrt(sum_{i,k} (W s)^2 + eps). It is the same linear map, but runs as one ordinary
convolution (cuDNN-friendly at batch 32, half precision safe because d is computed in fp32).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2
DEMOD_EPS = 1e-8
ACT_GAIN = 2**0.5  # StyleConv multiplies the modulated conv by sqrt(2) before noise/bias ("for conversion")


def stylegan_channels(channel_multiplier: int, narrow: float) -> dict[int, int]:
    """Feature channels per resolution of the StyleGAN2 generator."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {res: int(ch * narrow) for res, ch in base.items()}


class NormStyleCode(nn.Module):
    """Pixel-norm of style codes (first layer of the mapping MLP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Style-modulated (optionally demodulated) conv without bias; optional bilinear x2 upsample first."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, upsample: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.demodulate = demodulate
        self.upsample = upsample
        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        nn.init.ones_(self.modulation.bias)  # styles start as identity scales
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
                                   / math.sqrt(in_channels * kernel_size**2))
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.modulation(style)  # (b, c_in)
        weight = self.weight[0]  # (c_out, c_in, k, k)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = F.conv2d(x * s[:, :, None, None].to(x.dtype), weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            # sum_{i,k} (W[o,i,k] s[b,i])^2 = sum_i (sum_k W[o,i,k]^2) s[b,i]^2, in fp32 for half runs.
            w2 = weight.float().pow(2).sum(dim=(2, 3))  # (c_out, c_in)
            demod = torch.rsqrt(s.float().pow(2) @ w2.t() + DEMOD_EPS)  # (b, c_out)
            out = out * demod[:, :, None, None].to(out.dtype)
        return out


class StyleConv(nn.Module):
    """Modulated conv, noise injection, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat, True, upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        out = self.modulated_conv(x, style) * ACT_GAIN
        if noise is None:
            noise = torch.randn(out.shape[0], 1, *out.shape[2:], device=out.device, dtype=out.dtype)
        out = out + self.weight * noise + self.bias
        return F.leaky_relu(out, LEAKY_SLOPE)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) added onto the upsampled running image."""

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    def __init__(self, num_channel: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, num_channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class StyleGAN2DecoderSFT(nn.Module):
    """StyleGAN2 synthesis network whose features are modulated by encoder conditions (SFT).

    Latents: (b, num_latent, num_style_feat) with num_latent = 2*log2(out_size) - 2, one per layer.
    Conditions: [scale_8, shift_8, scale_16, shift_16, ...] from the GFPGAN U-Net; applied after
    the first (upsampling) conv of each resolution, to half the channels when `sft_half`.
    """

    def __init__(self, out_size: int, num_style_feat: int = 512, num_mlp: int = 8, channel_multiplier: int = 2,
                 narrow: float = 1.0, sft_half: bool = False) -> None:
        super().__init__()
        self.sft_half = sft_half
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            mlp += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(LEAKY_SLOPE)]
        self.style_mlp = nn.Sequential(*mlp)

        channels = stylegan_channels(channel_multiplier, narrow)
        self.log_size = int(math.log2(out_size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.num_latent = self.log_size * 2 - 2

        self.constant_input = ConstantInput(channels[4], size=4)
        self.style_conv1 = StyleConv(channels[4], channels[4], num_style_feat, upsample=False)
        self.to_rgb1 = ToRGB(channels[4], num_style_feat, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)
            self.noises.register_buffer(f"noise{layer_idx}", torch.randn(1, 1, res, res))
        in_ch = channels[4]
        for log_res in range(3, self.log_size + 1):
            out_ch = channels[2**log_res]
            self.style_convs.append(StyleConv(in_ch, out_ch, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(out_ch, out_ch, num_style_feat, upsample=False))
            self.to_rgbs.append(ToRGB(out_ch, num_style_feat, upsample=True))
            in_ch = out_ch

    def stored_noise(self) -> list[torch.Tensor]:
        """The fixed noise maps saved with the weights (deterministic output, no frame-to-frame flicker)."""
        return [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]

    def _sft(self, out: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        if not self.sft_half:
            return out * scale + shift
        keep, modulated = torch.split(out, out.shape[1] // 2, dim=1)
        return torch.cat([keep, modulated * scale + shift], dim=1)

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor],
                noise: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        if noise is None:
            noise = [None] * self.num_layers
        out = self.constant_input(latent.shape[0]).to(latent.dtype)
        out = self.style_conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1
            out = self.style_convs[2 * level](out, latent[:, i], noise[i])
            if 2 * level + 1 < len(conditions):  # the U-Net may provide fewer levels
                out = self._sft(out, conditions[2 * level], conditions[2 * level + 1])
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip
