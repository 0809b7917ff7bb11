"""The two transformer kinds of the LatentSync UNet.

* `SpatialTransformer` (official Transformer3DModel): per-frame self-attention over H*W tokens plus
  cross-attention to that frame's 50 audio tokens (`attn2`, K/V from the 384-wide Whisper features).
* `MotionModule` (official VanillaTemporalModule / AnimateDiff v1 layout): self-attention across the
  F frames at every spatial position, with a sinusoidal frame-position encoding added to its input.

Both take and return (B*F, C, H, W) activations (see unet_layers for the layout convention).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lipsync.latentsync.unet_layers import Attention, FeedForward

TRANSFORMER_NORM_EPS = 1e-6  # input GroupNorm of both transformer kinds (resnets use 1e-5)


class BasicTransformerBlock(nn.Module):
    """x += attn1(LN x); x += attn2(LN x, audio); x += FF(LN x)."""

    def __init__(self, dim: int, heads: int, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GN -> 1x1 proj_in -> transformer block over (H*W) tokens -> 1x1 proj_out -> + input."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, context_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (B*F, C, H, W); context: (B*F, S, D), row b*F + f conditions frame f of sample b."""
        bf, c, h, w = x.shape
        # Per-frame GroupNorm: each (b, f) row is its own GroupNorm sample, as in the official code.
        tokens = F.group_norm(x, self.norm.num_groups, self.norm.weight, self.norm.bias, self.norm.eps)
        tokens = tokens.permute(0, 2, 3, 1).reshape(bf, h * w, c)
        # A 1x1 conv on NCHW is a linear map on channel-last tokens: one GEMM, no layout round trip.
        tokens = F.linear(tokens, self.proj_in.weight.flatten(1), self.proj_in.bias)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        tokens = F.linear(tokens, self.proj_out.weight.flatten(1), self.proj_out.bias)
        return x + tokens.view(bf, h, w, c).permute(0, 3, 1, 2)


def frame_position_table(max_len: int, dim: int) -> torch.Tensor:
    """(1, max_len, dim): pe[p, 2i] = sin(p * 10000^(-2i/dim)), pe[p, 2i+1] = cos(same)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, max_len, dim)
    table[0, :, 0::2] = torch.sin(position * freqs)
    table[0, :, 1::2] = torch.cos(position * freqs)
    return table


class FramePositionEncoding(nn.Module):
    """Holds the persistent `pe` buffer; the official checkpoint stores it (40 of the 1246 entries)."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.register_buffer("pe", frame_position_table(max_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(Attention):
    """Self-attention over frames; the position encoding is added to the normalised input (q, k and v)."""

    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__(dim, heads)
        self.pos_encoder = FramePositionEncoding(dim, max_len)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pos_encoder(x)
        return self.attend(x, x)


class TemporalTransformerBlock(nn.Module):
    """Two (LN -> temporal attention) residual steps, then LN -> GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads, max_len) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = x + attention(norm(x))
        return x + self.ff(self.ff_norm(x))


class TemporalTransformer(nn.Module):
    """Per-frame GN -> Linear proj_in -> temporal block on (B*H*W, F, C) sequences -> proj_out -> + input."""

    def __init__(self, channels: int, heads: int, groups: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.norm = nn.GroupNorm(groups, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, max_len)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bf, c, h, w = x.shape
        b = bf // frames
        tokens = F.group_norm(x, self.norm.num_groups, self.norm.weight, self.norm.bias, self.norm.eps)
        # Every token op (Linear, LayerNorm, FF) is order-agnostic, so the whole block runs in the
        # (B, H*W, F, C) order temporal attention needs: one transpose in, one out.
        tokens = tokens.reshape(b, frames, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, frames, c)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens)
        return x + tokens.view(b, h * w, frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)


class MotionModule(nn.Module):
    """Wrapper that gives the official key prefix `motion_modules.N.temporal_transformer.*`."""

    def __init__(self, channels: int, heads: int, groups: int, max_len: int) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, groups, max_len)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return self.temporal_transformer(x, frames)
