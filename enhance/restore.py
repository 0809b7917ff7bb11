"""FaceRestorer: GFPGAN on aligned face crops (no detection here), and paste-back into frames.

The lip-sync stage already aligned every face to a 512x512 crop and knows each crop's affine
matrix into its frame, so this stage only restores those crops (batched) and blends them back
with a feathered mask. See enhance/temporal.py for the flicker counter-measures.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from enhance.device import memory_budget, module_bytes, pick_dtype, resolve_device, to_memory_format
from enhance.gfpgan import GFPGANv1Clean
from enhance.temporal import ResidualStabilizer

MAX_BATCH = 32
# Peak activation bytes per output pixel per top-resolution decoder channel, at 2-byte precision.
# GFPGAN v1.4 at 512 px gives 0.375 GiB/face; measured on an H100 (bench/restore_upscale.py,
# fp16): 11.7 GiB peak at batch 32 including the weights.
FACE_BYTES_PER_PX_CH = 24.0


@dataclass(frozen=True)
class RestoreOptions:
    precision: str | None = None  # "fp16" | "bf16" | "fp32"; None: fp16 on GPU, fp32 on CPU
    memory_fraction: float | None = None  # per-process GPU memory cap; the batch is sized from it
    batch_size: int | None = None  # faces per forward; None: from the memory budget (<= 32)
    # Official GFPGANer draws fresh decoder noise per call, one source of flicker; we use the
    # noise maps stored with the weights unless asked otherwise.
    randomize_noise: bool = False
    channels_last: bool = True  # NHWC on CUDA: cuDNN's tensor-core convs prefer it (ignored on CPU)
    # CUDA: replay one captured graph per batch shape. At batch 1 the generator's ~hundreds of small
    # kernels are bound by Python launch overhead (H200: 10.7 ms/face eager; see bench/restore_upscale.py).
    cuda_graphs: bool = True


def _check_crops(crops: np.ndarray, size: int) -> None:
    if (not isinstance(crops, np.ndarray) or crops.dtype != np.uint8 or crops.ndim != 4
            or crops.shape[1:] != (size, size, 3)):
        raise ValueError(f"expected uint8 crops of shape (N, {size}, {size}, 3), got "
                         f"{getattr(crops, 'dtype', type(crops))} {getattr(crops, 'shape', '')}")


class FaceRestorer:
    """Restore aligned face crops with a GFPGANv1Clean generator (weights already loaded).

    Args:
        net: the generator; its `out_size` is the crop size it takes (512 for v1.4).
        engine: what runs, for job metadata (e.g. "gfpgan-v1.4 (torch)").
        device: torch device; None picks CUDA when available.
        options: precision, memory cap, batch size.

    Counters since load: `faces_restored` (crops that went through the generator) and
    `forward_passes` (generator calls; a batch of crops is one pass).
    """

    def __init__(self, net: GFPGANv1Clean, engine: str, device: str | torch.device | None = None,
                 options: RestoreOptions = RestoreOptions()) -> None:
        self.engine = engine
        self.device = resolve_device(device)
        self.dtype = pick_dtype(self.device, options.precision)
        self.memory_format = (torch.channels_last if options.channels_last and self.device.type == "cuda"
                              else torch.contiguous_format)
        self.net = to_memory_format(net.eval().requires_grad_(False).to(self.device, self.dtype), self.memory_format)
        self.size = net.out_size
        self.randomize_noise = options.randomize_noise
        # Always taken: it also applies the per-process memory cap when one is given.
        budget = memory_budget(self.device, options.memory_fraction, module_bytes(self.net))
        self.batch_size = options.batch_size or int(max(1, min(MAX_BATCH, budget // self.bytes_per_face())))
        self.faces_restored = 0
        self.forward_passes = 0
        self._count_lock = threading.Lock()  # stages may share one FaceRestorer across threads
        use_graphs = options.cuda_graphs and self.device.type == "cuda" and not options.randomize_noise
        self._graphs = _GraphedForward(self.net) if use_graphs else None

    def bytes_per_face(self) -> float:
        """Estimated peak activation bytes of one face in a forward."""
        top_channels = self.net.stylegan_decoder.to_rgbs[-1].modulated_conv.modulation.out_features
        return self.size * self.size * top_channels * FACE_BYTES_PER_PX_CH * self.dtype.itemsize / 2

    def graph_batches(self) -> list[int]:
        """The batch sizes graphs are captured for: powers of two up to batch_size, and it."""
        sizes = {self.batch_size}
        size = 1
        while size < self.batch_size:
            sizes.add(size)
            size *= 2
        return sorted(sizes)

    def graph_batch(self, n: int) -> int:
        return next(size for size in self.graph_batches() if size >= n)

    @torch.inference_mode()
    def warm_up(self) -> list[str]:
        """Run (and on CUDA capture) every batch size a job will use, on blank faces."""
        sizes = self.graph_batches() if self._graphs is not None else [self.batch_size]
        for size in sizes:
            blank = np.zeros((size, self.size, self.size, 3), np.uint8)
            self.restore(blank)
        with self._count_lock:  # warm-up faces are not faces restored
            self.faces_restored -= sum(sizes)
            self.forward_passes -= len(sizes)
        return [f"gfpgan batches {sizes}"]

    def __repr__(self) -> str:
        return f"FaceRestorer({self.engine!r}, {self.size}px, {self.device}, {self.dtype}, batch={self.batch_size})"

    @torch.inference_mode()
    def restore(self, crops: np.ndarray, weight: float = 1.0,
                stabilizer: ResidualStabilizer | None = None) -> np.ndarray:
        """Restore (N, S, S, 3) uint8 RGB crops; returns the same shape.

        `weight` in [0, 1] blends restored over input (1 = fully restored; 0.5..1.0 is the useful
        range). Pass a `ResidualStabilizer` when the crops are consecutive frames of one face
        track (in order); it keeps state across calls so a clip can be fed batch by batch.
        """
        # 1. Check inputs.
        _check_crops(crops, self.size)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        out = np.empty_like(crops)
        for start in range(0, len(crops), self.batch_size):
            # 2. Pixels -> [-1, 1] RGB tensors on the device.
            batch = crops[start:start + self.batch_size]
            if min(batch.strides) < 0 or not batch.flags.c_contiguous:  # e.g. a reversed view
                batch = batch.copy()
            x = torch.from_numpy(batch).to(self.device)
            x = x.permute(0, 3, 1, 2).float()  # 0..255
            # 3. Restore; residual in pixel units.
            faces = (x / 127.5 - 1).to(self.dtype).contiguous(memory_format=self.memory_format)
            if self._graphs is not None:
                # graphs come in a few batch sizes (graph_batches): a short batch is padded
                # up to the next one (each face is restored on its own: padding changes none)
                n, size = len(faces), self.graph_batch(len(faces))
                if size > n:
                    pad = faces[-1:].expand(size - n, -1, -1, -1)
                    faces = torch.cat([faces, pad]).contiguous(memory_format=self.memory_format)
                y = self._graphs(faces)[:n].float().clamp(-1, 1)
            else:
                y = self.net(faces, self.randomize_noise).float().clamp(-1, 1)
            with self._count_lock:
                self.faces_restored += len(y)
                self.forward_passes += 1
            residual = (y + 1) * 127.5 - x
            # 4. Temporal hold of the residual, restore-strength blend, back to uint8.
            if stabilizer is not None:
                residual = stabilizer(x, residual)
            y = (x + weight * residual).round().clamp(0, 255).to(torch.uint8)
            out[start:start + len(y)] = y.permute(0, 2, 3, 1).cpu().numpy()
        return out


class _GraphedForward:
    """`net(x)` replayed from a CUDA graph captured once per input shape (stored noise maps only).

    The output is the graph's static buffer, valid until the next call: callers copy it first. A lock
    keeps two threads from replaying (and overwriting) the same buffers at once. If capture fails the
    forward runs eagerly from then on (`failed` says why)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle()
        self._lock = threading.Lock()
        self.failed: str | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with self._lock:
            if self.failed is not None:
                return self.net(x, False).clone()
            key = (tuple(x.shape), x.dtype, x.stride())
            if key not in self._graphs:
                try:
                    self._graphs[key] = self._capture(x)
                except RuntimeError as err:
                    self.failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                    torch.cuda.synchronize()
                    return self.net(x, False).clone()
            graph, static_in, static_out = self._graphs[key]
            static_in.copy_(x)
            graph.replay()
            return static_out.clone()

    def _capture(self, x: torch.Tensor):
        static_in = x.clone()
        side = torch.cuda.Stream()  # warm-up (cuDNN autotune, lazy init) outside the graph
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.net(static_in, False)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            static_out = self.net(static_in, False)
        return graph, static_in, static_out


def feather_mask(height: int, width: int, feather: float) -> np.ndarray:
    """(height, width) float32 mask: 1 inside, smooth ramp to 0 over `feather` px at the edges."""
    def ramp(n: int) -> np.ndarray:
        if feather <= 0:
            return np.ones(n, np.float32)
        d = np.clip(np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / feather, 0, 1)
        return d * d * (3 - 2 * d)  # smoothstep: no visible kink where the ramp ends

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


def paste_back(frames: np.ndarray, restored_crops: np.ndarray, affines: np.ndarray,
               feather_px: float = 16.0) -> np.ndarray:
    """Blend restored crops into their frames; returns new frames.

    Args:
        frames: (N, H, W, 3) uint8 RGB.
        restored_crops: (N, S, S, 3) uint8 RGB.
        affines: (N, 2, 3) crop->frame matrices (frame_xy = A @ [crop_x, crop_y, 1]).
        feather_px: width of the soft edge, in frame pixels.
    """
    import cv2  # only paste-back needs OpenCV

    # 1. Check inputs.
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if restored_crops.ndim != 4 or restored_crops.shape[0] != frames.shape[0]:
        raise ValueError(f"need one crop per frame: {restored_crops.shape[0]} crops, {frames.shape[0]} frames")
    affines = np.asarray(affines, dtype=np.float64)
    if affines.shape != (frames.shape[0], 2, 3):
        raise ValueError(f"affines must be (N, 2, 3) crop->frame matrices, got {affines.shape}")
    out = frames.copy()
    height, width = frames.shape[1:3]
    ch, cw = restored_crops.shape[1:3]
    corners = np.array([[0, 0, 1], [cw, 0, 1], [0, ch, 1], [cw, ch, 1]], np.float64).T
    for i, (crop, matrix) in enumerate(zip(restored_crops, affines)):
        # 2. Frame-space bounding box of the crop: warp only that region.
        pts = matrix @ corners
        x0, y0 = max(int(np.floor(pts[0].min())), 0), max(int(np.floor(pts[1].min())), 0)
        x1, y1 = min(int(np.ceil(pts[0].max())), width), min(int(np.ceil(pts[1].max())), height)
        if x1 <= x0 or y1 <= y0:
            continue  # crop entirely outside the frame
        shifted = matrix.copy()
        shifted[:, 2] -= (x0, y0)
        # 3. Feather in crop pixels so it spans `feather_px` frame pixels whatever the scale.
        scale = np.sqrt(abs(np.linalg.det(matrix[:, :2]))) or 1.0
        mask = feather_mask(ch, cw, feather_px / scale)
        size = (x1 - x0, y1 - y0)
        face = cv2.warpAffine(crop, shifted, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask, shifted, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        # 4. Blend.
        roi = out[i, y0:y1, x0:x1].astype(np.float32)
        a = alpha[..., None]
        out[i, y0:y1, x0:x1] = np.clip(roi + a * (face.astype(np.float32) - roi) + 0.5, 0, 255).astype(np.uint8)
    return out
