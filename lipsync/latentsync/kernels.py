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
* `ff_geglu`: the feed-forward's first projection with its GEGLU (value * GELU(gate), exact erf) in
  the GEMM's epilogue, so the 2 x inner projection is never written: a persistent, warp-specialised
  Triton GEMM with TMA loads (Hopper and later), one (128, 256) tile holding 128 value and the matching
  128 gate columns. H200, bf16, bench/latentsync_kernels.py: 1.18 ms against 1.37 for cuBLAS + `geglu`
  at v1.6's first level, 0.95 against 1.01 at the second; the v1.6 UNet 77.1-77.3 ms per chunk
  against 80.3-80.7. (The same GEMM without warp specialisation was only level with cuBLAS + the
  separate pass, and so were the plain and TMA versions tried before.) `geglu` is that separate pass,
  for GPUs without TMA and for float32;
* `add_bias_residual_`: a bias-free convolution's bias plus the resnet residual, in one pass;
* `phase_interleave`: the phase up-sampler's four output phases (plus its bias) into the 2x image, in
  one pass;
* `layer_norm`: LayerNorm over many short rows per program (the native kernel runs one row per
  block), optionally of x plus a per-channel shift it does not write back (the UNet's residual
  streams take their sublayer outputs inside the GEMMs and add the biases late: unet_fast.py);
* `temporal_attention`: softmax attention across the F frames at every spatial position, reading q/k/v
  straight from the fused qkv projection in (sample, frame, position) token order (no permutes); the
  motion module's frame-position encoding is added by the LayerNorm that feeds the projection.

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
try:  # host-side TMA descriptors; ff_geglu also needs warp specialisation on Hopper: Triton 3.6 measured
    from triton.tools.tensor_descriptor import TensorDescriptor as _TensorDescriptor
    _TRITON_VERSION = tuple(int(part) for part in triton.__version__.split(".")[:2])
    TensorDescriptor = _TensorDescriptor if _TRITON_VERSION >= (3, 6) else None
except (ImportError, AttributeError, ValueError):  # pragma: no cover - depends on the install
    TensorDescriptor = None

GN_BLOCK_HW = 128  # positions per moments / apply tile
GN_BLOCK_C = 64  # channels per tile (every LatentSync width is a multiple of 64)
# Frame attention: one head per program, two warps (bench/latentsync_kernels.py sweeps warps, H200).
# Tried and not kept: several heads per program (slower at C=320), tokens in (sample, position, frame)
# order (no faster at C=320), channel-major q/k/v with the scores built channel by channel on the CUDA
# cores (0.79 ms against 0.60 at C=320). With the head split and the position encoding moved to the
# LayerNorm: 0.51 ms at C=320 (was 0.61), 0.145 ms at C=640 (was 0.30) with two warps.
TEMPORAL_WARPS = 2
# ff_geglu tiles: BLOCK_M, BLOCK_N (value + gate columns: BLOCK_N / 2 outputs), BLOCK_K, GROUP_M, stages,
# warps (H200 sweep, bench/latentsync_kernels.py: 1.18 ms against 1.25 with 4 stages at the first level).
FF_GEGLU_TILES = (128, 256, 64, 8, 3, 8)
# The fast path gives ff_geglu a copy of each projection weight in tile order (ff_geglu_pair_rows):
# one 2-D load per K step instead of a 3-D one (77.1-77.3 against 77.5 ms per v1.6 chunk; the copies
# take 0.4 GiB at v1.6).
FF_GEGLU_PAIR_ROWS = True
# False: the fast path keeps cuBLAS + the separate `geglu` pass everywhere (A/B, debugging).
FF_GEGLU = True


def available() -> bool:
    """True when the fused kernels can run here (Triton importable and a CUDA device present)."""
    return triton is not None and torch.cuda.is_available()


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


if triton is not None:

    @triton.jit
    def _source(x_ptr, x2_ptr, c0, C, C1, TWO: tl.constexpr):
        """(pointer, first channel, channels) of the tensor holding channel block c0... of the virtual
        cat([x (C1 channels), x2 (C - C1)], channels) when TWO; x itself (C1 == C) otherwise. A channel
        block never straddles the two (the host checks C1 % BLOCK_C == 0)."""
        ptr = x_ptr
        first = C1 * 0
        width = C1
        if TWO:
            if c0 >= C1:
                ptr = x2_ptr
                first = C1
                width = C - C1
        return ptr, first, width

    @triton.jit
    def _channel_moments_kernel(x_ptr, x2_ptr, mean_ptr, m2_ptr, HW, C, C1, T,
                                TWO: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
        """x: (N, HW, C) contiguous (with TWO: x (N, HW, C1) and x2 (N, HW, C - C1), read as their
        channel concatenation). Program (n * T + t, cb): mean and M2 (sum of squared deviations) of
        each channel of block cb over position block t of image n. Outputs (N, T, C) float32."""
        row = tl.program_id(0)
        cb = tl.program_id(1)
        n = row // T
        t = row % T
        hw = t * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        src, first, width = _source(x_ptr, x2_ptr, cb * BLOCK_C, C, C1, TWO)
        mask = (hw[:, None] < HW) & (c[None, :] < C)
        offsets = (n * HW + hw[:, None]).to(tl.int64) * width + (c[None, :] - first)
        x = tl.load(src + offsets, mask=mask, other=0.0).to(tl.float32)
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
    def _scale_shift_kernel(x_ptr, x2_ptr, y_ptr, scale_ptr, shift_ptr, HW, C, C1, T, FRAMES, TWO: tl.constexpr,
                            SILU: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
        """y = x * scale[s, c] + shift[s, c] (then SiLU), x / y (N, HW, C), s = n // FRAMES; with TWO, x
        is the channel concatenation of x (C1 channels) and x2 (see _source), y (N, HW, C) as before."""
        row = tl.program_id(0)
        cb = tl.program_id(1)
        n = row // T
        t = row % T
        s = n // FRAMES
        hw = t * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        src, first, width = _source(x_ptr, x2_ptr, cb * BLOCK_C, C, C1, TWO)
        mask = (hw[:, None] < HW) & (c[None, :] < C)
        position = (n * HW + hw[:, None]).to(tl.int64)
        x = tl.load(src + position * width + (c[None, :] - first), mask=mask, other=0.0).to(tl.float32)
        offsets = position * C + c[None, :]
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
    def _ff_geglu_kernel(a_desc, w_desc, out_desc, bias_ptr, M, INNER, K, PROGRAMS: tl.constexpr,
                         BLOCK_M: tl.constexpr, HALF: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                         STAGES: tl.constexpr, VIEW3D: tl.constexpr):
        """out = GEGLU(a @ W^T + b): a (M, K), out (M, INNER), b (2 * INNER,) value biases then gate biases.
        VIEW3D: W as nn.Linear holds it (value rows, then gate rows) viewed (2, INNER, K), each K step
        loading the value and the gate rows of a tile in one 3-D block; else W in `ff_geglu_pair_rows`
        order (HALF value rows then HALF gate rows per tile). Either way one (BLOCK_M, 2 * HALF) product
        per tile, whose halves are value and gate. Persistent: program p takes tiles p, p + PROGRAMS, ...
        (grouped by GROUP_M row tiles for L2 reuse of W)."""
        BLOCK_N: tl.constexpr = 2 * HALF
        tiles_m = tl.cdiv(M, BLOCK_M)
        tiles_n = tl.cdiv(INNER, HALF)
        per_group = GROUP_M * tiles_n
        k_steps = tl.cdiv(K, BLOCK_K)
        for tile in tl.range(tl.program_id(0), tiles_m * tiles_n, PROGRAMS, flatten=True, warp_specialize=True):
            first_m = tile // per_group * GROUP_M
            rows_in_group = min(tiles_m - first_m, GROUP_M)
            m0 = (first_m + tile % per_group % rows_in_group) * BLOCK_M
            n0 = tile % per_group // rows_in_group * HALF
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for k in tl.range(k_steps, num_stages=STAGES):
                a = a_desc.load([m0, k * BLOCK_K])
                if VIEW3D:
                    w = tl.reshape(w_desc.load([0, n0, k * BLOCK_K]), (BLOCK_N, BLOCK_K))
                else:
                    w = w_desc.load([2 * n0, k * BLOCK_K])
                acc = tl.dot(a, w.T, acc)
            value, gate = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, HALF)), (0, 2, 1)))
            cols = n0 + tl.arange(0, HALF)
            value += tl.load(bias_ptr + cols).to(tl.float32)[None, :]
            gate += tl.load(bias_ptr + INNER + cols).to(tl.float32)[None, :]
            out = value * (0.5 * gate * (1.0 + tl.math.erf(gate * 0.7071067811865476)))
            out_desc.store([m0, n0], out.to(out_desc.dtype))

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
    def _phase_interleave_kernel(src_ptr, bias_ptr, out_ptr, H, W, C, HAS_BIAS: tl.constexpr,
                                 BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
        """The up-sampler's phase interleave: src (N, H + 1, W + 1, 4, C) contiguous (the 2x2 convolution's
        channels-last output, four phases of C), out (N, 2H, 2W, C) contiguous with
        out[n, 2i + a, 2j + b, c] = src[n, i + a, j + b, 2a + b, c] (+ bias[c]). Program (n * 2H + row,
        column block, channel block); the sum is taken in float32 and rounded once, as torch.add does."""
        row = tl.program_id(0)
        n = row // (2 * H)
        r = row % (2 * H)
        i = r // 2
        a = r % 2
        q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        j = q // 2
        b = q % 2
        mask = (q < 2 * W)[:, None] & (c < C)[None, :]
        pixel = (n * (H + 1) + i + a).to(tl.int64) * (W + 1) + j + b
        src = pixel[:, None] * (4 * C) + ((2 * a + b) * C)[:, None] + c[None, :]
        x = tl.load(src_ptr + src, mask=mask, other=0.0)
        if HAS_BIAS:
            x = x.to(tl.float32) + tl.load(bias_ptr + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
        dst = (row.to(tl.int64) * (2 * W) + q)[:, None] * C + c[None, :]
        tl.store(out_ptr + dst, x.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _layer_norm_kernel(x_ptr, out_ptr, w_ptr, b_ptr, shift_ptr, pe_ptr, M, C, FRAMES, HW, eps,
                           SHIFT: tl.constexpr, PE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        """out = LayerNorm(x + shift) over rows of C (float32 statistics, x itself unchanged); BLOCK_M rows
        per program. SHIFT: a float32 per-channel vector (the biases the residual stream has not had
        added yet). PE: plus the frame-position row pe[(row // HW) % FRAMES] (rows ordered (sample,
        frame, position))."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_C)
        mask = (rows[:, None] < M) & (cols[None, :] < C)
        offsets = rows[:, None].to(tl.int64) * C + cols[None, :]
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if SHIFT:
            x += tl.load(shift_ptr + cols, mask=cols < C, other=0.0)[None, :]
        mean = tl.sum(x, axis=1) / C
        d = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / C + eps)
        w = tl.load(w_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
        out = d * rstd[:, None] * w[None, :] + b[None, :]
        if PE:
            frame = (rows // HW) % FRAMES
            out += tl.load(pe_ptr + frame[:, None] * C + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _dot(a, b, acc, IEEE: tl.constexpr):
        """a @ b (+ acc); IEEE: float32 model, full-precision products (no TF32)."""
        if IEEE:
            out = tl.dot(a, b, acc, input_precision="ieee")
        else:
            out = tl.dot(a, b, acc)
        return out

    @triton.jit
    def _temporal_attention_kernel(qkv_ptr, out_ptr, FRAMES, HW, C, HEADS, sm_scale, D: tl.constexpr,
                                   D0: tl.constexpr, D1: tl.constexpr, IEEE: tl.constexpr, BLOCK_F: tl.constexpr):
        """Program (b * HW + p, h): attention over the frames of position p of sample b, head h. Token
        (b, f, p) is row (b * FRAMES + f) * HW + p of qkv (rows of [q | k | v], head h at columns
        h * D ... h * D + D - 1 of each third) and of out (rows of C). The head is split into D0 + D1
        columns (see head_split): two products instead of one padded to the next power of two."""
        pid = tl.program_id(0)
        h = tl.program_id(1)
        f = tl.arange(0, BLOCK_F)
        fmask = f < FRAMES
        token = ((pid // HW * FRAMES + f) * HW + pid % HW).to(tl.int64)
        row = qkv_ptr + token[:, None] * (3 * C) + h * D
        dst = out_ptr + token[:, None] * C + h * D
        c0 = tl.arange(0, D0)
        m0 = fmask[:, None] & (c0 < D)[None, :]
        q0 = tl.load(row + c0[None, :], mask=m0, other=0.0)
        k0 = tl.load(row + C + c0[None, :], mask=m0, other=0.0)
        scores = _dot(q0, tl.trans(k0), None, IEEE)
        if D1 > 0:
            c1 = D0 + tl.arange(0, D1)
            m1 = fmask[:, None] & (c1 < D)[None, :]
            q1 = tl.load(row + c1[None, :], mask=m1, other=0.0)
            k1 = tl.load(row + C + c1[None, :], mask=m1, other=0.0)
            scores = _dot(q1, tl.trans(k1), scores, IEEE)
        scores = tl.where(fmask[None, :], scores * sm_scale, float("-inf"))
        weights = tl.exp(scores - tl.max(scores, axis=1)[:, None])
        weights = (weights / tl.sum(weights, axis=1)[:, None]).to(q0.dtype)
        v0 = tl.load(row + 2 * C + c0[None, :], mask=m0, other=0.0)
        tl.store(dst + c0[None, :], _dot(weights, v0, None, IEEE).to(out_ptr.dtype.element_ty), mask=m0)
        if D1 > 0:
            v1 = tl.load(row + 2 * C + c1[None, :], mask=m1, other=0.0)
            out1 = _dot(weights, v1, None, IEEE)
            tl.store(dst + c1[None, :], out1.to(out_ptr.dtype.element_ty), mask=m1)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous(memory_format=torch.channels_last)


def concat_norm_supported(channels: int) -> bool:
    """Whether group_norm(x, ..., x2=) takes an x of this many channels (channel blocks of 16 or more
    that do not straddle x and x2)."""
    return channels % 16 == 0


def group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float, *,
               frames: int = 1, add: torch.Tensor | None = None, silu: bool = False,
               x2: torch.Tensor | None = None) -> torch.Tensor:
    """GroupNorm of x (N, C, H, W) with statistics pooled over each run of `frames` consecutive images
    (frames=1: plain per-image GroupNorm), of `x + add[n // frames]` when `add` (N / frames, C) is given,
    then SiLU when asked. Returns a channels-last tensor of x's dtype (x is made channels-last first).
    With `x2` (N, C2, H, W): the GroupNorm of torch.cat([x, x2], 1) (C + C2 channels, C a multiple of
    16: see concat_norm_supported), read from the two tensors: the concatenation is never written."""
    n, c, h, w = x.shape
    x = _channels_last(x)
    c1, block_c = c, GN_BLOCK_C
    if x2 is not None:
        if (x2.dim() != 4 or x2.shape[0] != n or x2.shape[2:] != x.shape[2:] or x2.dtype != x.dtype
                or not concat_norm_supported(c)):
            raise ValueError(f"GroupNorm of a concatenation: x {tuple(x.shape)} {x.dtype} and x2 "
                             f"{tuple(x2.shape)} {x2.dtype} must share N, H, W and dtype, and x's channels "
                             "must be a multiple of 16")
        x2 = _channels_last(x2)
        c += x2.shape[1]
        while c1 % block_c:  # channel blocks must not straddle x and x2
            block_c //= 2
    if n % frames or c % num_groups:
        raise ValueError(f"GroupNorm: {n} images not a multiple of {frames} frames or {c} channels of {num_groups} groups")
    hw = h * w
    tiles = triton.cdiv(hw, GN_BLOCK_HW)
    c_blocks = triton.cdiv(c, block_c)
    second = x2 if x2 is not None else x  # a pointer the kernels ignore when TWO is False
    mean = torch.empty((n, tiles, c), device=x.device, dtype=torch.float32)
    m2 = torch.empty_like(mean)
    _channel_moments_kernel[(n * tiles, c_blocks)](x, second, mean, m2, hw, c, c1, tiles, TWO=x2 is not None,
                                                   BLOCK_HW=GN_BLOCK_HW, BLOCK_C=block_c)
    samples = n // frames
    scale = torch.empty((samples, c), device=x.device, dtype=torch.float32)
    shift = torch.empty_like(scale)
    cg = c // num_groups
    if add is not None and tuple(add.shape) != (samples, c):
        raise ValueError(f"GroupNorm add must be ({samples}, {c}); got {tuple(add.shape)}")
    add_arg = add.contiguous() if add is not None else scale  # dummy pointer when unused
    # Up to 512 tile rows per step: the frame-pooled norms combine 16 frames x 32 tiles per group, and
    # few programs (samples x groups) each walking 64-row steps left it latency-bound (~18 us a call).
    block_r = min(512, _pow2(frames * tiles))
    _group_combine_kernel[(samples, num_groups)](
        mean, m2, add_arg, weight, bias, scale, shift, hw, c, tiles, cg, frames * tiles, GN_BLOCK_HW, float(eps),
        HAS_ADD=add is not None, BLOCK_R=block_r, BLOCK_CG=_pow2(cg), num_warps=8 if block_r >= 256 else 4)
    y = torch.empty((n, c, h, w), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    _scale_shift_kernel[(n * tiles, c_blocks)](x, second, y, scale, shift, hw, c, c1, tiles, frames, TWO=x2 is not None,
                                               SILU=silu, BLOCK_HW=GN_BLOCK_HW, BLOCK_C=block_c)
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


_SM_COUNT: dict[int, int] = {}


def ff_geglu_weight_supported(weight: torch.Tensor) -> bool:
    """Whether ff_geglu can run with this projection weight (2 * inner, K) here: 16-bit, on a GPU with
    TMA (compute capability 9 or later), inner a multiple of the tile's outputs, K a multiple of 8
    (16-byte rows for TMA)."""
    half = FF_GEGLU_TILES[1] // 2
    return (FF_GEGLU and TensorDescriptor is not None and available() and weight.is_cuda and weight.dim() == 2
            and weight.dtype in (torch.float16, torch.bfloat16) and weight.shape[0] % (2 * half) == 0
            and weight.shape[1] % 8 == 0 and torch.cuda.get_device_capability(weight.device)[0] >= 9)


def ff_geglu_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ff_geglu runs for input x (..., K) and projection weight (2 * inner, K) here."""
    return x.dtype == weight.dtype and x.shape[-1] == weight.shape[1] and ff_geglu_weight_supported(weight)


def ff_geglu_pair_rows(weight: torch.Tensor) -> torch.Tensor:
    """A copy of the projection weight (2 * inner, K) in ff_geglu's tile order: for each tile of
    FF_GEGLU_TILES' outputs, its value rows then its gate rows."""
    half = FF_GEGLU_TILES[1] // 2
    inner, k = weight.shape[0] // 2, weight.shape[1]
    return weight.view(2, inner // half, half, k).transpose(0, 1).reshape(2 * inner, k).contiguous()


def ff_geglu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, paired_rows: torch.Tensor | None = None
             ) -> torch.Tensor:
    """geglu(F.linear(x, weight, bias)) in one kernel: x (M, K) contiguous, weight (2 * inner, K) and
    bias (2 * inner,) as the feed-forward's nn.Linear holds them (value rows, then gate rows); returns
    (M, inner). `paired_rows`: ff_geglu_pair_rows(weight), made once, read instead of weight (same
    product, simpler loads). The projection stays in float32 until the GEGLU (one rounding, where the
    two-pass path rounds the projection first). Raises ValueError where ff_geglu_supported is False."""
    if x.dim() != 2 or not x.is_contiguous() or not ff_geglu_supported(x, weight):
        raise ValueError(f"ff_geglu: unsupported input {tuple(x.shape)} {x.dtype} / weight {tuple(weight.shape)}")
    block_m, block_n, block_k, group_m, stages, warps = FF_GEGLU_TILES
    half = block_n // 2
    m, k = x.shape
    inner = weight.shape[0] // 2
    out = torch.empty((m, inner), device=x.device, dtype=x.dtype)
    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    programs = min(_SM_COUNT[index], triton.cdiv(m, block_m) * (inner // half))
    if paired_rows is not None:
        w_desc = TensorDescriptor.from_tensor(paired_rows, [block_n, block_k])
    else:
        w_desc = TensorDescriptor.from_tensor(weight.contiguous().view(2, inner, k), [2, half, block_k])
    _ff_geglu_kernel[(programs,)](
        TensorDescriptor.from_tensor(x, [block_m, block_k]), w_desc, TensorDescriptor.from_tensor(out, [block_m, half]),
        bias.contiguous(), m, inner, k, PROGRAMS=programs, BLOCK_M=block_m, HALF=half, BLOCK_K=block_k,
        GROUP_M=group_m, STAGES=stages, VIEW3D=paired_rows is None, num_warps=warps)
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


def phase_interleave(phases: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(N, H + 1, W + 1, 4, C) contiguous phases of a 2x2 up-sampling convolution -> the (N, C, 2H, 2W)
    channels-last image, y[n, c, 2i + a, 2j + b] = phases[n, i + a, j + b, 2a + b, c] (+ bias[c]), in one
    pass (unet_fast.nearest2x_conv) instead of four strided copies."""
    if phases.dim() != 5 or phases.shape[3] != 4 or not phases.is_contiguous() or (
            bias is not None and tuple(bias.shape) != (phases.shape[4],)):
        raise ValueError(f"phase_interleave: phases must be contiguous (N, H + 1, W + 1, 4, C), bias (C,); got "
                         f"{tuple(phases.shape)} and {None if bias is None else tuple(bias.shape)}")
    n, h1, w1, _, c = phases.shape
    h, w = h1 - 1, w1 - 1
    y = torch.empty((n, c, 2 * h, 2 * w), device=phases.device, dtype=phases.dtype, memory_format=torch.channels_last)
    block_c = min(128, _pow2(c))
    block_q = max(1, 4096 // block_c)
    grid = (n * 2 * h, triton.cdiv(2 * w, block_q), triton.cdiv(c, block_c))
    _phase_interleave_kernel[grid](phases, bias.contiguous() if bias is not None else phases, y, h, w, c,
                                   HAS_BIAS=bias is not None, BLOCK_Q=block_q, BLOCK_C=block_c, num_warps=4)
    return y


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, *,
               shift: torch.Tensor | None = None, pe: torch.Tensor | None = None, hw: int = 1) -> torch.Tensor:
    """LayerNorm over the last dim of a contiguous x (float32 statistics), in x's dtype. With `shift`
    (C,): of x + shift, without writing x (a residual stream whose sublayer biases are still pending).
    With `pe` (frames, C): plus pe[f] on the rows of frame f, rows ordered (sample, frame, position of hw)."""
    c = x.shape[-1]
    if not x.is_contiguous():
        raise ValueError("layer_norm: x must be contiguous")
    rows = x.numel() // c
    frames = 1
    if pe is not None:
        frames = pe.shape[0]
        if pe.shape[-1] != c or rows % (frames * hw):
            raise ValueError(f"layer_norm: pe {tuple(pe.shape)} does not fit {rows} rows of {c} in frames of {hw}")
        pe = pe.contiguous()
    if shift is not None:
        if shift.shape != (c,):
            raise ValueError(f"layer_norm: shift must be ({c},); got {tuple(shift.shape)}")
        shift = shift.float().contiguous()
    block_c = _pow2(c)
    block_m = max(1, min(64, 4096 // block_c))
    out = torch.empty_like(x)
    _layer_norm_kernel[(triton.cdiv(rows, block_m),)](
        x, out, weight, bias, shift if shift is not None else weight, pe if pe is not None else x, rows, c, frames,
        hw, float(eps), SHIFT=shift is not None, PE=pe is not None, BLOCK_M=block_m, BLOCK_C=block_c,
        num_warps=4 if block_c <= 1024 else 8)
    return out


def head_split(d: int) -> tuple[int, int]:
    """(D0, D1) column blocks covering a head of size d: D0 the largest power of two <= d (at least 16,
    masked past d), D1 a power of two >= 16 for the rest (0 if none). 40 -> (32, 16), 80 -> (64, 16),
    160 -> (128, 32), 64 -> (64, 0), 8 -> (16, 0)."""
    d0 = max(16, 1 << (d.bit_length() - 1))
    rest = d - d0
    return d0, (max(16, 1 << (rest - 1).bit_length()) if rest > 0 else 0)


def temporal_attention(qkv: torch.Tensor, frames: int, hw: int, heads: int, *,
                       num_warps: int | None = None) -> torch.Tensor:
    """Self-attention across frames. qkv: (B * frames * hw, 3C) rows ordered (sample, frame, position),
    columns [q | k | v] (the motion module's frame-position encoding already in: layer_norm's `pe`).
    Returns (B * frames * hw, C) in qkv's dtype."""
    rows, c3 = qkv.shape
    c = c3 // 3
    d = c // heads
    if rows % (frames * hw) or c % heads or c3 % 3:
        raise ValueError(f"temporal attention: {rows} tokens not (B x {frames} x {hw}) or {c} not {heads} heads")
    qkv = qkv.contiguous()
    d0, d1 = head_split(d)
    out = torch.empty((rows, c), device=qkv.device, dtype=qkv.dtype)
    _temporal_attention_kernel[(rows // frames, heads)](
        qkv, out, frames, hw, c, heads, 1.0 / math.sqrt(d), D=d, D0=d0, D1=d1, IEEE=qkv.dtype == torch.float32,
        BLOCK_F=max(16, _pow2(frames)), num_warps=num_warps or TEMPORAL_WARPS)
    return out

