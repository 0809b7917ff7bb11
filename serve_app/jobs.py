"""Durable job records, kept in the storage backend so any ingress replica (or a restarted one)
can answer for any job.

Layout under the storage root:
    jobs/<job_id>/record.json     the record (written by the replica that owns the job)
    jobs/<job_id>/progress.json   the running stage's progress (written by that stage)
    jobs/<job_id>/cancel          marker: cancel asked (stages check it between chunks)
    jobs/<job_id>/inputs/...      the decoded inputs
    jobs/<job_id>/claims/<n>      who runs attempt n (created once: the first claimant runs it)
    jobs/_active/<job_id>         index of jobs not yet final (ids never start with "_")
    jobs/_replicas/<replica_id>   each ingress replica's liveness beat
"""
from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, Field

from serve_app.schemas import ErrorInfo, JobResult, JobStatus, JobType
from serve_app.storage import Storage

ACTIVE_PREFIX = "jobs/_active/"
REPLICAS_PREFIX = "jobs/_replicas/"


def record_key(job_id: str) -> str:
    return f"jobs/{job_id}/record.json"


def progress_key(job_id: str) -> str:
    return f"jobs/{job_id}/progress.json"


def cancel_key(job_id: str) -> str:
    return f"jobs/{job_id}/cancel"


def claim_key(job_id: str, attempt: int) -> str:
    return f"jobs/{job_id}/claims/{attempt}"


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

    # Ownership. A run of attempt n starts only after its replica created claims/<n> (a create-if-
    # absent, so two replicas adopting the same orphan cannot both run it); a run whose attempt
    # has a successor claim was taken over and must stop without writing a result.
    def claim(self, job_id: str, attempt: int, replica_id: str) -> bool:
        return self.storage.put_bytes_if_absent(claim_key(job_id, attempt), replica_id.encode())

    def superseded(self, job_id: str, attempt: int) -> bool:
        return self.storage.exists(claim_key(job_id, attempt + 1))

    # Replica liveness: one small object per ingress replica, so jobs waiting in a live replica's
    # queue (which have no heartbeat of their own) are never adopted by another replica.
    def beat_replica(self, replica_id: str) -> None:
        self.storage.put_bytes(REPLICAS_PREFIX + replica_id, json.dumps({"t": time.time()}).encode())

    def replica_seen(self, replica_id: str) -> float | None:
        raw = self.storage.get_bytes(REPLICAS_PREFIX + replica_id)
        return float(json.loads(raw)["t"]) if raw else None

    def drop_replica(self, replica_id: str) -> None:
        self.storage.delete(REPLICAS_PREFIX + replica_id)


def _dump(record: JobRecord) -> bytes:
    return record.model_dump_json().encode()
