"""Upscaler: load once, run many. Real-ESRGAN models with tiled inference, or plain Lanczos.

Tiling: the (reflect-padded) image is cut into equal windows; neighbouring tiles share `overlap`
px that are cross-faded with linear ramps, and each tile also sees `context` extra px that are
computed and thrown away, so the zero padding at a tile's edge never reaches kept pixels at full
weight. Equal window sizes let several tiles run as one batch on a GPU.

Borders: like realesrgan-ncnn (whose output our converted weights match), the whole image is
reflect-padded by `border_pad` px first; the model's own zero padding then never touches real
pixels, so borders look like the interior.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from enhance.device import memory_budget, module_bytes, pick_dtype, resolve_device, to_memory_format
from enhance.srvgg import SRVGGNetCompact

LANCZOS_ENGINE = "lanczos-resample"
MAX_TILE = 1024  # fewer, larger tiles: fewer seams; smaller budgets get smaller tiles
# Context each tile needs so tiled output equals untiled within 1/255 (bench/upscale_context.py,
# real weights, fp32, H200): RRDBNet x4plus reaches far: on a 256 px photo in 64 px tiles 32 px
# of context left 7/255, 48 and 64 px 3/255, 96 px 1/255 (on a 96 px image 32 px had looked
# enough); SRVGGNetCompact's 18-conv receptive field needs much less.
CONTEXT_RRDB = 96
CONTEXT_SRVGG = 16
MIN_TILE = 32
MAX_TILE_BATCH = 16
# Headroom on the per-pixel estimate. Measured on an H100, fp16, 1088 px windows: RRDBNet x4plus
# peaked at 10.2 GiB for an estimated 11.9 per tile; SRVGG stays far below its estimate.
SAFETY = 1.5


@dataclass(frozen=True)
class UpscaleOptions:
    """How an Upscaler runs; the defaults suit both CPU and GPU replicas."""

    tile: int | None = None  # tile side in input px; None: largest that fits the memory budget; 0: never tile
    overlap: int = 16  # input px shared by neighbouring tiles and cross-faded
    context: int | None = None  # extra input px each tile sees beyond its kept region; None: per model
    border_pad: int = 10  # reflect padding around the whole image (matches realesrgan-ncnn)
    precision: str | None = None  # "fp16" | "bf16" | "fp32"; None: fp16 on GPU, fp32 on CPU
    memory_fraction: float | None = None  # per-process GPU memory cap; tiles are sized from it
    tile_batch: int | None = None  # tiles per forward; None: as many as the budget allows (<= 16)
    channels_last: bool = True  # NHWC on CUDA: cuDNN's tensor-core convs prefer it (ignored on CPU)


@dataclass(frozen=True)
class AxisTile:
    keep0: int  # region this tile writes (input px, padded-image coordinates)
    keep1: int
    in0: int  # window fed to the network (keep region + context, same size for every tile)
    in1: int
    ramp_lo: int  # overlap with the previous tile (cross-faded), 0 for the first
    ramp_hi: int  # overlap with the next tile, 0 for the last


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def axis_tiles(length: int, tile: int, overlap: int, context: int, multiple: int = 1) -> list[AxisTile]:
    """Spread equal tiles over one axis, each overlapping its neighbours by at least `overlap`."""
    if tile <= 0 or length <= tile:
        return [AxisTile(0, length, 0, length, 0, 0)]
    if tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must be larger than twice the overlap ({overlap})")
    count = math.ceil((length - overlap) / (tile - overlap))
    starts = [((i * (length - tile)) // (count - 1)) // multiple * multiple for i in range(count)]
    starts[-1] = length - tile
    window = min(length, tile + 2 * context)
    tiles = []
    for i, start in enumerate(starts):
        in0 = min(max(start - context, 0), length - window)
        ramp_lo = starts[i - 1] + tile - start if i > 0 else 0
        ramp_hi = start + tile - starts[i + 1] if i + 1 < count else 0
        tiles.append(AxisTile(start, start + tile, in0, in0 + window, ramp_lo, ramp_hi))
    return tiles


def _ramp_weights(t: AxisTile, scale: int, device: torch.device) -> torch.Tensor:
    w = torch.ones((t.keep1 - t.keep0) * scale, device=device)
    if t.ramp_lo:
        n = t.ramp_lo * scale
        w[:n] = (torch.arange(n, device=device) + 0.5) / n
    if t.ramp_hi:
        n = t.ramp_hi * scale
        w[-n:] = torch.minimum(w[-n:], (torch.arange(n, 0, -1, device=device) - 0.5) / n)
    return w


def activation_bytes_per_px(net: nn.Module, dtype: torch.dtype) -> float:
    """Peak activation bytes per input pixel for one forward (estimate, see bench for measurements)."""
    itemsize = torch.finfo(dtype).bits // 8
    scale = net.scale
    feat = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).out_channels
    if isinstance(net, SRVGGNetCompact):  # all convs run at input resolution
        elems = 4 * feat + 4 * 3 * scale * scale
    else:  # RRDBNet: the last convs run at output resolution
        elems = 3 * feat * scale * scale + 8 * feat
    return elems * itemsize * SAFETY


def resize_lanczos(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """High-quality resample (Lanczos-3, antialiased when shrinking) of an RGB uint8 image."""
    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")


class Upscaler:
    """Upscale RGB uint8 images with a super-resolution network, or with Lanczos when `net` is None.

    Args:
        net: RRDBNet / SRVGGNetCompact with weights loaded, or None for the resample engine.
        engine: what runs, for job metadata (e.g. "realesrgan-x4plus (ncnn weights, torch)").
        device: torch device; None picks CUDA when available.
        options: tiling, precision and memory cap.
        scale: the factor of `upscale()` for the resample engine (networks carry their own).

    `model_runs` counts the pictures the network has enlarged since load: one per picture, however
    many tiles (and tile batches) that picture was cut into. Lanczos resampling never counts.
    """

    def __init__(self, net: nn.Module | None, engine: str, device: str | torch.device | None = None,
                 options: UpscaleOptions = UpscaleOptions(), scale: int = 4) -> None:
        self.engine = engine
        self.options = options
        self.device = resolve_device(device)
        self.dtype = pick_dtype(self.device, options.precision)
        self.net = None if net is None else net.eval().requires_grad_(False).to(self.device, self.dtype)
        self.memory_format = (torch.channels_last if options.channels_last and self.device.type == "cuda"
                              else torch.contiguous_format)
        if self.net is not None:
            self.net = to_memory_format(self.net, self.memory_format)
        self.scale = net.scale if net is not None else scale
        self.multiple = getattr(net, "size_multiple", 1)
        if options.context is not None:
            self.context = options.context
        else:
            self.context = CONTEXT_SRVGG if isinstance(net, SRVGGNetCompact) else CONTEXT_RRDB
        self.tile, self.tile_batch = self._plan_tiles()
        self.model_runs = 0
        self._count_lock = threading.Lock()  # stages may share one Upscaler across threads

    def _plan_tiles(self) -> tuple[int, int]:
        opts = self.options
        if self.net is None:
            return 0, 1
        per_px = activation_bytes_per_px(self.net, self.dtype)
        budget = memory_budget(self.device, opts.memory_fraction, module_bytes(self.net))
        tile = opts.tile
        if tile is None:
            side = int(math.sqrt(budget / per_px)) - 2 * self.context
            tile = max(MIN_TILE, min(MAX_TILE, side // 8 * 8))
        if tile:
            tile = _round_up(tile, self.multiple)
        batch = opts.tile_batch
        if batch is None:
            window = (tile or MAX_TILE) + 2 * self.context
            batch = int(max(1, min(MAX_TILE_BATCH, budget // (window * window * per_px))))
        return tile, batch

    def __repr__(self) -> str:
        return f"Upscaler({self.engine!r}, x{self.scale}, {self.device}, {self.dtype}, tile={self.tile})"

    @torch.inference_mode()
    def upscale_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) float RGB in [0, 1] -> (1, 3, H*s, W*s) float32, unclamped."""
        if self.net is None:
            raise ValueError("the resample engine has no tensor path; use upscale()")
        opts, s = self.options, self.scale
        h, w = x.shape[-2:]
        # 1. Reflect-pad the border (replicate when the image is too small to reflect), then
        #    round up to what pixel-unshuffle needs.
        pad = opts.border_pad
        x = x.to(self.device, self.dtype)
        if pad:
            x = F.pad(x, (pad,) * 4, mode="reflect" if min(h, w) > pad else "replicate")
        extra_h = _round_up(x.shape[-2], self.multiple) - x.shape[-2]
        extra_w = _round_up(x.shape[-1], self.multiple) - x.shape[-1]
        if extra_h or extra_w:
            x = F.pad(x, (0, extra_w, 0, extra_h), mode="replicate")
        # 2. Run tile by tile, cross-fading overlaps into a float32 canvas.
        out = self._run_tiles(x)
        with self._count_lock:
            self.model_runs += 1
        # 3. Drop the padding.
        return out[..., pad * s:(pad + h) * s, pad * s:(pad + w) * s]

    def _run_tiles(self, x: torch.Tensor) -> torch.Tensor:
        opts, s = self.options, self.scale
        H, W = x.shape[-2:]
        ctx, ov = _round_up(self.context, self.multiple), _round_up(opts.overlap, self.multiple)
        ys = axis_tiles(H, self.tile, ov, ctx, self.multiple)
        xs = axis_tiles(W, self.tile, ov, ctx, self.multiple)
        if len(ys) == 1 and len(xs) == 1:
            return self.net(x.contiguous(memory_format=self.memory_format)).float()
        canvas = torch.zeros(1, 3, H * s, W * s, device=self.device)
        weight_sum = torch.zeros(1, 1, H * s, W * s, device=self.device)
        jobs = [(ty, tx) for ty in ys for tx in xs]
        for i in range(0, len(jobs), self.tile_batch):
            batch = jobs[i:i + self.tile_batch]
            tiles = torch.cat([x[..., ty.in0:ty.in1, tx.in0:tx.in1] for ty, tx in batch])
            result = self.net(tiles.contiguous(memory_format=self.memory_format)).float()
            for k, (ty, tx) in enumerate(batch):
                part = result[k:k + 1, :, (ty.keep0 - ty.in0) * s:(ty.keep1 - ty.in0) * s,
                              (tx.keep0 - tx.in0) * s:(tx.keep1 - tx.in0) * s]
                wgt = _ramp_weights(ty, s, self.device)[:, None] * _ramp_weights(tx, s, self.device)[None, :]
                canvas[..., ty.keep0 * s:ty.keep1 * s, tx.keep0 * s:tx.keep1 * s] += part * wgt
                weight_sum[..., ty.keep0 * s:ty.keep1 * s, tx.keep0 * s:tx.keep1 * s] += wgt
        return canvas / weight_sum

    @torch.inference_mode()
    def warm_up(self) -> list[str]:
        """Lazy initialisation and kernel tuning before the first job: one batch of full tile
        windows (the shape every tiled image uses); untiled images vary in size with the input."""
        if self.net is None:
            return []
        side = self.tile + 2 * _round_up(self.context, self.multiple) if self.tile > 0 else 256
        side = _round_up(side, self.multiple)
        blank = torch.zeros(max(1, self.tile_batch), 3, side, side, device=self.device,
                            dtype=self.dtype).contiguous(memory_format=self.memory_format)
        self.net(blank)
        return [f"{self.engine} tile windows {tuple(blank.shape)}"]

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> RGB uint8 (H*scale, W*scale, 3)."""
        _check_image(image)
        h, w = image.shape[:2]
        if self.net is None:
            return resize_lanczos(image, w * self.scale, h * self.scale)
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255)
        y = self.upscale_tensor(x)
        return y.clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()

    def upscale_to(self, image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int]:
        """Bring an image to exactly (width, height): the network once when it enlarges, then Lanczos.

        Returns the image and the model runs this took: 1 when the network enlarged the picture,
        0 when Lanczos alone did the job (resample engine, or no enlargement needed).
        """
        _check_image(image)
        if width <= 0 or height <= 0:
            raise ValueError(f"target size must be positive, got {width}x{height}")
        h, w = image.shape[:2]
        runs = 0
        if self.net is not None and (width > w or height > h):
            image = self.upscale(image)
            runs = 1
        return resize_lanczos(image, width, height), runs
