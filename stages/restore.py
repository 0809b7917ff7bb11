"""Face restore stage. With GFPGAN v1.4 on the models volume: restore the face of every
generated frame, aligned from the landmarks the lip-sync stage recorded (no re-detection),
feather it back, with the temporal stabiliser against flicker. Without: an honest pass-through."""
from __future__ import annotations

import logging
import time

import numpy as np

from core import keys
from core.errors import StageError
from core.jobs import JobStore
from core.settings import Settings
from core.storage import Storage
from enhance.face_align import crop_faces, frame_to_crop, invert
from faces.track import FaceTrack
from media.frames import FrameWriter, read_frames
from stages.contracts import RestoreRequest, RestoreResult
from stages.progress import StageProgress
from stages.readiness import READY, RESTORE_WEIGHTS, require_weights, unavailable_engine
from stages.device_thread import DeviceThread
from stages.startup import Startup, wants_warmup, warm_up
from stages.workspace import scratch

log = logging.getLogger("personaforge.restore")

PASSTHROUGH = "passthrough (no GFPGAN weights on the models volume)"
BATCH = 16


class FaceRestoreStage:
    def __init__(self, settings: Settings, storage: Storage, restorer=None):
        t0 = time.perf_counter()
        self.settings = settings
        self.storage = storage
        self.store = JobStore(self.storage)
        self.restorer = restorer if restorer is not None else self._load()
        self.readiness = READY
        if self.restorer is not None:
            self.engine = self.restorer.engine
        elif settings.production:  # GFPGAN or nothing (stages/readiness.py)
            self.readiness = require_weights("FaceRestore", settings.models_dir, RESTORE_WEIGHTS,
                                             "--only restore")
            self.engine = unavailable_engine(self.readiness)
        else:
            self.engine = PASSTHROUGH
        log.info("FaceRestore engine: %s", self.engine)
        self.startup = Startup(load_s=time.perf_counter() - t0)
        warm = self.restorer is not None and wants_warmup(settings, self.restorer.device.type == "cuda")
        # warm-up and jobs on one thread: cuDNN's tuning is per thread (stages/device_thread.py)
        self.device_thread = DeviceThread("FaceRestore", pinned=warm)
        if warm:
            self.device_thread.call(warm_up, "FaceRestore", self.startup, [self.restorer.warm_up])

    def _load(self):
        from enhance.loaders import load_face_restorer
        from enhance.restore import RestoreOptions

        device = None if self.settings.device == "auto" else self.settings.device
        # the replica's GPU share is its memory cap too (fractional GPUs do not isolate memory)
        cap = self.settings.gpu_memory_fraction
        return load_face_restorer(self.settings.models_dir / "gfpgan", device, RestoreOptions(memory_fraction=cap))

    def describe(self) -> dict:
        return {"engine": self.engine, "startup": self.startup.describe(),
                "thread": self.device_thread.describe(), **self.readiness.describe()}

    def check_health(self) -> None:
        if not self.readiness.ready:
            raise RuntimeError(self.readiness.reason)

    def run(self, req: RestoreRequest) -> RestoreResult:
        return self.device_thread.call(self._run, req)

    def _run(self, req: RestoreRequest) -> RestoreResult:
        t0 = time.monotonic()
        if not self.readiness.ready:
            raise StageError("ENGINE_UNAVAILABLE", self.readiness.reason)
        if self.restorer is None or req.faces_key is None:
            # No model (or no face geometry): the frames are final; hand the same key on.
            return RestoreResult(frames=req.frames, engine=self.engine, restored_faces=0,
                                 seconds=round(time.monotonic() - t0, 3))
        from enhance.restore import paste_back
        from enhance.temporal import ResidualStabilizer

        progress = StageProgress(self.store, req.job_id, "face_restore")
        track = FaceTrack.from_bytes(self.storage.get_bytes(req.faces_key))
        marks = track.five_points()
        # a region of each frame (a still's face, FramesRef.region): the same crops, read from
        # the region (lip-sync made it hold them), so the landmarks move to its corner
        x0, y0, x1, y1 = req.frames.region or (0, 0, req.frames.width, req.frames.height)
        marks = marks - np.array([x0, y0], dtype=marks.dtype)
        stabilizer = ResidualStabilizer()
        n = req.frames.n_frames
        done = faces = 0
        with scratch(self.settings, req.job_id, "restore") as tmp:
            src = self.storage.get_file(req.frames.key, tmp)
            out = tmp / "restored.mp4"
            with FrameWriter(out, x1 - x0, y1 - y0, req.frames.fps) as writer:
                for batch in _batches(read_frames(src), BATCH):
                    # a take's track is read ping-pong, as the lip-sync stage looped the take
                    idx = [track.index(k) for k in range(done, done + len(batch))]
                    to_crop = np.stack([frame_to_crop(marks[i]) for i in idx])
                    restored = self.restorer.restore(crop_faces(batch, to_crop), weight=req.weight,
                                                     stabilizer=stabilizer)
                    for frame in paste_back(batch, restored, invert(to_crop)):
                        writer.write(frame)
                    faces += len(restored)
                    done += len(batch)
                    progress(done / max(n, 1))
            key = keys.work(req.job_id, "restored.mp4")
            self.storage.put_file(key, out)
        frames = req.frames.model_copy(update={"key": key, "n_frames": done})
        return RestoreResult(frames=frames, engine=self.engine, restored_faces=faces,
                             seconds=round(time.monotonic() - t0, 3))


def _batches(frames, size: int):
    batch = []
    for f in frames:
        batch.append(f)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)
