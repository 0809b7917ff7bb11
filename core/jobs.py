"""Durable job records, kept in the storage backend so any ingress replica (or a restarted one)
can answer for any job, and the job types, statuses and results a record holds.

Where each object lives in storage is core.keys' business (its docstring draws the layout).
"""
from __future__ import annotations

import json
import time
from enum import Enum
from typing import Any, Callable

from pydantic import BaseModel, Field

from core import keys
from core.storage import Storage


class JobType(str, Enum):
    lipsync_only = "lipsync_only"
    video_render = "video_render"
    persona_build = "persona_build"


class JobStatus(str, Enum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED,
                        JobStatus.TIMED_OUT)


class ErrorInfo(BaseModel):
    code: str
    message: str


class JobResult(BaseModel):
    """The seed worker's response object: the `output` of a finished job."""
    success: bool
    output: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    duration_ms: int = 0
    error: ErrorInfo | None = None


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
    # RunPod's `policy`: the longest this job may run once started (executionTimeout), and the
    # longest it may wait in the queue before it is dropped (ttl); None = only our own limits.
    execution_timeout_s: float | None = None
    ttl_s: float | None = None
    webhook: str | None = None                 # RunPod's webhook: told when the job ends
    webhook_delivery: dict[str, Any] | None = None  # its outcome (serve_app/webhooks.py)
    owner: str | None = None
    heartbeat_at: float | None = None
    result: JobResult | None = None
    error: ErrorInfo | None = None


class JobStore:
    def __init__(self, storage: Storage, clock: Callable[[], float] = time.time):
        self.storage = storage
        self.clock = clock  # wall-clock seconds of progress and liveness stamps

    def create(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store a new record unless the id exists; returns (the stored record, created?)."""
        created = self.storage.put_bytes_if_absent(keys.record(record.id), _dump(record))
        if not created:
            existing = self.get(record.id)
            return (existing or record), False
        self.storage.put_bytes(keys.active(record.id), b"")
        return record, True

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.storage.get_bytes(keys.record(job_id))
        return JobRecord.model_validate_json(raw) if raw else None

    def save(self, record: JobRecord) -> None:
        self.storage.put_bytes(keys.record(record.id), _dump(record))
        if record.status.final:
            self.storage.delete(keys.active(record.id))

    def active_ids(self) -> list[str]:
        return [k[len(keys.ACTIVE_PREFIX):] for k in self.storage.list(keys.ACTIVE_PREFIX)]

    # progress and cancel are separate objects: stages and the cancel route write them without
    # racing the owner's read-modify-write of the record.
    def set_progress(self, job_id: str, stage: str, fraction: float) -> None:
        self.storage.put_bytes(keys.progress(job_id), json.dumps(
            {"stage": stage, "fraction": max(0.0, min(1.0, fraction)), "t": self.clock()}).encode())

    def get_progress(self, job_id: str) -> dict | None:
        raw = self.storage.get_bytes(keys.progress(job_id))
        return json.loads(raw) if raw else None

    def request_cancel(self, job_id: str) -> None:
        self.storage.put_bytes(keys.cancel_marker(job_id), b"1")

    def cancel_requested(self, job_id: str) -> bool:
        return self.storage.exists(keys.cancel_marker(job_id))

    # Ownership. A run of attempt n starts only after its replica created claims/<n> (a create-if-
    # absent, so two replicas adopting the same orphan cannot both run it); a run whose attempt
    # has a successor claim was taken over and must stop without writing a result.
    def claim(self, job_id: str, attempt: int, replica_id: str) -> bool:
        return self.storage.put_bytes_if_absent(keys.claim(job_id, attempt), replica_id.encode())

    def superseded(self, job_id: str, attempt: int) -> bool:
        """A later attempt was claimed, or (its claims already cleared at its end) recorded."""
        if self.storage.exists(keys.claim(job_id, attempt + 1)):
            return True
        stored = self.get(job_id)
        return stored is not None and stored.attempts > attempt

    def clear_working_files(self, job_id: str) -> int:
        """A final job's scratch folder (inputs, intermediates), progress and claims; the record
        stays, and so does a cancel marker (a stage still running reads it to stop; the next
        housekeeping pass takes it). Returns how many keys went."""
        n = self.storage.delete_folder(keys.scratch_folder(job_id))
        n += self.storage.delete_folder(keys.claims_folder(job_id))
        if self.storage.exists(keys.progress(job_id)):
            self.storage.delete(keys.progress(job_id))
            n += 1
        return n

    # Replica liveness: one small object per ingress replica, so jobs waiting in a live replica's
    # queue (which have no heartbeat of their own) are never adopted by another replica.
    def beat_replica(self, replica_id: str) -> None:
        self.storage.put_bytes(keys.replica(replica_id), json.dumps({"t": self.clock()}).encode())

    def replica_seen(self, replica_id: str) -> float | None:
        raw = self.storage.get_bytes(keys.replica(replica_id))
        return float(json.loads(raw)["t"]) if raw else None

    def drop_replica(self, replica_id: str) -> None:
        self.storage.delete(keys.replica(replica_id))


def _dump(record: JobRecord) -> bytes:
    return record.model_dump_json().encode()
