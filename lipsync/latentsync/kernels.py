"""Fused GPU kernels (Triton) for the LatentSync UNet's memory-bound glue.

The profile of the eager UNet (bench/latentsync_profile.py, H200, bf16) put about half of a call in
memory-bound work around the GEMMs: GroupNorm statistics over few, very long rows (the frame-pooled
resnet norms), transposes around them and around the motion modules, an unfused GEGLU, broadcast adds
and cuDNN's NCHW<->NHWC conversions. The fast path (unet_fast.py) keeps activations channels-last
(NHWC: transformer tokens are free views) and replaces that glue with these kernels:

* `group_norm`: GroupNorm (optionally pooled over the frames of a sample, optionally of x plus a
  per-sample channel offset, optionally followed by SiLU) in three launches: per-tile channel moments,
  a per-(sample, group) combine (Chan's parallel mean/M2: no sum-of-squares cancellation), and one
  scale/shift(/SiLU) pass;
* `geglu`: value * GELU(gate) (exact erf) over the two halves of one projection, in one pass;
* `add_bias_residual_`: a bias-free convolution's bias plus the resnet residual, in one pass;
* `layer_norm` / `add_layer_norm`: LayerNorm over many short rows per program (the native kernel
  runs one row per block), the second also adding the sublayer output to the residual stream;
* `temporal_attention`: softmax attention across the F frames at every spatial position, reading q/k/v
  straight from the fused qkv projection in (sample, frame, position) token order (no permutes), with
  the motion module's frame-position encoding folded in as per-frame q/k/v offsets.

Everything here needs CUDA and Triton; `available()` says whether they are present. The pure PyTorch
path in unet_layers / unet_transformers stays the CPU path and the parity oracle (tests compare the
two on the GPU).
"""
from __future__ import annotations

import math

import torch

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs (CI) run the reference path.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

GN_BLOCK_HW = 128  # positions per moments / apply tile
GN_BLOCK_C = 64  # channels per tile (every LatentSync width is a multiple of 64)
# Frame attention: one head per program, one warp (two past 128 padded head dims): the fastest of the
# heads-per-program x warps sweep at C=640 and within 12% of it at C=320 (bench/latentsync_kernels.py,
# H200). Tried: tokens in (sample, position, frame) order, so a position's frames are contiguous (the
# norm writing them so, the residual add reading them back): no faster at C=320, so not kept.
TEMPORAL_HEADS_PER_PROGRAM = 1
TEMPORAL_WARPS = 1


def available() -> bool:
    """True when the fused kernels can run here (Triton importable and a CUDA device present)."""
    return triton is not None and torch.cuda.is_available()


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


if triton is not None:

    @triton.jit
    def _channel_moments_kernel(x_ptr, mean_ptr, m2_ptr, HW, C, T,
                                BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
        """x: (N, HW, C) contiguous. Program (n * T + t, cb): mean and M2 (sum of squared deviations) of
        each channel of block cb over position block t of image n. Outputs (N, T, C) float32."""
        row = tl.program_id(0)
        cb = tl.program_id(1)
        n = row // T
        t = row % T
        hw = t * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        mask = (hw[:, None] < HW) & (c[None, :] < C)
        offsets = (n * HW + hw[:, None]).to(tl.int64) * C + c[None, :]
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        count = tl.minimum(HW - t * BLOCK_HW, BLOCK_HW).to(tl.float32)
        mean = tl.sum(x, axis=0) / count
        d = tl.where(mask, x - mean[None, :], 0.0)
        m2 = tl.sum(d * d, axis=0)
        out = (n * T + t) * C + c
        tl.store(mean_ptr + out, mean, mask=c < C)
        tl.store(m2_ptr + out, m2, mask=c < C)

    @triton.jit
    def _group_combine_kernel(mean_ptr, m2_ptr, add_ptr, w_ptr, b_ptr, scale_ptr, shift_ptr,
                              HW, C, T, CG, ROWS, TILE_HW, eps,
                              HAS_ADD: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_CG: tl.constexpr):
        """Program (s, g): combine the ROWS = frames * T tile moments of group g of sample s (Chan et al.)
        into the group's mean and variance, then write per-channel scale and shift such that
        x * scale + shift == ((x + add) - mean) * rstd * weight + bias."""
        s = tl.program_id(0)
        g = tl.program_id(1)
        lane = tl.arange(0, BLOCK_CG)
        cmask = lane < CG
        c = g * CG + lane
        if HAS_ADD:
            add = tl.load(add_ptr + s * C + c, mask=cmask, other=0.0).to(tl.float32)
        else:
            add = tl.zeros([BLOCK_CG], dtype=tl.float32)
        total = (ROWS // T) * HW * CG
        # pass 1: mean of the group (tile means weighted by tile sizes)
        acc = tl.zeros([BLOCK_R, BLOCK_CG], dtype=tl.float32)
        for r0 in range(0, ROWS, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            mask = (r[:, None] < ROWS) & cmask[None, :]
            count = tl.minimum(HW - (r % T) * TILE_HW, TILE_HW).to(tl.float32)
            m = tl.load(mean_ptr + (s * ROWS + r[:, None]) * C + c[None, :], mask=mask, other=0.0)
            acc += tl.where(mask, count[:, None] * (m + add[None, :]), 0.0)
        mean = tl.sum(tl.sum(acc, axis=1), axis=0) / total
        # pass 2: M2 = sum of the tiles' M2 + sum of count * (tile mean - group mean)^2
        acc = tl.zeros([BLOCK_R, BLOCK_CG], dtype=tl.float32)
        for r0 in range(0, ROWS, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            mask = (r[:, None] < ROWS) & cmask[None, :]
            count = tl.minimum(HW - (r % T) * TILE_HW, TILE_HW).to(tl.float32)
            offsets = (s * ROWS + r[:, None]) * C + c[None, :]
            m = tl.load(mean_ptr + offsets, mask=mask, other=0.0)
            m2 = tl.load(m2_ptr + offsets, mask=mask, other=0.0)
            d = m + add[None, :] - mean
            acc += tl.where(mask, m2 + count[:, None] * d * d, 0.0)
        var = tl.sum(tl.sum(acc, axis=1), axis=0) / total
        rstd = 1.0 / tl.sqrt(var + eps)
        w = tl.load(w_ptr + c, mask=cmask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + c, mask=cmask, other=0.0).to(tl.float32)
        scale = rstd * w
        tl.store(scale_ptr + s * C + c, scale, mask=cmask)
        tl.store(shift_ptr + s * C + c, b + (add - mean) * scale, mask=cmask)

    @triton.jit
    def _scale_shift_kernel(x_ptr, y_ptr, scale_ptr, shift_ptr, HW, C, T, FRAMES,
                            SILU: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
        """y = x * scale[s, c] + shift[s, c] (then SiLU), x / y (N, HW, C), s = n // FRAMES."""
        row = tl.program_id(0)
        cb = tl.program_id(1)
        n = row // T
        t = row % T
        s = n // FRAMES
        hw = t * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        mask = (hw[:, None] < HW) & (c[None, :] < C)
        offsets = (n * HW + hw[:, None]).to(tl.int64) * C + c[None, :]
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        scale = tl.load(scale_ptr + s * C + c, mask=c < C, other=0.0)
        shift = tl.load(shift_ptr + s * C + c, mask=c < C, other=0.0)
        y = x * scale[None, :] + shift[None, :]
        if SILU:
            y = y / (1.0 + tl.exp(-y))
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _geglu_kernel(h_ptr, out_ptr, M, INNER, BLOCK: tl.constexpr):
        """out[m, i] = h[m, i] * gelu(h[m, INNER + i]) (erf GELU); h (M, 2 * INNER), out (M, INNER)."""
        idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = idx < M * INNER
        m = idx // INNER
        i = idx % INNER
        value = tl.load(h_ptr + m * (2 * INNER) + i, mask=mask, other=0.0).to(tl.float32)
        gate = tl.load(h_ptr + m * (2 * INNER) + INNER + i, mask=mask, other=0.0).to(tl.float32)
        gelu = 0.5 * gate * (1.0 + tl.math.erf(gate * 0.7071067811865476))
        tl.store(out_ptr + idx, (value * gelu).to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _bias_residual_kernel(h_ptr, skip_ptr, bias_ptr, TOTAL, C, BLOCK: tl.constexpr):
        """h += skip + bias[c] over channels-last (..., C) tensors, in place (one pass)."""
        idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = idx < TOTAL
        h = tl.load(h_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        skip = tl.load(skip_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        bias = tl.load(bias_ptr + idx % C, mask=mask, other=0.0).to(tl.float32)
        tl.store(h_ptr + idx, (h + skip + bias).to(h_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _layer_norm_kernel(x_ptr, y_ptr, sum_ptr, out_ptr, w_ptr, b_ptr, M, C, eps,
                           ADD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        """out = LayerNorm(x) over rows of C, or with ADD: sum = x + y (stored, model dtype) and
        out = LayerNorm(sum). Float32 statistics; BLOCK_M rows per program."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_C)
        mask = (rows[:, None] < M) & (cols[None, :] < C)
        offsets = rows[:, None].to(tl.int64) * C + cols[None, :]
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0)
        if ADD:
            x = (x.to(tl.float32) + tl.load(y_ptr + offsets, mask=mask, other=0.0).to(tl.float32)).to(x.dtype)
            tl.store(sum_ptr + offsets, x, mask=mask)  # the residual stream, rounded as the reference rounds it
        x = x.to(tl.float32)
        mean = tl.sum(x, axis=1) / C
        d = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / C + eps)
        w = tl.load(w_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
        out = d * rstd[:, None] * w[None, :] + b[None, :]
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _temporal_attention_kernel(qkv_ptr, pe_ptr, out_ptr, FRAMES, HW, C, HEADS, D: tl.constexpr, sm_scale,
                                   HAS_PE: tl.constexpr, IEEE: tl.constexpr, BLOCK_H: tl.constexpr,
                                   BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr):
        """Program (b * HW + p, head block): attention over the frames of position p of sample b for
        BLOCK_H heads. Token (b, f, p) is row (b * FRAMES + f) * HW + p of qkv (rows of [q | k | v],
        head h at columns h * D ... h * D + D - 1 of each third) and of out (rows of C). D is a
        compile-time constant: the head-column mask then falls on 8-element boundaries (every LatentSync
        head size is a multiple of 8), so loads and stores are 16-byte vectors, not single elements."""
        pid = tl.program_id(0)
        hb = tl.program_id(1)
        h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
        f = tl.arange(0, BLOCK_F)
        d = tl.arange(0, BLOCK_D)
        token = (pid // HW * FRAMES + f) * HW + pid % HW  # [F]
        col = h[:, None, None] * D + d[None, None, :]  # [H, 1, D]
        mask = (h[:, None, None] < HEADS) & (f[None, :, None] < FRAMES) & (d[None, None, :] < D)
        base = qkv_ptr + token[None, :, None].to(tl.int64) * (3 * C) + col
        q = tl.load(base, mask=mask, other=0.0).to(tl.float32)
        k = tl.load(base + C, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(base + 2 * C, mask=mask, other=0.0).to(tl.float32)
        if HAS_PE:  # (frames, 3C) per-frame offsets: pe @ [Wq | Wk | Wv]^T
            pe = pe_ptr + f[None, :, None] * (3 * C) + col
            q += tl.load(pe, mask=mask, other=0.0)
            k += tl.load(pe + C, mask=mask, other=0.0)
            v += tl.load(pe + 2 * C, mask=mask, other=0.0)
        dtype = qkv_ptr.dtype.element_ty
        if IEEE:  # float32 model: full-precision products (no TF32)
            scores = tl.dot(q, tl.trans(k, (0, 2, 1)), input_precision="ieee") * sm_scale  # [H, F, F]
        else:
            scores = tl.dot(q.to(dtype), tl.trans(k.to(dtype), (0, 2, 1))) * sm_scale
        valid_key = (tl.arange(0, BLOCK_F) < FRAMES)[None, None, :]
        scores = tl.where(valid_key, scores, float("-inf"))
        scores = scores - tl.max(scores, axis=2)[:, :, None]
        weights = tl.exp(scores)
        weights = weights / tl.sum(weights, axis=2)[:, :, None]
        if IEEE:
            out = tl.dot(weights, v, input_precision="ieee")  # [H, F, D]
        else:
            out = tl.dot(weights.to(dtype), v.to(dtype))
        dst = out_ptr + token[None, :, None].to(tl.int64) * C + col
        tl.store(dst, out.to(out_ptr.dtype.element_ty), mask=mask)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous(memory_format=torch.channels_last)


def group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float, *,
               frames: int = 1, add: torch.Tensor | None = None, silu: bool = False) -> torch.Tensor:
    """GroupNorm of x (N, C, H, W) with statistics pooled over each run of `frames` consecutive images
    (frames=1: plain per-image GroupNorm), of `x + add[n // frames]` when `add` (N / frames, C) is given,
    then SiLU when asked. Returns a channels-last tensor of x's dtype (x is made channels-last first)."""
    n, c, h, w = x.shape
    if n % frames or c % num_groups:
        raise ValueError(f"GroupNorm: {n} images not a multiple of {frames} frames or {c} channels of {num_groups} groups")
    x = _channels_last(x)
    hw = h * w
    tiles = triton.cdiv(hw, GN_BLOCK_HW)
    c_blocks = triton.cdiv(c, GN_BLOCK_C)
    mean = torch.empty((n, tiles, c), device=x.device, dtype=torch.float32)
    m2 = torch.empty_like(mean)
    _channel_moments_kernel[(n * tiles, c_blocks)](x, mean, m2, hw, c, tiles, BLOCK_HW=GN_BLOCK_HW, BLOCK_C=GN_BLOCK_C)
    samples = n // frames
    scale = torch.empty((samples, c), device=x.device, dtype=torch.float32)
    shift = torch.empty_like(scale)
    cg = c // num_groups
    if add is not None and tuple(add.shape) != (samples, c):
        raise ValueError(f"GroupNorm add must be ({samples}, {c}); got {tuple(add.shape)}")
    add_arg = add.contiguous() if add is not None else scale  # dummy pointer when unused
    _group_combine_kernel[(samples, num_groups)](
        mean, m2, add_arg, weight, bias, scale, shift, hw, c, tiles, cg, frames * tiles, GN_BLOCK_HW, float(eps),
        HAS_ADD=add is not None, BLOCK_R=64, BLOCK_CG=_pow2(cg))
    y = torch.empty_like(x)
    _scale_shift_kernel[(n * tiles, c_blocks)](x, y, scale, shift, hw, c, tiles, frames, SILU=silu,
                                               BLOCK_HW=GN_BLOCK_HW, BLOCK_C=GN_BLOCK_C)
    return y


def geglu(h: torch.Tensor) -> torch.Tensor:
    """h (..., 2 * inner) -> value * GELU(gate), value = first half, gate = second half (erf GELU)."""
    h = h.contiguous()
    inner = h.shape[-1] // 2
    rows = h.numel() // h.shape[-1]
    out = torch.empty((*h.shape[:-1], inner), device=h.device, dtype=h.dtype)
    block = 1024
    _geglu_kernel[(triton.cdiv(rows * inner, block),)](h, out, rows, inner, BLOCK=block)
    return out


def add_bias_residual_(h: torch.Tensor, skip: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """h += skip + bias (bias per channel), in place; h and skip (N, C, H, W) channels-last. The
    bias-free convolution's bias and the residual add in one pass; returns h."""
    if not (h.is_contiguous(memory_format=torch.channels_last) and skip.shape == h.shape):
        raise ValueError("add_bias_residual_: h must be channels-last and skip of its shape")
    skip = _channels_last(skip)
    total = h.numel()
    block = 2048
    _bias_residual_kernel[(triton.cdiv(total, block),)](h, skip, bias.contiguous(), total, h.shape[1], BLOCK=block)
    return h


def _layer_norm_launch(x: torch.Tensor, y: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    c = x.shape[-1]
    if not x.is_contiguous() or (y is not None and (not y.is_contiguous() or y.shape != x.shape)):
        raise ValueError("layer_norm: x (and y) must be contiguous and of one shape")
    rows = x.numel() // c
    block_c = _pow2(c)
    block_m = max(1, min(64, 4096 // block_c))
    out = torch.empty_like(x)
    _layer_norm_kernel[(triton.cdiv(rows, block_m),)](
        x, y if y is not None else x, x, out, weight, bias, rows, c, float(eps),
        ADD=y is not None, BLOCK_M=block_m, BLOCK_C=block_c, num_warps=4 if block_c <= 1024 else 8)
    return x, out


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last dim of a contiguous x (float32 statistics), in x's dtype."""
    return _layer_norm_launch(x, None, weight, bias, eps)[1]


def add_layer_norm(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x += y IN PLACE (the residual stream), and LayerNorm of the new x; returns (x, normed)."""
    return _layer_norm_launch(x, y, weight, bias, eps)


def temporal_attention(qkv: torch.Tensor, frames: int, hw: int, heads: int,
                       frame_offsets: torch.Tensor | None = None, *, block_h: int | None = None,
                       num_warps: int | None = None) -> torch.Tensor:
    """Self-attention across frames. qkv: (B * frames * hw, 3C) rows ordered (sample, frame, position),
    columns [q | k | v]; frame_offsets: (>= frames, 3C) float32 added to frame f's q/k/v (the position
    encoding pushed through the projections), or None. Returns (B * frames * hw, C) in qkv's dtype."""
    rows, c3 = qkv.shape
    c = c3 // 3
    d = c // heads
    if rows % (frames * hw) or c % heads:
        raise ValueError(f"temporal attention: {rows} tokens not (B x {frames} x {hw}) or {c} not {heads} heads")
    qkv = qkv.contiguous()
    block_d = max(16, _pow2(d))
    block_h = block_h or TEMPORAL_HEADS_PER_PROGRAM
    num_warps = num_warps or (TEMPORAL_WARPS if block_d <= 128 else 2 * TEMPORAL_WARPS)
    out = torch.empty((rows, c), device=qkv.device, dtype=qkv.dtype)
    pe = frame_offsets if frame_offsets is not None else qkv
    grid = (rows // frames, triton.cdiv(heads, block_h))
    _temporal_attention_kernel[grid](qkv, pe, out, frames, hw, c, heads, d, 1.0 / math.sqrt(d),
                                     HAS_PE=frame_offsets is not None, IEEE=qkv.dtype == torch.float32,
                                     BLOCK_H=block_h, BLOCK_F=max(16, _pow2(frames)), BLOCK_D=block_d,
                                     num_warps=num_warps)
    return out
