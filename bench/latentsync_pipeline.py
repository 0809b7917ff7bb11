"""End-to-end LatentSync pipeline bench: a 10 s still-image clip, random weights, one device.

Builds full-size models with RANDOM weights (timings only; nothing here is a real model): the UNet
(build_unet), the SD VAE from the sd-vae-ft-mse config (written inline, no download) and a random
Whisper-tiny encoder. Then, per version (1.5 at 256 px, 1.6 at 512 px), times the whole pipeline call
(audio features, alignment, VAE encode, UNet loop, VAE decode, paste-back, hand-off to a no-op writer)
on a synthetic 1280x720 portrait + 10 s of synthetic voice, 20 steps, CFG 1.5, DeepCache off and on.

    python bench/latentsync_pipeline.py                    # GPU, bf16, with a quick A/B of UNet modes
    python bench/latentsync_pipeline.py --no-ab --chunks-per-call 4 --graphs on
    python bench/latentsync_pipeline.py --tiny             # CPU smoke check (tiny models, 2 s clip)

Official reference (docs/latentsync.md §7, H100, fp16, official pipeline, 252 frames, total call):
v1.5 37.3 s (6.7 fps), v1.5 + DeepCache 20.9 s, v1.6 75.0 s (3.4 fps), v1.6 + DeepCache 45.6 s.
Ours, H200, torch 2.11 cu130, bf16, CUDA graphs, 250 frames, 2026-12-01 (total call), `--graphs on --fast on`
(fused UNet with the CFG-pair sharing and the residual adds inside the GEMMs, fused VAE), two runs on
two lent machines:
  v1.5 (8 chunks/call) 6.28 / 6.30 s (39.8 / 39.7 fps), + DeepCache 3.03 / 3.09 s (82 / 81 fps)
  v1.6 (3 chunks/call) 26.70 s (9.4 fps) / (2 chunks/call, picked per chunk before the clip-cost
  choice) 27.01 s, + DeepCache 11.99 / 12.16 s (20.8 / 20.6 fps)
  earlier the same day, before the GEMM residuals and phase up-samplers: v1.5 6.52-6.83 s, v1.6
  28.09-29.07 s / DC 12.68-13.12 s; 2026-11-30, before the frame-attention head split: v1.5 6.78 s,
  v1.6 29.2 s / DC 13.1 s; earlier: fused UNet without the pair sharing and NCHW VAE v1.5 7.67-7.91 s
  / DC 3.56-3.76 s, v1.6 32.2 s / DC 15.3 s; reference path v1.5 12.1 s / DC 5.49 s, v1.6 49.5 s /
  DC 23.0 s
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from lipsync.latentsync.config import tiny_unet_config, unet_config  # noqa: E402
from lipsync.latentsync.engine import CudaGraphUNet, default_chunks_per_call  # noqa: E402
from lipsync.latentsync.pipeline import LatentSyncPipeline, PipelineOptions, SamplingOptions, plan_groups  # noqa: E402
from lipsync.latentsync.unet import build_unet, compile_unet  # noqa: E402
from lipsync.latentsync.unet_fast import disable_fast_path, enable_fast_path  # noqa: E402
from lipsync.latentsync.vae import SD_VAE_FT_MSE_CONFIG, TINY_VAE_CONFIG, build_vae  # noqa: E402
from lipsync.latentsync.whisper import WHISPER_TINY, WhisperEncoderDims, load_whisper_encoder  # noqa: E402

OFFICIAL_S = {("1.5", False): 37.3, ("1.5", True): 20.9, ("1.6", False): 75.0, ("1.6", True): 45.6}
TARGET_FPS = {"1.5": 34.0, "1.6": 10.2}
STAGES = ("audio", "face_prep", "vae_encode", "unet", "vae_decode", "composite", "paste_back", "wait_for_writer")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny random models on CPU (smoke check)")
    p.add_argument("--versions", default="1.5,1.6")
    p.add_argument("--seconds", type=float, default=None, help="voice length (default 10; tiny 2)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default 20; tiny 3)")
    p.add_argument("--deepcache", default="off,on")
    p.add_argument("--chunks-per-call", default="auto", help="'auto' (from the A/B, else the engine's default) or N")
    p.add_argument("--graphs", default="auto", choices=["auto", "on", "off"], help="CUDA graphs for the UNet")
    p.add_argument("--fast", default="auto", choices=["auto", "on", "off"],
                   help="fused Triton kernels (unet_fast.py); auto = on when supported, and the A/B times both")
    p.add_argument("--no-ab", action="store_true", help="skip the quick A/B of UNet modes / VAE layout")
    p.add_argument("--vae", default="auto", choices=["auto", "nchw", "channels_last", "fused"],
                   help="VAE decoder mode; auto = the A/B's fastest (fused when the A/B is skipped and it is supported)")
    p.add_argument("--compile", default=None, help="'regional' or a torch.compile mode (turns graphs off)")
    p.add_argument("--share-first-step", default="on", choices=["on", "off", "both"],
                   help="a still's unconditional step 0 computed once per clip (PipelineOptions); both = A/B")
    p.add_argument("--json", default=None, help="also write all results here")
    return p.parse_args()


def synthetic_portrait(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A drawn face on a gradient, and its five landmarks (eyes, nose, mouth corners)."""
    import cv2

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([60 + 80 * xx / w, 90 + 60 * yy / h, 140 + 40 * np.sin(xx / 90)], -1).astype(np.uint8)
    s = h / 720
    cx, cy = w / 2, h / 2
    cv2.ellipse(img, (int(cx), int(cy)), (int(120 * s), int(160 * s)), 0, 0, 360, (225, 180, 150), -1)
    marks = np.array([[cx - 45 * s, cy - 40 * s], [cx + 45 * s, cy - 40 * s], [cx, cy + 15 * s],
                      [cx - 38 * s, cy + 65 * s], [cx + 38 * s, cy + 65 * s]])
    for x, y in marks[:2]:
        cv2.circle(img, (int(x), int(y)), int(10 * s), (40, 30, 30), -1)
    cv2.ellipse(img, (int(cx), int(cy + 65 * s)), (int(38 * s), int(9 * s)), 0, 0, 360, (170, 60, 70), -1)
    return img, marks


def synthetic_voice(seconds: float, sr: int = 16000) -> np.ndarray:
    """Syllable-like bursts: a 120-220 Hz harmonic tone, 4 Hz on/off envelope, a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 100 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    noise = 0.01 * np.random.default_rng(0).standard_normal(len(t))
    return (0.3 * tone * env + noise).astype(np.float32)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, iters: int = 5) -> float:
    fn()
    sync(device)
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def unet_flops(config, batch: int, frames: int, width: int) -> tuple[float, float]:
    """(full, cached) FLOP of one UNet call at this batch (CFG included) and chunk length, counted on meta."""
    unet = build_unet(config, device="meta", dtype=torch.bfloat16)
    lat = config.latent_size
    sample = torch.empty(batch, config.in_channels, frames, lat, lat, device="meta", dtype=torch.bfloat16)
    audio = torch.empty(batch * frames, 50, width, device="meta", dtype=torch.bfloat16)
    t = torch.tensor(501, device="meta")
    with FlopCounterMode(display=False) as full:
        _, feature = unet.forward_and_cache(sample, t, audio)
    with FlopCounterMode(display=False) as cached:
        unet.forward_cached(sample, t, audio, feature)
    return float(full.get_total_flops()), float(cached.get_total_flops())


def ab_unet(unet, device, width: int, candidates: list[int], graphs: list[bool], fast: list[bool]) -> list[dict]:
    """ms of one full and one cached UNet call per (fused kernels, graphs, chunks per call), CFG batch,
    16 frames. Leaves the model on the path of the last `fast` entry."""
    rows = []
    for use_fast in fast:
        enable_fast_path(unet) if use_fast else disable_fast_path(unet)
        rows += [{"fast": use_fast, **r} for r in _ab_unet(unet, device, width, candidates, graphs, use_fast)]
    return rows


def _ab_unet(unet, device, width: int, candidates: list[int], graphs: list[bool], use_fast: bool) -> list[dict]:
    cfg = unet.config
    lat = cfg.latent_size
    rows = []
    for use_graphs in graphs:
        runner = CudaGraphUNet(unet) if use_graphs else unet
        for g in candidates:
            b = 2 * g
            try:
                with torch.inference_mode():
                    sample = torch.randn(b, cfg.in_channels, 16, lat, lat, device=device, dtype=unet.dtype)
                    audio = torch.randn(b * 16, 50, width, device=device, dtype=unet.dtype)
                    t = torch.tensor(501, device=device)
                    audio[: b * 8].zero_()  # the CFG pair's unconditional half (cfg_pair=True, as denoise calls it)
                    _, feature = runner.forward_and_cache(sample, t, audio, cfg_pair=True)
                    feature = feature.clone()
                    full = time_ms(lambda: runner.forward_and_cache(sample, t, audio, cfg_pair=True), device)
                    cached = time_ms(lambda: runner.forward_cached(sample, t, audio, feature, cfg_pair=True), device)
                    # the same call without the CFG-pair sharing (both halves computed in full)
                    unshared = time_ms(lambda: runner.forward_and_cache(sample, t, audio), device)
            except RuntimeError as err:  # out of memory, or a capture problem
                print(f"# A/B fast={use_fast} graphs={use_graphs} chunks/call={g}: {str(err).splitlines()[0]}", flush=True)
                break
            rows.append({"graphs": use_graphs, "chunks_per_call": g, "full_ms": full, "cached_ms": cached,
                         "full_unshared_ms": unshared,
                         "full_ms_per_chunk": full / g, "dc20_ms_per_chunk": (7 * full + 13 * cached) / g,
                         "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0})
            print(f"# A/B fast={use_fast!s:5} graphs={use_graphs!s:5} chunks/call={g}: full {full:7.1f} ms ({full / g:6.1f}/chunk), "
                  f"cached {cached:6.1f} ms ({cached / g:5.1f}/chunk), full without cfg_pair {unshared:7.1f} ms", flush=True)
        del runner
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def ab_vae(vae, device, resolution: int) -> str:
    """Time a 16-frame decode as NCHW, channels_last and the fused decoder (vae_fast.py); keeps the
    fastest and returns its name."""
    z = torch.randn(16, 4, resolution // 8, resolution // 8, device=device)
    times = {}
    for mode in ("nchw", "channels_last", "fused"):
        set_vae_mode(vae, mode)
        if mode == "fused" and not vae.fast:
            continue
        with torch.inference_mode():
            times[mode] = time_ms(lambda: vae.decode(z), device, iters=3)
    print("# A/B VAE decode 16 frames: " + ", ".join(f"{k} {v:.1f} ms" for k, v in times.items()), flush=True)
    best = min(times, key=times.get)
    set_vae_mode(vae, best)
    return best


def set_vae_mode(vae, mode: str) -> None:
    from lipsync.latentsync.vae_fast import disable_fast_vae, enable_fast_vae

    disable_fast_vae(vae)
    if mode == "fused":
        enable_fast_vae(vae)
        return
    vae.channels_last = mode == "channels_last"
    vae.model.to(memory_format=torch.channels_last if vae.channels_last else torch.contiguous_format)


def bench_version(args, version: str, device: torch.device, dtype: torch.dtype) -> list[dict]:
    # 1. Random full-size models (or tiny on CPU).
    torch.manual_seed(0)
    config = tiny_unet_config() if args.tiny else unet_config(version)
    dims = WhisperEncoderDims(n_audio_state=64, n_audio_head=2, n_audio_layer=1) if args.tiny else WHISPER_TINY
    t0 = time.perf_counter()
    unet = build_unet(config, device=device, dtype=dtype).requires_grad_(False)
    vae = build_vae(TINY_VAE_CONFIG if args.tiny else SD_VAE_FT_MSE_CONFIG, device, dtype)
    whisper = load_whisper_encoder(None, device, torch.float32, tiny_config=dims)
    print(f"# v{version}: models built in {time.perf_counter() - t0:.1f} s", flush=True)
    width = config.cross_attention_dim
    res = config.resolution

    # 2. Quick A/B: UNet eager vs CUDA graphs at a few chunk batchings, VAE memory layout.
    cuda = device.type == "cuda"
    ab_rows, vae_mode = [], "nchw"
    candidates = [2, 4, 8] if res <= 256 else [1, 2, 3]
    fast_modes = {"on": [True], "off": [False]}.get(args.fast, [False, True])
    if args.fast != "off" and not enable_fast_path(unet):
        print("# fused kernels unsupported here (needs CUDA + Triton): reference path", flush=True)
        fast_modes = [False]
    if cuda and not args.no_ab and not args.compile:
        graphs = {"on": [True], "off": [False]}.get(args.graphs, [False, True])
        ab_rows = ab_unet(unet, device, width, candidates, graphs, fast_modes)
        vae_mode = ab_vae(vae, device, res)
    if cuda and (args.vae != "auto" or not ab_rows):
        vae_mode = "fused" if args.vae == "auto" else args.vae
        set_vae_mode(vae, vae_mode)
        vae_mode = "fused" if vae.fast else vae_mode
    elif not fast_modes[-1]:
        disable_fast_path(unet)
    if args.compile:
        unet = compile_unet(unet, regional=args.compile == "regional", dynamic=False,
                            **({} if args.compile in ("regional", "default") else {"mode": args.compile}))

    audio = synthetic_voice(args.seconds)
    frame, marks = synthetic_portrait(*((180, 320) if args.tiny else (720, 1280)))
    rows = []
    shares = {"on": [True], "off": [False]}.get(args.share_first_step, [False, True])
    for deepcache in [m == "on" for m in args.deepcache.split(",")]:
        # 3. Pick the UNet mode: measured best, or the flags.
        # Cheapest clip, not cheapest chunk: the full chunks go in ceil(full / n) calls of at most n
        # chunks (15 chunks: 8 calls of <= 2 cost more than 5 calls of 3 even at a lower ms/chunk).
        key = "dc20_ms_per_chunk" if deepcache else "full_ms_per_chunk"
        full_chunks = max(1, round(args.seconds * 25) // 16)
        best = min(ab_rows, key=lambda r: -(-full_chunks // r["chunks_per_call"]) * r["chunks_per_call"] * r[key],
                   default=None)
        if args.chunks_per_call != "auto":
            per_call = int(args.chunks_per_call)
        else:
            per_call = best["chunks_per_call"] if best else default_chunks_per_call(device, res)
        use_graphs = cuda and not args.compile and (
            args.graphs == "on" or (args.graphs == "auto" and (best["graphs"] if best else True)))
        use_fast = best["fast"] if best else fast_modes[-1]
        enable_fast_path(unet) if use_fast else disable_fast_path(unet)
        runner = CudaGraphUNet(unet) if use_graphs else unet
        for share in shares:
            options = PipelineOptions(chunks_per_call=per_call, share_first_step=share)
            pipe = LatentSyncPipeline(runner, vae, whisper, res, options)
            sampling = SamplingOptions(steps=args.steps, guidance_scale=1.5, deepcache=deepcache, seed=1247)

            # 4. Warm up every shape this clip uses, then the timed call.
            n = int(np.ceil(len(audio) * 25 / 16000))
            warm_s = pipe.warmup(n, sampling)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            sink = np.zeros(1, np.int64)

            def write(f: np.ndarray) -> None:
                sink[0] += int(f[0, 0, 0])  # touch the frame, keep nothing

            t0 = time.perf_counter()
            stats = pipe(audio, (frame for _ in range(n)), marks[None], write, still=True, sampling=sampling)
            sync(device)
            total = time.perf_counter() - t0

            # 5. FLOPs of the UNet calls, counted as the official loop makes them (CFG pair of every
            #    chunk at every step): the work our fused path and shared first step skip is not subtracted.
            flops = 0.0
            full_steps = len(range(0, args.steps, 3)) if deepcache else args.steps
            for _, b, f in plan_groups(n, per_call):
                full, cached = unet_flops(config, 2 * b, f, width)
                flops += full_steps * full + (args.steps - full_steps) * cached
            row = {"version": version, "resolution": res, "deepcache": deepcache, "steps": args.steps,
                   "chunks_per_call": per_call, "cuda_graphs": use_graphs, "fast": use_fast,
                   "vae_mode": vae_mode,
                   "compile": args.compile, "frames": stats.frames, "total_s": total, "fps": stats.frames / total,
                   "warmup_s": warm_s, "stage_seconds": stats.stage_seconds, "unet_calls": stats.unet_calls,
                   "share_first_step": share, "shared_start_chunks": stats.shared_start_chunks,
                   "unet_tflop": flops / 1e12, "unet_tflops": flops / 1e12 / max(stats.stage_seconds["unet"], 1e-9),
                   "peak_alloc_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
                   "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30 if cuda else None,
                   "graph_failure": getattr(runner, "failed", None), "ab": ab_rows}
            official = OFFICIAL_S.get((version, deepcache))
            if official and not args.tiny:
                row["official_s"] = official
                row["speedup_vs_official"] = official / total
                row["target_fps"] = TARGET_FPS[version]
            rows.append(row)
            print(format_row(row), flush=True)
        if len(shares) == 2:
            off, on = rows[-2]["total_s"], rows[-1]["total_s"]
            print(f"# v{version} DC={'on' if deepcache else 'off'}: shared first step off {off:.2f} s, on {on:.2f} s, "
                  f"x{off / on:.3f}", flush=True)
        del pipe, runner
        if cuda:
            torch.cuda.empty_cache()
    return rows


def format_row(r: dict) -> str:
    st = r["stage_seconds"]
    stages = " ".join(f"{k}={st.get(k, 0):.2f}" for k in STAGES)
    mem = f"{r['peak_alloc_gib']:.1f}/{r['peak_reserved_gib']:.1f} GiB" if r["peak_alloc_gib"] is not None else "-"
    ref = (f" | official {r['official_s']:.1f} s -> x{r['speedup_vs_official']:.2f}, target {r['target_fps']} fps "
           f"{'MET' if r['fps'] >= r['target_fps'] else 'not met'}") if "official_s" in r else ""
    return (f"v{r['version']} {r['resolution']}px DC={'on ' if r['deepcache'] else 'off'} steps={r['steps']} "
            f"chunks/call={r['chunks_per_call']} graphs={r['cuda_graphs']} fast={r.get('fast')} | {r['frames']} frames in "
            f"{r['total_s']:.2f} s = {r['fps']:.1f} fps | {stages} | peak {mem} | "
            f"UNet {r['unet_tflop']:.4g} TFLOP at {r['unet_tflops']:.4g} TFLOP/s | warm-up {r['warmup_s']:.1f} s | "
            f"shared step 0: {r.get('shared_start_chunks', 0)} chunks{ref}")


def main() -> None:
    args = parse_args()
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    args.seconds = args.seconds or (2.0 if args.tiny else 10.0)
    args.steps = args.steps or (3 if args.tiny else 20)
    if device.type == "cpu":
        torch.set_num_threads(2)
        print(f"# device cpu, torch {torch.__version__}", flush=True)
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(f"# device {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    versions = ["tiny"] if args.tiny else args.versions.split(",")
    rows = []
    for version in versions:
        rows.extend(bench_version(args, version, device, dtype))
        if args.json:  # after each version, so a cut-off run still leaves its numbers
            Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    print("\n# summary")
    for r in rows:
        print(format_row(r))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
