"""Runner-level helpers: a JobRunner over local storage with graphs the test writes, a record,
and waiting until a record is final."""
from __future__ import annotations

import asyncio
import time

from core.jobs import JobRecord, JobType
from core.runner import JobRunner, RunnerTimings, StageMethod
from core.storage import LocalStorage

# beats, reaps and final-save retries in milliseconds: the runner tests step through them fast
FAST = RunnerTimings(heartbeat_s=0.01, reap_every_s=0.01, final_save_backoff_s=(0.01,) * 6,
                     stage_retry_delay_s=0.01)


def make_runner(settings, graph, call=None, *, timings: RunnerTimings = FAST, clock=time.time,
                storage=None, replica_id: str | None = None, **overrides):
    """A runner of one lipsync_only `graph`; settings `overrides` (lease_s=...) applied."""
    s = settings.model_copy(update=overrides)
    storage = storage or LocalStorage(s.storage_dir, s.public_base_url)

    async def default_call(stage, method, req):
        return {"stage": stage, "req": req}

    return JobRunner(s, storage, {JobType.lipsync_only: graph}, call or default_call,
                     replica_id=replica_id, clock=clock, timings=timings)


class FakeClock:
    """Wall-clock seconds that move only when a test says so (leases without sleeping)."""

    def __init__(self, start: float | None = None):
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def until(condition, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Yield to the loop until `condition()` holds (a hang guard, never a timing)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s}s")
        await asyncio.sleep(0.005)


def record(job_id="j1"):
    return JobRecord(id=job_id, job_type=JobType.lipsync_only, request={"x": 1})


async def wait_record_final(runner, job_id, timeout=10.0):
    """The job's record once final (read off the loop, as the status route reads it)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        rec = await asyncio.to_thread(runner.store.get, job_id)
        if rec and rec.status.final:
            return rec
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} not final: {runner.store.get(job_id)}")


# A stage method the runner tests call: any dict in, whatever the test's stage call returns.
TEST_STAGE = StageMethod("lipsync", "run", dict, dict, "the test's own stage call")
