"""Runs jobs: admission (idempotency, backpressure), execution of the job's graph, heartbeats,
timeouts, cancellation, and recovery of jobs whose worker died. Ray-free: the stages arrive as
one async callable (Serve handles in production, in-process stage objects in tests), and graphs
call them through typed `StageMethod`s (declared in stages/contracts.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Iterator, TypeVar

from core import housekeeping
from core.errors import JobCancelled, StageError
from core.jobs import ErrorInfo, JobRecord, JobResult, JobStatus, JobStore, JobType
from core.settings import Settings
from core.storage import Storage

log = logging.getLogger("personaforge.jobs")

HEARTBEAT_S = 5.0
REAP_EVERY_S = 15.0
SWEEP_EVERY_S = 600.0      # housekeeping passes (core/housekeeping.py)
FINAL_SAVE_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 30.0, 30.0)  # storage down: keep the result
STAGE_RETRIES = 2          # a stage call whose replica died is retried this many times
STAGE_RETRY_DELAY_S = 2.0
# Ray's errors for "the replica/actor went away" (matched by name to keep this module Ray-free)
_LOST_WORKER_ERRORS = {"RayActorError", "ActorDiedError", "ActorUnavailableError",
                       "ActorUnschedulableError", "WorkerCrashedError", "NodeDiedError",
                       "DeploymentUnavailableError"}

StageCall = Callable[[str, str, Any], Awaitable[Any]]  # (stage, method, request) -> result
Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass(frozen=True)
class StageMethod(Generic[Req, Res]):
    """One method of one stage as a graph calls it: `await ctx.call(LIPSYNC.run, request)`.

    `stage` is the key of the runner's stage table (a deployment), `method` the method on it,
    `implementation` the dotted path of the code that runs (for readers; a test checks it)."""
    stage: str
    method: str
    request: type[Req]
    result: type[Res]
    implementation: str


@dataclass(frozen=True)
class RunnerTimings:
    """How often the runner beats, reaps and retries (seconds). Tests pass small ones."""
    heartbeat_s: float = HEARTBEAT_S
    reap_every_s: float = REAP_EVERY_S
    final_save_backoff_s: tuple[float, ...] = FINAL_SAVE_BACKOFF_S
    stage_retry_delay_s: float = STAGE_RETRY_DELAY_S
    sweep_every_s: float = SWEEP_EVERY_S


class QueueFull(Exception):
    def __init__(self, retry_after_s: int, reason: str = "too many jobs waiting"):
        super().__init__(f"{reason}; retry in {retry_after_s}s")
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
    retry_delay_s: float = STAGE_RETRY_DELAY_S

    @property
    def job_id(self) -> str:
        return self.record.id

    @property
    def request(self) -> dict:
        return self.record.request

    async def call(self, target: StageMethod[Req, Res], request: Req,
                   span: tuple[float, float] = (0.0, 1.0)) -> Res:
        """Call a stage method; a replica that died mid-call is retried, then the job fails with
        why. `span` is the share of the job's overall progress this call covers."""
        if not isinstance(request, target.request):
            raise TypeError(f"{target.stage}.{target.method} takes a {target.request.__name__}, "
                            f"got {type(request).__name__}")
        stage, method = target.stage, target.method
        self.record.stage = f"{stage}.{method}"
        self.record.stage_span = span
        self.record.progress = span[0]
        try:  # status bookkeeping: a storage hiccup here must not fail the job
            await asyncio.to_thread(self.store.save, self.record)
            await asyncio.to_thread(self.store.set_progress, self.job_id, self.record.stage, 0.0)
        except Exception as e:  # noqa: BLE001
            log.warning("job %s: could not record stage %s (%s)", self.job_id, self.record.stage,
                        type(e).__name__)
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
                await asyncio.sleep(self.retry_delay_s)
        self.stage_log.append({"stage": stage, "method": method, "attempts": attempt + 1,
                               "seconds": round(time.monotonic() - t0, 3)})
        return result


Graph = Callable[[JobContext], Awaitable[JobResult]]


class JobRunner:
    """Runs the jobs of one ingress replica. Every storage call goes through a thread: with S3
    storage a call can take seconds (retries with backoff), and the event loop also answers
    status requests."""

    def __init__(self, settings: Settings, storage: Storage, graphs: dict[JobType, Graph],
                 call: StageCall, replica_id: str | None = None, *,
                 clock: Callable[[], float] = time.time, timings: RunnerTimings = RunnerTimings()):
        """`clock` (wall-clock seconds) times leases, heartbeats and records; `timings` sets
        the beat, reap and retry periods. Both are injected so tests can step them."""
        self.settings, self.storage, self.graphs, self._call = settings, storage, graphs, call
        self.clock, self.timings = clock, timings
        self.store = JobStore(storage, clock=clock)
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self._slots = asyncio.Semaphore(settings.max_running_jobs)
        self._tasks: dict[str, asyncio.Task] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._running_ids: set[str] = set()
        self._taken_over: set[str] = set()  # runs that found a later attempt claimed elsewhere
        self._record_locks: dict[str, threading.Lock] = {}  # running jobs: beat vs final save
        # told of each job that became final here (a run's end, a reaper's verdict, a cancel
        # of a job owned elsewhere), after its record is written: webhooks hang on it
        self.on_final: Callable[[JobRecord], None] | None = None
        self._admitting = 0  # submissions holding a queue place (see admission())
        self._draining = False
        self._reaper: asyncio.Task | None = None
        self._last_sweep = float("-inf")  # monotonic
        self._beat: asyncio.Task | None = None
        self.counts = {"completed": 0, "failed": 0, "retried": 0, "taken_over": 0}

    # ---- admission -------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return len(self._tasks) - len(self._running_ids)

    @property
    def running(self) -> int:
        return len(self._running_ids)

    def check_capacity(self) -> None:
        if self._draining:
            raise QueueFull(retry_after_s=5, reason="this replica is shutting down")
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

    async def submit(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store the record (idempotent on id) and start it; returns (record, created?)."""
        record.owner = self.replica_id
        stored, created = await asyncio.to_thread(self.store.create, record)
        if created:
            self._start(stored.id, attempt=1)
        return stored, created

    def _start(self, job_id: str, attempt: int) -> None:
        """Schedule run number `attempt` of the job (fixed now, claimed when a slot is free)."""
        if job_id in self._tasks:
            return
        self._done[job_id] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._execute(job_id, attempt),
                                                      name=f"job-{job_id}")
        self._tasks[job_id] = task

    async def wait(self, job_id: str, timeout_s: float) -> None:
        event = self._done.get(job_id)
        if event is not None:
            try:
                await asyncio.wait_for(event.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass

    # ---- execution -------------------------------------------------------------------------
    async def _execute(self, job_id: str, attempt: int) -> None:
        try:
            async with self._slots:
                self._running_ids.add(job_id)
                try:
                    await self._run_once(job_id, attempt)
                finally:
                    self._running_ids.discard(job_id)
        finally:
            self._tasks.pop(job_id, None)
            event = self._done.pop(job_id, None)
            if event:
                event.set()

    async def _run_once(self, job_id: str, attempt: int) -> None:
        rec = await asyncio.to_thread(self.store.get, job_id)
        if rec is None or rec.status.final or rec.attempts >= attempt:
            return  # done, or this attempt (or a later one) already started elsewhere
        if await asyncio.to_thread(self.store.cancel_requested, job_id):
            return await self._finish(rec, JobStatus.CANCELLED, error=ErrorInfo(
                code="CANCELLED", message="cancelled before it started"))
        if attempt == 1 and rec.ttl_s is not None and self.clock() - rec.created_at > rec.ttl_s:
            return await self._finish(rec, JobStatus.TIMED_OUT, error=ErrorInfo(
                code="TIMED_OUT", message=f"waited longer than its policy.ttl "
                f"({rec.ttl_s * 1000:.0f} ms) in the queue; not started"))
        if not await asyncio.to_thread(self.store.claim, job_id, attempt, self.replica_id):
            log.info("job %s: attempt %d already runs on another replica", job_id, attempt)
            return
        now = self.clock()
        rec.status, rec.owner, rec.heartbeat_at = JobStatus.IN_PROGRESS, self.replica_id, now
        rec.attempts = attempt
        rec.started_at = rec.started_at or now
        await asyncio.to_thread(self.store.save, rec)
        ctx = JobContext(rec, self.settings, self.storage, self.store, self._call, [],
                         retry_delay_s=self.timings.stage_retry_delay_s)
        # The heartbeat's saves and the final save take turns on this lock, in their threads:
        # a beat already writing when the job ends must not land after the final record.
        self._record_locks[job_id] = threading.Lock()
        beat = asyncio.get_running_loop().create_task(self._heartbeat(rec))
        budget, reason = self._budget(rec)
        t0 = time.monotonic()
        try:
            result = await asyncio.wait_for(self.graphs[rec.job_type](ctx), budget)
            result.duration_ms = int((time.monotonic() - t0) * 1000)
            result.metadata.setdefault("stages", ctx.stage_log)
            result.metadata.setdefault("attempts", rec.attempts)
            await self._finish(rec, JobStatus.COMPLETED, result=result)
        except asyncio.TimeoutError:
            # the stage call still running elsewhere (a replica, a thread) stops at its next
            # progress check instead of working on for a job nobody will read
            await asyncio.to_thread(self.store.request_cancel, job_id)
            await self._finish(rec, JobStatus.TIMED_OUT, error=ErrorInfo(
                code="TIMED_OUT", message=reason))
        except JobCancelled:
            await self._finish(rec, JobStatus.CANCELLED, error=ErrorInfo(
                code="CANCELLED", message="the job was cancelled"))
        except asyncio.CancelledError:
            if job_id in self._taken_over:
                self._taken_over.discard(job_id)
                log.warning("job %s: attempt %d was taken over by another replica; this run "
                            "stops without writing a result", job_id, attempt)
                self.counts["taken_over"] += 1
                return
            if await asyncio.to_thread(self.store.cancel_requested, job_id):
                await self._finish(rec, JobStatus.CANCELLED, error=ErrorInfo(
                    code="CANCELLED", message="the job was cancelled"))
            raise  # replica shutting down: the record stays IN_PROGRESS and its lease expires
        except StageError as e:
            await self._finish(rec, JobStatus.FAILED, error=ErrorInfo(code=e.code, message=e.message))
        except Exception:  # noqa: BLE001 - any other failure is reported, never lost
            # the client learns that it failed and how to find it in our logs, never the
            # exception's text (Ray's carry pids, node addresses, actor ids, colour codes)
            incident = uuid.uuid4().hex[:12]
            log.exception("job %s failed (incident %s)", job_id, incident)
            await self._finish(rec, JobStatus.FAILED, error=ErrorInfo(
                code="INTERNAL", message=f"internal error (incident {incident}); the service "
                "logged the details. Retry, or report the incident id"))
        finally:
            beat.cancel()
            self._record_locks.pop(job_id, None)

    def _budget(self, rec: JobRecord) -> tuple[float, str]:
        """Seconds this run may take, and the reason given when it takes longer: our job limit
        (counted from submission), or the client's policy.executionTimeout (counted from the
        start) when that ends first."""
        ours = self.settings.job_timeout_s - (self.clock() - rec.created_at)
        reason = f"job exceeded {self.settings.job_timeout_s:.0f}s"
        if rec.execution_timeout_s is not None and rec.execution_timeout_s < ours:
            return rec.execution_timeout_s, (f"job ran longer than its policy.executionTimeout "
                                             f"({rec.execution_timeout_s * 1000:.0f} ms)")
        return max(ours, 1.0), reason

    def _mark_final(self, rec: JobRecord, status: JobStatus, *, result: JobResult | None = None,
                    error: ErrorInfo | None = None) -> None:
        rec.status, rec.finished_at = status, self.clock()
        rec.progress = 1.0 if status == JobStatus.COMPLETED else rec.progress
        rec.result = result or JobResult(success=False, error=error,
                                         metadata={"job_id": rec.id, "attempts": rec.attempts})
        rec.error = error
        self.counts["completed" if status == JobStatus.COMPLETED else "failed"] += 1
        log.info("job %s %s%s", rec.id, status.value, f" ({error.code})" if error else "")

    def _save_final(self, rec: JobRecord) -> bool:
        """Write the final record unless a later attempt was claimed elsewhere (then that run's
        result is the job's). True if written."""
        with self._record_locks.get(rec.id) or contextlib.nullcontext():
            return self._save_final_locked(rec)

    def _save_final_locked(self, rec: JobRecord) -> bool:
        if rec.attempts and self.store.superseded(rec.id, rec.attempts):
            log.warning("job %s: attempt %d was taken over; its result is not written",
                        rec.id, rec.attempts)
            return False
        self.store.save(rec)
        return True

    async def _finish(self, rec: JobRecord, status: JobStatus, *, result: JobResult | None = None,
                      error: ErrorInfo | None = None) -> None:
        """Record the end of a job. Storage down: retry with backoff (the result is in memory and
        the outputs are already stored); if it stays down, the record keeps its stale heartbeat
        and the reaper of some replica re-runs the job once storage is back: nothing is lost."""
        self._mark_final(rec, status, result=result, error=error)
        for delay in (*self.timings.final_save_backoff_s, None):
            try:
                if await asyncio.to_thread(self._save_final, rec):
                    self._told_final(rec)
                    await asyncio.to_thread(self._clear_working_files, rec.id)
                return
            except Exception as e:  # noqa: BLE001 - storage errors of either backend
                if delay is None:
                    log.error("job %s: could not record %s after %d tries (%s); it will be re-run",
                              rec.id, status.value, len(self.timings.final_save_backoff_s) + 1, type(e).__name__)
                    return
                log.warning("job %s: recording %s failed (%s), retrying in %.0fs", rec.id,
                            status.value, type(e).__name__, delay)
                await asyncio.sleep(delay)

    async def _heartbeat(self, rec: JobRecord) -> None:
        """Every heartbeat_s: stop on a cancel marker or a takeover, else refresh the lease. A
        storage error skips one beat; it never ends the heartbeat."""
        while True:
            await asyncio.sleep(self.timings.heartbeat_s)
            try:
                cancelled = await asyncio.to_thread(self.store.cancel_requested, rec.id)
                taken = await asyncio.to_thread(self.store.superseded, rec.id, rec.attempts)
                if cancelled or taken:
                    task = self._tasks.get(rec.id)
                    if taken:
                        self._taken_over.add(rec.id)
                    if task:
                        task.cancel()
                    return
                rec.heartbeat_at = self.clock()
                await asyncio.to_thread(self._save_beat, rec)
            except Exception as e:  # noqa: BLE001
                log.warning("job %s: heartbeat skipped (%s)", rec.id, type(e).__name__)

    def _clear_working_files(self, job_id: str) -> None:
        """The end of a job whose final record is written: its inputs and intermediates go
        (the outputs and the record stay). Best effort: housekeeping retries what fails."""
        try:
            self.store.clear_working_files(job_id)
        except Exception as e:  # noqa: BLE001 - the job's result is already recorded
            log.warning("job %s: its working files stay until housekeeping (%s)", job_id,
                        type(e).__name__)

    def _told_final(self, rec: JobRecord) -> None:
        if self.on_final is not None:
            try:
                self.on_final(rec)
            except Exception:  # noqa: BLE001 - a listener never undoes a written result
                log.exception("job %s: the final-status listener failed", rec.id)

    def _save_beat(self, rec: JobRecord) -> None:
        """One heartbeat's save, never after the final record: once the job is final (its
        final save holds or held the lock), a late beat writes nothing."""
        with self._record_locks.get(rec.id) or contextlib.nullcontext():
            if not rec.status.final:
                self.store.save(rec)

    async def cancel(self, job_id: str) -> JobRecord | None:
        rec = await asyncio.to_thread(self.store.get, job_id)
        if rec is None or rec.status.final:
            return rec
        await asyncio.to_thread(self.store.request_cancel, job_id)
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            if job_id not in self._running_ids:
                # still waiting for a slot: it never starts, so nothing else would record it
                await self._finish(rec, JobStatus.CANCELLED, error=ErrorInfo(
                    code="CANCELLED", message="cancelled before it started"))
        else:  # owned elsewhere (or orphaned): its owner's heartbeat sees the marker
            rec.status, rec.finished_at = JobStatus.CANCELLED, self.clock()
            rec.error = ErrorInfo(code="CANCELLED", message="the job was cancelled")
            rec.result = JobResult(success=False, error=rec.error, metadata={"job_id": rec.id})
            await asyncio.to_thread(self.store.save, rec)
            self._told_final(rec)
        return rec

    # ---- liveness, recovery and drain ------------------------------------------------------
    def start_reaper(self) -> None:
        """Start this replica's background loops: its liveness beat and the reaper."""
        loop = asyncio.get_running_loop()
        if self._beat is None:
            self._beat = loop.create_task(self._beat_forever())
        if self._reaper is None:
            self._reaper = loop.create_task(self._reap_forever())

    async def beat(self) -> None:
        """One liveness beat of this replica (its waiting jobs stay its own while it beats)."""
        try:
            await asyncio.to_thread(self.store.beat_replica, self.replica_id)
        except Exception as e:  # noqa: BLE001 - a missed beat only risks an early adoption
            log.warning("replica beat skipped (%s)", type(e).__name__)

    async def _beat_forever(self) -> None:
        while not self._draining:
            await self.beat()
            await asyncio.sleep(self.timings.heartbeat_s)

    async def _reap_forever(self) -> None:
        while not self._draining:
            try:
                await self.reap()
                if time.monotonic() - self._last_sweep >= self.timings.sweep_every_s:
                    await self.sweep()
            except Exception:  # noqa: BLE001 - the reaper must outlive storage hiccups
                log.exception("reaper pass failed")
            await asyncio.sleep(self.timings.reap_every_s)

    async def reap(self) -> list[str]:
        """Adopt jobs whose owner is gone: re-run them, or fail them with a reason after
        max_attempts. Returns the ids acted on."""
        acted, restart, ended = await asyncio.to_thread(self._reap_scan, set(self._tasks))
        for job_id, attempt in restart:
            self._start(job_id, attempt)
        for rec in ended:
            self._told_final(rec)
            await asyncio.to_thread(self._clear_working_files, rec.id)
        return acted

    async def sweep(self) -> housekeeping.SweepReport:
        """One housekeeping pass (core/housekeeping.py) at this runner's clock."""
        self._last_sweep = time.monotonic()
        return await asyncio.to_thread(housekeeping.sweep, self.store, self.settings,
                                       self.clock())

    def _owner_alive(self, rec: JobRecord, now: float) -> bool:
        """A job is its owner's while the owner beats: its own heartbeat (or, new, its creation)
        within the lease, or, while it waits in a live replica's queue, that replica's beat. A
        job released by a draining replica (owner None, waiting) is free at once."""
        if rec.owner is None and rec.status == JobStatus.IN_QUEUE:
            return False
        if now - (rec.heartbeat_at or rec.created_at) < self.settings.lease_s:
            return True
        if rec.owner is None or rec.owner == self.replica_id or rec.status != JobStatus.IN_QUEUE:
            return False  # this replica's own: it would be in `local`
        seen = self.store.replica_seen(rec.owner)
        return seen is not None and now - seen < self.settings.lease_s

    def _reap_scan(self, local: set[str]
                   ) -> tuple[list[str], list[tuple[str, int]], list[JobRecord]]:
        """`local`: the jobs this replica has tasks for (read on the loop, not in this thread).
        Returns (ids acted on, (id, attempt) to re-run, records this scan made final)."""
        acted, restart, ended = [], [], []
        now = self.clock()
        for job_id in self.store.active_ids():
            if job_id in local:
                continue
            rec = self.store.get(job_id)
            if rec is None or rec.status.final or self._owner_alive(rec, now):
                continue
            if now - rec.created_at > self.settings.job_timeout_s:
                self._mark_final(rec, JobStatus.TIMED_OUT, error=ErrorInfo(
                    code="TIMED_OUT", message="job exceeded its time limit while its worker was lost"))
                if self._save_final(rec):
                    ended.append(rec)
            elif rec.attempts >= self.settings.max_attempts:
                self._mark_final(rec, JobStatus.FAILED, error=ErrorInfo(
                    code="WORKER_LOST", message=f"the worker running this job stopped responding "
                    f"{rec.attempts} times; giving up"))
                if self._save_final(rec):
                    ended.append(rec)
            else:
                rec.status, rec.owner, rec.heartbeat_at = JobStatus.IN_QUEUE, self.replica_id, now
                self.store.save(rec)
                self.counts["retried"] += 1
                restart.append((job_id, rec.attempts + 1))
            acted.append(job_id)
        return acted, restart, ended

    async def drain(self, timeout_s: float) -> dict:
        """Replica shutdown: take no new jobs, hand the waiting ones back (other replicas adopt
        them at their next reaper pass), and let the running ones finish within `timeout_s`.
        Returns what happened, for the log."""
        self._draining = True
        for task in (self._reaper, self._beat):
            if task:
                task.cancel()
        waiting = [job_id for job_id in self._tasks if job_id not in self._running_ids]
        for job_id in waiting:
            self._tasks[job_id].cancel()
        await asyncio.to_thread(self._release, waiting)
        running = [t for j, t in self._tasks.items() if j in self._running_ids]
        done, pending = await asyncio.wait(running, timeout=timeout_s) if running else (set(), set())
        for task in pending:  # past the budget: their leases expire and another replica re-runs them
            task.cancel()
        return {"released": len(waiting), "finished": len(done), "abandoned": len(pending)}

    def _release(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            rec = self.store.get(job_id)
            if rec is not None and rec.status == JobStatus.IN_QUEUE and rec.owner == self.replica_id:
                rec.owner = None
                self.store.save(rec)
        self.store.drop_replica(self.replica_id)

    async def shutdown(self) -> None:
        for task in (self._reaper, self._beat, *self._tasks.values()):
            if task:
                task.cancel()
