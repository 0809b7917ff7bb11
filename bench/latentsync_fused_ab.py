"""A/B of one fused-path switch inside the full-size UNet, side by side in one process.

Builds the UNet (random weights, bf16) on the fused path and times one CFG-pair call of `--chunks`
16-frame chunks replayed from a CUDA graph, as the pipeline runs it, with one switch off and on,
alternated `--rounds` times; prints ms per chunk, the on/off ratio and the largest output difference
relative to the off output. Switches: `ff_geglu` (the feed-forward's GEMM + GEGLU kernel,
kernels.FF_GEGLU), `up_cat` (up layers without torch.cat, unet_fast.UP_LAYERS_WITHOUT_CAT),
`interleave` (the up-samplers' phase interleave as one kernel, unet_fast.PHASE_INTERLEAVE_KERNEL).

    python bench/latentsync_fused_ab.py --versions 1.6 --chunks 3 --switch ff_geglu   # needs CUDA + Triton

Measured on an H200 (v1.6, 3 chunks per call): ff_geglu off 78.58 / on 76.29 ms per chunk (x1.030);
up_cat off 77.05 / on 75.96 (x1.014); on two other H200s, interleave off 74.97 / on 74.64 (x1.004) and
75.38 / 75.23 (x1.002), outputs identical. A feed-forward LayerNorm folded into ff_geglu's epilogue
(row statistics only, the normalised rows never written) measured x0.994 the same way and was dropped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lipsync.latentsync import kernels, unet_fast  # noqa: E402
from lipsync.latentsync.config import unet_config  # noqa: E402
from lipsync.latentsync.unet import build_unet  # noqa: E402
from lipsync.latentsync.unet_fast import disable_fast_path, enable_fast_path  # noqa: E402

DEV = torch.device("cuda")
SWITCHES = {"ff_geglu": (kernels, "FF_GEGLU"), "up_cat": (unet_fast, "UP_LAYERS_WITHOUT_CAT"),
            "interleave": (unet_fast, "PHASE_INTERLEAVE_KERNEL")}


def graph_ms(unet, sample, t, audio, iters: int = 10, repeats: int = 5) -> tuple[float, torch.Tensor]:
    """Best-of-`repeats` mean ms of a CUDA-graph replay of one cfg_pair call, and its output."""
    run = lambda: unet(sample, t, audio, cfg_pair=True)  # noqa: E731
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(repeats):
        graph.replay()
        start.record()
        for _ in range(iters):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / iters)
    result = out.float().clone()
    del graph
    return best, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--versions", default="1.6")
    p.add_argument("--chunks", type=int, default=3, help="16-frame chunks per call (CFG pair: twice the batch)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--switch", default="ff_geglu", choices=sorted(SWITCHES))
    args = p.parse_args()
    if not kernels.available():
        sys.exit("needs CUDA and Triton")
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for version in args.versions.split(","):
        cfg = unet_config(version)
        torch.manual_seed(0)
        unet = build_unet(cfg, device=DEV, dtype=torch.bfloat16).requires_grad_(False)
        b, frames, lat = 2 * args.chunks, 16, cfg.latent_size
        with torch.inference_mode():
            sample = torch.randn(b, cfg.in_channels, frames, lat, lat, device=DEV, dtype=torch.bfloat16)
            sample[b // 2:] = sample[:b // 2]  # the pair's halves share the latents; audio is zero in the first
            audio = torch.randn(b * frames, 50, cfg.cross_attention_dim, device=DEV, dtype=torch.bfloat16)
            audio[: b * frames // 2] = 0
            t = torch.tensor(501, device=DEV)
            times: dict[bool, list[float]] = {False: [], True: []}
            outs: dict[bool, torch.Tensor] = {}
            module, flag = SWITCHES[args.switch]
            try:
                for _ in range(args.rounds):
                    for on in (False, True):
                        setattr(module, flag, on)
                        enable_fast_path(unet)
                        ms, outs[on] = graph_ms(unet, sample, t, audio)
                        times[on].append(ms / args.chunks)
                        print(f"v{version} {args.switch}={'on ' if on else 'off'}: {ms:7.2f} ms per call, "
                              f"{ms / args.chunks:6.2f} ms per chunk", flush=True)
            finally:
                setattr(module, flag, True)
                disable_fast_path(unet)
        off, on = min(times[False]), min(times[True])
        diff = ((outs[True] - outs[False]).abs().max() / outs[False].abs().max()).item()
        print(f"v{version} {args.switch}, {args.chunks} chunks/call: off {off:.2f} ms/chunk, on {on:.2f} ms/chunk, "
              f"x{off / on:.3f}; max|on - off| / max|off| = {diff:.2e}", flush=True)
        del unet


if __name__ == "__main__":
    main()
