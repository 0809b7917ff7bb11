"""Where one LatentSync UNet call spends its time, by layer kind, and which attention kernel wins.

Random weights (timings only). For each version it builds the full-size UNet, feeds one CFG call of
`--chunks` 16-frame chunks (batch 2 x chunks, as the pipeline batches them) and prints:
  1. time per layer kind (resnet, spatial attn1 / attn2 / feed-forward, motion attention / feed-forward,
     norms and projections, resampling, head) from CUDA events around every module, summed over the
     call, next to each kind's FLOPs and achieved TFLOP/s: the kinds far below the GEMM ceiling are
     the ones to work on;
  2. every distinct attention shape of the call timed under each SDPA backend (flash, memory-efficient,
     cuDNN, math) and as plain matmul + softmax, so the fastest choice per shape is measured, not
     guessed.

    python bench/latentsync_profile.py                      # GPU, bf16, v1.5 (4 chunks) and v1.6 (2)
    python bench/latentsync_profile.py --fast               # the fused path (unet_fast.py)
    python bench/latentsync_profile.py --tiny               # CPU smoke check with the tiny config
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.latentsync_unet import time_ms  # noqa: E402
from lipsync.latentsync.config import tiny_unet_config, unet_config  # noqa: E402
from lipsync.latentsync.unet import build_unet  # noqa: E402
from lipsync.latentsync.unet_fast import enable_fast_path  # noqa: E402
from lipsync.latentsync.unet_layers import Attention, Downsample, FeedForward, ResnetBlock, Upsample  # noqa: E402
from lipsync.latentsync.unet_transformers import MotionModule, SpatialTransformer, TemporalAttention  # noqa: E402


def kind_of(name: str, module: torch.nn.Module) -> str | None:
    """The layer kind a module's time is booked under (leaf-most kinds; None = not timed)."""
    if isinstance(module, TemporalAttention):
        return "motion.attention"
    if isinstance(module, FeedForward):
        return "motion.ff" if ".motion_modules." in name else "spatial.ff"
    if isinstance(module, Attention):
        return f"spatial.{name.rsplit('.', 1)[-1]}"  # attn1 (self) / attn2 (audio cross)
    if isinstance(module, ResnetBlock):
        return "resnet"
    if isinstance(module, (Downsample, Upsample)):
        return "resample"
    if isinstance(module, (SpatialTransformer, MotionModule)):
        return "spatial.rest" if isinstance(module, SpatialTransformer) else "motion.rest"
    return None


class KindTimer:
    """CUDA events (or perf_counter on CPU) around every module of interest; nested kinds are
    subtracted from their parent so each kind's time is its own ("rest" = norms, projections, glue)."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.device, self.spans, self.handles = device, [], []
        for name, module in model.named_modules():
            kind = kind_of(name, module)
            if kind is not None:
                self.handles.append(module.register_forward_pre_hook(self._pre(kind)))
                self.handles.append(module.register_forward_hook(self._post()))
        self.stack: list[list] = []

    def _mark(self):
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _pre(self, kind):
        def hook(module, args):
            self.stack.append([kind, self._mark(), None])
        return hook

    def _post(self):
        def hook(module, args, output):
            span = self.stack.pop()
            span[2] = self._mark()
            self.spans.append((span, len(self.stack)))
        return hook

    def totals_ms(self) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = [(k, (s.elapsed_time(e) if self.device.type == "cuda" else (e - s) * 1e3), depth)
                   for (k, s, e), depth in self.spans]
        # children close before their parent: walk in order, subtract nested totals per depth
        totals: dict[str, float] = defaultdict(float)
        child_sum: dict[int, float] = defaultdict(float)
        for kind, ms, depth in elapsed:
            own = ms - child_sum.pop(depth + 1, 0.0)
            totals[kind] += own
            child_sum[depth] += ms
        return dict(totals)

    def close(self):
        for h in self.handles:
            h.remove()


def kind_flops(model, sample, t, audio) -> dict[str, float]:
    """FLOPs per kind (own, nested kinds excluded), from torch's flop counter on the meta device."""
    counter = FlopCounterMode(display=False, depth=None)
    with counter:
        model(sample, t, audio)
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    kinds = {name: kind_of(name, m) for name, m in model.named_modules()}
    out: dict[str, float] = defaultdict(float)
    for name, kind in kinds.items():
        if kind is None:
            continue
        flops = per_module.get(f"LatentSyncUNet.{name}", 0.0)
        # subtract the nearest timed descendants
        for other, other_kind in kinds.items():
            if other_kind and other.startswith(name + ".") and _nearest(kinds, name, other):
                flops -= per_module.get(f"LatentSyncUNet.{other}", 0.0)
        out[kind] += flops
    return dict(out)


def _nearest(kinds: dict, parent: str, child: str) -> bool:
    """child is a timed module under parent with no timed module in between."""
    parts = child[len(parent) + 1:].split(".")
    return not any(kinds.get(f"{parent}.{'.'.join(parts[:i])}") for i in range(1, len(parts)))


def attention_shapes(model, sample, t, audio) -> list[tuple]:
    """Every distinct (batch, heads, q_len, kv_len, head_dim) the call runs through SDPA."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.shape[3])
        if shape not in seen:
            seen.append(shape)
        return real(q, k, v, *a, **kw)

    F.scaled_dot_product_attention = spy
    try:
        model(sample, t, audio)
    finally:
        F.scaled_dot_product_attention = real
    return seen


def time_attention(shape, device, dtype, iters: int) -> dict[str, float]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, h, lq, lk, d = shape
    q = torch.randn(b, h, lq, d, device=device, dtype=dtype)
    k = torch.randn(b, h, lk, d, device=device, dtype=dtype)
    v = torch.randn(b, h, lk, d, device=device, dtype=dtype)

    def matmul_softmax():
        scores = torch.matmul(q, k.transpose(-1, -2)) * d ** -0.5
        return torch.matmul(scores.softmax(-1), v)

    variants = {"matmul+softmax": matmul_softmax}
    backends = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
    for label, backend in backends.items():
        if hasattr(SDPBackend, backend):
            def run(backend=getattr(SDPBackend, backend)):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v)
            variants[label] = run
    ref = matmul_softmax().float()
    out = {}
    for label, fn in variants.items():
        try:
            err = ((fn().float() - ref).norm() / ref.norm()).item()
            out[label] = round(time_ms(fn, device, iters, warmup=2), 4) if err < 2e-2 else float("nan")
        except RuntimeError:  # backend does not take this shape / dtype
            out[label] = None
    return out


def kernel_table(fn, device, top: int) -> tuple[list[dict], list[dict]]:
    """The `top` CUDA kernels of one call by total time (torch.profiler), names shortened; and the
    `top` aten ops by device time grouped by input shapes (which op, on what, launched them)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        fn()
        torch.cuda.synchronize(device)
    ops = []
    # (two passes: the kernel table below comes from a CUDA-only trace, where every event is a kernel)
    for event in prof.key_averages(group_by_input_shape=True):
        us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if event.key.startswith("aten::") and us > 0 and event.key not in ("aten::linear", "aten::conv2d",
                                                                          "aten::convolution", "aten::_convolution"):
            ops.append({"op": event.key, "shapes": str(event.input_shapes)[:120], "calls": event.count,
                        "ms": round(us / 1e3, 3)})
    ops.sort(key=lambda r: -r["ms"])
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize(device)
    rows = []
    for event in prof.key_averages():
        us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if us > 0:
            rows.append({"kernel": event.key[:110], "calls": event.count, "ms": round(us / 1e3, 3)})
    rows.sort(key=lambda r: -r["ms"])
    total = sum(r["ms"] for r in rows)
    kernels = [{**r, "share": round(r["ms"] / total, 4)} for r in rows[:top]] + [{"kernel": "TOTAL", "ms": round(total, 3)}]
    return kernels, ops[:top]


def profile_version(version: str, chunks: int, args, device, dtype) -> dict:
    config = tiny_unet_config() if args.tiny else unet_config(version)
    latent, batch, frames = config.latent_size, 2 * chunks, 16
    meta = build_unet(config, device="meta", dtype=dtype)
    shapes = (batch, config.in_channels, frames, latent, latent)
    meta_in = (torch.empty(shapes, device="meta", dtype=dtype), torch.tensor(501, device="meta"),
               torch.empty(batch * frames, 50, config.cross_attention_dim, device="meta", dtype=dtype))
    flops = kind_flops(meta, *meta_in)

    torch.manual_seed(0)
    unet = build_unet(config, device=device, dtype=dtype).requires_grad_(False)
    fast = args.fast and enable_fast_path(unet)
    gen = torch.Generator(device=device).manual_seed(1247)
    sample = torch.randn(shapes, generator=gen, device=device, dtype=dtype)
    audio = torch.randn(batch * frames, 50, config.cross_attention_dim, generator=gen, device=device, dtype=dtype)
    t = torch.tensor(501, device=device)
    kw = {}
    if args.cfg_pair:  # denoise's CFG batch: identical halves, zero audio in the first
        sample[batch // 2:] = sample[: batch // 2]
        audio[: batch * frames // 2] = 0
        kw = {"cfg_pair": True}
    run = (lambda: unet(sample, t, audio, **kw))
    with torch.inference_mode():
        whole_ms = time_ms(run, device, args.iters, warmup=2)
        timer = KindTimer(unet, device)
        per_call: dict[str, list[float]] = defaultdict(list)
        for _ in range(max(3, args.iters // 4)):
            timer.spans.clear()
            run()
            for kind, ms in timer.totals_ms().items():
                per_call[kind].append(ms)
        timer.close()
        kinds = {k: statistics.median(v) for k, v in per_call.items()}
        attn = {} if fast else {str(s): time_attention(s, device, dtype, args.iters)
                                for s in attention_shapes(unet, sample, t, audio)}
        kernels, ops = kernel_table(run, device, args.kernels) if args.kernels and \
            device.type == "cuda" else ([], [])
        # The reference path with every conv weight in channels_last (NHWC) memory format.
        channels_last_ms = None
        if not fast:
            unet.to(memory_format=torch.channels_last)
            channels_last_ms = time_ms(lambda: unet(sample, t, audio), device, args.iters, warmup=2)
            unet.to(memory_format=torch.contiguous_format)
    total_flops = sum(flops.values())
    return {"version": version, "fast": bool(fast), "chunks": chunks, "latent": latent, "whole_call_ms": round(whole_ms, 3),
            "whole_call_tflops": round(total_flops / whole_ms / 1e9, 1),
            "kinds": {k: {"ms": round(ms, 3), "gflop": round(flops.get(k, 0) / 1e9, 1),
                          "tflops": round(flops.get(k, 0) / ms / 1e9, 1) if ms > 0 else None}
                      for k, ms in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "channels_last_weights_ms": channels_last_ms and round(channels_last_ms, 3), "attention_ms": attn,
            "kernels": kernels, "ops": ops}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny config on CPU in fp32 (smoke check)")
    p.add_argument("--versions", default="1.5:4,1.6:2", help="version:chunks pairs")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--fast", action="store_true", help="profile the fused path (unet_fast.py) instead")
    p.add_argument("--cfg-pair", action="store_true", help="call as denoise does (cfg_pair=True, see unet.py)")
    p.add_argument("--kernels", type=int, default=30, help="print the top N CUDA kernels (0 = off)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    args.iters = args.iters or (20 if device.type == "cuda" else 3)
    results = []
    for item in args.versions.split(","):
        version, chunks = item.split(":")
        r = profile_version(version, int(chunks), args, device, dtype)
        results.append(r)
        print(f"\nLatentSync {version}{' (tiny)' if args.tiny else ''}{' fused path' if r['fast'] else ''}, "
              f"{chunks} chunk(s) per CFG call, "
              f"latent {r['latent']}: whole call {r['whole_call_ms']} ms ({r['whole_call_tflops']} TFLOP/s)")
        print(f"  {'kind':<18}{'ms':>10}{'GFLOP':>10}{'TFLOP/s':>10}")
        for kind, row in r["kinds"].items():
            print(f"  {kind:<18}{row['ms']:>10.3f}{row['gflop']:>10.1f}{row['tflops'] or 0:>10.1f}")
        if r["channels_last_weights_ms"]:
            print(f"  conv weights channels_last: whole call {r['channels_last_weights_ms']} ms")
        print("  attention shape (B, heads, Lq, Lk, d): ms per backend")
        for shape, row in r["attention_ms"].items():
            cells = "  ".join(f"{k}={'-' if v is None else v}" for k, v in row.items())
            print(f"    {shape:<32} {cells}")
        if r["kernels"]:
            print("  top CUDA kernels (one call): ms, calls, share")
            for row in r["kernels"]:
                print(f"    {row['ms']:>9.3f} {row.get('calls', ''):>6} {row.get('share', 0):>6.1%}  {row['kernel']}")
            print("  top aten ops by device time, by input shapes: ms, calls")
            for row in r["ops"]:
                print(f"    {row['ms']:>9.3f} {row['calls']:>6}  {row['op']} {row['shapes']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name() if device.type == "cuda"
                                               else "cpu", "torch": torch.__version__, "results": results}, indent=1))


if __name__ == "__main__":
    main()
