"""Throughput of face restore (GFPGAN v1.4 architecture) and upscale (Real-ESRGAN) with random weights.

    python bench/restore_upscale.py                  # GPU when available: full-size models
    python bench/restore_upscale.py --tiny           # CPU smoke: tiny configs, small inputs

Prints faces/s for restore at several batch sizes (512x512 crops, uint8 in and out, so host
transfers are included) and megapixels/s for RRDBNet x4plus and SRVGG general-x4v3 on a
1080p input (tiled as the memory budget decides), plus peak GPU memory for each run, then
compares with the published figures issue 6 sets as targets (see PUBLISHED). `--json PATH`
also writes every row and the comparison. Random weights: speed and memory only, no quality
claims.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enhance.gfpgan import GFPGANv1Clean  # noqa: E402
from enhance.loaders import build_model  # noqa: E402
from enhance.restore import FaceRestorer, RestoreOptions  # noqa: E402
from enhance.rrdbnet import RRDBNet  # noqa: E402
from enhance.srvgg import SRVGGNetCompact  # noqa: E402
from enhance.upscale import UpscaleOptions, Upscaler, activation_bytes_per_px  # noqa: E402

TINY_GFPGAN = dict(out_size=512, num_style_feat=16, channel_multiplier=1, num_mlp=1, narrow=0.0625)
TINY_RRDB = dict(scale=4, num_feat=8, num_block=2, num_grow_ch=4)
TINY_SRVGG = dict(num_feat=8, num_conv=4, upscale=4)
FRAME_1080P = (1080, 1920)

# Issue 6's targets: at least these, in PyTorch. The upscale figure is read as 2.9 frames/s on
# 1920x1080 input frames (the stricter reading of "1080p->4K" for an x4 model); x4plus is held
# to the same general-x4v3-class figure although it needs ~15x the compute per pixel.
PUBLISHED = {
    "restore": dict(ms_per_face=5.5, source="GFPGAN-class, TensorRT, RTX 3090"),
    "upscale": dict(fps=2.9, source="realesr-general-x4v3-class, A100, 1080p->4K"),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else None


def _timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: cuDNN autotune, allocator growth
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def bench_restore(args, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    net = GFPGANv1Clean(**TINY_GFPGAN) if args.tiny else build_model("GFPGANv1.4")
    rows = []
    graph_modes = [True, False] if device.type == "cuda" else [False]  # side by side on a GPU
    for batch, graphs in [(b, g) for b in args.batches for g in graph_modes]:
        options = RestoreOptions(precision=args.precision, batch_size=batch, memory_fraction=args.memory_fraction,
                                 channels_last=not args.nchw, cuda_graphs=graphs)
        restorer = FaceRestorer(net, "gfpgan", device, options)
        crops = np.random.default_rng(0).integers(0, 256, (batch, 512, 512, 3), dtype=np.uint8)
        _reset_peak(device)
        seconds = _timed(lambda: restorer.restore(crops, 0.8), device, args.repeats)
        rows.append(dict(stage="restore", model="GFPGANv1Clean" + (" tiny" if args.tiny else " v1.4")
                         + (" graphs" if graphs else " eager"),
                         batch=batch, dtype=str(restorer.dtype).replace("torch.", ""), seconds=seconds,
                         faces_per_s=batch / seconds, peak_gib=_peak_gib(device),
                         est_gib=batch * restorer.bytes_per_face() / 1024**3))
    return rows


def bench_upscale(args, device: torch.device) -> list[dict]:
    height, width = (54, 96) if args.tiny else FRAME_1080P
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    nets = {
        "RRDBNet x4plus": RRDBNet(**TINY_RRDB) if args.tiny else build_model("RealESRGAN_x4plus"),
        "SRVGG general-x4v3": SRVGGNetCompact(**TINY_SRVGG) if args.tiny else build_model("realesr-general-x4v3"),
    }
    rows = []
    for name, net in nets.items():
        options = UpscaleOptions(precision=args.precision, tile=args.tile, memory_fraction=args.memory_fraction,
                                 channels_last=not args.nchw)
        upscaler = Upscaler(net, name, device, options)
        _reset_peak(device)
        seconds = _timed(lambda: upscaler.upscale(image), device, args.repeats)
        window = (min(upscaler.tile or 10**6, height + 20) + 2 * upscaler.context)
        rows.append(dict(stage="upscale", model=name, input=f"{width}x{height}", tile=upscaler.tile,
                         tile_batch=upscaler.tile_batch, dtype=str(upscaler.dtype).replace("torch.", ""),
                         seconds=seconds, in_mp_per_s=width * height / 1e6 / seconds,
                         out_mp_per_s=width * height * upscaler.scale**2 / 1e6 / seconds,
                         peak_gib=_peak_gib(device),
                         est_tile_gib=window * window * upscaler.tile_batch
                         * activation_bytes_per_px(upscaler.net, upscaler.dtype) / 1024**3))
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'stage':8} {'model':22} {'batch/tile':>10} {'dtype':8} {'s/iter':>8} {'rate':>18} {'peak GiB':>9}")
    for r in rows:
        if r["stage"] == "restore":
            size, rate = str(r["batch"]), f"{r['faces_per_s']:.1f} faces/s"
        else:
            size, rate = f"{r['tile']}x{r['tile_batch']}", f"{r['in_mp_per_s']:.2f} in-MP/s"
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"{r['stage']:8} {r['model']:22} {size:>10} {r['dtype']:8} {r['seconds']:8.3f} {rate:>18} {peak:>9}")


def compare(rows: list[dict], tiny: bool) -> list[dict]:
    """Each row against its published figure: `ratio` > 1 means faster than published."""
    out = []
    for r in rows:
        if r["stage"] == "restore":
            ref = PUBLISHED["restore"]
            ours = 1000 * r["seconds"] / r["batch"]
            out.append(dict(what=f"restore batch {r['batch']}{r['model'].split(' ')[-1].join('  ')}", metric="ms/face",
                            ours=ours,
                            published=ref["ms_per_face"], ratio=ref["ms_per_face"] / ours, source=ref["source"]))
        else:
            ref = PUBLISHED["upscale"]
            ours = 1 / r["seconds"]
            out.append(dict(what=f"upscale {r['model']}", metric=f"frames/s @{r['input']}", ours=ours,
                            published=ref["fps"], ratio=ours / ref["fps"], source=ref["source"],
                            # the published figure is for the compact general-x4v3 class; RRDBNet x4plus
                            # needs ~15x its compute per pixel, so it is shown, not held to it
                            other_class="x4plus" in r["model"]))
    for c in out:  # tiny configs on small inputs say nothing about the real models
        c["passed"] = None if tiny or c.get("other_class") else c["ratio"] >= 1.0
    return out


def print_comparison(comparison: list[dict], tiny: bool) -> None:
    print("\nAgainst the published figures (issue 6 targets: at least these, in PyTorch):")
    print(f"{'what':30} {'metric':24} {'ours':>9} {'published':>9} {'ratio':>7}  result")
    for c in comparison:
        result = ("n/a (tiny)" if tiny else "n/a (not the published model class)") if c["passed"] is None else (
            "PASS" if c["passed"] else "FAIL")
        print(f"{c['what']:30} {c['metric']:24} {c['ours']:9.2f} {c['published']:9.2f} {c['ratio']:6.2f}x  {result}")
    for ref in PUBLISHED.values():
        print(f"  published: {ref['source']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny configs and small inputs (CPU smoke)")
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    parser.add_argument("--precision", default=None, choices=["fp16", "bf16", "fp32"])
    parser.add_argument("--batches", default="1,8,32", help="restore batch sizes, comma separated")
    parser.add_argument("--tile", type=int, default=None, help="upscale tile (input px); default from memory")
    parser.add_argument("--memory-fraction", type=float, default=None, help="per-process GPU memory cap")
    parser.add_argument("--nchw", action="store_true", help="keep NCHW on GPU (default: channels_last)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # equal tile shapes: autotuning pays off
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    rows = bench_restore(args, device) + bench_upscale(args, device)
    print_table(rows)
    comparison = compare(rows, args.tiny)
    print_comparison(comparison, args.tiny)
    if args.json:
        report = dict(device=str(device), gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                      torch=torch.__version__, args=vars(args), rows=rows, comparison=comparison)
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
