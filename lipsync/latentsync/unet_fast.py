"""The UNet's fused CUDA path: same model, same weights and state dict, faster forwards.

`enable_fast_path(unet)` switches a CUDA LatentSyncUNet to:
* channels-last (NHWC) activations end to end: convolutions run without cuDNN's layout conversions,
  and a (B*F, C, H, W) activation viewed as (B*F*H*W, C) transformer tokens is a free view, so the
  spatial and motion transformers run on tokens without a single permute;
* fused GroupNorm(+time-embedding offset)(+SiLU), GEGLU (inside the feed-forward GEMM on GPUs with
  TMA) and frame attention kernels (kernels.py);
* q/k/v (and cross-attention k/v) projections concatenated into one GEMM each; the motion modules'
  frame-position encoding added by the LayerNorm kernel in front of each frame attention;
* residual adds inside the GEMMs: every sublayer output that joins a residual stream (attention
  to_out, the second feed-forward projection, proj_out) is accumulated in place by cuBLAS
  (`addmm_`, beta = 1) instead of being written and added in another pass. Their biases, constants,
  are deferred: the LayerNorms in between normalise x + (biases so far) (`layer_norm(shift=)`), a
  transformer's deferred biases reach its output through proj_out (b + W_out @ deferred), and the
  output biases of a layer's transformers are added ahead of time by the resnet in front of them
  (its bias + residual pass), each transformer's input GroupNorm taking them off again (its
  `add` offset). Same sums, fewer passes over the activations;
* the up-samplers' nearest 2x + 3x3 convolution as one 2x2 convolution of the small input with four
  output phases (`nearest2x_conv`): the 3x3 taps that land on the same source pixel are summed
  ahead of time, 16 taps per source pixel instead of 36 (2.25x fewer FLOPs), and the 4x upsampled
  input is never written;
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
from lipsync.latentsync.unet_layers import Attention, FeedForward, ResnetBlock, Upsample
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
            module.forward = types.MethodType(_feed_forward_, module)
            proj = module.net[0].proj
            if kernels.FF_GEGLU_PAIR_ROWS and kernels.ff_geglu_weight_supported(proj.weight):
                module._fast_ff_rows = kernels.ff_geglu_pair_rows(proj.weight)
        elif isinstance(module, Upsample):
            module._fast_phases = nearest2x_conv_weights(module.conv)
            module.forward = types.MethodType(_upsample_forward, module)
        elif isinstance(module, UpBlock):
            module.run_up_layer = types.MethodType(_up_layer, module)
        if isinstance(module, Attention) and not hasattr(module, "_fast_kv"):
            module._fast_kv = _cat_weights(module.to_k, module.to_v)
            if module.to_q.in_features == module.to_k.in_features:  # self-attention: one qkv GEMM
                module._fast_qkv = _cat_weights(module.to_q, module.to_k, module.to_v)
    _defer_biases(unet)
    unet._head = types.MethodType(_head, unet)
    unet._prepare = types.MethodType(_prepare, unet)
    unet.fast_path = True
    return True


def disable_fast_path(unet: torch.nn.Module) -> None:
    """Back to the reference forwards (contiguous NCHW weights)."""
    for module in unet.modules():
        for name in _PATCHED:
            module.__dict__.pop(name, None)
        for name in [key for key in module.__dict__ if key.startswith("_fast_")]:
            module.__dict__.pop(name)
    unet.to(memory_format=torch.contiguous_format)
    unet.fast_path = False


def _defer_biases(unet: LatentSyncUNet) -> None:
    """The constant vectors of the deferred-bias scheme (float32, see the module docstring):
    `_fast_shifts` of each transformer block (what its LayerNorms add), `_fast_out_bias` of each
    transformer (b_out + W_out @ its deferred biases), `_fast_gn_add` (minus the output biases still
    in its input) and each resnet's `_fast_bias` (conv2 + shortcut biases + the output biases of the
    transformers after it in its layer)."""
    for module in unet.modules():
        if isinstance(module, SpatialTransformer):
            running = torch.zeros_like(module.proj_out.bias, dtype=torch.float32)
            for index, block in enumerate(module.transformer_blocks):
                shifts = [running.clone() if index else None]  # norm1 of the first block: nothing pending
                for linear in (block.attn1.to_out[0], block.attn2.to_out[0], block.ff.net[2]):
                    running += linear.bias.float()
                    shifts.append(running.clone())
                block._fast_shifts = tuple(shifts[:3])
            module._fast_out_bias = module.proj_out.bias.float() + module.proj_out.weight.flatten(1).float() @ running
        elif isinstance(module, TemporalTransformer):
            block = module.transformer_blocks[0]
            sublayers = [a.to_out[0] for a in block.attention_blocks] + [block.ff.net[2]]
            running, shifts = torch.zeros_like(module.proj_out.bias, dtype=torch.float32), [None]
            for linear in sublayers:
                running = running + linear.bias.float()
                shifts.append(running)
            module._fast_shifts = tuple(shifts[:3])
            module._fast_out_bias = module.proj_out.bias.float() + module.proj_out.weight.float() @ running
    layers = []  # (resnet, transformers after it in its layer)
    for block in [*unet.down_blocks, *unet.up_blocks]:
        for i in range(block.num_layers):
            after = [m[i] for m in (block.attentions, block.motion_modules) if len(m)]
            layers.append((block.resnets[i], [getattr(m, "temporal_transformer", m) for m in after]))
    mid = unet.mid_block
    layers += [(mid.resnets[0], [mid.attentions[0]]), (mid.resnets[1], [])]
    for resnet, transformers in layers:
        pending = torch.zeros_like(resnet.conv2.bias, dtype=torch.float32)
        for transformer in reversed(transformers):
            pending = pending + transformer._fast_out_bias
            transformer._fast_gn_add = -pending
        resnet._fast_bias = _resnet_bias(resnet).float() + pending
    for module in unet.modules():
        if isinstance(module, (SpatialTransformer, TemporalTransformer)) and not hasattr(module, "_fast_gn_add"):
            raise RuntimeError(f"fused path: {type(module).__name__} outside a resnet layer; cannot defer its biases")


def _resnet_bias(resnet) -> torch.Tensor:
    """What a resnet adds to conv2(h) + shortcut(x) when both convolutions run without bias."""
    return resnet.conv2.bias if resnet.conv_shortcut is None else resnet.conv2.bias + resnet.conv_shortcut.bias


@torch.no_grad()
def nearest2x_conv_weights(conv: torch.nn.Conv2d) -> torch.Tensor:
    """The weights of conv(nearest_2x(x)) (3x3, stride 1, padding 1) as one 2x2 convolution of x with
    four output phases: (4 * C_out, C_in, 2, 2), phase p = 2a + b (output pixel (2i + a, 2j + b)) at
    channels p * C_out ... Along each axis, phase 0 reads source pixels (i - 1, i) with taps
    (w0, w1 + w2) and phase 1 reads (i, i + 1) with (w0 + w1, w2); sums in float64."""
    w = conv.weight.double()

    def fold(t: torch.Tensor, dim: int, phase: int) -> torch.Tensor:
        w0, w1, w2 = t.unbind(dim)
        return torch.stack((w0, w1 + w2) if phase == 0 else (w0 + w1, w2), dim)

    phases = [fold(fold(w, 2, a), 3, b) for a in (0, 1) for b in (0, 1)]
    return torch.cat(phases).to(conv.weight.dtype).contiguous(memory_format=torch.channels_last)


# False: nearest2x_conv interleaves its four phases with four strided torch copies / adds (A/B, debugging).
PHASE_INTERLEAVE_KERNEL = True


def nearest2x_conv(x: torch.Tensor, phases: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """conv3x3(nearest_2x(x)) from `nearest2x_conv_weights`: one bias-free 2x2 convolution with padding 1
    gives (N, 4 C, H + 1, W + 1); phase (a, b) is its window [a : a + H, b : b + W], interleaved (plus
    the bias) into the (N, C, 2H, 2W) channels-last output (on CUDA by kernels.phase_interleave, one pass)."""
    n, _, h, w = x.shape
    c = phases.shape[0] // 4
    out = F.conv2d(x, phases, None, padding=1)
    out = out.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).view(n, h + 1, w + 1, 4, c)
    if PHASE_INTERLEAVE_KERNEL and out.is_cuda and kernels.available():
        return kernels.phase_interleave(out, bias)
    y = torch.empty((n, c, 2 * h, 2 * w), device=x.device, dtype=out.dtype, memory_format=torch.channels_last)
    grid = y.permute(0, 2, 3, 1).view(n, h, 2, w, 2, c)
    for a in (0, 1):
        for b in (0, 1):
            phase = out[:, a:a + h, b:b + w, 2 * a + b]
            if bias is None:
                grid[:, :, a, :, b].copy_(phase)
            else:
                torch.add(phase, bias, out=grid[:, :, a, :, b])
    return y


def _upsample_forward(self: Upsample, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(size) != (2 * x.shape[-2], 2 * x.shape[-1]):  # an odd skip size: the reference way
        return self.conv(F.interpolate(x, size=size, mode="nearest"))
    return nearest2x_conv(x, self._fast_phases, self.conv.bias)


def _cat_weights(*linears: torch.nn.Linear) -> torch.Tensor:
    return torch.cat([linear.weight for linear in linears]).contiguous()


def _group_norm(x: torch.Tensor, norm: torch.nn.GroupNorm, **kw) -> torch.Tensor:
    return kernels.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps, **kw)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) channels-last -> (N*H*W, C) view."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n * h * w, c)


def _stream(x: torch.Tensor) -> torch.Tensor:
    """_tokens(x) for an in-place update: x must be channels-last (the view is then x's memory)."""
    if not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError("fused path: a residual input must be channels-last to be updated in place")
    return _tokens(x)


def _image(tokens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(N*H*W, C) -> (N, C, H, W) channels-last view."""
    n, c, h, w = shape
    return tokens.view(n, h, w, c).permute(0, 3, 1, 2)


# False: the up layers concatenate x and the skip as the reference does (A/B, debugging).
UP_LAYERS_WITHOUT_CAT = True


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
    """An up layer without torch.cat([x, skip]): its resnet reads the two (_resnet_pair_forward). A CFG
    pair's shared skip (conv_in's output, half the rows) goes to both halves."""
    if skip.shape[0] != x.shape[0]:
        skip = torch.cat([skip, skip])
    resnet = self.resnets[index]
    if not UP_LAYERS_WITHOUT_CAT or resnet.conv_shortcut is None or not kernels.concat_norm_supported(x.shape[1]):
        return self.run_layer(index, torch.cat([x, skip], dim=1), temb, context, frames)
    return self.run_layer_tail(index, _resnet_pair_forward(resnet, x, skip, temb, frames), context, frames)


def _resnet_pair_forward(self: ResnetBlock, x: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor,
                         frames: int) -> torch.Tensor:
    """_resnet_forward of torch.cat([x, skip], 1), the concatenation never written: the first norm reads
    both (kernels.group_norm x2=), and the 1x1 shortcut is two GEMMs accumulating into one output
    (its weight's columns split at x's channels)."""
    c = x.shape[1]
    h = F.conv2d(_group_norm(x, self.norm1, frames=frames, silu=True, x2=skip), self.conv1.weight, None, padding=1)
    offset = self.time_emb_proj(F.silu(temb)) + self.conv1.bias
    h = _group_norm(h, self.norm2, frames=frames, add=offset.expand(x.shape[0] // frames, -1), silu=True)
    h = F.conv2d(h, self.conv2.weight, None, padding=1)
    weight = self.conv_shortcut.weight.flatten(1)  # (C_out, C + C_skip)
    shortcut = torch.empty_like(h)
    torch.mm(_tokens(x), weight[:, :c].t(), out=_stream(shortcut))
    _stream(shortcut).addmm_(_tokens(skip), weight[:, c:].t())
    return kernels.add_bias_residual_(h, shortcut, self._fast_bias)


def _resnet_forward(self: ResnetBlock, x: torch.Tensor, temb: torch.Tensor, frames: int) -> torch.Tensor:
    """Convolutions without their bias (a separate broadcast pass in channels-last): conv1's bias
    joins the time embedding inside the second norm, conv2's (and the shortcut's) the residual add."""
    h = F.conv2d(_group_norm(x, self.norm1, frames=frames, silu=True), self.conv1.weight, None, padding=1)
    offset = self.time_emb_proj(F.silu(temb)) + self.conv1.bias  # (B, C) or (1, C), inside the norm
    offset = offset.expand(x.shape[0] // frames, -1)
    h = _group_norm(h, self.norm2, frames=frames, add=offset, silu=True)
    return resnet_output(self, h, x, self._fast_bias)  # + the deferred biases of the transformers after it


def resnet_output(resnet, h: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """conv2(h) + shortcut(x) + bias for a resnet with `conv2` (3x3) and an optional 1x1 `conv_shortcut`:
    both convolutions bias-free, `bias` (default: theirs) added with the residual in one pass (ours and
    diffusers' resnets share these names)."""
    h = F.conv2d(h, resnet.conv2.weight, None, padding=1)
    skip = x if resnet.conv_shortcut is None else F.conv2d(x, resnet.conv_shortcut.weight, None)
    return kernels.add_bias_residual_(h, skip, _resnet_bias(resnet) if bias is None else bias)


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


def _audio_attention_(attn: Attention, x: torch.Tensor, context, stream: torch.Tensor) -> None:
    """stream += attn2(x) without to_out's bias (deferred), x (N, L, C), stream (N*L, C). For a CFG pair
    the zero-audio half's attn2 is exactly that bias (K = V = 0: uniform weights over zero values), so
    only the audio half is computed."""
    weight = attn.to_out[0].weight.t()
    if not isinstance(context, CfgPairAudio):
        stream.addmm_(_cross_attention(attn, x, context), weight)
        return
    split = context.half * x.shape[1]
    stream[split:].addmm_(_cross_attention(attn, x[context.half:], context.tokens[context.half:]), weight)


def _ln(x: torch.Tensor, norm: torch.nn.LayerNorm, shift: torch.Tensor | None, **pe) -> torch.Tensor:
    return kernels.layer_norm(x, norm.weight, norm.bias, norm.eps, shift=shift, **pe)


def _feed_forward_(self: FeedForward, x: torch.Tensor, stream: torch.Tensor) -> torch.Tensor:
    """stream += FF(x) without the second projection's bias (deferred), accumulated by the GEMM."""
    proj = self.net[0].proj
    if kernels.ff_geglu_supported(x, proj.weight):  # GEGLU in the GEMM's epilogue (TMA GPUs, 16-bit)
        hidden = kernels.ff_geglu(x, proj.weight, proj.bias, getattr(self, "_fast_ff_rows", None))
    else:
        hidden = kernels.geglu(F.linear(x, proj.weight, proj.bias))
    return stream.addmm_(hidden, self.net[2].weight.t())


def _basic_block_forward(self: BasicTransformerBlock, x: torch.Tensor, context) -> torch.Tensor:
    """x: (N, L, C) contiguous tokens, ours to update in place (the residual stream, its sublayer
    biases deferred: `_fast_shifts`). A CFG pair's shared prefix (N = half the audio rows) ends before
    the audio: the output has 2N rows then."""
    n, length, dim = x.shape
    flat = x.view(n * length, dim)
    shift1, shift2, shift3 = self._fast_shifts
    h = _ln(flat, self.norm1, shift1).view(n, length, dim)
    flat.addmm_(_self_attention(self.attn1, h), self.attn1.to_out[0].weight.t())
    h = _ln(flat, self.norm2, shift2)
    if isinstance(context, CfgPairAudio) and n == context.half:
        flat, h, n = flat.repeat(2, 1), h.repeat(2, 1), 2 * n
    _audio_attention_(self.attn2, h.view(n, length, dim), context, flat)
    self.ff(_ln(flat, self.norm3, shift3), flat)
    return flat.view(n, length, dim)


def _spatial_forward(self: SpatialTransformer, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """x carries this transformer's output biases ahead of time (added by the resnet before it; the
    GroupNorm takes them off), so the output is x + proj_out(tokens) without a bias, accumulated into x
    in place by the GEMM."""
    bf, c, h, w = x.shape
    normed = _group_norm(x, self.norm, add=self._fast_gn_add.expand(bf, -1))
    tokens = F.linear(_tokens(normed), self.proj_in.weight.view(c, c), self.proj_in.bias).view(bf, h * w, c)
    for block in self.transformer_blocks:
        tokens = block(tokens, context)
    n = tokens.shape[0]
    weight = self.proj_out.weight.view(c, c).t()
    flat = tokens.view(n * h * w, c)
    if n == bf:
        _stream(x).addmm_(flat, weight)
        return x
    # A CFG pair's shared prefix ended in the block: x is the input of both halves.
    out = torch.empty_like(flat)
    for src, dst in zip(flat.chunk(2), out.chunk(2)):
        torch.addmm(_tokens(x), src, weight, out=dst)
    return _image(out, (n, c, h, w))


def _temporal_forward(self: TemporalTransformer, x: torch.Tensor, frames: int) -> torch.Tensor:
    """Tokens stay in (sample, frame, position) order; the attention kernel gathers across frames. Each
    attention's frame-position encoding is added by the LayerNorm in front of it (the reference adds
    it to the normed tokens, then projects). Output biases as in _spatial_forward."""
    bf, c, h, w = x.shape
    if frames > self.max_len:
        raise ValueError(f"a chunk holds at most {self.max_len} frames; got {frames}")
    tokens = self.proj_in(_tokens(_group_norm(x, self.norm, add=self._fast_gn_add.expand(bf, -1))))
    block = self.transformer_blocks[0]
    attentions = block.attention_blocks
    norms = [*block.norms, block.ff_norm]
    pe = [{"pe": a.pos_encoder.pe[0, :frames], "hw": h * w} for a in attentions] + [{}]
    normed = _ln(tokens, norms[0], self._fast_shifts[0], **pe[0])
    for i, attention in enumerate(attentions):
        out = kernels.temporal_attention(F.linear(normed, attention._fast_qkv), frames, h * w, attention.heads)
        tokens.addmm_(out, attention.to_out[0].weight.t())
        normed = _ln(tokens, norms[i + 1], self._fast_shifts[i + 1], **pe[i + 1])
    block.ff(normed, tokens)
    _stream(x).addmm_(tokens, self.proj_out.weight.t())
    return x


def _head(self, x: torch.Tensor, frames: int) -> torch.Tensor:
    x = self.conv_out(_group_norm(x, self.conv_norm_out, frames=frames, silu=True))
    bf, c, h, w = x.shape
    return x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)
