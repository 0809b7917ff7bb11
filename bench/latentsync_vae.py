"""VAE decode of LatentSync faces (sd-vae-ft-mse, random weights), by memory layout and kernel.

The pipeline decodes every generated frame once (16 per chunk); at 512 px that is about 10% of a
v1.6 call. For 16 frames at 256 and 512 px (bf16) this prints ms per decode and achieved TFLOP/s for:
  * nchw           - the diffusers model as loaded (what the pipeline runs today);
  * channels_last  - weights and input in NHWC;
  * fused          - channels_last plus vae_fast.enable_fast_vae (our GroupNorm+SiLU kernels,
                     conv biases folded into one pass with the residual);
  * compile        - torch.compile of the NCHW decoder (inductor), with its compile time;
then the top CUDA kernels of one decode per variant (--kernels N).

    python bench/latentsync_vae.py                         # needs CUDA
    python bench/latentsync_vae.py --variants nchw,fused --kernels 0
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.latentsync_profile import kernel_table  # noqa: E402
from bench.latentsync_unet import time_ms  # noqa: E402
from lipsync.latentsync.vae import SD_VAE_FT_MSE_CONFIG, build_vae  # noqa: E402

VARIANTS = ("nchw", "channels_last", "fused", "compile")


def decode_flops(vae, z: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        vae.decode(z)
    return float(counter.get_total_flops())


def run_variant(name: str, resolution: int, frames: int, args, device) -> dict:
    vae = build_vae(SD_VAE_FT_MSE_CONFIG, device, torch.bfloat16, channels_last=name in ("channels_last", "fused"))
    if name == "fused":
        from lipsync.latentsync.vae_fast import enable_fast_vae

        if not enable_fast_vae(vae):
            return {"variant": name, "error": "fused decoder unsupported here"}
    z = torch.randn(frames, 4, resolution // 8, resolution // 8, device=device)
    compile_s = None
    if name == "compile":
        vae.model.decoder = torch.compile(vae.model.decoder, dynamic=False)
        t0 = time.perf_counter()
        with torch.inference_mode():
            vae.decode(z)
        torch.cuda.synchronize(device)
        compile_s = time.perf_counter() - t0
    with torch.inference_mode():
        ms = time_ms(lambda: vae.decode(z), device, args.iters, warmup=2)
        flops = decode_flops(vae, z) if name != "compile" else None
        kernels = kernel_table(lambda: vae.decode(z), device, args.kernels)[0] if args.kernels else []
        out = vae.decode(z)
    row = {"variant": name, "resolution": resolution, "frames": frames, "ms": ms, "ms_per_frame": ms / frames,
           "tflops": flops / ms / 1e9 if flops else None, "compile_s": compile_s, "kernels": kernels,
           "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    row["_out"] = out.float().cpu()
    del vae
    torch.cuda.empty_cache()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", default="256,512")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--kernels", type=int, default=15, help="top N CUDA kernels per variant (0 = off)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs CUDA")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    rows = []
    for resolution in (int(r) for r in args.resolutions.split(",")):
        base = None
        for name in args.variants.split(","):
            torch.manual_seed(0)
            row = run_variant(name, resolution, args.frames, args, device)
            if "error" in row:
                print(f"{resolution}px {name}: {row['error']}", flush=True)
                continue
            out = row.pop("_out")
            if base is None:
                base = (name, row["ms"], out)
            # bf16 decodes differ by rounding only: the largest deviation from the first variant, in [-1, 1] units
            row["max_abs_vs_first"] = (out - base[2]).abs().max().item()
            row["speedup_vs_first"] = base[1] / row["ms"]
            tf = f"{row['tflops']:.0f} TFLOP/s" if row["tflops"] else "-"
            comp = f", compiled in {row['compile_s']:.0f} s" if row["compile_s"] else ""
            print(f"{resolution}px {name:<14} {row['ms']:8.1f} ms / {args.frames} frames ({row['ms_per_frame']:.2f} ms/frame, "
                  f"{tf}) x{row['speedup_vs_first']:.2f} vs {base[0]}, max|diff| {row['max_abs_vs_first']:.4f}, "
                  f"peak {row['peak_gib']:.1f} GiB{comp}", flush=True)
            for k in row["kernels"]:
                print(f"    {k['ms']:>9.3f} {k.get('calls', ''):>6} {k.get('share', 0):>6.1%}  {k['kernel']}", flush=True)
            rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
