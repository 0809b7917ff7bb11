"""Down / mid / up blocks of the LatentSync UNet (official CrossAttn/plain Down/Up Block3D, mid block).

A block "layer" is resnet -> spatial transformer (cross-attention blocks only) -> motion module (when the
config enables one at that resolution). Up layers first concatenate [hidden, skip] on channels.
"""
from __future__ import annotations

import torch
from torch import nn

from lipsync.latentsync.config import UNetConfig
from lipsync.latentsync.unet_layers import Downsample, ResnetBlock, Upsample
from lipsync.latentsync.unet_transformers import MotionModule, SpatialTransformer


class _LayeredBlock(nn.Module):
    """Shared storage and layer runner; empty ModuleLists add no state-dict keys."""

    def __init__(
        self,
        config: UNetConfig,
        resnet_channels: list[tuple[int, int]],
        channels: int,
        cross_attention: bool,
        motion: bool,
    ) -> None:
        super().__init__()
        groups, temb = config.norm_num_groups, config.time_embed_dim
        n = len(resnet_channels)
        self.resnets = nn.ModuleList(
            [ResnetBlock(cin, cout, temb, groups, config.norm_eps) for cin, cout in resnet_channels]
        )
        self.attentions = nn.ModuleList(
            [SpatialTransformer(channels, config.num_heads, config.cross_attention_dim, groups) for _ in range(n)]
            if cross_attention
            else []
        )
        self.motion_modules = nn.ModuleList(
            [MotionModule(channels, config.motion_num_heads, groups, config.motion_pe_max_len) for _ in range(n)]
            if motion
            else []
        )

    @property
    def num_layers(self) -> int:
        return len(self.resnets)

    def run_layer(
        self, index: int, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor, frames: int
    ) -> torch.Tensor:
        return self.run_layer_tail(index, self.resnets[index](x, temb, frames), context, frames)

    def run_layer_tail(self, index: int, x: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        """Layer `index` after its resnet: the spatial transformer, then the motion module (where present)."""
        if len(self.attentions):
            x = self.attentions[index](x, context)
        if len(self.motion_modules):
            x = self.motion_modules[index](x, frames)
        return x


class DownBlock(_LayeredBlock):
    """`layers` layers, then an optional stride-2 conv; every layer output and the downsample are skips."""

    def __init__(
        self,
        config: UNetConfig,
        in_channels: int,
        out_channels: int,
        cross_attention: bool,
        motion: bool,
        downsample: bool,
    ) -> None:
        pairs = [(in_channels if i == 0 else out_channels, out_channels) for i in range(config.layers_per_block)]
        super().__init__(config, pairs, out_channels, cross_attention, motion)
        self.downsamplers = nn.ModuleList([Downsample(out_channels)] if downsample else [])

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor, frames: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i in range(self.num_layers):
            x = self.run_layer(i, x, temb, context, frames)
            skips.append(x)
        for down in self.downsamplers:
            x = down(x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """resnet -> spatial transformer -> resnet (no motion module in the middle)."""

    def __init__(self, config: UNetConfig, channels: int) -> None:
        super().__init__()
        groups, temb = config.norm_num_groups, config.time_embed_dim
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, temb, groups, config.norm_eps) for _ in range(2)])
        self.attentions = nn.ModuleList(
            [SpatialTransformer(channels, config.num_heads, config.cross_attention_dim, groups)]
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        x = self.resnets[0](x, temb, frames)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb, frames)


class UpBlock(_LayeredBlock):
    """`layers + 1` layers, each eating one skip, then an optional nearest-2x + conv upsample."""

    def __init__(
        self,
        config: UNetConfig,
        skip_in_channels: int,
        prev_channels: int,
        out_channels: int,
        cross_attention: bool,
        motion: bool,
        upsample: bool,
    ) -> None:
        n = config.layers_per_block + 1
        pairs = []
        for j in range(n):
            skip = skip_in_channels if j == n - 1 else out_channels
            hidden = prev_channels if j == 0 else out_channels
            pairs.append((hidden + skip, out_channels))
        super().__init__(config, pairs, out_channels, cross_attention, motion)
        self.upsamplers = nn.ModuleList([Upsample(out_channels)] if upsample else [])

    def run_up_layer(
        self, index: int, x: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor, context: torch.Tensor, frames: int
    ) -> torch.Tensor:
        return self.run_layer(index, torch.cat([x, skip], dim=1), temb, context, frames)

    def upsample(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for up in self.upsamplers:
            x = up(x, size)
        return x
