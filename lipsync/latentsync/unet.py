"""LatentSync 1.5 / 1.6 UNet: our implementation of the official UNet3DConditionModel.

Same state-dict keys, shapes and dtypes as the official checkpoint (`latentsync_unet.pt`), same math:
2-D blocks applied to every frame, GroupNorms of resnets and head pooled over the chunk's frames,
per-frame audio cross-attention and AnimateDiff-style motion modules attending across frames.

Inside, activations live as (B*F, C, H, W) (see unet_layers); the public tensors use the official
(B, C, F, H, W) layout. The model also exposes the split forward DeepCache needs (see sampling.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lipsync.latentsync.config import CROSS_ATTN_DOWN, CROSS_ATTN_UP, UNetConfig
from lipsync.latentsync.unet_blocks import DownBlock, MidBlock, UpBlock
from lipsync.latentsync.unet_layers import ResnetBlock, TimestepEmbedding, pooled_group_norm, timestep_sinusoid
from lipsync.latentsync.unet_transformers import MotionModule, SpatialTransformer


class LatentSyncUNet(nn.Module):
    """UNet3DConditionModel-compatible denoiser: (noisy latents | mask | masked | reference) -> epsilon.

    Call: `unet(sample, timestep, encoder_hidden_states)` with sample (B, 13, F, h, w), timestep an int or
    0-dim / (1,) / (B,) tensor, encoder_hidden_states (B*F, S, D) rows ordered (b, f) (or (B, F, S, D)).
    Returns epsilon (B, 4, F, h, w) in the model dtype.

    `cfg_pair=True` (keyword, every forward) declares the batch to be the classifier-free-guidance pair
    `sampling.denoise` builds: two halves with the same sample and one time step, the first half's
    audio all zeros. The fused CUDA path (unet_fast.py) then computes the layers before the first audio
    cross-attention once for both halves and gives the zero-audio cross-attention its exact value (with
    K = V = 0 it is to_out's bias); the reference path computes everything and gives the same result.
    """

    fast_path = False  # True once unet_fast.enable_fast_path switched this model to the fused CUDA path

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.block_out_channels
        base = channels[0]
        self.conv_in = nn.Conv2d(config.in_channels, base, 3, padding=1)
        self.time_embedding = TimestepEmbedding(base, config.time_embed_dim)

        self.down_blocks = nn.ModuleList()
        out_ch = base
        for i, kind in enumerate(config.down_block_types):
            in_ch, out_ch = out_ch, channels[i]
            last = i == len(channels) - 1
            self.down_blocks.append(
                DownBlock(config, in_ch, out_ch, kind == CROSS_ATTN_DOWN, config.down_has_motion(i), not last)
            )

        self.mid_block = MidBlock(config, channels[-1])

        self.up_blocks = nn.ModuleList()
        reversed_ch = list(reversed(channels))
        out_ch = reversed_ch[0]
        for i, kind in enumerate(config.up_block_types):
            prev_ch, out_ch = out_ch, reversed_ch[i]
            skip_ch = reversed_ch[min(i + 1, len(channels) - 1)]
            last = i == len(channels) - 1
            self.up_blocks.append(
                UpBlock(config, skip_ch, prev_ch, out_ch, kind == CROSS_ATTN_UP, config.up_has_motion(i), not last)
            )

        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, base, eps=config.norm_eps)
        self.conv_out = nn.Conv2d(base, config.out_channels, 3, padding=1)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    # -- public forwards -------------------------------------------------------------------------------

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, encoder_hidden_states: torch.Tensor,
        *, cfg_pair: bool = False,
    ) -> torch.Tensor:
        x, temb, context, frames = self._prepare(sample, timestep, encoder_hidden_states, cfg_pair)
        x, _ = self._body(x, temb, context, frames, keep_feature=False)
        return self._head(x, frames)

    def forward_and_cache(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, encoder_hidden_states: torch.Tensor,
        *, cfg_pair: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full forward that also returns the DeepCache feature: the output of the last up block's
        second-to-last layer (everything deeper than its final layer)."""
        x, temb, context, frames = self._prepare(sample, timestep, encoder_hidden_states, cfg_pair)
        x, feature = self._body(x, temb, context, frames, keep_feature=True)
        return self._head(x, frames), feature

    def forward_cached(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        feature: torch.Tensor,
        *,
        cfg_pair: bool = False,
    ) -> torch.Tensor:
        """Shallow forward with a cached deep feature: conv_in, the last up layer (whose skip is the fresh
        conv_in output) and the head. Everything else is taken from `feature`."""
        rows = sample.shape[0] * sample.shape[2] if sample.dim() == 5 else -1
        x, temb, context, frames = self._prepare(sample, timestep, encoder_hidden_states, cfg_pair)
        if feature.shape[0] != rows or feature.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"cached feature {tuple(feature.shape)} does not match the input (B*F, h, w) = "
                f"({rows}, {x.shape[-2]}, {x.shape[-1]}); refresh the cache with forward_and_cache"
            )
        skip = self.conv_in(x)
        last = self.up_blocks[-1]
        x = last.run_up_layer(last.num_layers - 1, feature, skip, temb, context, frames)
        return self._head(x, frames)

    # -- internals -------------------------------------------------------------------------------------

    def _prepare(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, encoder_hidden_states: torch.Tensor,
        cfg_pair: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Validate, move frames into the batch axis, embed the time step. (`cfg_pair` is checked here and
        used only by the fused path, which wraps this method.)"""
        cfg = self.config
        if sample.dim() != 5 or sample.shape[1] != cfg.in_channels:
            raise ValueError(f"sample must be (B, {cfg.in_channels}, F, h, w); got {tuple(sample.shape)}")
        b, c, frames, h, w = sample.shape
        if frames > cfg.motion_pe_max_len:
            raise ValueError(f"a chunk holds at most {cfg.motion_pe_max_len} frames (motion-module PE); got {frames}")
        context = encoder_hidden_states
        if context.dim() == 4:
            context = context.flatten(0, 1)
        if context.dim() != 3 or context.shape[0] != b * frames or context.shape[2] != cfg.cross_attention_dim:
            raise ValueError(
                f"encoder_hidden_states must be (B*F={b * frames}, S, {cfg.cross_attention_dim}) rows ordered "
                f"(batch, frame); got {tuple(encoder_hidden_states.shape)}"
            )
        dtype = self.dtype
        x = sample.to(dtype).transpose(1, 2).reshape(b * frames, c, h, w)

        t = torch.as_tensor(timestep, device=sample.device)
        if cfg_pair and (b % 2 or t.numel() != 1):
            raise ValueError(f"cfg_pair needs an even batch and one time step; got batch {b}, {t.numel()} time steps")
        if t.dim() == 0 or t.numel() == 1:
            t = t.reshape(1).expand(b)
        elif t.shape != (b,):
            raise ValueError(f"timestep must be a scalar or shape ({b},); got {tuple(t.shape)}")
        features = timestep_sinusoid(t, self.conv_in.out_channels, cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = self.time_embedding(features.to(dtype))
        return x, temb, context.to(dtype), frames

    def _body(
        self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor, frames: int, keep_feature: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.conv_in(x)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, context, frames)
            skips.extend(block_skips)

        x = self.mid_block(x, temb, context, frames)

        feature = None
        for i, block in enumerate(self.up_blocks):
            for j in range(block.num_layers):
                if keep_feature and i == len(self.up_blocks) - 1 and j == block.num_layers - 1:
                    feature = x
                x = block.run_up_layer(j, x, skips.pop(), temb, context, frames)
            if skips:
                # Upsample to the next skip's size (= 2x when the latent side divides by 8).
                x = block.upsample(x, tuple(skips[-1].shape[-2:]))
        return x, feature

    def _head(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = self.conv_out(F.silu(pooled_group_norm(x, self.conv_norm_out, frames)))
        bf, c, h, w = x.shape
        return x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)


def compile_unet(unet: LatentSyncUNet, *, regional: bool = False, **compile_kwargs) -> LatentSyncUNet:
    """torch.compile the model in place for inference; returns the same object.

    Whole-model (default): ONE graph serves both `forward` and `forward_and_cache` (the cache feature is
    an extra output of the same graph), a second small one `forward_cached`. Regional (`regional=True`):
    every resnet, spatial transformer and motion module is compiled on its own and the glue stays eager;
    fewer, smaller graphs compile much faster (one per distinct block shape), at some speed cost.
    `compile_kwargs` go to torch.compile (e.g. mode="max-autotune-no-cudagraphs", dynamic=False). A chunk
    with another frame count (the video's shorter last chunk) compiles once more.
    """
    if regional:
        # One compiled variant per block shape: the full-size UNet has ~25, over dynamo's default limit of 8.
        limit_name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        setattr(torch._dynamo.config, limit_name, max(64, getattr(torch._dynamo.config, limit_name)))
        for module in unet.modules():
            if isinstance(module, (ResnetBlock, SpatialTransformer, MotionModule)):
                module.compile(**compile_kwargs)
        return unet

    full = torch.compile(unet.forward_and_cache, **compile_kwargs)

    def forward(
        sample: torch.Tensor, timestep: torch.Tensor | int, encoder_hidden_states: torch.Tensor, **kwargs
    ) -> torch.Tensor:
        return full(sample, timestep, encoder_hidden_states, **kwargs)[0]

    unet.forward = forward
    unet.forward_and_cache = full
    unet.forward_cached = torch.compile(unet.forward_cached, **compile_kwargs)
    return unet


def build_unet(
    config: UNetConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> LatentSyncUNet:
    """A randomly initialised model in eval mode (use checkpoint.load_unet for real weights).

    device="meta" builds the structure only (no memory), which is how the loader and schema tests use it.
    """
    with torch.device(device):
        model = LatentSyncUNet(config)
    return model.to(dtype=dtype).eval()
