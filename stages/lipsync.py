"""Lip-sync stage: voice + picture source -> silent lip-synced frames (25 fps) in storage; and
persona takes (render_take).

Engines, picked once at start-up: LatentSync when its weights are on the models volume, else
the embedded CPU mouth animator (lipsync/animator.py), which says so in every job's metadata.
Takes: LivePortrait when its weights are there and a GPU is (or CPU takes are allowed), else the
embedded reframer (personas/take_engine.py has the rules). Frames stream from the source through
the engine into the encoder one at a time, so memory does not grow with the length of the voice.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from core import keys
from core.errors import StageError
from core.jobs import JobStore
from core.settings import Settings
from core.storage import Storage
from enhance.face_align import crop_region
from faces import Face, load_detector
from faces.track import FaceTrack, NoFaceError, locate_face
from lipsync.animator import MouthAnimator
from lipsync.source import still_frames, video_frames
from lipsync.voice import frame_count
from media.ffmpeg import MediaError, probe
from media.frames import FrameWriter, load_audio, load_image, save_image
from personas.liveportrait.director import plan_take
from personas.liveportrait.engine import TakeRender
from personas.manifest import TAKE_FRAME_BOX, TAKE_SECONDS
from personas.take_engine import choose_take_engine
from personas.takes import render_take
from stages.contracts import FramesRef, LipSyncRequest, LipSyncResult, TakeRequest, TakeResult
from stages.progress import StageProgress
from stages.readiness import READY, require_weights, unavailable_engine
from stages.device_thread import DeviceThread
from stages.startup import Startup, wants_warmup, warm_up
from stages.workspace import scratch
from weights.registry import latentsync_names

log = logging.getLogger("personaforge.lipsync")

EMBEDDED = "embedded-mouth-animator (CPU; no LatentSync weights on the models volume)"
MIN_AUDIO_S = 0.2
# A region smaller than this share of the frame is handed on instead of whole frames.
REGION_MAX_SHARE = 0.75
# Every this many frames, the region writer checks that nothing outside the region changed.
REGION_CHECK_EVERY = 10


class RegionWriter:
    """Writes the region (x0, y0, x1, y1) of each frame. The renderer promised that nothing
    outside it changes; every REGION_CHECK_EVERY frames that is checked, so a broken promise
    fails the job loudly instead of shipping a wrong picture."""

    def __init__(self, writer: FrameWriter, still: np.ndarray, region: tuple[int, int, int, int]):
        self.writer, self.still, self.region = writer, still, region
        self.count = 0

    def __call__(self, frame: np.ndarray) -> None:
        x0, y0, x1, y1 = self.region
        if self.count % REGION_CHECK_EVERY == 0:
            outside = frame.copy()
            outside[y0:y1, x0:x1] = self.still[y0:y1, x0:x1]
            if not np.array_equal(outside, self.still):
                raise StageError("INTERNAL", "the lip-sync renderer changed pixels outside "
                                 "the face region it reported")
        self.count += 1
        self.writer.write(np.ascontiguousarray(frame[y0:y1, x0:x1]))


class LipSyncStage:
    def __init__(self, settings: Settings, storage: Storage):
        t0 = time.perf_counter()
        self.settings = settings
        self.storage = storage
        self.store = JobStore(self.storage)
        # 1. The face detector ships with the repo (MTCNN, MIT weights): always available.
        self.detector = load_detector()
        # 2. The engine: LatentSync when its weights are on the models volume
        #    (download_models.py), else the embedded animator; the metadata says which ran.
        #    Weights present but unloadable is a start-up failure, never a silent fallback.
        #    Production mode: LatentSync or nothing (stages/readiness.py).
        self.latentsync = self._load_latentsync()
        self.readiness = READY
        if self.latentsync is not None:
            self.renderer, self.engine = self.latentsync, self.latentsync.engine
        elif settings.production:
            version = settings.latentsync_version
            self.readiness = require_weights("LipSync", settings.models_dir,
                                             latentsync_names(version),
                                             f"--only lipsync --version {version}")
            self.renderer, self.engine = None, unavailable_engine(self.readiness)
        else:
            self.renderer, self.engine = MouthAnimator(self.detector), EMBEDDED
        log.info("LipSync engine: %s", self.engine)
        # 3. The take engine (same rules: weights present but unloadable fail here).
        self.take_choice, self.take_engine = self._load_take_engine()
        log.info("Take engine: %s (%s)", self.take_choice.label, self.take_choice.reason)
        # 4. Warm-up before the first job (stages/startup.py): every UNet batch shape for every
        #    preset's sampling, and a take's batch.
        self.startup = Startup(load_s=time.perf_counter() - t0)
        steps = []
        if self.latentsync is not None and wants_warmup(
                settings, self.latentsync.pipeline.device.type == "cuda"):
            steps.append(self.latentsync.warm_up)
        if self.take_engine is not None and wants_warmup(settings, self.take_engine.cuda):
            steps.append(self.take_engine.warm_up)
        #    A stage that warms up runs it, and every job after it, on one thread: cuDNN's
        #    tuning is kept per thread (stages/device_thread.py).
        self.device_thread = DeviceThread("LipSync", pinned=bool(steps))
        if steps:
            self.device_thread.call(warm_up, "LipSync", self.startup, steps)

    def _load_latentsync(self):
        from enhance.device import cap_process_memory
        from lipsync.latentsync.engine import load_latentsync_engine, resolve_device

        # Fractional GPUs share memory without isolation: stay inside this replica's share.
        device = resolve_device(self.settings.device)
        fraction = self.settings.gpu_memory_fraction
        if device.type == "cuda" and fraction is not None:
            cap_process_memory(device.index or 0, fraction)
        return load_latentsync_engine(self.settings.models_dir, self.settings.latentsync_version,
                                      device=self.settings.device, detector=self.detector)

    def _load_take_engine(self):
        import torch

        from personas.liveportrait.engine import LivePortraitEngine

        choice = choose_take_engine(self.settings.models_dir, self.settings.device,
                                    torch.cuda.is_available(), self.settings.allow_cpu_takes)
        if not choice.liveportrait:
            return choice, None
        return choice, LivePortraitEngine.load(self.settings.models_dir, device=choice.device)

    def describe(self) -> dict:
        return {"engine": self.engine, "takes": self.take_choice.label,
                "startup": self.startup.describe(), "thread": self.device_thread.describe(),
                **self.readiness.describe()}

    def check_health(self) -> None:
        if not self.readiness.ready:
            raise RuntimeError(self.readiness.reason)

    # ---- lip-sync -------------------------------------------------------------------------
    def run(self, req: LipSyncRequest) -> LipSyncResult:
        return self.device_thread.call(self._run, req)

    def _run(self, req: LipSyncRequest) -> LipSyncResult:
        t0 = time.monotonic()
        if self.renderer is None:
            raise StageError("ENGINE_UNAVAILABLE", self.readiness.reason)
        progress = StageProgress(self.store, req.job_id, "lipsync")
        with scratch(self.settings, req.job_id, "lipsync") as tmp:
            # 1. The voice, at the model's 16 kHz; the frame count follows its length.
            audio = load_audio(self.storage.get_file(req.audio_key, tmp))
            if len(audio) < MIN_AUDIO_S * 16000:
                raise StageError("AUDIO_TOO_SHORT", f"the voice is {len(audio) / 16000:.2f}s; "
                                 f"at least {MIN_AUDIO_S}s is needed")
            # (+1: LatentSync rounds the count up, the animator to nearest; each takes what it needs)
            n = frame_count(len(audio), req.fps) + 1
            # 2. The picture: a still (one alignment for every frame) or a persona take (its
            #    stored per-frame face track, so no detection at all).
            frames, track, (w, h), still = self._source(req, n, tmp)
            # 3. What the next stage gets: whole frames, or (a still, when the caller composes)
            #    only the region the render changes, over the still stored once.
            region = self._region(req, still, track) if still is not None else None
            background_key = None
            if region is not None:
                background_key = keys.work(req.job_id, "background.png")
                save_image(tmp / "background.png", still)
                self.storage.put_file(background_key, tmp / "background.png")
            # 4. Animate and encode frame by frame (near-lossless intermediate).
            out = tmp / "lipsync.mp4"
            extra = {"quality": req.quality} if self.latentsync is not None else {}
            x0, y0, x1, y1 = region or (0, 0, w, h)
            with FrameWriter(out, x1 - x0, y1 - y0, req.fps) as writer:
                write = writer.write if region is None else RegionWriter(writer, still, region)
                stats = self.renderer.render(frames, track, audio, req.fps, write,
                                             progress=progress, **extra)
            key = keys.work(req.job_id, "lipsync.mp4")
            self.storage.put_file(key, out)
        # 4. The face geometry of the rendered frames, so face restore never detects again.
        faces_key = keys.work(req.job_id, "faces.npz")
        self.storage.put_bytes(faces_key, track.to_bytes())
        return LipSyncResult(
            frames=FramesRef(key=key, width=w, height=h, fps=req.fps, n_frames=stats.frames,
                             region=region, background_key=background_key),
            faces_key=faces_key, engine=self.engine,
            model=f"latentsync-{self.settings.latentsync_version}" if self.latentsync else None,
            settings=_settings_of(stats, req.fps),
            seconds=round(time.monotonic() - t0, 3))

    def _source(self, req: LipSyncRequest, n: int, tmp: Path):
        path = self.storage.get_file(req.source_key, tmp)
        if req.source_kind == "image":
            image = load_image(path)
            image = _even(image)
            try:
                track = self.renderer.prepare(image, req.face_box)
            except NoFaceError as e:
                raise StageError("NO_FACE", str(e)) from None
            except ValueError as e:  # face_box outside the image etc.
                raise StageError("BAD_FACE_BOX", str(e)) from None
            return still_frames(image, n), track, (image.shape[1], image.shape[0]), image
        try:
            v = probe(path).video
        except MediaError as e:
            raise StageError("BAD_TAKE", f"persona take is unreadable: {e}") from None
        track = self._take_track(req)
        return video_frames(path, n, req.fps), track, (v.width, v.height), None

    def _region(self, req: LipSyncRequest, still: np.ndarray,
                track: FaceTrack) -> tuple[int, int, int, int] | None:
        """The part of the still's frames to hand on (even-aligned), when the caller takes a
        region and the renderer says which part it changes; None: whole frames."""
        changed = getattr(self.renderer, "changed_region", None)
        if not req.region_ok or changed is None:
            return None
        h, w = still.shape[:2]
        box = changed((h, w), track)
        if box is None:  # nothing changes (no face): a minimal region still carries the frames
            box = (0, 0, 2, 2)
        marks = track.five_points()[0]
        if req.restore_follows and np.isfinite(marks).all():
            crop = crop_region(marks, (h, w))   # where face restore crops and pastes
            if crop is None:
                return None                     # its crop reaches past the frame: whole frames
            box = union(box, crop)
        return handed_region(box, (h, w))

    def _take_track(self, req: LipSyncRequest) -> FaceTrack:
        raw = self.storage.get_bytes(req.track_key) if req.track_key else None
        if raw is None:
            raise StageError("BAD_TAKE", "persona take has no face track; rebuild the persona")
        return FaceTrack.from_bytes(raw)

    # ---- persona takes ------------------------------------------------------------------
    def render_take(self, req: TakeRequest) -> TakeResult:
        return self.device_thread.call(self._render_take, req)

    def _render_take(self, req: TakeRequest) -> TakeResult:
        t0 = time.monotonic()
        with scratch(self.settings, req.job_id, f"take{req.index}") as tmp:
            # 1. The still and its face (the only detection a take ever needs).
            image = load_image(self.storage.get_file(req.image_key, tmp))
            try:
                track = locate_face(self.detector, image, req.face_box)
            except NoFaceError as e:
                raise StageError("NO_FACE", str(e)) from None
            out = tmp / f"take_{req.index}.mp4"
            # 2. Render it (lossless intermediate: the finisher encodes the take once). A
            #    LivePortrait take changes only the face's part of the framed still: when the
            #    caller composes, that region alone travels on, over the framed still stored once.
            region = background_key = None
            try:
                if self.take_engine is not None:
                    info, region, canvas = self._liveportrait_take(image, track, req, out)
                else:
                    info = self._reframer_take(image, track, req, out)
            except ValueError as e:
                raise StageError("BAD_TAKE_SPEC", str(e)) from None
            if region is not None:
                background_key = keys.work(req.job_id, f"take_{req.index}_background.png")
                save_image(tmp / "background.png", canvas)
                self.storage.put_file(background_key, tmp / "background.png")
            key = keys.work(req.job_id, f"take_{req.index}.mp4")
            self.storage.put_file(key, out)
            # 3. Its per-frame face track, so renders on the take never detect again.
            tkey = keys.take_track(req.persona_id, req.index)
            self.storage.put_bytes(tkey, FaceTrack(
                info.face_boxes, info.landmarks,
                "landmarks" if info.landmarks is not None else "face_box").to_bytes())
        return TakeResult(
            frames=FramesRef(key=key, width=info.width, height=info.height, fps=info.fps,
                             n_frames=info.frames, region=region, background_key=background_key),
            track_key=tkey, engine=self.take_choice.label, engine_reason=self.take_choice.reason,
            params=info.params, seconds=round(time.monotonic() - t0, 3))

    def _liveportrait_take(self, image: np.ndarray, track: FaceTrack, req: TakeRequest,
                           out: Path) -> tuple[TakeRender, tuple[int, int, int, int] | None,
                                               np.ndarray]:
        """The director's plan rendered by LivePortrait; the track is the plan's head motion.
        Returns the render, the region written (None: whole frames) and the framed still."""
        plan = plan_take(req.emotion, req.angle, req.intensity, req.archetype,
                         req.seconds or TAKE_SECONDS, req.fps, req.seed)
        face = track.landmarks[0] if track.landmarks is not None else track.boxes[0]
        progress = StageProgress(self.store, req.job_id, "lipsync")
        layout = self.take_engine.layout(image, face, plan, size=TAKE_FRAME_BOX)
        region = take_region(layout) if req.region_ok else None
        w, h = TAKE_FRAME_BOX
        x0, y0, x1, y1 = region or (0, 0, w, h)
        with FrameWriter(out, x1 - x0, y1 - y0, plan.fps) as writer:
            write = writer.write if region is None else RegionWriter(writer, layout.canvas, region)
            info = self.take_engine.render_take(image, face, plan, write,
                                                size=TAKE_FRAME_BOX, progress=progress)
        info.params["face_source"] = track.source
        return info, region, layout.canvas

    def _reframer_take(self, image: np.ndarray, track: FaceTrack, req: TakeRequest,
                       out: Path) -> TakeRender:
        """The embedded reframer: a camera framing + grade; its params say what it did not do."""
        face = track.boxes[0] if track.landmarks is None else Face(
            box=tuple(track.boxes[0]), score=1.0, landmarks=track.landmarks[0])
        info = render_take(image, face, req.angle, req.emotion, req.intensity, str(out),
                           seconds=req.seconds or TAKE_SECONDS, fps=req.fps,
                           size=TAKE_FRAME_BOX, lossless=True)
        fallback = info.grade == "none" and req.emotion.strip().lower() != "neutral"
        params = {
            "emotion_requested": req.emotion, "angle": req.angle, "intensity": req.intensity,
            "head_pose": "not re-posed: the angle is a camera framing of the same photo",
            "expression": "not re-acted: the emotion is a colour grade", "grade": info.grade,
            "fallback": fallback,
            "fallback_reason": f"no colour grade for {req.emotion!r}" if fallback else None,
            "seconds": info.frames / info.fps, "fps": info.fps, "n_frames": info.frames,
            "face_source": track.source, "face_track": "reframing transform (no detection)",
        }
        return TakeRender(frames=info.frames, fps=info.fps, width=info.width, height=info.height,
                          face_boxes=info.face_boxes, landmarks=info.landmarks, engine=info.engine,
                          params=params)


def union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def handed_region(box: tuple[int, int, int, int],
                  frame_hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """`box` grown to even corners inside the frame (yuv encodes need even sides), or None when
    it is most of the frame (whole frames then cost about the same)."""
    h, w = frame_hw
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0 = max(0, x0 - x0 % 2), max(0, y0 - y0 % 2)
    x1, y1 = min(w, x1 + x1 % 2), min(h, y1 + y1 % 2)
    if (x1 - x0) * (y1 - y0) > REGION_MAX_SHARE * w * h:
        return None
    return (x0, y0, x1, y1)


def take_region(layout) -> tuple[int, int, int, int] | None:
    """The region a LivePortrait take hands on: what its paste-back changes, grown to hold face
    restore's aligned crop of every frame (restore reads and writes only inside it). None: a
    crop reaches past the frame's edge, or the region is most of the frame."""
    h, w = layout.canvas.shape[:2]
    box = layout.region
    for marks in layout.landmarks:
        crop = crop_region(np.asarray(marks, np.float64), (h, w))
        if crop is None:
            return None
        box = union(box, crop)
    return handed_region(box, (h, w))


def _settings_of(stats, fps: float) -> dict:
    """What the engine actually did, for the job's metadata."""
    out = {"fps": fps, "frames": stats.frames, "mouth_source": stats.mouth_source,
           "render_s": round(stats.render_s, 3)}
    for name in ("quality", "steps", "deepcache", "guidance_scale", "seed", "face_frames"):
        if hasattr(stats, name):
            out[name] = getattr(stats, name)
    return out


def _even(image: np.ndarray) -> np.ndarray:
    """yuv420 needs even sides: drop a last odd row/column (never resample)."""
    h, w = image.shape[:2]
    return image[: h - h % 2, : w - w % 2]
