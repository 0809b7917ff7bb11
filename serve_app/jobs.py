"""Durable job records, kept in the storage backend so any ingress replica (or a restarted one)
can answer for any job.

Layout under the storage root:
    jobs/<job_id>/record.json     the record (written by the replica that owns the job)
    jobs/<job_id>/progress.json   the running stage's progress (written by that stage)
    jobs/<job_id>/cancel          marker: cancel asked (stages check it between chunks)
    jobs/<job_id>/inputs/...      the decoded inputs
    jobs/_active/<job_id>         index of jobs not yet final (ids never start with "_")
"""
from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, Field

from serve_app.schemas import ErrorInfo, JobResult, JobStatus, JobType
from serve_app.storage import Storage

ACTIVE_PREFIX = "jobs/_active/"


def record_key(job_id: str) -> str:
    return f"jobs/{job_id}/record.json"


def progress_key(job_id: str) -> str:
    return f"jobs/{job_id}/progress.json"


def cancel_key(job_id: str) -> str:
    return f"jobs/{job_id}/cancel"


class JobRecord(BaseModel):
    id: str
    job_type: JobType
    status: JobStatus = JobStatus.IN_QUEUE
    stage: str | None = None
    stage_span: tuple[float, float] = (0.0, 1.0)   # the running stage's share of overall progress
    progress: float = 0.0
    request: dict[str, Any] = Field(default_factory=dict,
                                    description="validated input, media replaced by storage keys")
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    owner: str | None = None
    heartbeat_at: float | None = None
    result: JobResult | None = None
    error: ErrorInfo | None = None


class JobStore:
    def __init__(self, storage: Storage):
        self.storage = storage

    def create(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store a new record unless the id exists; returns (the stored record, created?)."""
        created = self.storage.put_bytes_if_absent(record_key(record.id), _dump(record))
        if not created:
            existing = self.get(record.id)
            return (existing or record), False
        self.storage.put_bytes(ACTIVE_PREFIX + record.id, b"")
        return record, True

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.storage.get_bytes(record_key(job_id))
        return JobRecord.model_validate_json(raw) if raw else None

    def save(self, record: JobRecord) -> None:
        self.storage.put_bytes(record_key(record.id), _dump(record))
        if record.status.final:
            self.storage.delete(ACTIVE_PREFIX + record.id)

    def active_ids(self) -> list[str]:
        return [k[len(ACTIVE_PREFIX):] for k in self.storage.list(ACTIVE_PREFIX)]

    # progress and cancel are separate objects: stages and the cancel route write them without
    # racing the owner's read-modify-write of the record.
    def set_progress(self, job_id: str, stage: str, fraction: float) -> None:
        self.storage.put_bytes(progress_key(job_id), json.dumps(
            {"stage": stage, "fraction": max(0.0, min(1.0, fraction)), "t": time.time()}).encode())

    def get_progress(self, job_id: str) -> dict | None:
        raw = self.storage.get_bytes(progress_key(job_id))
        return json.loads(raw) if raw else None

    def request_cancel(self, job_id: str) -> None:
        self.storage.put_bytes(cancel_key(job_id), b"1")

    def cancel_requested(self, job_id: str) -> bool:
        return self.storage.exists(cancel_key(job_id))


def _dump(record: JobRecord) -> bytes:
    return record.model_dump_json().encode()
