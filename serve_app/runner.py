"""Runs jobs: admission (idempotency, backpressure), execution of the job's graph, heartbeats,
timeouts, cancellation, and recovery of jobs whose worker died. Ray-free: the stages arrive as
async callables (Serve handles in production, in-process stage objects in tests).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator

from serve_app.jobs import JobRecord, JobStore
from serve_app.schemas import ErrorInfo, JobResult, JobStatus, JobType
from serve_app.settings import Settings
from serve_app.storage import Storage
from stages.errors import JobCancelled, StageError

log = logging.getLogger("personaforge.jobs")

HEARTBEAT_S = 5.0
REAP_EVERY_S = 15.0
STAGE_RETRIES = 2          # a stage call whose replica died is retried this many times
STAGE_RETRY_DELAY_S = 2.0
# Ray's errors for "the replica/actor went away" (matched by name to keep this module Ray-free)
_LOST_WORKER_ERRORS = {"RayActorError", "ActorDiedError", "ActorUnavailableError",
                       "ActorUnschedulableError", "WorkerCrashedError", "NodeDiedError",
                       "DeploymentUnavailableError"}

StageCall = Callable[[str, str, Any], Awaitable[Any]]  # (stage, method, request) -> result


class QueueFull(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(f"too many jobs waiting; retry in {retry_after_s}s")
        self.retry_after_s = retry_after_s


def _lost_worker(exc: BaseException) -> bool:
    return any(t.__name__ in _LOST_WORKER_ERRORS for t in type(exc).__mro__)


@dataclass
class JobContext:
    """What a graph sees: its record, the stage caller, and progress/stage bookkeeping."""
    record: JobRecord
    settings: Settings
    storage: Storage
    store: JobStore
    _call: StageCall
    stage_log: list[dict]

    @property
    def job_id(self) -> str:
        return self.record.id

    @property
    def request(self) -> dict:
        return self.record.request

    async def call(self, stage: str, method: str, request: Any,
                   span: tuple[float, float] = (0.0, 1.0)) -> Any:
        """Call a stage; a replica that died mid-call is retried, then the job fails with why.
        `span` is the share of the job's overall progress this call covers."""
        self.record.stage = f"{stage}.{method}"
        self.record.stage_span = span
        self.record.progress = span[0]
        self.store.save(self.record)
        self.store.set_progress(self.job_id, self.record.stage, 0.0)
        t0 = time.monotonic()
        for attempt in range(STAGE_RETRIES + 1):
            try:
                result = await self._call(stage, method, request)
                break
            except Exception as e:  # noqa: BLE001 - classified below
                if not _lost_worker(e):
                    raise
                log.warning("job %s: %s.%s lost its worker (%s), attempt %d", self.job_id, stage,
                            method, type(e).__name__, attempt + 1)
                if attempt == STAGE_RETRIES:
                    raise StageError("WORKER_LOST", f"the {stage} worker died {attempt + 1} "
                                     f"times while running this job ({type(e).__name__})") from None
                await asyncio.sleep(STAGE_RETRY_DELAY_S)
        self.stage_log.append({"stage": stage, "method": method, "attempts": attempt + 1,
                               "seconds": round(time.monotonic() - t0, 3)})
        return result


Graph = Callable[[JobContext], Awaitable[JobResult]]


class JobRunner:
    def __init__(self, settings: Settings, storage: Storage, graphs: dict[JobType, Graph],
                 call: StageCall, replica_id: str | None = None):
        self.settings, self.storage, self.graphs, self._call = settings, storage, graphs, call
        self.store = JobStore(storage)
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self._slots = asyncio.Semaphore(settings.max_running_jobs)
        self._tasks: dict[str, asyncio.Task] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._running = 0
        self._admitting = 0  # submissions holding a queue place (see admission())
        self._reaper: asyncio.Task | None = None
        self.counts = {"completed": 0, "failed": 0, "retried": 0}

    # ---- admission -------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return len(self._tasks) - self._running

    @property
    def running(self) -> int:
        return self._running

    def check_capacity(self) -> None:
        if self.waiting + self._admitting >= self.settings.max_queued_jobs:
            raise QueueFull(retry_after_s=max(5, int(self.settings.job_timeout_s // 60)))

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold a queue place while a submission is prepared (inputs decoded, stored), so
        submissions arriving together cannot all pass `check_capacity` before any of them is
        queued. Raises QueueFull when there is no place."""
        self.check_capacity()
        self._admitting += 1
        try:
            yield
        finally:
            self._admitting -= 1

    def submit(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store the record (idempotent on id) and start it; returns (record, created?)."""
        stored, created = self.store.create(record)
        if created:
            self._start(stored.id)
        return stored, created

    def _start(self, job_id: str) -> None:
        if job_id in self._tasks:
            return
        self._done[job_id] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._execute(job_id), name=f"job-{job_id}")
        self._tasks[job_id] = task

    async def wait(self, job_id: str, timeout_s: float) -> None:
        event = self._done.get(job_id)
        if event is not None:
            try:
                await asyncio.wait_for(event.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass

    # ---- execution -------------------------------------------------------------------------
    async def _execute(self, job_id: str) -> None:
        try:
            async with self._slots:
                self._running += 1
                try:
                    await self._run_once(job_id)
                finally:
                    self._running -= 1
        finally:
            self._tasks.pop(job_id, None)
            event = self._done.pop(job_id, None)
            if event:
                event.set()

    async def _run_once(self, job_id: str) -> None:
        rec = self.store.get(job_id)
        if rec is None or rec.status.final:
            return
        if self.store.cancel_requested(job_id):
            return self._finish(rec, JobStatus.CANCELLED, error=ErrorInfo(
                code="CANCELLED", message="cancelled before it started"))
        now = time.time()
        rec.status, rec.owner, rec.heartbeat_at = JobStatus.IN_PROGRESS, self.replica_id, now
        rec.attempts += 1
        rec.started_at = rec.started_at or now
        self.store.save(rec)
        ctx = JobContext(rec, self.settings, self.storage, self.store, self._call, [])
        beat = asyncio.get_running_loop().create_task(self._heartbeat(rec))
        budget = self.settings.job_timeout_s - (time.time() - rec.created_at)
        t0 = time.monotonic()
        try:
            result = await asyncio.wait_for(self.graphs[rec.job_type](ctx), max(budget, 1.0))
            result.duration_ms = int((time.monotonic() - t0) * 1000)
            result.metadata.setdefault("stages", ctx.stage_log)
            result.metadata.setdefault("attempts", rec.attempts)
            self._finish(rec, JobStatus.COMPLETED, result=result)
        except asyncio.TimeoutError:
            # the stage call still running elsewhere (a replica, a thread) stops at its next
            # progress check instead of working on for a job nobody will read
            self.store.request_cancel(job_id)
            self._finish(rec, JobStatus.TIMED_OUT, error=ErrorInfo(
                code="TIMED_OUT", message=f"job exceeded {self.settings.job_timeout_s:.0f}s"))
        except JobCancelled:
            self._finish(rec, JobStatus.CANCELLED, error=ErrorInfo(
                code="CANCELLED", message="the job was cancelled"))
        except asyncio.CancelledError:
            if self.store.cancel_requested(job_id):
                self._finish(rec, JobStatus.CANCELLED, error=ErrorInfo(
                    code="CANCELLED", message="the job was cancelled"))
            raise  # replica shutting down: the record stays IN_PROGRESS and its lease expires
        except StageError as e:
            self._finish(rec, JobStatus.FAILED, error=ErrorInfo(code=e.code, message=e.message))
        except Exception as e:  # noqa: BLE001 - any other failure is reported, never lost
            log.exception("job %s failed", job_id)
            self._finish(rec, JobStatus.FAILED, error=ErrorInfo(
                code="INTERNAL", message=f"{type(e).__name__}: {_short(e)}"))
        finally:
            beat.cancel()

    def _finish(self, rec: JobRecord, status: JobStatus, *, result: JobResult | None = None,
                error: ErrorInfo | None = None) -> None:
        rec.status, rec.finished_at = status, time.time()
        rec.progress = 1.0 if status == JobStatus.COMPLETED else rec.progress
        rec.result = result or JobResult(success=False, error=error,
                                         metadata={"job_id": rec.id, "attempts": rec.attempts})
        rec.error = error
        self.store.save(rec)
        self.counts["completed" if status == JobStatus.COMPLETED else "failed"] += 1
        log.info("job %s %s%s", rec.id, status.value, f" ({error.code})" if error else "")

    async def _heartbeat(self, rec: JobRecord) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if self.store.cancel_requested(rec.id):
                task = self._tasks.get(rec.id)
                if task:
                    task.cancel()
                return
            rec.heartbeat_at = time.time()
            self.store.save(rec)

    def cancel(self, job_id: str) -> JobRecord | None:
        rec = self.store.get(job_id)
        if rec is None or rec.status.final:
            return rec
        self.store.request_cancel(job_id)
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            if rec.status == JobStatus.IN_QUEUE:
                # still waiting for a slot: it never starts, so nothing else would record it
                # (a task past the slot finds the record final and returns)
                self._finish(rec, JobStatus.CANCELLED, error=ErrorInfo(
                    code="CANCELLED", message="cancelled before it started"))
        else:  # owned elsewhere (or orphaned): its owner's heartbeat sees the marker
            rec.status, rec.finished_at = JobStatus.CANCELLED, time.time()
            rec.error = ErrorInfo(code="CANCELLED", message="the job was cancelled")
            rec.result = JobResult(success=False, error=rec.error, metadata={"job_id": rec.id})
            self.store.save(rec)
        return rec

    # ---- recovery --------------------------------------------------------------------------
    def start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            try:
                await self.reap()
            except Exception:  # noqa: BLE001 - the reaper must outlive storage hiccups
                log.exception("reaper pass failed")
            await asyncio.sleep(REAP_EVERY_S)

    async def reap(self) -> list[str]:
        """Adopt jobs whose owner stopped heartbeating: re-run them, or fail them with a reason
        after max_attempts. Returns the ids acted on."""
        acted, restart = await asyncio.to_thread(self._reap_scan)
        for job_id in restart:
            self._start(job_id)
        return acted

    def _reap_scan(self) -> tuple[list[str], list[str]]:
        acted, restart = [], []
        now = time.time()
        for job_id in self.store.active_ids():
            if job_id in self._tasks:
                continue
            rec = self.store.get(job_id)
            if rec is None or rec.status.final:
                continue
            last = rec.heartbeat_at or rec.created_at
            if now - last < self.settings.lease_s:
                continue
            if now - rec.created_at > self.settings.job_timeout_s:
                self._finish(rec, JobStatus.TIMED_OUT, error=ErrorInfo(
                    code="TIMED_OUT", message="job exceeded its time limit while its worker was lost"))
            elif rec.attempts >= self.settings.max_attempts:
                self._finish(rec, JobStatus.FAILED, error=ErrorInfo(
                    code="WORKER_LOST", message=f"the worker running this job stopped responding "
                    f"{rec.attempts} times; giving up"))
            else:
                rec.status, rec.owner, rec.heartbeat_at = JobStatus.IN_QUEUE, self.replica_id, now
                self.store.save(rec)
                self.counts["retried"] += 1
                restart.append(job_id)
            acted.append(job_id)
        return acted, restart

    async def shutdown(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        for task in list(self._tasks.values()):
            task.cancel()


def _short(e: BaseException, limit: int = 400) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else "")[:limit]
