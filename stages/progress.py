"""Progress reports from inside a stage, which double as the cancel check between chunks."""
from __future__ import annotations

import time

from core.errors import JobCancelled
from core.jobs import JobStore

REPORT_EVERY_S = 1.0  # at most one storage write (and one cancel check) per second


class StageProgress:
    """Callable(fraction): records the stage's progress and raises JobCancelled when the job's
    cancel marker exists, so GPU/CPU work stops within about a second of a cancel."""

    def __init__(self, store: JobStore, job_id: str, stage: str):
        self.store, self.job_id, self.stage = store, job_id, stage
        self._last = 0.0

    def __call__(self, fraction: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < REPORT_EVERY_S:
            return
        self._last = now
        if self.store.cancel_requested(self.job_id):
            raise JobCancelled()
        self.store.set_progress(self.job_id, self.stage, fraction)
