"""Leaf layers of the LatentSync UNet: frame-pooled GroupNorm, resnet, resampling, time embedding, attention.

Layout convention for every module here: video activations are kept as (B*F, C, H, W) with the frames of
one sample next to each other (row b*F + f), so the "inflated" 3-D convs of the official model are plain
2-D convs with no per-frame loop or rearrange. Attribute names mirror the official state-dict keys.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def pooled_group_norm(x: torch.Tensor, norm: nn.GroupNorm, frames: int) -> torch.Tensor:
    """GroupNorm whose statistics pool over all frames of a chunk (the official resnet/head norms).

    The official model applies `nn.GroupNorm` to the 5-D (B, C, F, H, W) tensor, so mean and variance
    are taken over (C/G, F, H, W). We move frames next to space, run the native kernel (same numerics as
    the official one) and move them back.
    """
    bf, c, h, w = x.shape
    video = x.reshape(bf // frames, frames, c, h * w).transpose(1, 2)  # (B, C, F, HW) view
    out = F.group_norm(video, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return out.transpose(1, 2).reshape(bf, c, h, w)


def timestep_sinusoid(timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: float) -> torch.Tensor:
    """DDPM sinusoidal timestep features (float32, shape (N, dim)), as diffusers' Timesteps computes them."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    angles = timesteps[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear on the sinusoidal features (`time_embedding.linear_1/2`)."""

    def __init__(self, in_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(features)))


class ResnetBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> +time -> GN -> SiLU -> conv3x3, plus (1x1-projected) input.

    Both GroupNorms pool over the chunk's frames (official ResnetBlock3D without inflated groupnorm).
    """

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, frames: int) -> torch.Tensor:
        h = self.conv1(F.silu(pooled_group_norm(x, self.norm1, frames)))
        t = self.time_emb_proj(F.silu(temb))  # (B, C): one time step per sample, shared by its frames
        h = (h.unflatten(0, (-1, frames)) + t[:, None, :, None, None]).flatten(0, 1)
        h = self.conv2(F.silu(pooled_group_norm(h, self.norm2, frames)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv (`downsamplers.0.conv`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest 2x (or to the skip's size) then 3x3 conv (`upsamplers.0.conv`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class Attention(nn.Module):
    """Multi-head attention, q/k/v without bias, `to_out.0` with bias, fused SDPA kernel."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        context_dim = dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Identity()])  # index 1 = official dropout slot

    def attend(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (N, L, C) queries; context: (N, S, D) keys/values source. Returns (N, L, C)."""
        n, length, dim = x.shape
        split = (n, -1, self.heads, dim // self.heads)
        q = self.to_q(x).view(split).transpose(1, 2)
        k = self.to_k(context).view(split).transpose(1, 2)
        v = self.to_v(context).view(split).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](out.transpose(1, 2).reshape(n, length, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, x if context is None else context)


class GEGLU(nn.Module):
    """Linear to 2x width, split into (value, gate), value * GELU(gate) with exact erf GELU."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """diffusers-style GEGLU feed-forward: keys `net.0.proj`, `net.2`."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))
