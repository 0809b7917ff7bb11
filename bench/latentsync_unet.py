"""Benchmark our LatentSync UNet on one device: ms per UNet call, TFLOP/s, peak memory, 20-step chunk.

Random weights (timings only; nothing here is a real model). Per version it builds the full-size UNet,
feeds one 16-frame chunk with batch 2 (CFG) and times:
  * a full UNet call and a DeepCache "cached" call (CUDA events, median of --iters);
  * the whole 20-step `denoise` loop for the chunk, DeepCache off and on;
eager and under each --compile mode. FLOPs come from torch.utils.flop_counter on one eager call.

    python bench/latentsync_unet.py                      # GPU: v1.5 (latent 32) and v1.6 (latent 64), bf16
    python bench/latentsync_unet.py --compile none,default,max-autotune-no-cudagraphs --json out.json
    python bench/latentsync_unet.py --tiny               # CPU smoke check with the tiny config

Official pipeline reference on H100 fp16 (docs/latentsync.md section 7): UNet call 75 ms (1.5) / 186 ms (1.6);
DeepCache cached call 14 ms / 42 ms.
Ours, H100 80GB, torch 2.11 cu130, bf16, 2026-11-25 (full / cached call, 20-step CFG loop / with DeepCache):
  1.5 eager 55.8 / 5.2 ms, 0.98 / 0.40 s;  compile 37.9-44.6 / 3.3 ms, 0.84 / 0.36 s (compiles ~150-270 s)
  1.6 eager 167.5 / 20.0 ms, 3.35 / 1.43 s; compile 115 / 12.3 ms, 2.30 / 0.98 s (regional: 116 ms, ~100 s)
Ours, H200, 2026-11-30, one chunk (full / cached call), reference eager vs fused (`--compile none,fast`):
  1.5 44.1 / 4.75 ms vs 41.2 / 3.06 ms (one chunk is launch-bound: the pipeline batches 4 and replays graphs)
  1.6 157.5 / 18.6 ms vs 104.6 / 11.4 ms (before the LayerNorm and bias kernels; see bench/latentsync_pipeline.py)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from lipsync.latentsync.config import tiny_unet_config, unet_config  # noqa: E402
from lipsync.latentsync.sampling import LATENTSYNC_DEEPCACHE, denoise, initial_latents  # noqa: E402
from lipsync.latentsync.unet import LatentSyncUNet, build_unet, compile_unet  # noqa: E402
from lipsync.latentsync.unet_fast import enable_fast_path  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny config on CPU in fp32 (smoke check)")
    p.add_argument("--versions", default="1.5,1.6", help="comma list of 1.5 / 1.6")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--batch", type=int, default=2, help="2 = CFG (zero-audio branch batched)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--iters", type=int, default=None, help="timed UNet calls (default 20 cuda, 3 cpu)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", default=None,
                   help="comma list of 'none' (reference eager), 'fast' (fused kernels), 'regional' and torch.compile modes")
    p.add_argument("--no-loop", action="store_true", help="skip the 20-step loop timings")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--check-golden", action="store_true", help="first run the tiny official golden on the device")
    return p.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, iters: int, warmup: int) -> float:
    """Median wall time of fn() in ms (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def count_gflops(config, batch: int, frames: int, latent: int, dtype: torch.dtype) -> tuple[float, float]:
    """(full, cached) GFLOP of one UNet call, counted by torch.utils.flop_counter on the meta device."""
    unet = build_unet(config, device="meta", dtype=dtype)
    sample, t, audio = chunk_inputs(unet, batch, frames, latent, torch.device("meta"))
    with FlopCounterMode(display=False) as full:
        _, feature = unet.forward_and_cache(sample, t, audio)
    with FlopCounterMode(display=False) as cached:
        unet.forward_cached(sample, t, audio, feature)
    return full.get_total_flops() / 1e9, cached.get_total_flops() / 1e9


def chunk_inputs(unet: LatentSyncUNet, batch: int, frames: int, latent: int, device: torch.device):
    cfg = unet.config
    dtype = unet.dtype
    if device.type == "meta":
        sample = torch.empty(batch, cfg.in_channels, frames, latent, latent, device=device, dtype=dtype)
        audio = torch.empty(batch * frames, 50, cfg.cross_attention_dim, device=device, dtype=dtype)
        return sample, torch.tensor(501, device=device), audio
    gen = torch.Generator(device=device).manual_seed(1247)
    sample = torch.randn(batch, cfg.in_channels, frames, latent, latent, generator=gen, device=device, dtype=dtype)
    audio = torch.randn(batch * frames, 50, cfg.cross_attention_dim, generator=gen, device=device, dtype=dtype)
    t = torch.tensor(501, device=device)
    return sample, t, audio


def bench_version(args, version: str, device: torch.device, dtype: torch.dtype, modes: list[str]) -> list[dict]:
    config = tiny_unet_config() if args.tiny else unet_config(version)
    latent = config.latent_size
    gflop_full, gflop_cached = count_gflops(config, args.batch, args.frames, latent, dtype)
    torch.manual_seed(0)
    results = []
    for mode in modes:
        # 1. A fresh random model per mode, so compile wrappers never stack.
        unet = build_unet(config, device=device, dtype=dtype).requires_grad_(False)
        if mode == "regional":
            unet = compile_unet(unet, regional=True, dynamic=False)
        elif mode == "fast":  # fused Triton kernels, channels-last (unet_fast.py)
            if not enable_fast_path(unet):
                print("# fast path unsupported here (needs CUDA + Triton): skipped", flush=True)
                continue
        elif mode != "none":
            unet = compile_unet(unet, mode=None if mode == "default" else mode, dynamic=False)
        sample, t, audio = chunk_inputs(unet, args.batch, args.frames, latent, device)
        iters = args.iters or (20 if device.type == "cuda" else 3)
        row = {"version": version, "tiny": args.tiny, "latent": latent, "frames": args.frames,
               "batch": args.batch, "dtype": str(dtype).removeprefix("torch."), "compile": mode}

        with torch.inference_mode():
            # 2. Compile (first calls) outside the timed region, report how long it took.
            t0 = time.perf_counter()
            _, feature = unet.forward_and_cache(sample, t, audio)
            unet(sample, t, audio)
            unet.forward_cached(sample, t, audio, feature)
            sync(device)
            row["first_calls_s"] = round(time.perf_counter() - t0, 2)

            # 3. Per-call timings and peak memory of the full call.
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            row["ms_full"] = time_ms(lambda: unet(sample, t, audio), device, iters, args.warmup)
            if device.type == "cuda":
                row["peak_alloc_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                row["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
            row["ms_cached"] = time_ms(lambda: unet.forward_cached(sample, t, audio, feature), device, iters, args.warmup)

            # 4. The whole chunk loop (CFG 1.5), DeepCache off / on.
            if not args.no_loop:
                f = args.frames
                lat = initial_latents(f, latent, torch.Generator(device=device).manual_seed(1), device, torch.float32)
                cond = sample[:1, 4:5], sample[:1, 5:9], sample[:1, 9:13]
                for key, dc in (("loop_s", None), ("loop_deepcache_s", LATENTSYNC_DEEPCACHE)):
                    run = lambda: denoise(unet, lat, *cond, audio[:f], steps=args.steps, guidance_scale=1.5, deepcache=dc)  # noqa: E731
                    run()
                    row[key] = time_ms(run, device, 3 if device.type == "cuda" else 1, 0) / 1e3
        row["gflop_full"], row["gflop_cached"] = gflop_full, gflop_cached
        row["tflops_full"] = gflop_full / row["ms_full"]  # GFLOP / ms = TFLOP/s
        row["tflops_cached"] = gflop_cached / row["ms_cached"]
        results.append(row)
        del unet, sample, audio
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def check_golden(device: torch.device) -> None:
    """Tiny official golden on this device: forward in fp32 (TF32 off) and bf16, 20-step CFG loop in fp32."""
    from safetensors.torch import load_file

    # cuDNN convolutions default to TF32 on CUDA; the golden is true fp32.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    from lipsync.latentsync.checkpoint import load_unet

    path = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "latentsync" / "latentsync_tiny_parity.safetensors"
    golden = {k: v.to(device) for k, v in load_file(path).items()}
    sample, audio = golden["input.sample"], golden["input.encoder_hidden_states"]
    for dtype in (torch.float32, torch.bfloat16):
        unet = load_unet(path, tiny_unet_config(), device=device, dtype=dtype, key_prefix="unet.")
        with torch.inference_mode():
            out = unet(sample, 501, audio).float()
        ref = golden["output.sample"]
        print(f"# golden forward {str(dtype):>14}: max|err|/max|ref| = {((out - ref).abs().max() / ref.abs().max()).item():.2e}")
    unet = load_unet(path, tiny_unet_config(), device=device, key_prefix="unet.")
    s = sample[:1]
    out = denoise(unet, s[:, 0:4], s[:, 4:5], s[:, 5:9], s[:, 9:13], audio[16:], guidance_scale=1.5)
    ref = golden["loop.final_latents_cfg1.5"]
    print(f"# golden 20-step CFG loop fp32: max|err|/max|ref| = {((out - ref).abs().max() / ref.abs().max()).item():.2e}")


def main() -> None:
    args = parse_args()
    device = torch.device(args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda"))
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    modes = (args.compile or ("none,fast" if device.type == "cuda" else "none")).split(",")
    if device.type == "cpu":
        torch.set_num_threads(1)  # a smoke check on shared CPUs: extra threads only spin
    if args.check_golden:
        check_golden(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        print(f"# device {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    else:
        print(f"# device cpu, torch {torch.__version__}")

    versions = ["tiny"] if args.tiny else args.versions.split(",")
    rows = []
    for version in versions:
        rows.extend(bench_version(args, version, device, dtype, modes))
        for row in [r for r in rows if r["version"] == (version if not args.tiny else "tiny")]:
            print(
                f"v{row['version']:>4} latent {row['latent']:>2} F{row['frames']} B{row['batch']} {row['dtype']:>8} "
                f"compile={row['compile']:<28} full {row['ms_full']:8.2f} ms ({row.get('tflops_full', 0):6.1f} TFLOP/s, "
                f"{row.get('gflop_full', 0) / 1e3:.2f} TFLOP)  cached {row['ms_cached']:7.2f} ms  "
                f"peak {row.get('peak_alloc_gib', float('nan')):.2f}/{row.get('peak_reserved_gib', float('nan')):.2f} GiB  "
                f"loop {row.get('loop_s', float('nan')):.3f}s / deepcache {row.get('loop_deepcache_s', float('nan')):.3f}s  "
                f"(first calls {row['first_calls_s']} s)",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
