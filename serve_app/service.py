"""The studio's front desk, Ray-free: turns a validated request into a stored job (inputs
decoded and kept in storage), and answers status, cancel and health. The FastAPI routes in
serve_app/api.py are a thin layer over this; the Serve ingress (serve_app/app.py) hosts it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from core import keys
from core.ids import MAX_ID_LEN, check_id
from core.jobs import JobRecord, JobResult, JobStatus, JobType
from core.runner import JobRunner, StageCall
from core.settings import Settings
from core.storage import Storage, StorageError, open_storage, render_links
from graphs import GRAPHS
from serve_app.inputs import FetchPolicy, InputError, Limits, acquire
from serve_app.netguard import FetchError
from serve_app.schemas import (HealthResponse, LipsyncOnlyInput, PersonaBuildInput, RunRequest,
                               StatusResponse, VideoRenderInput, job_id_of)
from serve_app.webhooks import WebhookSender, check_webhook

log = logging.getLogger("personaforge.service")

# (field in the request, kind) of every media input per job type
_MEDIA_FIELDS = {
    JobType.lipsync_only: [("image", "image"), ("audio", "audio")],
    JobType.video_render: [("image", "image"), ("audio", "audio"), ("music_url", "audio"),
                           ("ambience_url", "audio")],
    JobType.persona_build: [("primary_image", "image")],
}
_INPUT_NAMES = {"music_url": "music", "ambience_url": "ambience"}
# Inputs are fetched and decoded on their own bounded pool, not on asyncio's default executor:
# that one also runs the status route's storage reads, and a few clients whose URLs drip
# slowly would leave status without a thread. Submissions beyond these workers wait their turn.
INPUT_WORKERS = 4
# The URLs of one request share this fetch budget (on top of each URL's own FetchPolicy
# limits), so a request with many slow URLs (4 media fields + up to MAX_SFX sfx tracks) holds
# an input worker for minutes at most, not hours.
INPUT_FETCH_BUDGET_S = 120.0
# What a request keeps in hand under the proxy's request_timeout_s: storing the inputs after
# the fetches, writing the record, and the answer itself.
RESPONSE_MARGIN_S = 15.0


# A persona_build body that keeps failing is not re-run forever under new ids.
MAX_PERSONA_REBUILDS = 50
RERUN_AFTER = {JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}

# The stages a job may call: production mode needs each of them ready before it takes a job.
STAGES = ("lipsync", "face_restore", "upscale", "finisher")


class NotReady(Exception):
    """Production mode and a stage cannot serve its real engine: jobs are refused (503)."""

    def __init__(self, reasons: list[str]):
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class StudioService:
    def __init__(self, settings: Settings, call: StageCall, storage: Storage | None = None,
                 link_clock: Callable[[], float] = time.time):
        """`link_clock` (wall-clock seconds) stamps and checks the links clients are handed
        (tests step it to prove links made on read outlive their first lifetime)."""
        self.settings, self.link_clock = settings, link_clock
        self.storage = storage or open_storage(settings, clock=link_clock)
        self.runner = JobRunner(settings, self.storage, GRAPHS, call)
        self.policy = FetchPolicy(allow_http=settings.allow_http_inputs,
                                  allow_private=settings.allow_private_inputs)
        self.limits = Limits()
        self.sfx_limits = dataclasses.replace(self.limits, min_audio_seconds=0.01)  # clicks
        # the fetches of one submission end before the proxy would cut the request
        self.fetch_budget_s = min(INPUT_FETCH_BUDGET_S,
                                  settings.request_timeout_s - 2 * RESPONSE_MARGIN_S)
        self.input_pool = ThreadPoolExecutor(INPUT_WORKERS, thread_name_prefix="pf-inputs")
        self.engines: dict[str, str] = {}
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        self.webhooks = WebhookSender(self.policy, secret, self._status_json,
                                      self._record_webhook)
        self.runner.on_final = self.webhooks.job_ended
        self.stage_reports: dict[str, dict] = {}   # each stage's last describe() answer
        self.silent_stages: set[str] = set()       # stages that did not answer the last ask

    def record_stage(self, name: str, report: dict | None) -> None:
        """Keep what a stage said about itself (describe()); None = it did not answer. The last
        answer is kept through silences: a failing replica's reason stays visible."""
        if report is None:
            self.silent_stages.add(name)
            return
        self.silent_stages.discard(name)
        self.stage_reports[name] = report
        self.engines[name] = report.get("engine", "?")

    def not_ready(self) -> list[str]:
        """Why jobs would be refused now: in production mode, every stage that reported it
        cannot serve, or never answered. Outside production mode: nothing (the embedded
        engines stand in)."""
        if not self.settings.production:
            return []
        reasons = []
        for name in STAGES:
            report = self.stage_reports.get(name)
            if report is not None and not report.get("ready", True):
                reasons.append(report.get("reason") or f"{name} is not ready")
            elif report is None or name in self.silent_stages:
                reasons.append(f"{name}: no replica has answered yet (starting, or failing its "
                               "health check)")
        return reasons

    # ---- submit ----------------------------------------------------------------------------
    async def submit(self, req: RunRequest) -> JobRecord:
        """Idempotent on job_id: a known id returns that job and never starts a second run.
        Production mode without a ready stage: NotReady (503), before any input is read."""
        self.runner.start_reaper()
        if reasons := self.not_ready():
            raise NotReady(reasons)
        inp = req.input
        if req.webhook is not None:   # refused at the door like an input URL, never later
            try:
                await asyncio.to_thread(check_webhook, req.webhook, self.policy)
            except FetchError as e:
                raise InputError("webhook", str(e), status=e.status, code=e.code) from None
        if isinstance(inp, PersonaBuildInput) and inp.job_id is None:
            job_id, existing = await asyncio.to_thread(self._persona_build_job, inp)
        else:
            job_id = _checked_job_id(inp)
            existing = await asyncio.to_thread(self.runner.store.get, job_id)
        if existing is not None:
            return existing
        # the queue place is held from the check until the job exists: decoding takes a while,
        # and a burst must not pass the check all at once
        with self.runner.admission():
            decoding = asyncio.get_running_loop().run_in_executor(
                self.input_pool, self._store_inputs, inp, job_id)
            try:
                # shielded: a client that hangs up mid-decode cancels this wait, not the decode
                request = await asyncio.shield(decoding)
            except asyncio.CancelledError:
                decoding.add_done_callback(self._drop_abandoned)
                raise
            policy = req.policy
            record = JobRecord(
                id=job_id, job_type=JobType(inp.job_type), request=request,
                execution_timeout_s=_seconds(policy.executionTimeout if policy else None),
                ttl_s=_seconds(policy.ttl if policy else None), webhook=req.webhook)
            stored, created = await self.runner.submit(record)
        if not created:  # a concurrent submission of this id won: its inputs are the job's
            await asyncio.to_thread(self._drop, _stored_media(request))
        return stored

    def _drop_abandoned(self, decoding: asyncio.Future) -> None:
        """The inputs a submission stored after its client went away (no job will own them)."""
        if decoding.cancelled() or decoding.exception() is not None:
            return                       # a failed decode already removed what it stored
        self.input_pool.submit(self._drop, _stored_media(decoding.result()))

    def _persona_build_job(self, inp: PersonaBuildInput) -> tuple[str, JobRecord | None]:
        """The job a persona_build without its own job_id is: the same request body is the same
        job (a retry while it waits, runs or after it completed returns that job), a different
        body is a new one, and a body whose last run FAILED, was CANCELLED or TIMED_OUT runs
        again under the next id (`...-r2`, `-r3`, ...). Returns (id, the existing job or None)."""
        stem = persona_build_stem(inp)
        for n in range(1, MAX_PERSONA_REBUILDS + 1):
            job_id = stem if n == 1 else f"{stem}-r{n}"
            rec = self.runner.store.get(job_id)
            if rec is None or rec.status not in RERUN_AFTER:
                return job_id, rec
        raise InputError("input", f"this persona_build failed {MAX_PERSONA_REBUILDS} times with "
                         "the same body; change it or give a job_id", code="TOO_MANY_REBUILDS")

    def _store_inputs(self, inp: Any, job_id: str) -> dict:
        """Decode/fetch every media field (4xx InputError naming the field on bad input), keep
        the files in storage, and return the request with media replaced by storage keys.

        Nothing is stored unless every field passes (a rejected request leaves no files), and
        each submission's files get their own folder (a concurrent duplicate of the id can
        never overwrite the inputs of the job that won)."""
        job_type = JobType(inp.job_type)
        media = {name: getattr(inp, name) for name, _ in _MEDIA_FIELDS[job_type]}
        sfx = list(getattr(inp, "sfx_tracks", []) or [])
        request = inp.model_dump(mode="json", exclude=set(media) | {"sfx_tracks"})
        request["preset"] = inp.preset
        request["job_id"] = job_id
        # (stored name, field named in errors, kind, value, limits) of every media input
        todo = [(_INPUT_NAMES.get(name, name), f"input.{name}", kind, value, self.limits)
                for name, kind in _MEDIA_FIELDS[job_type] if (value := media[name]) is not None]
        todo += [(f"sfx_{i}", f"input.sfx_tracks[{i}].url", "audio", s.url, self.sfx_limits)
                 for i, s in enumerate(sfx)]
        stored: dict[str, str] = {}
        folder = keys.input_folder(job_id, uuid.uuid4().hex[:12])
        tmp = Path(tempfile.mkdtemp(prefix=f"pf-in-{job_id}-"))
        deadline = time.monotonic() + self.fetch_budget_s
        try:
            # 1. Check every field first.
            acquired = [(name, self._acquire(value, field, kind, str(tmp), limits, deadline).path)
                        for name, field, kind, value, limits in todo]
            # 2. Then store them.
            for name, path in acquired:
                key = keys.input_file(folder, f"{name}{Path(path).suffix}")
                self.storage.put_file(key, path)
                stored[name] = key
        except BaseException:
            self._drop(list(stored.values()))
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # SFX travel as one list of typed tracks, each now pointing at its stored file
        request["sfx_tracks"] = [
            dataclasses.asdict(dataclasses.replace(s, url=stored.pop(f"sfx_{i}")))
            for i, s in enumerate(sfx)]
        request["inputs"] = stored
        return request

    def _acquire(self, value: str, field: str, kind: str, dest: str, limits: Limits,
                 deadline: float):
        """acquire() with a URL's fetch also cut at the request's fetch-budget deadline."""
        policy = self.policy
        left = deadline - time.monotonic()
        if left < policy.total_timeout_s:
            policy = dataclasses.replace(policy, total_timeout_s=max(left, 0.0))
        try:
            return acquire(value, field, kind, dest, policy=policy, limits=limits)
        except InputError as e:
            if e.code == "URL_TIMEOUT" and time.monotonic() >= deadline - 0.01:
                raise InputError(field, "the request's URLs took longer than its "
                                 f"{self.fetch_budget_s:g} s fetch budget; send fewer or faster "
                                 "URLs, or base64", code="INPUT_FETCH_BUDGET") from None
            raise

    def _drop(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.storage.delete(key)
            except Exception:  # noqa: BLE001 - best effort: leftovers only cost space
                log.warning("could not delete %s", key)

    # ---- status / cancel / health ------------------------------------------------------------
    def status(self, job_id: str) -> StatusResponse | None:
        rec = _read(self.runner.store.get, job_id)
        if rec is None:
            return None
        progress = rec.progress
        if rec.status == JobStatus.IN_PROGRESS:
            p = _read(self.runner.store.get_progress, job_id)
            # the runner writes "<stage>.<method>" at the call's start, the stage itself
            # reports under "<stage>" (stages.progress.StageProgress): both are this call's
            if p and rec.stage and p.get("stage") in (rec.stage, rec.stage.split(".")[0]):
                lo, hi = rec.stage_span
                progress = lo + (hi - lo) * float(p.get("fraction", 0.0))
        delay = execution = None
        if rec.started_at:
            delay = int((rec.started_at - rec.created_at) * 1000)
            execution = int(((rec.finished_at or time.time()) - rec.started_at) * 1000)
        return StatusResponse(
            id=rec.id, status=rec.status, stage=rec.stage if not rec.status.final else None,
            progress=1.0 if rec.status == JobStatus.COMPLETED else round(min(progress, 1.0), 4),
            delayTime=delay, executionTime=execution,
            output=self._with_links(rec.result) if rec.status.final else None,
            error=rec.error.message if rec.error else None, webhook=rec.webhook_delivery)

    def _with_links(self, result: JobResult | None) -> JobResult | None:
        """The result as a client sees it: its storage keys as links made now (with the
        configured lifetime), so a record read a month later still hands out working links."""
        if result is None:
            return None
        return JobResult.model_validate(render_links(result.model_dump(mode="json"),
                                                     self.storage))

    def _status_json(self, job_id: str) -> dict | None:
        """The body a webhook gets: what GET status answers for the job."""
        st = self.status(job_id)
        return None if st is None else st.model_dump(mode="json", exclude_none=True)

    def _record_webhook(self, job_id: str, outcome: dict) -> None:
        rec = self.runner.store.get(job_id)
        if rec is not None:
            rec.webhook_delivery = outcome
            self.runner.store.save(rec)

    async def wait(self, job_id: str, timeout_s: float) -> None:
        await self.runner.wait(job_id, timeout_s)

    def runsync_wait(self, asked_s: float | None, started: float) -> float:
        """How long runsync may still wait for the job: the client's ask (or runsync_wait_s),
        never past the proxy's request limit, counted from the request's start (monotonic)."""
        wait = self.settings.runsync_wait_s if asked_s is None else min(
            self.settings.runsync_wait_s, asked_s)
        left = self.settings.request_timeout_s - RESPONSE_MARGIN_S - (time.monotonic() - started)
        return max(0.0, min(wait, left))

    async def cancel(self, job_id: str) -> JobRecord | None:
        return await self.runner.cancel(job_id)

    async def purge_queue(self) -> int:
        n = 0
        for job_id in await asyncio.to_thread(self.runner.store.active_ids):
            rec = await asyncio.to_thread(self.runner.store.get, job_id)
            if rec is not None and rec.status == JobStatus.IN_QUEUE:
                await self.runner.cancel(job_id)
                n += 1
        return n

    def health(self) -> HealthResponse:
        r = self.runner
        return HealthResponse(
            jobs={"completed": r.counts["completed"], "failed": r.counts["failed"],
                  "inProgress": r.running, "inQueue": r.waiting, "retried": r.counts["retried"]},
            workers={"running": r.running, "idle": max(0, self.settings.max_running_jobs - r.running)},
            engines=self.engines, ready=not (reasons := self.not_ready()), reasons=reasons,
            startup={name: r["startup"] for name, r in self.stage_reports.items()
                     if isinstance(r.get("startup"), dict)})


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000.0


def _stored_media(request: dict) -> list[str]:
    """The storage keys of a stored request's media (inputs and SFX tracks)."""
    return [*request["inputs"].values(), *(s["url"] for s in request.get("sfx_tracks", []))]


def _read(fn, job_id: str):
    """A storage read for a status answer. The S3 client can fail in ways it does not
    classify (botocore raised AttributeError parsing a 5xx GetObject body while the server
    restarted): the client gets a 503 with Retry-After for those too, never a 500."""
    try:
        return fn(job_id)
    except StorageError:
        raise
    except Exception as e:  # noqa: BLE001 - reported as the storage failure it is
        log.warning("reading job %s failed: %s: %s", job_id, type(e).__name__, e)
        raise StorageError(f"storage unavailable while reading job {job_id} "
                           f"({type(e).__name__})") from None


def persona_build_stem(inp: PersonaBuildInput) -> str:
    """`persona_build_<persona_id>_<digest of the body>` (the digest alone when the persona_id
    is too long for an id), leaving room for a rebuild suffix."""
    body = json.dumps(inp.model_dump(mode="json", exclude={"job_id"}), sort_keys=True,
                      separators=(",", ":")).encode()
    digest = hashlib.sha256(body).hexdigest()
    stem = f"persona_build_{inp.persona_id}_{digest[:12]}"
    return stem if len(stem) <= MAX_ID_LEN - 4 else f"persona_build_{digest[:24]}"


def _checked_job_id(inp: Any) -> str:
    """The client's job id, checked like every id before it touches a key."""
    try:
        return check_id(job_id_of(inp), "job_id")
    except ValueError as e:
        raise InputError("input.job_id", str(e), code="INVALID_ID") from None


__all__ = ["StudioService", "InputError", "LipsyncOnlyInput", "VideoRenderInput",
           "PersonaBuildInput"]
