"""Housekeeping: the bucket keeps outputs and, for a while, records; nothing else lingers.

A job's end (core/runner.py) deletes its scratch folder, progress and claims at once. A pass
here, run by every ingress replica every `sweep_every_s` (passes of several replicas only
delete the same keys twice), takes what is left:

1. leftovers of a final job, once it has been final for LEFTOVER_GRACE_S: a cancel marker
   (kept that long so a stage still running sees it and stops), whatever a stopped stage wrote
   after the end, and the scratch of a job whose end-of-job cleanup hit a storage outage;
2. the whole folder of a final job `record_ttl_s` after its record's last write (the record
   expires: `status` answers 404 from then on);
3. a scratch folder with no record (the inputs of a submission that never became a job: its
   client went away, or its replica died mid-submit) once nothing was written to it for
   ORPHAN_GRACE_S, which is longer than any submission takes to become a job; the same for an
   index entry (`jobs/_active/`) whose record is gone;
4. a replica's liveness beat not refreshed for BEAT_EXPIRY_LEASES leases (that replica is gone).

Jobs that are not final belong to the reaper (core/runner.py): nothing here touches them. Ages
come from the storage's last-modified times (a bucket lifecycle rule works the same way), read
against the caller's clock.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from core import keys
from core.jobs import JobStore
from core.settings import Settings

log = logging.getLogger("personaforge.housekeeping")

LEFTOVER_GRACE_S = 600.0
ORPHAN_GRACE_S = 900.0
BEAT_EXPIRY_LEASES = 10


@dataclass
class SweepReport:
    leftovers: int = 0   # keys of final jobs deleted (the record kept)
    records: int = 0     # expired jobs (record and folder deleted)
    orphans: int = 0     # keys of scratch folders and index entries without a record
    beats: int = 0       # liveness beats of replicas that are gone

    @property
    def deleted_anything(self) -> bool:
        return bool(self.leftovers or self.records or self.orphans or self.beats)


def sweep(store: JobStore, settings: Settings, now: float, *,
          leftover_grace_s: float = LEFTOVER_GRACE_S,
          orphan_grace_s: float = ORPHAN_GRACE_S) -> SweepReport:
    """One housekeeping pass over `store`'s storage at wall-clock time `now`."""
    storage, report = store.storage, SweepReport()
    listed = {**storage.list_modified(keys.JOBS_PREFIX),
              **storage.list_modified(keys.SCRATCH_PREFIX)}
    by_job: dict[str, dict[str, float]] = defaultdict(dict)
    active: dict[str, float] = {}
    for key, written in listed.items():
        if (job_id := keys.job_of(key)) is not None:
            by_job[job_id][key] = written
        elif key.startswith(keys.ACTIVE_PREFIX):
            active[key[len(keys.ACTIVE_PREFIX):]] = written
        elif key.startswith(keys.REPLICAS_PREFIX) and (
                now - written > settings.lease_s * BEAT_EXPIRY_LEASES):
            storage.delete(key)
            report.beats += 1

    for job_id, found in by_job.items():
        record_key = keys.record(job_id)
        if record_key not in found:                                           # 3.
            if now - max(found.values()) > orphan_grace_s:
                _delete(storage, found)
                report.orphans += len(found)
            continue
        rest = [k for k in found if k != record_key]
        expired = now - found[record_key] > settings.record_ttl_s
        if not rest and not expired:
            continue  # a finished job, cleaned at its end: nothing to read
        rec = store.get(job_id)
        if rec is None or not rec.status.final:
            continue  # running or waiting: the reaper's
        if expired:                                                           # 2.
            _delete(storage, rest)
            storage.delete(record_key)  # last: a pass cut short here is finished by the next
            report.records += 1
        elif rest and now - (rec.finished_at or found[record_key]) > leftover_grace_s:  # 1.
            _delete(storage, rest)
            report.leftovers += len(rest)

    for job_id, written in active.items():                                    # 3.
        if keys.record(job_id) not in listed and now - written > orphan_grace_s:
            storage.delete(keys.active(job_id))
            report.orphans += 1
    if report.deleted_anything:
        log.info("housekeeping: %s", report)
    return report


def _delete(storage, found) -> None:
    for key in found:
        storage.delete(key)
