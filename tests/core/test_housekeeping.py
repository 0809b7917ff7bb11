"""What a job leaves in storage: its working files go when it ends (success or not), leftovers
and orphans at a housekeeping pass after their grace, records after `record_ttl_s`, beats of
gone replicas after BEAT_EXPIRY_LEASES leases. Ages are the storage's own last-modified times,
read against a `now` the test passes (no sleeping)."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from core import housekeeping, keys
from core.errors import StageError
from core.jobs import JobResult, JobStatus, JobStore
from core.storage import LocalStorage, ScratchRouted, open_storage
from tests.support.jobs import TEST_STAGE, make_runner, record, wait_record_final

HOUR = 3600.0


def _store(settings) -> JobStore:
    return JobStore(LocalStorage(settings.storage_dir, "http://x"))


def _final(store: JobStore, job_id: str, status=JobStatus.COMPLETED, finished_at=None):
    rec = record(job_id)
    store.create(rec)
    rec.status, rec.finished_at = status, finished_at or time.time()
    rec.attempts = 1
    store.save(rec)
    return rec


def _listing(store: JobStore) -> set[str]:
    return set(store.storage.list(""))


@pytest.mark.parametrize("outcome", ["completed", "failed", "timed_out"])
def test_a_job_end_clears_its_scratch_progress_and_claims_and_keeps_the_record(settings, outcome):
    async def graph(ctx):
        # what a real job has on storage while it runs: its inputs and an intermediate
        ctx.storage.put_bytes(keys.input_file(keys.input_folder(ctx.job_id, "s1"), "image.png"), b"i")
        ctx.storage.put_bytes(keys.work(ctx.job_id, "lipsync.mp4"), b"w")
        await ctx.call(TEST_STAGE, {})
        if outcome == "failed":
            raise StageError("NO_FACE", "no face found")
        if outcome == "timed_out":
            await asyncio.sleep(30)
        ctx.storage.put_bytes(keys.final_video(ctx.job_id), b"v")
        return JobResult(success=True)

    async def main():
        runner = make_runner(settings, graph, job_timeout_s=1.0)
        await runner.submit(record("j1"))
        rec = await wait_record_final(runner, "j1")
        # the working files go just after the final record is written (never before it): a
        # client may see the final status a moment before they are gone, so wait for the run
        await runner.wait("j1", 10.0)
        return runner, rec

    runner, rec = asyncio.run(main())
    assert rec.status.value == outcome.upper()
    left = _listing(runner.store)
    want = {keys.record("j1")} | ({keys.final_video("j1")} if outcome == "completed" else set())
    if outcome == "timed_out":
        want.add(keys.cancel_marker("j1"))  # for the stage still running; housekeeping's
    assert left == want, left
    # and no empty folder of the job is left in the local store
    empty = [d for d in settings.storage_dir.rglob("*") if d.is_dir() and not any(d.iterdir())]
    assert empty == [], empty


def test_housekeeping_takes_leftovers_after_their_grace_and_records_after_their_ttl(settings):
    s = settings.model_copy(update={"record_ttl_s": 2 * HOUR})
    store = _store(s)
    storage = store.storage
    now = time.time()
    _final(store, "done", finished_at=now)
    storage.put_bytes(keys.final_video("done"), b"v")
    _final(store, "stopped", JobStatus.CANCELLED, finished_at=now)
    storage.put_bytes(keys.cancel_marker("stopped"), b"1")
    storage.put_bytes(keys.work("stopped", "late.mp4"), b"a stage wrote this after the end")
    running = record("running")
    store.create(running)
    running.status = JobStatus.IN_PROGRESS
    store.save(running)
    store.set_progress("running", "lipsync", 0.5)
    storage.put_bytes(keys.work("running", "lipsync.mp4"), b"w")
    storage.put_bytes(keys.input_file(keys.input_folder("gone", "s1"), "image.png"), b"orphan")
    store.beat_replica("r-live")
    before = _listing(store)

    # 1. within every grace: nothing goes
    report = housekeeping.sweep(store, s, now + 60)
    assert not report.deleted_anything and _listing(store) == before

    # 2. past the leftover and orphan graces: the stopped job's marker and late file, the
    #    orphaned inputs and the replica's old beat go; records and the running job stay
    later = now + max(housekeeping.LEFTOVER_GRACE_S, housekeeping.ORPHAN_GRACE_S,
                      s.lease_s * housekeeping.BEAT_EXPIRY_LEASES) + 1
    report = housekeeping.sweep(store, s, later)
    assert (report.leftovers, report.orphans, report.beats, report.records) == (2, 1, 1, 0)
    assert _listing(store) == before - {
        keys.cancel_marker("stopped"), keys.work("stopped", "late.mp4"),
        keys.input_file(keys.input_folder("gone", "s1"), "image.png"), keys.replica("r-live")}

    # 3. past the record ttl: the final jobs' records go, their outputs stay; the running
    #    job (the reaper's business, whatever its age) keeps everything
    report = housekeeping.sweep(store, s, now + s.record_ttl_s + 1)
    assert report.records == 2
    assert _listing(store) == {keys.final_video("done"), keys.record("running"),
                               keys.active("running"), keys.progress("running"),
                               keys.work("running", "lipsync.mp4")}
    assert store.get("done") is None


def test_an_index_entry_without_a_record_goes_after_the_orphan_grace(settings):
    store = _store(settings)
    store.storage.put_bytes(keys.active("lost"), b"")
    now = time.time()
    assert housekeeping.sweep(store, settings, now + 10).orphans == 0
    assert housekeeping.sweep(store, settings, now + housekeeping.ORPHAN_GRACE_S + 1).orphans == 1
    assert store.active_ids() == []


def test_the_runner_sweeps_on_its_reaper_loop(settings):
    s = settings.model_copy(update={"record_ttl_s": 60})
    store = _store(s)
    _final(store, "old", finished_at=time.time() - 120)
    # the record was written just now: make it look two minutes old to the storage
    path = store.storage.path(keys.record("old"))
    os.utime(path, (time.time() - 120, time.time() - 120))

    async def graph(ctx):
        return JobResult(success=True)

    async def main():
        runner = make_runner(s, graph)
        runner.start_reaper()
        t0 = time.monotonic()
        while store.get("old") is not None and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.02)
        await runner.shutdown()

    asyncio.run(main())
    assert store.get("old") is None


def test_scratch_on_its_own_directory(tmp_path, settings):
    """PF_SCRATCH_DIR: `scratch/` keys live there, everything else in the outputs' storage,
    and callers see one storage."""
    s = settings.model_copy(update={"scratch_dir": tmp_path / "node-scratch"})
    storage = open_storage(s)
    assert isinstance(storage, ScratchRouted)
    work, video = keys.work("j1", "a.mp4"), keys.final_video("j1")
    storage.put_bytes(work, b"w")
    storage.put_bytes(video, b"v")
    assert (tmp_path / "node-scratch" / work).read_bytes() == b"w"
    assert not (s.storage_dir / work).exists() and (s.storage_dir / video).is_file()
    assert storage.get_bytes(work) == b"w" and storage.exists(work)
    assert storage.list("") == sorted([work, video])
    assert set(storage.list_modified("scratch/")) == {work}
    assert storage.local_path(video) == s.storage_dir / video
    assert storage.delete_folder(keys.scratch_folder("j1")) == 1
    assert storage.list("") == [video]
