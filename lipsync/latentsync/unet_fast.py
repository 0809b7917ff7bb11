"""The UNet's fused CUDA path: same model, same weights and state dict, faster forwards.

`enable_fast_path(unet)` switches a CUDA LatentSyncUNet to:
* channels-last (NHWC) activations end to end: convolutions run without cuDNN's layout conversions,
  and a (B*F, C, H, W) activation viewed as (B*F*H*W, C) transformer tokens is a free view, so the
  spatial and motion transformers run on tokens without a single permute;
* fused GroupNorm(+time-embedding offset)(+SiLU), GEGLU and frame attention kernels (kernels.py);
* q/k/v (and cross-attention k/v) projections concatenated into one GEMM each; the motion modules'
  frame-position encoding added by the LayerNorm kernel in front of each frame attention;
* for a CFG pair (`cfg_pair=True`, see LatentSyncUNet): the two halves share their input, so conv_in,
  the first resnet and the first self-attention run on one half and are copied to both; the
  unconditional half's audio is all zeros, so its cross-attention (softmax over K = 0, times V = 0)
  is exactly to_out's bias and is not computed.

The switch replaces the `forward` of the affected module instances (and the model's `_head`); the
reference forwards (the CPU path, checked against the official goldens) are untouched, and
`disable_fast_path` restores them. Derived weights are plain attributes (not in the state dict):
call `enable_fast_path` again after loading new weights or moving the model.
"""
from __future__ import annotations

import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lipsync.latentsync import kernels
from lipsync.latentsync.unet import LatentSyncUNet
from lipsync.latentsync.unet_blocks import UpBlock
from lipsync.latentsync.unet_layers import Attention, FeedForward, ResnetBlock
from lipsync.latentsync.unet_transformers import BasicTransformerBlock, SpatialTransformer, TemporalTransformer

_PATCHED = ("forward", "_head", "_prepare", "run_up_layer")


@dataclass(frozen=True)
class CfgPairAudio:
    """The audio tokens of a CFG pair batch as the fused forwards receive them: rows [:half] belong to
    the unconditional half (all zeros), rows [half:] to the conditional one. Activations with `half`
    rows are still the halves' shared prefix (one copy for both)."""

    tokens: torch.Tensor  # (2 * half, S, D)
    half: int  # B/2 * F


def fast_path_supported(unet: torch.nn.Module) -> bool:
    """True when the fused path can run for this model here (CUDA weights, Triton present)."""
    return kernels.available() and unet.conv_in.weight.is_cuda


@torch.no_grad()
def enable_fast_path(unet: torch.nn.Module) -> bool:
    """Switch `unet` to the fused CUDA path in place. Returns False (model unchanged) when unsupported."""
    if not fast_path_supported(unet):
        return False
    disable_fast_path(unet)
    unet.to(memory_format=torch.channels_last)
    for module in unet.modules():
        if isinstance(module, ResnetBlock):
            module.forward = types.MethodType(_resnet_forward, module)
        elif isinstance(module, SpatialTransformer):
            module.forward = types.MethodType(_spatial_forward, module)
        elif isinstance(module, BasicTransformerBlock):
            module.forward = types.MethodType(_basic_block_forward, module)
        elif isinstance(module, TemporalTransformer):
            module.forward = types.MethodType(_temporal_forward, module)
            for attention in module.transformer_blocks[0].attention_blocks:
                attention._fast_qkv = _cat_weights(attention.to_q, attention.to_k, attention.to_v)
        elif isinstance(module, FeedForward):
            module.forward = types.MethodType(_feed_forward, module)
        elif isinstance(module, UpBlock):
            module.run_up_layer = types.MethodType(_up_layer, module)
        if isinstance(module, Attention) and not hasattr(module, "_fast_kv"):
            module._fast_kv = _cat_weights(module.to_k, module.to_v)
            if module.to_q.in_features == module.to_k.in_features:  # self-attention: one qkv GEMM
                module._fast_qkv = _cat_weights(module.to_q, module.to_k, module.to_v)
    unet._head = types.MethodType(_head, unet)
    unet._prepare = types.MethodType(_prepare, unet)
    unet.fast_path = True
    return True


def disable_fast_path(unet: torch.nn.Module) -> None:
    """Back to the reference forwards (contiguous NCHW weights)."""
    for module in unet.modules():
        for name in _PATCHED:
            module.__dict__.pop(name, None)
        for name in ("_fast_qkv", "_fast_kv"):
            module.__dict__.pop(name, None)
    unet.to(memory_format=torch.contiguous_format)
    unet.fast_path = False


def _cat_weights(*linears: torch.nn.Linear) -> torch.Tensor:
    return torch.cat([linear.weight for linear in linears]).contiguous()


def _group_norm(x: torch.Tensor, norm: torch.nn.GroupNorm, **kw) -> torch.Tensor:
    return kernels.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps, **kw)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) channels-last -> (N*H*W, C) view."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n * h * w, c)


def _image(tokens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(N*H*W, C) -> (N, C, H, W) channels-last view."""
    n, c, h, w = shape
    return tokens.view(n, h, w, c).permute(0, 3, 1, 2)


# -- forwards (bound to module instances by enable_fast_path) ------------------------------------------


def _prepare(self: LatentSyncUNet, sample, timestep, encoder_hidden_states, cfg_pair: bool = False):
    """The reference preparation; for a CFG pair, only the first half of the (identical) inputs, one
    time-embedding row (the halves share the time step) and the audio wrapped as CfgPairAudio."""
    x, temb, context, frames = LatentSyncUNet._prepare(self, sample, timestep, encoder_hidden_states, cfg_pair)
    if not cfg_pair:
        return x, temb, context, frames
    half = x.shape[0] // 2
    return x[:half], temb[:1], CfgPairAudio(context, half), frames


def _up_layer(self: UpBlock, index: int, x: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor, context,
              frames: int) -> torch.Tensor:
    """The reference up layer; a CFG pair's shared skip (conv_in's output, half the rows) goes to both halves."""
    if skip.shape[0] != x.shape[0]:
        skip = torch.cat([skip, skip])
    return self.run_layer(index, torch.cat([x, skip], dim=1), temb, context, frames)


def _resnet_forward(self: ResnetBlock, x: torch.Tensor, temb: torch.Tensor, frames: int) -> torch.Tensor:
    """Convolutions without their bias (a separate broadcast pass in channels-last): conv1's bias
    joins the time embedding inside the second norm, conv2's (and the shortcut's) the residual add."""
    h = F.conv2d(_group_norm(x, self.norm1, frames=frames, silu=True), self.conv1.weight, None, padding=1)
    offset = self.time_emb_proj(F.silu(temb)) + self.conv1.bias  # (B, C) or (1, C), inside the norm
    offset = offset.expand(x.shape[0] // frames, -1)
    return resnet_output(self, _group_norm(h, self.norm2, frames=frames, add=offset, silu=True), x)


def resnet_output(resnet, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """conv2(h) + shortcut(x) for a resnet with `conv2` (3x3) and an optional 1x1 `conv_shortcut`:
    both convolutions bias-free, their biases added with the residual in one pass (ours and
    diffusers' resnets share these names)."""
    h = F.conv2d(h, resnet.conv2.weight, None, padding=1)
    if resnet.conv_shortcut is not None:
        skip = F.conv2d(x, resnet.conv_shortcut.weight, None)
        bias = resnet.conv2.bias + resnet.conv_shortcut.bias
    else:
        skip, bias = x, resnet.conv2.bias
    return kernels.add_bias_residual_(h, skip, bias)


def _self_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """x: (N, L, C) -> attention output before to_out (N*L, C)."""
    n, length, dim = x.shape
    qkv = F.linear(x, attn._fast_qkv).view(n, length, 3, attn.heads, dim // attn.heads)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(n * length, dim)


def _cross_attention(attn: Attention, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    n, length, dim = x.shape
    heads, d = attn.heads, dim // attn.heads
    q = attn.to_q(x).view(n, length, heads, d).transpose(1, 2)
    kv = F.linear(context, attn._fast_kv).view(n, context.shape[1], 2, heads, d)
    out = F.scaled_dot_product_attention(q, kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2))
    return out.transpose(1, 2).reshape(n * length, dim)


def _audio_attention(attn: Attention, x: torch.Tensor, context) -> torch.Tensor:
    """attn2 including to_out: (N, L, C) -> (N*L, C). For a CFG pair the zero-audio half is to_out's
    bias exactly (K = V = 0: uniform weights over zero values), so only the audio half is computed."""
    proj = attn.to_out[0]
    if not isinstance(context, CfgPairAudio):
        return proj(_cross_attention(attn, x, context))
    n, length, dim = x.shape
    split = context.half * length
    out = torch.empty((n * length, dim), device=x.device, dtype=x.dtype)
    out[:split] = proj.bias
    torch.addmm(proj.bias, _cross_attention(attn, x[context.half:], context.tokens[context.half:]),
                proj.weight.t(), out=out[split:])
    return out


def _ln(x: torch.Tensor, norm: torch.nn.LayerNorm, **pe) -> torch.Tensor:
    return kernels.layer_norm(x, norm.weight, norm.bias, norm.eps, **pe)


def _add_ln(x: torch.Tensor, y: torch.Tensor, norm: torch.nn.LayerNorm, **pe) -> tuple[torch.Tensor, torch.Tensor]:
    return kernels.add_layer_norm(x, y, norm.weight, norm.bias, norm.eps, **pe)


def _basic_block_forward(self: BasicTransformerBlock, x: torch.Tensor, context) -> torch.Tensor:
    """x: (N, L, C) contiguous tokens, ours to update in place (the residual stream). A CFG pair's
    shared prefix (N = half the audio rows) ends before the audio: the output has 2N rows then."""
    n, length, dim = x.shape
    flat = x.view(n * length, dim)
    h = _ln(flat, self.norm1).view(n, length, dim)
    flat, h = _add_ln(flat, self.attn1.to_out[0](_self_attention(self.attn1, h)), self.norm2)
    if isinstance(context, CfgPairAudio) and n == context.half:
        flat, h, n = flat.repeat(2, 1), h.repeat(2, 1), 2 * n
    flat, h = _add_ln(flat, _audio_attention(self.attn2, h.view(n, length, dim), context), self.norm3)
    return flat.add_(self.ff(h)).view(n, length, dim)


def _feed_forward(self: FeedForward, x: torch.Tensor) -> torch.Tensor:
    proj = self.net[0].proj
    return self.net[2](kernels.geglu(F.linear(x, proj.weight, proj.bias)))


def _spatial_forward(self: SpatialTransformer, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    bf, c, h, w = x.shape
    tokens = F.linear(_tokens(_group_norm(x, self.norm)), self.proj_in.weight.view(c, c), self.proj_in.bias)
    tokens = tokens.view(bf, h * w, c)
    for block in self.transformer_blocks:
        tokens = block(tokens, context)
    n = tokens.shape[0]
    out = torch.addmm(self.proj_out.bias, tokens.view(n * h * w, c), self.proj_out.weight.view(c, c).t())
    if n != bf:  # a CFG pair's shared prefix ended in the block: x is the input of both halves
        out.view(2, bf * h * w, c).add_(_tokens(x))
        return _image(out, (n, c, h, w))
    return _image(out, x.shape).add_(x)


def _temporal_forward(self: TemporalTransformer, x: torch.Tensor, frames: int) -> torch.Tensor:
    """Tokens stay in (sample, frame, position) order; the attention kernel gathers across frames. Each
    attention's frame-position encoding is added by the LayerNorm in front of it (the reference adds
    it to the normed tokens, then projects)."""
    bf, c, h, w = x.shape
    if frames > self.max_len:
        raise ValueError(f"a chunk holds at most {self.max_len} frames; got {frames}")
    tokens = self.proj_in(_tokens(_group_norm(x, self.norm)))
    block = self.transformer_blocks[0]
    attentions = block.attention_blocks
    norms = [*block.norms, block.ff_norm]
    pe = [{"pe": a.pos_encoder.pe[0, :frames], "hw": h * w} for a in attentions] + [{}]
    normed = _ln(tokens, norms[0], **pe[0])
    for i, attention in enumerate(attentions):
        out = kernels.temporal_attention(F.linear(normed, attention._fast_qkv), frames, h * w, attention.heads)
        tokens, normed = _add_ln(tokens, attention.to_out[0](out), norms[i + 1], **pe[i + 1])
    tokens = tokens.add_(block.ff(normed))
    out = torch.addmm(self.proj_out.bias, tokens, self.proj_out.weight.t())
    return _image(out, x.shape).add_(x)


def _head(self, x: torch.Tensor, frames: int) -> torch.Tensor:
    x = self.conv_out(_group_norm(x, self.conv_norm_out, frames=frames, silu=True))
    bf, c, h, w = x.shape
    return x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)
