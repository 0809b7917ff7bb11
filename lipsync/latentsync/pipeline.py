"""LatentSync inference: a 16 kHz voice + face frames -> lip-synced frames, streamed chunk by chunk.

`LatentSyncPipeline.__call__` follows the official `LipsyncPipeline` (docs/latentsync.md §2-§6) with
three product changes:
* the frame count is `audio_frame_count` (the video covers the voice exactly; the tail is kept and
  nothing is cut or padded to a multiple of 16);
* a still portrait is aligned and VAE-encoded ONCE and its latents broadcast to every chunk (the
  official code re-aligns and re-encodes the same picture for every frame); a take video is aligned
  per frame with the official nose-offset smoothing and encoded per chunk;
* frames are handed to `write` as soon as their chunk is done (restore + write run in a background
  thread while the GPU works on the next chunk), so memory does not grow with the voice's length.
Frames whose face is unknown (NaN landmarks) are passed through untouched.

Several 16-frame chunks may share one UNet call along the batch axis (`chunks_per_call`): chunks
stay independent (GroupNorms and motion modules work per sample), it only fills the GPU better.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from faces.track import pingpong_index
from lipsync.latentsync.align import AlignOptions, FaceAligner, alignment_points_5
from lipsync.latentsync.audio import SAMPLE_RATE, audio_frame_count, encode_audio, frame_window_indices
from lipsync.latentsync.mask import composite_in_crop, latent_mask, load_mask, mask_faces
from lipsync.latentsync.sampling import LATENTSYNC_DEEPCACHE, SharedStart, denoise, initial_latents
from lipsync.latentsync.vae import LatentVAE
from lipsync.latentsync.whisper import WhisperAudioEncoder

CHUNK_FRAMES = 16  # the model's training clip length (data.num_frames)
FPS = 25  # the model's frame rate (Whisper windows are 2 feature positions per frame)
DEFAULT_SEED = 1247  # the official CLI / gradio default


@dataclass(frozen=True)
class SamplingOptions:
    """What the denoiser runs: DDIM steps, audio CFG weight, DeepCache, seed."""

    steps: int = 20
    guidance_scale: float = 1.5
    deepcache: bool = True
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be in [1, 1000], got {self.steps}")
        if not self.guidance_scale >= 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 = no CFG), got {self.guidance_scale}")


# What each quality preset (media/presets.py names them) samples with: (steps, DeepCache).
# Premium tiers trade speed for the uncached UNet.
SAMPLING_BY_PRESET: dict[str, tuple[int, bool]] = {
    "draft": (10, True),
    "standard": (20, True),
    "premium": (20, False),
    "cinematic": (20, False),
}


def sampling_for_quality(quality: str, *, seed: int = DEFAULT_SEED, guidance_scale: float = 1.5) -> SamplingOptions:
    """The SamplingOptions of a product quality preset (draft | standard | premium | cinematic)."""
    if quality not in SAMPLING_BY_PRESET:
        raise ValueError(f"unknown quality {quality!r}; expected one of {sorted(SAMPLING_BY_PRESET)}")
    steps, deepcache = SAMPLING_BY_PRESET[quality]
    return SamplingOptions(steps=steps, guidance_scale=guidance_scale, deepcache=deepcache, seed=seed)


@dataclass(frozen=True)
class PipelineOptions:
    chunks_per_call: int = 1  # 16-frame chunks batched into one UNet call (GPU throughput)
    overlap: bool = True  # restore + write in a background thread while the next chunk runs
    vae_batch: int = 32  # frames per VAE decode call
    color_band_px: int = 0  # >0: match decoded colours to the original around the mask edge
    # A still image's unconditional step 0 is the same for every chunk: compute it once per clip
    # (sampling.SharedStart; same values, not an approximation). False recomputes it per chunk.
    share_first_step: bool = True
    align: AlignOptions = AlignOptions()

    def __post_init__(self) -> None:
        if self.chunks_per_call < 1 or self.vae_batch < 1:
            raise ValueError(f"chunks_per_call and vae_batch must be >= 1, got {self.chunks_per_call}, {self.vae_batch}")


@dataclass(frozen=True)
class PipelineStats:
    frames: int  # frames written (= audio_frame_count of the voice)
    face_frames: int  # of those, frames that got a generated mouth
    padded_source_frames: int  # frames the source lacked (its last frame was reused)
    chunks: int
    unet_calls: int  # full + cached UNet calls (each covers one group of chunks, CFG batched)
    shared_start_chunks: int  # chunks whose unconditional step 0 was reused (share_first_step)
    still: bool
    sampling: SamplingOptions
    stage_seconds: dict[str, float]
    total_s: float
    affines: np.ndarray = field(repr=False)  # (frames, 2, 3) frame -> crop matrices, NaN = passed through


def plan_groups(n_frames: int, chunks_per_call: int, chunk: int = CHUNK_FRAMES) -> list[tuple[int, int, int]]:
    """(first frame, chunks, frames per chunk) per UNet batch: full chunks in balanced groups of at
    most `chunks_per_call`, then the shorter tail chunk alone (its frame count differs)."""
    full, tail = divmod(n_frames, chunk)
    groups = []
    if full:
        n_groups = math.ceil(full / chunks_per_call)
        base, extra = divmod(full, n_groups)
        start = 0
        for g in range(n_groups):
            size = base + (1 if g < extra else 0)
            groups.append((start, size, chunk))
            start += size * chunk
    if tail:
        groups.append((full * chunk, 1, tail))
    return groups


def _frames(source: Iterator[np.ndarray], count: int, last: list) -> tuple[list[np.ndarray], int]:
    """Next `count` frames; a source that runs dry repeats its last frame (returns how many)."""
    out, padded = [], 0
    for _ in range(count):
        frame = next(source, None)
        if frame is None:
            if not last:
                raise ValueError("the frame source yielded no frames")
            frame, padded = last[0], padded + 1
        else:
            last[:] = [frame]
        out.append(frame)
    return out, padded


class _Clock:
    """Per-stage seconds: host wall time, or on CUDA the time between two events around the stage
    (no synchronisation, so timing does not stall the GPU)."""

    def __init__(self, device: torch.device):
        self.seconds: dict[str, float] = defaultdict(float)
        self.device = device
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def stage(self, name: str, gpu: bool = False) -> Iterator[None]:
        if gpu and self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((name, start, end))
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0

    def finish(self) -> dict[str, float]:
        if self._events:
            torch.cuda.synchronize(self.device)
        for name, start, end in self._events:
            self.seconds[name] += start.elapsed_time(end) / 1e3
        self._events.clear()
        return {k: round(v, 4) for k, v in self.seconds.items()}


@dataclass
class _HostFaces:
    """Generated faces on their way to the CPU: a pinned buffer filled asynchronously on CUDA."""

    host: torch.Tensor  # (N, 3, R, R) float32
    done: torch.cuda.Event | None = None

    def array(self) -> np.ndarray:
        if self.done is not None:
            self.done.synchronize()
        return self.host.numpy()


@dataclass
class _Group:
    """One UNet batch: its frames, alignment and conditioning, then its generated faces."""

    start: int
    chunks: int
    frames_per_chunk: int
    frames: list[np.ndarray]
    matrices: list[np.ndarray | None]  # per frame, None = no face
    pixels: torch.Tensor | None = None  # (N or 1, 3, R, R) in [-1, 1], on the device
    masked_latents: torch.Tensor | None = None  # (B, 4, F, h, w)
    ref_latents: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.chunks * self.frames_per_chunk

    @property
    def has_face(self) -> np.ndarray:
        return np.array([m is not None for m in self.matrices])


class LatentSyncPipeline:
    """UNet + VAE + Whisper encoder at one face resolution; call it once per clip."""

    def __init__(self, unet, vae: LatentVAE, whisper: WhisperAudioEncoder, resolution: int | None = None,
                 options: PipelineOptions = PipelineOptions()):
        """`unet`: a LatentSyncUNet or anything with its call / forward_and_cache / forward_cached
        (e.g. a CUDA-graph runner). `resolution` defaults to the UNet config's (256 for 1.5, 512 for 1.6)."""
        self.unet = unet
        self.vae = vae
        self.whisper = whisper
        self.resolution = int(resolution or unet.config.resolution)
        if self.resolution <= 0 or self.resolution % 8:
            raise ValueError(f"resolution must be a positive multiple of 8, got {self.resolution}")
        self.options = options
        self.device = vae.device
        self._mask_image = torch.from_numpy(load_mask(self.resolution))[None, None].to(self.device)
        self._mask_latent = torch.from_numpy(latent_mask(self.resolution))[None, None, None].to(self.device)
        self._mask_np = load_mask(self.resolution)

    @property
    def crop_size(self) -> tuple[int, int]:
        """(w, h) of the frame crop the affines map into (210 x 280 at 256 px, 420 x 560 at 512)."""
        return FaceAligner(self.resolution).crop_size

    # ---- the run -------------------------------------------------------------------------------
    @torch.inference_mode()
    def __call__(self, audio: np.ndarray, frames: Iterable[np.ndarray], landmarks: np.ndarray,
                 write: Callable[[np.ndarray], None], *, still: bool,
                 sampling: SamplingOptions = SamplingOptions(),
                 progress: Callable[[float], None] | None = None) -> PipelineStats:
        """Lip-sync `frames` to `audio` and hand each finished frame to `write`, in order.

        Args:
            audio: mono float32 voice at 16 kHz.
            frames: RGB uint8 frames (H, W, 3); a source shorter than the voice repeats its last
                frame. Never modified in place.
            landmarks: (m, 5, 2) five-point landmarks (eyes, nose, mouth corners) per source frame,
                read ping-pong over the output frames; a NaN row = no face in that frame.
            write: receives each output frame once, in order (from a worker thread when overlapping).
            still: True for a portrait: one alignment (landmarks[0]) and one VAE encode for all frames.
            sampling: steps / CFG / DeepCache / seed.
            progress: called with the fraction of frames written, once per chunk group.
        """
        t_start = time.perf_counter()
        clock = _Clock(self.device)
        marks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
        if not len(marks):
            raise ValueError("landmarks must hold at least one (5, 2) set")

        # 1. Audio -> Whisper features -> per-frame windows (the tail is kept: ceil of the length).
        with clock.stage("audio", gpu=True):
            n = audio_frame_count(len(audio))
            features = encode_audio(self.whisper, np.asarray(audio, dtype=np.float32))
            windows = frame_window_indices(n, features.shape[0], FPS).to(features.device)

        # 2. Noise: ONE latent frame repeated over every frame (official), seeded.
        generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        latent = self.resolution // 8
        noise = initial_latents(CHUNK_FRAMES, latent, generator, self.device, torch.float32)

        source = iter(frames)
        last: list = []
        aligner = FaceAligner(self.resolution, self.options.align)
        restorer = FaceAligner(self.resolution, self.options.align)  # the worker's own paste cache
        affines = np.full((n, 2, 3), np.nan)
        still_cond: tuple | None = None
        shared_start = SharedStart() if still and self.options.share_first_step else None
        padded = unet_calls = face_frames = 0
        pending: deque[tuple[Future, int]] = deque()
        done = 0

        def collect(item: tuple) -> None:
            nonlocal done
            future, payload = item
            if future is None:  # no worker: paste and write right here
                paste_s, write_s = _paste_and_write(*payload)
                count = payload[0].size
            else:
                with clock.stage("wait_for_writer"):
                    paste_s, write_s = future.result()
                count = payload
            clock.seconds["paste_back"] += paste_s
            clock.seconds["write"] += write_s
            done += count
            if progress is not None:
                progress(done / n)
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="latentsync-paste") if self.options.overlap else None
        groups = plan_groups(n, self.options.chunks_per_call)
        try:
            for start, chunks, per_chunk in groups:
                # 3. Frames and faces of this group: the still's one alignment + encode, or per frame.
                with clock.stage("face_prep"):
                    group_frames, pad = _frames(source, chunks * per_chunk, last)
                    padded += pad
                    group = _Group(start, chunks, per_chunk, group_frames, [])
                if still:
                    if still_cond is None:
                        still_cond = self._still_conditioning(group_frames[0], marks[0], aligner, generator, clock)
                    self._apply_still(group, still_cond)
                else:
                    self._video_conditioning(group, marks, aligner, generator, clock)
                for i, M in enumerate(group.matrices):
                    if M is not None:
                        affines[start + i] = M
                        face_frames += 1

                # 4. Denoise the group's chunks in one batch, decode, composite inside the crop.
                faces = None
                if group.has_face.any():
                    faces, calls = self._generate(group, noise, features, windows, sampling, clock, shared_start)
                    unet_calls += calls

                # 5. Restore into the frames and write, in a worker: at most one group in flight, so
                #    the GPU computes group k + 1 while the CPU pastes group k, and memory stays bounded.
                while pending:
                    collect(pending.popleft())
                job = (group, faces, restorer, write)
                if worker is None:
                    collect((None, job))
                else:
                    pending.append((worker.submit(_paste_and_write, *job), group.size))
                del group, faces, job
            while pending:
                collect(pending.popleft())
        finally:
            if worker is not None:
                worker.shutdown(wait=True, cancel_futures=True)

        return PipelineStats(
            frames=n, face_frames=face_frames, padded_source_frames=padded, chunks=math.ceil(n / CHUNK_FRAMES),
            unet_calls=unet_calls, shared_start_chunks=shared_start.hits if shared_start else 0,
            still=still, sampling=sampling,
            stage_seconds=clock.finish(),
            total_s=time.perf_counter() - t_start, affines=affines)

    # ---- conditioning ----------------------------------------------------------------------------
    def _encode(self, faces_u8: np.ndarray, generator: torch.Generator, clock: _Clock
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, R, R, 3) uint8 aligned faces -> pixels (N, 3, R, R), masked and reference latents (N, 4, h, w).

        One VAE call for both: the masked images first, then the references (the official RNG order).
        """
        with clock.stage("face_prep"):
            faces_t = torch.from_numpy(np.ascontiguousarray(faces_u8)).to(self.device)
            pixels, masked, _ = mask_faces(faces_t, self._mask_np)
        with clock.stage("vae_encode", gpu=True):
            latents = self.vae.encode(torch.cat([masked, pixels]), generator)
        masked_latents, ref_latents = latents.chunk(2)
        return pixels, masked_latents, ref_latents

    def _still_conditioning(self, frame: np.ndarray, marks: np.ndarray, aligner: FaceAligner,
                            generator: torch.Generator, clock: _Clock) -> tuple | None:
        if not np.isfinite(marks).all():
            return None  # a portrait without a known face: every frame passes through
        with clock.stage("face_prep"):
            face, M = aligner.align(frame, alignment_points_5(marks))
        pixels, masked, ref = self._encode(face[None], generator, clock)
        return M, pixels, masked[:, :, None], ref[:, :, None]  # latents (1, 4, 1, h, w)

    def _apply_still(self, group: _Group, cond: tuple | None) -> None:
        if cond is None:
            group.matrices = [None] * group.size
            return
        M, pixels, masked, ref = cond
        shape = (group.chunks, 4, group.frames_per_chunk, masked.shape[-2], masked.shape[-1])
        group.matrices = [M] * group.size
        group.pixels = pixels
        group.masked_latents, group.ref_latents = masked.expand(shape), ref.expand(shape)

    def _video_conditioning(self, group: _Group, marks: np.ndarray, aligner: FaceAligner,
                            generator: torch.Generator, clock: _Clock) -> None:
        with clock.stage("face_prep"):
            faces: list[np.ndarray | None] = []
            for i, frame in enumerate(group.frames):
                lm = marks[pingpong_index(group.start + i, len(marks))]
                if np.isfinite(lm).all():
                    face, M = aligner.align(frame, alignment_points_5(lm))
                else:
                    face, M = None, None
                faces.append(face)
                group.matrices.append(M)
            known = [i for i, f in enumerate(faces) if f is not None]
            if not known:
                return
            # Faceless frames borrow the nearest face of the group so every chunk keeps its length
            # (the motion module sees 16 frames); their outputs are discarded.
            for i, f in enumerate(faces):
                if f is None:
                    faces[i] = faces[min(known, key=lambda k: abs(k - i))]
        pixels, masked, ref = self._encode(np.stack(faces), generator, clock)
        group.pixels = pixels
        group.masked_latents = _to_video(masked, group.chunks)
        group.ref_latents = _to_video(ref, group.chunks)

    # ---- generation ------------------------------------------------------------------------------
    def _generate(self, group: _Group, noise: torch.Tensor, features: torch.Tensor, windows: torch.Tensor,
                  sampling: SamplingOptions, clock: _Clock, shared_start: SharedStart | None = None
                  ) -> tuple[_HostFaces, int]:
        """Denoise + decode + in-crop composite; returns the faces (N, 3, R, R) bound for the CPU and
        the number of UNet calls. Nothing here waits for the GPU."""
        b, f = group.chunks, group.frames_per_chunk
        with clock.stage("unet", gpu=True):
            idx = windows[group.start:group.start + group.size]
            audio = features[idx].reshape(group.size, -1, features.shape[-1]).to(self.device)
            latents = noise[:, :, :f].expand(b, -1, -1, -1, -1).contiguous()
            mask = self._mask_latent.expand(b, 1, f, *self._mask_latent.shape[-2:])
            out = denoise(self.unet, latents, mask, group.masked_latents, group.ref_latents, audio,
                          steps=sampling.steps, guidance_scale=sampling.guidance_scale,
                          deepcache=LATENTSYNC_DEEPCACHE if sampling.deepcache else None,
                          shared_start=shared_start)
        # (A decode on a side stream, beside the next group's UNet, was measured on an H100: no
        # gain, the UNet slowed by what the decode hid, and twice the reserved memory at 512 px.)
        with clock.stage("vae_decode", gpu=True):
            flat = out.transpose(1, 2).reshape(group.size, *out.shape[1:2], *out.shape[-2:])
            step = self.options.vae_batch
            decoded = torch.cat([self.vae.decode(flat[i:i + step]) for i in range(0, group.size, step)])
        with clock.stage("composite", gpu=True):
            faces = composite_in_crop(decoded, group.pixels.float(), self._mask_image, self.options.color_band_px)
            if faces.device.type != "cuda":
                return _HostFaces(faces), sampling.steps
            # Asynchronous copy into pinned memory: the worker waits for it, the main thread does not.
            host = torch.empty(faces.shape, dtype=faces.dtype, pin_memory=True)
            host.copy_(faces, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        return _HostFaces(host, done), sampling.steps

    # ---- warm-up ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def still_region(self, frame_hw: tuple[int, int],
                     landmarks: np.ndarray) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1): the part of a still's frames a render changes (the paste-back's
        region for its one alignment; every pixel outside it is the still's). None: no face,
        so nothing changes."""
        marks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)[0]
        if not np.isfinite(marks).all():
            return None
        aligner = FaceAligner(self.resolution, self.options.align)  # as __call__ aligns a still
        M = aligner.matrix(alignment_points_5(marks))
        y0, y1, x0, x1 = aligner.paste_geometry(frame_hw, M).roi
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def warmup(self, n_frames: int, sampling: SamplingOptions = SamplingOptions()) -> float:
        """Run every UNet/VAE shape a clip of `n_frames` will use once (cuDNN autotuning, CUDA-graph
        capture), on dummy inputs; returns seconds. Optional: the first real run does it otherwise."""
        shapes = sorted({(b, f) for _, b, f in plan_groups(n_frames, self.options.chunks_per_call)})
        return self.warmup_shapes(shapes, [sampling])

    def every_shape(self) -> list[tuple[int, int]]:
        """(chunks, frames per chunk) of every UNet batch any clip can use: 1..chunks_per_call full
        chunks, and a tail chunk of 1..15 frames (plan_groups)."""
        full = [(b, CHUNK_FRAMES) for b in range(1, self.options.chunks_per_call + 1)]
        return full + [(1, f) for f in range(1, CHUNK_FRAMES)]

    def warmup_shapes(self, shapes: Sequence[tuple[int, int]],
                      samplings: Sequence[SamplingOptions]) -> float:
        """Run each (chunks, frames) UNet batch of `shapes` once per distinct kind of sampling
        (DeepCache or not, CFG or not: the forwards they call), and the VAE decode batch sizes
        they imply; returns seconds. With a CudaGraphUNet this captures every graph up front."""
        t0 = time.perf_counter()
        latent = self.resolution // 8
        width = self.unet.config.cross_attention_dim
        encode_audio(self.whisper, np.zeros(SAMPLE_RATE, np.float32))
        step = self.options.vae_batch
        decode_sizes = set()
        kinds = {(s.deepcache, s.guidance_scale > 1.0): s for s in samplings}
        for b, f in shapes:
            zeros = torch.zeros(b, 4, f, latent, latent, device=self.device)
            audio = torch.zeros(b * f, 50, width, device=self.device)
            for sampling in kinds.values():
                # Twice with a shared start: the CFG pair of a clip's first chunk, then step 0 of
                # later ones.
                start = SharedStart() if self.options.share_first_step else None
                for _ in range(1 if start is None else 2):
                    denoise(self.unet, zeros, zeros[:, :1], zeros, zeros, audio,
                            steps=2 if sampling.deepcache else 1,
                            guidance_scale=sampling.guidance_scale,
                            deepcache=LATENTSYNC_DEEPCACHE if sampling.deepcache else None,
                            shared_start=start)
            decode_sizes |= {min(step, b * f - i) for i in range(0, b * f, step)}
        for size in sorted(decode_sizes):
            self.vae.decode(torch.zeros(size, 4, latent, latent, device=self.device))
        self.vae.encode(torch.zeros(2, 3, self.resolution, self.resolution, device=self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0


def _to_video(latents: torch.Tensor, chunks: int) -> torch.Tensor:
    """(B*F, C, h, w) rows ordered (chunk, frame) -> (B, C, F, h, w)."""
    n, c, h, w = latents.shape
    return latents.reshape(chunks, n // chunks, c, h, w).transpose(1, 2)


def _paste_and_write(group: _Group, pending: _HostFaces | None, restorer: FaceAligner,
                     write: Callable[[np.ndarray], None]) -> tuple[float, float]:
    """Paste the generated faces into their frames and write every frame in order (worker side)."""
    t0 = time.perf_counter()
    faces = pending.array() if pending is not None else None
    has_face = group.has_face
    out: Sequence[np.ndarray] = group.frames
    if faces is not None and has_face.any():
        idx = np.flatnonzero(has_face)
        frames = group.frames
        first = frames[idx[0]]
        matrices = np.stack([group.matrices[i] for i in idx])
        if all(frames[i] is first for i in idx) and all(np.array_equal(m, matrices[0]) for m in matrices):
            restored = restorer.restore_batch(first, faces[idx], matrices[0])  # a still: one geometry
        else:
            restored = restorer.restore_batch(np.stack([frames[i] for i in idx]), faces[idx], matrices)
        out = list(frames)
        for k, i in enumerate(idx):
            out[i] = restored[k]
    t1 = time.perf_counter()
    for frame in out:
        write(frame)
    return t1 - t0, time.perf_counter() - t1
