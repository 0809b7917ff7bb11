"""The studio's front desk, Ray-free: turns a validated request into a stored job (inputs
decoded and kept in storage), and answers status, cancel and health. The FastAPI routes in
serve_app/api.py are a thin layer over this; the Serve ingress (serve_app/app.py) hosts it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from graphs import GRAPHS
from serve_app.inputs import FetchPolicy, InputError, Limits, acquire
from serve_app.jobs import JobRecord
from serve_app.runner import JobRunner, StageCall
from serve_app.schemas import (HealthResponse, JobStatus, JobType, LipsyncOnlyInput,
                               PersonaBuildInput, RunRequest, StatusResponse, VideoRenderInput,
                               job_id_of)
from serve_app.settings import Settings
from serve_app.storage import Storage, open_storage

log = logging.getLogger("personaforge.service")

# (field in the request, kind) of every media input per job type
_MEDIA_FIELDS = {
    JobType.lipsync_only: [("image", "image"), ("audio", "audio")],
    JobType.video_render: [("image", "image"), ("audio", "audio"), ("music_url", "audio"),
                           ("ambience_url", "audio")],
    JobType.persona_build: [("primary_image", "image")],
}
_INPUT_NAMES = {"music_url": "music", "ambience_url": "ambience"}


class StudioService:
    def __init__(self, settings: Settings, call: StageCall, storage: Storage | None = None,
                 signer=None, replica_id: str | None = None):
        self.settings = settings
        self.storage = storage or open_storage(settings, signer=signer)
        self.runner = JobRunner(settings, self.storage, GRAPHS, call, replica_id=replica_id)
        self.policy = FetchPolicy(allow_http=settings.allow_http_inputs,
                                  allow_private=settings.allow_private_inputs)
        self.limits = Limits()
        self.sfx_limits = dataclasses.replace(self.limits, min_audio_seconds=0.01)  # clicks
        self.engines: dict[str, str] = {}

    # ---- submit ----------------------------------------------------------------------------
    async def submit(self, req: RunRequest) -> JobRecord:
        """Idempotent on job_id: a known id returns that job and never starts a second run."""
        self.runner.start_reaper()
        inp = req.input
        job_id = job_id_of(inp)
        existing = await asyncio.to_thread(self.runner.store.get, job_id)
        if existing is not None:
            return existing
        self.runner.check_capacity()
        request = await asyncio.to_thread(self._store_inputs, inp, job_id)
        record = JobRecord(id=job_id, job_type=JobType(inp.job_type), request=request)
        stored, _ = self.runner.submit(record)
        return stored

    def _store_inputs(self, inp: Any, job_id: str) -> dict:
        """Decode/fetch every media field (4xx InputError naming the field on bad input), keep
        the files in storage, and return the request with media replaced by storage keys."""
        job_type = JobType(inp.job_type)
        media = {name: getattr(inp, name) for name, _ in _MEDIA_FIELDS[job_type]}
        request = inp.model_dump(mode="json", exclude=set(media) | {"sfx_tracks"})
        request["preset"] = inp.preset
        request["job_id"] = job_id
        sfx = getattr(inp, "sfx_tracks", []) or []
        request["sfx_tracks"] = [{"start_time": s.start_time, "volume": s.volume} for s in sfx]
        jobs = [(name, kind, value) for name, kind in _MEDIA_FIELDS[job_type]
                if (value := media[name]) is not None]
        jobs += [(f"sfx_{i}", "audio", s.url) for i, s in enumerate(sfx)]
        inputs: dict[str, str] = {}
        tmp = Path(tempfile.mkdtemp(prefix=f"pf-in-{job_id}-"))
        try:
            for name, kind, value in jobs:
                field = f"input.{name}" if not name.startswith("sfx_") else \
                    f"input.sfx_tracks[{name[4:]}].url"
                limits = self.sfx_limits if name.startswith("sfx_") else self.limits
                got = acquire(value, field, kind, str(tmp), policy=self.policy, limits=limits)
                key = f"jobs/{job_id}/inputs/{_INPUT_NAMES.get(name, name)}{Path(got.path).suffix}"
                self.storage.put_file(key, got.path)
                inputs[_INPUT_NAMES.get(name, name)] = key
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        request["inputs"] = inputs
        return request

    # ---- status / cancel / health ------------------------------------------------------------
    def status(self, job_id: str) -> StatusResponse | None:
        rec = self.runner.store.get(job_id)
        if rec is None:
            return None
        progress = rec.progress
        if rec.status == JobStatus.IN_PROGRESS:
            p = self.runner.store.get_progress(job_id)
            if p and p.get("stage") == rec.stage:
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
            output=rec.result if rec.status.final else None,
            error=rec.error.message if rec.error else None)

    async def wait(self, job_id: str, timeout_s: float) -> None:
        await self.runner.wait(job_id, timeout_s)

    def cancel(self, job_id: str) -> JobRecord | None:
        return self.runner.cancel(job_id)

    def purge_queue(self) -> int:
        n = 0
        for job_id in self.runner.store.active_ids():
            rec = self.runner.store.get(job_id)
            if rec is not None and rec.status == JobStatus.IN_QUEUE:
                self.runner.cancel(job_id)
                n += 1
        return n

    def health(self) -> HealthResponse:
        r = self.runner
        return HealthResponse(
            jobs={"completed": r.counts["completed"], "failed": r.counts["failed"],
                  "inProgress": r.running, "inQueue": r.waiting, "retried": r.counts["retried"]},
            workers={"running": r.running, "idle": max(0, self.settings.max_running_jobs - r.running)},
            engines=self.engines)


__all__ = ["StudioService", "InputError", "LipsyncOnlyInput", "VideoRenderInput",
           "PersonaBuildInput"]
