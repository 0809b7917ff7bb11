"""LatentSync as a lip-sync engine with the embedded animator's interface (lipsync/animator.py).

    engine = load_latentsync_engine(models_dir, "1.5")        # None when a weight file is missing
    track = engine.prepare(portrait, face_box=None)           # NoFaceError without a face / box
    stats = engine.render(frames, track, voice, 25, writer.write, progress)
    engine.affines                                            # per-frame crop matrices, for restore

`prepare` finds the face with our MTCNN detector (5 landmarks); a client face_box that no detection
matches gets 5 landmarks placed by face-box proportions. A one-entry track is a still: aligned and
encoded once. The model runs at 25 fps only.

On CUDA the UNet runs through `CudaGraphUNet`: at 256 px the eager UNet is bound by kernel launches
(thousands of small kernels per call), and a captured graph launches a whole call at once.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from faces.boxes import landmarks_from_box
from faces.mtcnn import FaceDetector
from faces.track import FaceTrack, locate_face
from lipsync.engine import RenderStats
from lipsync.latentsync.audio import SAMPLE_RATE
from lipsync.latentsync.pipeline import (FPS, SAMPLING_BY_PRESET, LatentSyncPipeline,
                                         PipelineOptions, sampling_for_quality)
from lipsync.voice import openness_curve

log = logging.getLogger("personaforge.latentsync")



@dataclass(frozen=True)
class EngineSettings:
    quality: str = "standard"  # draft | standard | premium | cinematic (steps / DeepCache)
    seed: int = 1247
    guidance_scale: float = 1.5
    chunks_per_call: int | None = None  # None: by device and resolution (see default_chunks_per_call)
    cuda_graphs: bool = True
    fused_kernels: bool = True  # CUDA: the fused Triton paths of unet_fast.py / vae_fast.py (same weights, same math)
    overlap: bool = True


@dataclass(frozen=True)
class LatentSyncRenderStats(RenderStats):
    quality: str = ""
    steps: int = 0
    deepcache: bool = False
    guidance_scale: float = 0.0
    seed: int = 0
    face_frames: int = 0
    stage_seconds: dict = field(default_factory=dict)


class LatentSyncEngine:
    """The LatentSync engine: same `prepare` / `render` as MouthAnimator, plus `affines`."""

    def __init__(self, pipeline: LatentSyncPipeline, detector: FaceDetector | None,
                 settings: EngineSettings = EngineSettings(), engine: str = "latentsync"):
        self.pipeline = pipeline
        self.detector = detector
        self.settings = settings
        self.engine = engine
        self._affines = np.zeros((0, 2, 3))

    @property
    def affines(self) -> np.ndarray:
        """(frames, 2, 3) frame -> crop matrices of the last render (NaN rows: frame passed through).
        The crop is `crop_size` (w, h); the face-restore stage can reuse them instead of detecting."""
        return self._affines

    @property
    def crop_size(self) -> tuple[int, int]:
        return self.pipeline.crop_size

    def warm_up(self, qualities: Sequence[str] | None = None) -> list[str]:
        """Before the first job: run every UNet batch shape any clip can use, for the sampling
        of each quality preset (default: all), so graph capture and kernel tuning never land on
        a client's job. Returns what was warmed, for the start-up report."""
        qualities = list(qualities or SAMPLING_BY_PRESET)
        samplings = [sampling_for_quality(q, seed=self.settings.seed,
                                          guidance_scale=self.settings.guidance_scale)
                     for q in qualities]
        shapes = self.pipeline.every_shape()
        self.pipeline.warmup_shapes(shapes, samplings)
        return [f"latentsync {len(shapes)} batch shapes x {sorted(set(qualities))}"]

    def changed_region(self, frame_hw: tuple[int, int],
                       track: FaceTrack) -> tuple[int, int, int, int] | None:
        """For a still (a one-entry track): (x0, y0, x1, y1) holding every pixel a render
        changes; None for a video track, or when nothing changes."""
        if len(track) != 1:
            return None
        return self.pipeline.still_region(frame_hw, track.five_points())

    def prepare(self, image: np.ndarray, face_box: Sequence[float] | None = None) -> FaceTrack:
        """Find the face of a still (or a video's first frame): a one-entry FaceTrack with 5 landmarks.

        With `face_box`: a detection overlapping it lends its landmarks, else they are placed by the
        box's proportions (source "face_box"). Raises NoFaceError without a face and without a box.
        """
        track = locate_face(self.detector, image, face_box)
        if track.landmarks is None:  # a face_box alone: place the landmarks by its proportions
            track = FaceTrack(track.boxes, landmarks_from_box(track.boxes[0])[None], "face_box")
        return track

    def render(self, frames: Iterable[np.ndarray], track: FaceTrack, audio: np.ndarray, fps: float,
               write: Callable[[np.ndarray], None], progress: Callable[[float], None] | None = None,
               sample_rate: int = SAMPLE_RATE, *, quality: str | None = None, seed: int | None = None
               ) -> LatentSyncRenderStats:
        """Lip-sync `frames` to the voice and hand each result to `write`, in order.

        Args:
            frames: RGB uint8 frames, ceil(seconds x 25) of them (a shorter source repeats its last
                frame); never modified in place.
            track: from `prepare` (one entry: a still) or a take's per-frame track (NaN landmarks or
                boxes = no face in that frame: it passes through untouched).
            audio: mono float32 voice at `sample_rate` (resampled to 16 kHz if needed).
            fps: must be 25, the model's rate.
            quality, seed: override the engine settings for this render.
        """
        # 1. Check the inputs and bring the voice to the model's 16 kHz.
        if fps != FPS:
            raise ValueError(f"LatentSync renders at {FPS} fps only (the rate its audio windows are "
                             f"trained for); got fps={fps}")
        started = time.perf_counter()
        voice = np.asarray(audio, dtype=np.float32).reshape(-1)
        if sample_rate != SAMPLE_RATE:
            from scipy.signal import resample_poly

            g = np.gcd(int(sample_rate), SAMPLE_RATE)
            voice = resample_poly(voice, SAMPLE_RATE // g, int(sample_rate) // g).astype(np.float32)
        # 2. Landmarks per track entry: the detector's, or placed from the box.
        marks = track.five_points()
        quality = quality or self.settings.quality
        sampling = sampling_for_quality(quality, seed=self.settings.seed if seed is None else seed,
                                        guidance_scale=self.settings.guidance_scale)
        # 3. Run the pipeline (a one-entry track is a still: one alignment, one encode).
        stats = self.pipeline(voice, frames, marks, write, still=len(track) == 1, sampling=sampling,
                              progress=progress)
        self._affines = stats.affines
        curve = openness_curve(voice, FPS, SAMPLE_RATE)
        return LatentSyncRenderStats(
            engine=self.engine, frames=stats.frames, fps=float(fps), seconds=stats.frames / fps,
            mouth_source=track.source,
            mean_openness=float(curve.mean()) if len(curve) else 0.0,
            peak_openness=float(curve.max()) if len(curve) else 0.0,
            render_s=time.perf_counter() - started, quality=quality, steps=sampling.steps,
            deepcache=sampling.deepcache, guidance_scale=sampling.guidance_scale, seed=sampling.seed,
            face_frames=stats.face_frames, stage_seconds=stats.stage_seconds)


class CudaGraphUNet:
    """Replays CUDA graphs of a LatentSyncUNet's three forwards, captured once per input shape.

    Duck-types the UNet for `sampling.denoise`. Outputs are static buffers overwritten by the next
    replay of the same graph; denoise consumes each within its step. All graphs share one memory
    pool: they never run concurrently and every output they keep is held alive here.
    """

    def __init__(self, unet) -> None:
        self.unet = unet
        self.config = unet.config
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], tuple]] = {}
        self._pool = torch.cuda.graph_pool_handle()
        self.failed: str | None = None  # why capture failed (then every call runs eagerly)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def __call__(self, sample, timestep, encoder_hidden_states, *, cfg_pair: bool = False):
        return self._replay(("full", cfg_pair), sample, timestep, encoder_hidden_states)[0]

    def forward_and_cache(self, sample, timestep, encoder_hidden_states, *, cfg_pair: bool = False):
        eps, feature = self._replay(("cache", cfg_pair), sample, timestep, encoder_hidden_states)
        return eps, feature

    def forward_cached(self, sample, timestep, encoder_hidden_states, feature, *, cfg_pair: bool = False):
        return self._replay(("cached", cfg_pair), sample, timestep, encoder_hidden_states, feature)[0]

    def _replay(self, kind: tuple[str, bool], *inputs) -> tuple:
        tensors = [torch.as_tensor(x, device=inputs[0].device) for x in inputs]
        key = (kind, *((tuple(t.shape), t.dtype) for t in tensors))
        if self.failed is not None:
            return self._eager(kind)(*tensors)
        if key not in self._graphs:
            try:
                self._graphs[key] = self._capture(kind, tensors)
            except RuntimeError as err:  # e.g. an op that cannot be captured: keep going eagerly
                self.failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                log.warning("CUDA graph capture failed, running the UNet eagerly: %s", self.failed)
                torch.cuda.synchronize()
                return self._eager(kind)(*tensors)
        graph, static, outputs = self._graphs[key]
        for buffer, x in zip(static, tensors):
            buffer.copy_(x)
        graph.replay()
        return outputs

    def _eager(self, kind: tuple[str, bool]):
        unet, (name, cfg_pair) = self.unet, kind
        return {"full": lambda *a: (unet(*a, cfg_pair=cfg_pair),),
                "cache": lambda *a: tuple(unet.forward_and_cache(*a, cfg_pair=cfg_pair)),
                "cached": lambda *a: (unet.forward_cached(*a, cfg_pair=cfg_pair),)}[name]

    def _capture(self, kind: tuple[str, bool], tensors: list[torch.Tensor]):
        run = self._eager(kind)
        static = [t.clone() for t in tensors]
        # Warm up on a side stream first (cuDNN autotuning and lazy inits must stay out of the graph).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the paste-back worker may use the CPU side of torch meanwhile.
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            outputs = run(*static)
        return graph, static, outputs


def default_chunks_per_call(device: torch.device, resolution: int) -> int:
    """Chunks per UNet call, measured with the fused path and CUDA graphs on an H200
    (bench/latentsync_pipeline.py, 10 s clip): 8 at 256 px (17.9 ms/chunk against 18.4 at 4) and 3 at
    512 px (five calls for 15 chunks; per chunk 80.0 ms against 79.8 at 2, which takes eight); peak
    memory 6.8 / 15.4 GiB. Smaller GPUs (< 40 GiB) stay at 1 (peak memory grows with the batch)."""
    if device.type != "cuda":
        return 1
    if torch.cuda.get_device_properties(device).total_memory < 40 * 2**30:
        return 1
    return 8 if resolution <= 256 else 3


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_latentsync_engine(models_dir: str | Path, version: str = "1.5", device: str | torch.device = "auto",
                           dtype: torch.dtype | None = None, settings: EngineSettings = EngineSettings(),
                           detector: FaceDetector | None = None) -> LatentSyncEngine | None:
    """Load LatentSync `version` from the models dir; None when any of its weight files is missing.

    dtype defaults to bf16 on CUDA, fp32 on CPU (the Whisper encoder always runs fp32: it is tiny).
    `detector` defaults to the bundled MTCNN.
    """
    from weights.registry import latentsync_names, model_path, present

    names = latentsync_names(version)
    missing = [n for n in names if not present(models_dir, n)]
    if missing:
        log.info("LatentSync %s not loaded: missing %s", version, ", ".join(missing))
        return None
    # Heavy imports only once the weights are known to be there.
    from faces.mtcnn import load_detector
    from lipsync.latentsync.checkpoint import load_unet
    from lipsync.latentsync.config import unet_config
    from lipsync.latentsync.vae import load_vae
    from lipsync.latentsync.whisper import load_whisper_encoder

    dev = resolve_device(device)
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    config = unet_config(version)
    unet = load_unet(model_path(models_dir, f"latentsync-{version}-unet"), config, dev, dtype)
    whisper = load_whisper_encoder(model_path(models_dir, "whisper-tiny"), dev, torch.float32)
    vae = load_vae(model_path(models_dir, "sd-vae-ft-mse").parent, dev, dtype)
    runner = unet
    fused = False
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if settings.fused_kernels:
            from lipsync.latentsync.unet_fast import enable_fast_path
            from lipsync.latentsync.vae_fast import enable_fast_vae

            # the VAE's fused path is channels-last (diffusers' own channels-last is slower than NCHW)
            fused = enable_fast_path(unet) and enable_fast_vae(vae)
        if settings.cuda_graphs:
            runner = CudaGraphUNet(unet)
    per_call = settings.chunks_per_call or default_chunks_per_call(dev, config.resolution)
    pipeline = LatentSyncPipeline(runner, vae, whisper, config.resolution,
                                  PipelineOptions(chunks_per_call=per_call, overlap=settings.overlap))
    name = (f"latentsync-{version} ({str(dtype).removeprefix('torch.').replace('bfloat16', 'bf16')}, {dev.type}"
            f"{', fused kernels' if fused else ''})")
    return LatentSyncEngine(pipeline, detector or load_detector(), settings, name)
