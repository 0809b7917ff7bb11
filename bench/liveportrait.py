"""Benchmark the LivePortrait take engine against an official-style loop, in one run.

Full-size networks with random weights (timings only; nothing here is a real model's output), a
synthetic 1080x1920 still with a face box in it, and a 125-frame take directed by director.py.

  ours:      F and M once, every frame's keypoints at once, W+G in batches of --batch under
             fp16/bf16 autocast (CUDA graph of the batch, or torch.compile), paste-back on the
             GPU into full frames, frames copied to pinned host memory (no encode);
  breakdown: the same work eager, each module timed alone (CUDA events), ms per frame;
  official:  the official pipeline's loop: batch 1, fp16 autocast, eager, per frame keypoints,
             stitching, W, G, the crop to the host, and the full-frame paste-back on the CPU
             (warp the crop to frame size, blend with the full-frame mask in float32).

Imports only torch, numpy, cv2 and personas/liveportrait (no ray, ffmpeg or diffusers):

    python bench/liveportrait.py                          # GPU: 125 frames, 1080x1920, fp16, graphs
    python bench/liveportrait.py --dtype bf16 --batch 8 --graphs off --compile on
    python bench/liveportrait.py --tiny                   # CPU smoke check, tiny config
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from personas.liveportrait.checkpoint import LivePortraitModels, build_models  # noqa: E402
from personas.liveportrait.config import LivePortraitConfig  # noqa: E402
from personas.liveportrait.crop import feather_mask  # noqa: E402
from personas.liveportrait.director import plan_take  # noqa: E402
from personas.liveportrait.engine import DTYPES, EngineOptions, LivePortraitEngine  # noqa: E402
from personas.liveportrait.keypoints import stitch, transform_keypoints  # noqa: E402

# The small golden config (tests/fixtures/liveportrait/parity.json "tiny"), for --tiny.
TINY = {
    "appearance_feature_extractor_params": {"block_expansion": 8, "max_features": 64,
                                            "reshape_channel": 4, "reshape_depth": 16,
                                            "num_resblocks": 2},
    "motion_extractor_params": {"backbone": "tiny", "depths": [1, 1, 2, 1], "dims": [8, 16, 32, 64]},
    "warping_module_params": {"block_expansion": 8, "max_features": 64, "reshape_channel": 4,
                              "dense_motion_params": {"block_expansion": 4, "max_features": 32,
                                                      "num_blocks": 3, "reshape_depth": 16,
                                                      "compress": 2}},
    "spade_generator_params": {"block_expansion": 8, "max_features": 64},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny config on CPU in fp32 (smoke check)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--frames", type=int, default=None, help="default 125 (tiny: 8)")
    p.add_argument("--batch", type=int, default=None, help="default: 16 on CUDA, 1 on CPU")
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16"), help="ours, on CUDA")
    p.add_argument("--graphs", default="on", choices=("on", "off"))
    p.add_argument("--compile", default="off", choices=("on", "off"))
    p.add_argument("--channels-last", default="on", choices=("on", "off"))
    p.add_argument("--size", default=None, help="frame WxH (default 1080x1920; tiny: 540x960)")
    p.add_argument("--repeats", type=int, default=3, help="timed takes (best is reported)")
    p.add_argument("--no-official", action="store_true", help="skip the official-style loop")
    return p.parse_args()


def random_models(config: LivePortraitConfig, device: torch.device) -> LivePortraitModels:
    """Networks of `config` with random weights scaled like a trained net's (fan-in for
    weights, near-identity norms), in eval mode, G's spectral norms folded."""
    models = build_models(config, device)
    gen = torch.Generator(device=device).manual_seed(0)
    for net in models.networks().values():
        for name, t in net.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if not t.is_floating_point():
                t.zero_()
                continue
            r = torch.randn(t.shape, generator=gen, device=device)
            if leaf == "running_var":
                r = 1 + 0.2 * r.abs()
            elif leaf == "running_mean" or leaf == "bias":
                r = 0.02 * r
            elif leaf in ("weight_u", "weight_v"):
                r = r / r.norm()
            elif leaf in ("gamma", "beta"):
                r = 0.1 * r
            elif t.dim() == 1:
                r = 1 + 0.1 * r
            else:
                r = r / math.sqrt(r[0].numel())
            t.copy_(r)
        net.eval().requires_grad_(False)
    models.G.fold_spectral_norm()
    return models


def synthetic_still(w: int, h: int) -> tuple[np.ndarray, list[float]]:
    """A textured frame and a face box about 40% of its width, a little above the centre."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    still = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    side = 0.4 * w
    box = [w / 2 - side / 2, 0.4 * h - side / 2, w / 2 + side / 2, 0.4 * h + side / 2]
    return still, box


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Timer:
    """Sums the time of named sections: CUDA events on the GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: dict[str, list] = {}

    def section(self, name: str):
        timer = self

        class _Section:
            def __enter__(self):
                if timer.cuda:
                    self.start = torch.cuda.Event(enable_timing=True)
                    self.start.record()
                else:
                    self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if timer.cuda:
                    end = torch.cuda.Event(enable_timing=True)
                    end.record()
                    timer.marks.setdefault(name, []).append((self.start, end))
                else:
                    timer.marks.setdefault(name, []).append(time.perf_counter() - self.t0)

        return _Section()

    def ms(self, name: str) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in self.marks.get(name, []))
        return 1000 * sum(self.marks.get(name, []))


def time_ours(engine: LivePortraitEngine, still, box, plan, repeats: int) -> dict:
    """The whole take as the product runs it for a new persona: crop, F and M (the source cache
    emptied first), keypoints, W+G batches, paste-back, frames to the host."""
    device = engine.device
    engine.render_take(still, box, plan, lambda f: None)          # warm-up: graph capture, compile
    best = None
    for _ in range(repeats):
        engine._sources.clear()
        sync(device)
        t0 = time.perf_counter()
        info = engine.render_take(still, box, plan, lambda f: None)
        sync(device)
        wall = time.perf_counter() - t0
        best = wall if best is None else min(best, wall)
    return {"wall_s": best, "frames": info.frames, "params": info.params, "timings": info.timings}


@torch.no_grad()
def breakdown(engine: LivePortraitEngine, still, box, plan) -> dict:
    """Each module of our path alone, eager, batched as the engine batches: ms per frame."""
    device, timer, models = engine.device, Timer(engine.device), engine.models
    x = torch.zeros(1, 3, 256, 256, device=device)
    for _ in range(2):                                             # 1 warm-up + 1 timed pass
        timer.marks.clear()
        with timer.section("F"):
            models.F(x)
        with timer.section("M"):
            models.kp_info(x)
        source = engine.prepare(still, box, plan.crop_scale)
        with timer.section("stitching"):
            x_d = engine.driving_keypoints(source, plan)
        autocast = torch.autocast("cuda", dtype=engine.dtype) if device.type == "cuda" else None
        for start in range(0, plan.n_frames, engine.batch):
            k = x_d[start:start + engine.batch]
            b = k.shape[0]
            with autocast or torch.autocast("cpu", enabled=False):
                with timer.section("W"):
                    warped = models.W(source.feature_3d.expand(b, -1, -1, -1, -1),
                                      kp_source=source.x_s.expand(b, -1, -1), kp_driving=k)
                with timer.section("G"):
                    crops = models.G(warped["out"])
            with timer.section("paste-back"):
                frames = source.paster(crops.float())
            with timer.section("host copy"):
                frames.cpu()
    n = plan.n_frames
    return {name: timer.ms(name) / (n if name not in ("F", "M") else 1)
            for name in ("F", "M", "stitching", "W", "G", "paste-back", "host copy")}


@torch.no_grad()
def official_loop(engine: LivePortraitEngine, models: LivePortraitModels, still, box,
                  plan) -> dict:
    """The official pipeline's per-frame loop: batch 1, fp16 autocast, eager, CPU paste-back.
    `models`: the same weights in the official layout (NCHW), untouched by our engine."""
    device, timer = engine.device, Timer(engine.device)
    cuda = device.type == "cuda"
    source = engine.prepare(still, box, plan.crop_scale)
    crop, h, w = source.crop, *still.shape[:2]
    # The official paste-back: the mask warped to the whole frame once, then per frame the crop
    # warped to frame size and blended over every pixel in float32.
    mask = cv2.warpAffine(feather_mask(crop.size), crop.inverse, (w, h), flags=cv2.INTER_LINEAR)
    mask = np.clip(mask, 0, 1)[..., None]
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if cuda else (
        lambda: torch.autocast("cpu", enabled=False))
    info = source.kp_info
    t0 = time.perf_counter()
    for i in range(plan.n_frames):
        with timer.section("stitching"):
            one = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=device)
            driving = dict(info, pitch=info["pitch"] + one(plan.pitch[i]),
                           yaw=info["yaw"] + one(plan.yaw[i]), roll=info["roll"] + one(plan.roll[i]),
                           exp=info["exp"] + one(plan.exp_delta[i])[None],
                           t=info["t"] + one(plan.t_delta[i])[None],
                           scale=info["scale"] * one(plan.scale[i]))
            x_d = stitch(models.S.stitching, source.x_s, transform_keypoints(driving))
        with autocast():
            with timer.section("W"):
                out = models.W(source.feature_3d, kp_source=source.x_s, kp_driving=x_d)["out"]
            with timer.section("G"):
                image = models.G(out)
        rgb = (image[0].float().permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        p0 = time.perf_counter()
        warped = cv2.warpAffine(rgb, crop.inverse, (w, h), flags=cv2.INTER_LINEAR)
        np.clip(mask * warped + (1 - mask) * still, 0, 255).astype(np.uint8)
        timer.marks.setdefault("paste-back (CPU)", []).append(time.perf_counter() - p0)
    sync(device)
    wall = time.perf_counter() - t0
    n = plan.n_frames
    paste_ms = 1000 * sum(timer.marks["paste-back (CPU)"]) / n
    return {"wall_s": wall, "W": timer.ms("W") / n, "G": timer.ms("G") / n,
            "stitching": timer.ms("stitching") / n, "paste-back (CPU)": paste_ms}


def main() -> None:
    args = parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny
                                          else "cpu"))
    n = args.frames or (8 if args.tiny else 125)
    w, h = (int(v) for v in (args.size or ("540x960" if args.tiny else "1080x1920")).split("x"))
    config = LivePortraitConfig.from_dict(TINY) if args.tiny else LivePortraitConfig()
    # 1. Models, still, plan.
    torch.backends.cudnn.benchmark = True
    models = random_models(config, device)
    still, box = synthetic_still(w, h)
    plan = plan_take("happy", "front", 0.7, seconds=n / 25.0, fps=25.0, seed=0)
    options = EngineOptions(batch=args.batch or (16 if device.type == "cuda" else 1),
                            cuda_graphs=args.graphs == "on", compile=args.compile == "on",
                            channels_last=args.channels_last == "on")
    official_models = None if args.no_official else copy.deepcopy(models)
    engine = LivePortraitEngine(models, device, DTYPES[args.dtype], options)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # 2. Ours, whole take; then the per-module breakdown; then the official-style loop.
    ours = time_ours(engine, still, box, plan, args.repeats)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    parts = breakdown(engine, still, box, plan)
    official = (None if args.no_official
                else official_loop(engine, official_models, still, box, plan))
    # 3. The table.
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\nLivePortrait take bench: {name}, torch {torch.__version__}, "
          f"{'tiny' if args.tiny else 'full-size'} random weights, {n} frames, "
          f"{w}x{h} frame, 512 px crop")
    print(f"ours: {engine.name}, batch {engine.batch}, graphs {args.graphs} "
          f"(used: {ours['params']['cuda_graphs']}), compile {args.compile}, "
          f"channels-last {args.channels_last}")
    print(f"  whole take (crop + F+M once, W+G per frame, paste-back, host copy): "
          f"{ours['wall_s']:.3f} s = {n / ours['wall_s']:.1f} frames/s "
          f"(source {ours['timings']['source_s']:.3f} s, frames {ours['timings']['frames_s']:.3f} s)")
    print("  per module, eager, ms per frame (F and M: once per take):")
    for k, v in parts.items():
        print(f"    {k:12s} {v:9.3f}")
    print(f"  peak GPU memory: {peak:.2f} GiB" if peak is not None else "  peak GPU memory: n/a (CPU)")
    if official is not None:
        print("official-style loop (batch 1, fp16 autocast, eager, CPU paste-back):"
              if device.type == "cuda" else "official-style loop (batch 1, fp32 on CPU, eager):")
        print(f"  whole take: {official['wall_s']:.3f} s = {n / official['wall_s']:.1f} frames/s")
        for k in ("stitching", "W", "G", "paste-back (CPU)"):
            print(f"    {k:16s} {official[k]:9.3f} ms/frame")
        ours_wg = parts["W"] + parts["G"]
        print(f"ratio, whole take: {official['wall_s'] / ours['wall_s']:.2f}x; "
              f"W+G per frame (eager breakdown vs official): "
              f"{(official['W'] + official['G']) / ours_wg:.2f}x")
        if device.type == "cuda" and not args.tiny:
            ok = ours["wall_s"] <= 0.5 and official["wall_s"] / ours["wall_s"] >= 6
            print(f"target (<= 0.5 s and >= 6x the official-style loop): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
