"""The fused kernels of the LatentSync fast path against the PyTorch ops they replace, side by side.

For each kernel (kernels.py) on the shapes of one CFG UNet call (v1.5: 4 chunks at latent 32 and
v1.6: 2 chunks at latent 64, bf16), prints ms for the fused kernel and for the eager PyTorch
equivalent, the ratio, and the fused kernel's effective bandwidth (bytes it must move / time)
against the GPU's copy bandwidth measured in the same run. Frame attention is also swept over
warps, to pick kernels.TEMPORAL_WARPS, and the feed-forward GEMM + GEGLU over tiles, to pick
kernels.FF_GEGLU_TILES.

    python bench/latentsync_kernels.py            # needs CUDA + Triton
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.latentsync_unet import time_ms  # noqa: E402
from lipsync.latentsync import kernels  # noqa: E402
from lipsync.latentsync.unet_layers import pooled_group_norm  # noqa: E402

DEV = torch.device("cuda")
DT = torch.bfloat16
# ff_geglu tiles tried (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, stages, warps)
FF_GEGLU_SWEEP = [(128, 256, 64, 8, 4, 8), (128, 256, 64, 8, 3, 8), (128, 256, 64, 16, 4, 8), (128, 256, 64, 4, 4, 8),
                  (128, 256, 64, 1, 4, 8), (256, 128, 64, 8, 3, 8)]
# version -> (frames in one CFG call, latent side)
SHAPES = {"1.5": (128, 32), "1.6": (64, 64)}


def copy_bandwidth() -> float:
    """GB/s of a device-to-device copy of 1 GiB (read + write counted)."""
    a = torch.empty(2**29, device=DEV, dtype=DT)
    b = torch.empty_like(a)
    ms = time_ms(lambda: b.copy_(a), DEV, 10, 2)
    return 2 * a.numel() * a.element_size() / ms / 1e6


def row(name: str, fused_ms: float, ref_ms: float, nbytes: float, peak: float) -> dict:
    gbs = nbytes / fused_ms / 1e6
    print(f"{name:<44} fused {fused_ms:8.3f} ms  eager {ref_ms:8.3f} ms  x{ref_ms / fused_ms:5.2f}  "
          f"{gbs:7.0f} GB/s ({gbs / peak:4.0%} of copy)", flush=True)
    return {"op": name, "fused_ms": fused_ms, "eager_ms": ref_ms, "speedup": ref_ms / fused_ms, "gbs": gbs}


def bench(version: str, iters: int, peak: float) -> list[dict]:
    frames_total, side = SHAPES[version]
    hw = side * side
    rows = []
    for c in (320, 640):
        n = frames_total
        # Frame-pooled resnet norm + SiLU (with the time-embedding offset in the fused one).
        x = torch.randn(n, c, side, side, device=DEV, dtype=DT).contiguous(memory_format=torch.channels_last)
        xc = x.contiguous()
        norm = torch.nn.GroupNorm(32, c, eps=1e-5).to(DEV, DT)
        add = torch.randn(n // 16, c, device=DEV, dtype=DT)
        fused = time_ms(lambda: kernels.group_norm(x, 32, norm.weight, norm.bias, 1e-5, frames=16, add=add, silu=True),
                        DEV, iters, 3)
        ref = time_ms(lambda: F.silu(pooled_group_norm(
            (xc.unflatten(0, (-1, 16)) + add[:, None, :, None, None]).flatten(0, 1), norm, 16)), DEV, iters, 3)
        rows.append(row(f"v{version} pooled GN+offset+SiLU C={c}", fused, ref, 3 * x.numel() * 2, peak))
        # An up layer's first norm, of cat([x, skip]): read from the two (x2=) against cat + the kernel.
        skip = torch.randn_like(x)
        norm2 = torch.nn.GroupNorm(32, 2 * c, eps=1e-5).to(DEV, DT)
        fused = time_ms(lambda: kernels.group_norm(x, 32, norm2.weight, norm2.bias, 1e-5, frames=16, silu=True, x2=skip),
                        DEV, iters, 3)
        ref = time_ms(lambda: kernels.group_norm(torch.cat([x, skip], 1), 32, norm2.weight, norm2.bias, 1e-5, frames=16,
                                                 silu=True), DEV, iters, 3)
        rows.append(row(f"v{version} GN+SiLU of cat(x, skip) C=2x{c} (vs cat + GN)", fused, ref, 6 * x.numel() * 2, peak))
        # LayerNorm and residual add + LayerNorm on (tokens, C).
        t = torch.randn(n * hw // (4 if c == 640 else 1), c, device=DEV, dtype=DT)
        y = torch.randn_like(t)
        ln = torch.nn.LayerNorm(c).to(DEV, DT)
        fused = time_ms(lambda: kernels.layer_norm(t, ln.weight, ln.bias, ln.eps), DEV, iters, 3)
        ref = time_ms(lambda: ln(t), DEV, iters, 3)
        rows.append(row(f"v{version} LayerNorm {tuple(t.shape)}", fused, ref, 2 * t.numel() * 2, peak))
        # A sublayer joining the residual stream: to_out + add + LayerNorm, against to_out accumulated
        # in place by cuBLAS (beta = 1, bias deferred) + LayerNorm of stream + pending bias (unet_fast).
        proj = torch.nn.Linear(c, c).to(DEV, DT)
        t2, shift = t.clone(), proj.bias.float()
        fused = time_ms(lambda: kernels.layer_norm(t2.addmm_(y, proj.weight.t()), ln.weight, ln.bias, ln.eps,
                                                   shift=shift), DEV, iters, 3)
        ref = time_ms(lambda: ln(t2.add_(proj(y))), DEV, iters, 3)
        rows.append(row(f"v{version} to_out+residual+LayerNorm {tuple(t.shape)}", fused, ref, 5 * t.numel() * 2, peak))
        # GEGLU on the feed-forward projection.
        h = torch.randn(t.shape[0], 8 * c, device=DEV, dtype=DT)
        fused = time_ms(lambda: kernels.geglu(h), DEV, iters, 3)

        def geglu_ref():
            value, gate = h.chunk(2, dim=-1)
            return value * F.gelu(gate)
        ref = time_ms(geglu_ref, DEV, iters, 3)
        rows.append(row(f"v{version} GEGLU {tuple(h.shape)}", fused, ref, 1.5 * h.numel() * 2, peak))
        # The feed-forward's projection with the GEGLU in its epilogue, against cuBLAS + the pass above.
        w = (torch.randn(8 * c, c, device=DEV) / c ** 0.5).to(DT)
        b = (0.1 * torch.randn(8 * c, device=DEV)).to(DT)
        if kernels.ff_geglu_supported(t, w):
            ref = time_ms(lambda: kernels.geglu(F.linear(t, w, b)), DEV, iters, 3)
            rows_w = kernels.ff_geglu_pair_rows(w) if kernels.FF_GEGLU_PAIR_ROWS else None
            fused = time_ms(lambda: kernels.ff_geglu(t, w, b, rows_w), DEV, iters, 3)
            r = row(f"v{version} FF1+GEGLU {tuple(t.shape)}x{tuple(w.shape)}", fused, ref,
                    (t.numel() + w.numel() + t.shape[0] * 4 * c) * 2, peak)
            default, best = kernels.FF_GEGLU_TILES, None
            try:
                for tiles in FF_GEGLU_SWEEP:
                    kernels.FF_GEGLU_TILES = tiles
                    for paired in (True, False):  # weight copy in tile order / the 3-D view of the weight
                        try:
                            rows_w = kernels.ff_geglu_pair_rows(w) if paired else None
                            ms = time_ms(lambda: kernels.ff_geglu(t, w, b, rows_w), DEV, iters, 2)
                        except Exception as e:  # a config out of shared memory / registers
                            print(f"#   FF1+GEGLU tiles {tiles} paired={paired}: {type(e).__name__}", flush=True)
                            continue
                        print(f"#   FF1+GEGLU tiles {tiles} paired={paired}: {ms:.3f} ms", flush=True)
                        if best is None or ms < best[0]:
                            best = (ms, tiles, paired)
            finally:
                kernels.FF_GEGLU_TILES = default
            r["best"] = {"ms": best[0], "tiles": best[1], "paired_rows": best[2]} if best else None
            print(f"#   best: {r['best']}", flush=True)
            rows.append(r)
        else:
            print("# FF1+GEGLU fused kernel not supported here (needs TMA: compute capability 9+)", flush=True)
        # Frame attention at this level: reference = permute + SDPA + permute back (the eager path; the
        # frame-position encoding is the LayerNorm's job in the fast path, so neither side adds it).
        level_hw = hw // (4 if c == 640 else 1)
        qkv = torch.randn(n * level_hw, 3 * c, device=DEV, dtype=DT)

        def attn_ref():
            u = qkv.view(n // 16, 16, level_hw, 3 * c).permute(0, 2, 1, 3)
            u = u.reshape(-1, 16, 3, 8, c // 8)
            q, k, v = (u[:, :, i].transpose(1, 2) for i in range(3))
            o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n // 16, level_hw, 16, c)
            return o.permute(0, 2, 1, 3).reshape(-1, c)
        ref = time_ms(attn_ref, DEV, iters, 3)
        best = None
        for warps in (1, 2, 4):
            ms = time_ms(lambda: kernels.temporal_attention(qkv, 16, level_hw, 8, num_warps=warps), DEV, iters, 2)
            print(f"#   frame attention C={c} warps={warps}: {ms:.3f} ms", flush=True)
            if best is None or ms < best[0]:
                best = (ms, warps)
        default = time_ms(lambda: kernels.temporal_attention(qkv, 16, level_hw, 8), DEV, iters, 2)
        r = row(f"v{version} frame attention C={c} (default cfg)", default, ref, 4 / 3 * qkv.numel() * 2, peak)
        r["best"] = {"ms": best[0], "warps": best[1]}
        print(f"#   best: {r['best']}", flush=True)
        rows.append(r)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--versions", default="1.5,1.6")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if not kernels.available():
        sys.exit("needs CUDA and Triton")
    peak = copy_bandwidth()
    print(f"# {torch.cuda.get_device_name()}, copy bandwidth {peak:.0f} GB/s", flush=True)
    rows = [r for v in args.versions.split(",") for r in bench(v, args.iters, peak)]
    if args.json:
        Path(args.json).write_text(json.dumps({"copy_gbs": peak, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
