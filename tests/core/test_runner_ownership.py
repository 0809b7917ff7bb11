"""JobRunner across replicas and through storage trouble, without Ray: several runners share one
store the way several ingress replicas share the bucket.

- a job waiting in a live replica's queue is never adopted by another replica;
- a draining replica hands its waiting jobs over at once and finishes its running ones;
- two replicas adopting the same orphan run it once;
- a run whose attempt was taken over stops and writes nothing;
- storage failing longer than one call's retries: heartbeats go on, the result is recorded once
  storage is back, nothing is lost;
- storage calls never block the event loop (status answers share it).

Step-driven: leases move on an injected clock (FakeClock) and the tests wait for conditions
(`until`), never for amounts of time; beats and retries run on millisecond timings (FAST).
"""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from core.jobs import JobResult, JobStatus
from core.storage import LocalStorage, StorageError
from tests.support.jobs import TEST_STAGE, FakeClock, make_runner, record, until, wait_record_final


class FlakyStorage(LocalStorage):
    """Local storage that can be switched to fail (an outage) or to answer slowly."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.down = False
        self.delay_s = 0.0
        self.failed_calls = 0
        self.threads: set[int] = set()  # the threads storage calls ran on

    def _gate(self) -> None:
        self.threads.add(threading.get_ident())
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.down:
            self.failed_calls += 1
            raise StorageError("storage unreachable: EndpointConnectionError")

    def put_bytes(self, key, data):
        self._gate()
        return super().put_bytes(key, data)

    def put_bytes_if_absent(self, key, data):
        self._gate()
        return super().put_bytes_if_absent(key, data)

    def get_bytes(self, key):
        self._gate()
        return super().get_bytes(key)

    def exists(self, key):
        self._gate()
        return super().exists(key)


def replica(settings, storage, graph, name, clock=time.time, **overrides):
    return make_runner(settings, graph, storage=storage, replica_id=name, clock=clock, **overrides)


class Gate:
    """A graph that records every run and blocks until released."""

    def __init__(self):
        self.runs: list[tuple[str, str]] = []
        self.release = asyncio.Event()

    def graph_for(self, name):
        async def graph(ctx):
            self.runs.append((name, ctx.job_id))
            await self.release.wait()
            return JobResult(success=True, output={"by": name})
        return graph


def test_queued_job_of_a_live_replica_is_not_adopted_and_drain_hands_it_over(settings, figures):
    storage = LocalStorage(settings.storage_dir, "http://x")
    gate = Gate()

    clock = FakeClock()

    async def main():
        a = replica(settings, storage, gate.graph_for("a"), "replica-a", clock, lease_s=1.0,
                    max_running_jobs=1)
        b = replica(settings, storage, gate.graph_for("b"), "replica-b", clock, lease_s=1.0,
                    max_running_jobs=1)
        await a.submit(record("busy"))
        await a.submit(record("waiting"))
        await until(lambda: gate.runs == [("a", "busy")], what="busy starts")
        clock.advance(2.5)  # past two leases: "waiting" has no heartbeat of its own...
        await a.beat()      # ...but its replica beats, and "busy" beats on its own
        await until(lambda: a.store.get("busy").heartbeat_at >= clock.now, what="busy beats")
        adopted_early = await b.reap()
        waiting_owner = a.store.get("waiting").owner
        drain = asyncio.create_task(a.drain(timeout_s=10))
        await until(lambda: a.store.get("waiting").owner is None, what="waiting released")
        adopted_after_drain = await b.reap()  # waiting jobs are released at once
        gate.release.set()  # the running job finishes inside the drain budget
        report = await drain
        waiting = await wait_record_final(b, "waiting")
        busy = await wait_record_final(b, "busy")
        await b.shutdown()
        return adopted_early, adopted_after_drain, waiting_owner, report, waiting, busy

    adopted_early, adopted_after_drain, waiting_owner, report, waiting, busy = asyncio.run(main())
    assert adopted_early == [] and waiting_owner == "replica-a"
    assert adopted_after_drain == ["waiting"]
    assert report == {"released": 1, "finished": 1, "abandoned": 0}
    assert busy.status == JobStatus.COMPLETED and busy.result.output == {"by": "a"}
    assert waiting.status == JobStatus.COMPLETED and waiting.result.output == {"by": "b"}
    assert sorted(gate.runs) == [("a", "busy"), ("b", "waiting")]  # each ran once
    assert waiting.attempts == 1
    figures.count("faults injected", 1, "ingress replica drained with jobs queued and running")


def test_two_replicas_adopting_one_orphan_run_it_once(settings, figures):
    storage = LocalStorage(settings.storage_dir, "http://x")
    gate = Gate()
    gate.release.set()

    async def main():
        orphan = record("orphan")
        orphan.status, orphan.owner = JobStatus.IN_PROGRESS, "dead-replica"
        orphan.attempts, orphan.heartbeat_at = 1, time.time() - 60
        replicas = [replica(settings, storage, gate.graph_for(n), n, lease_s=1.0) for n in "abc"]
        replicas[0].store.create(orphan)
        await asyncio.gather(*(r.reap() for r in replicas))
        rec = await wait_record_final(replicas[0], "orphan")
        await until(lambda: not any(r._tasks for r in replicas), what="every replica idle")
        return rec

    rec = asyncio.run(main())
    assert rec.status == JobStatus.COMPLETED
    assert len(gate.runs) == 1 and rec.result.output == {"by": gate.runs[0][0]}
    assert rec.attempts == 2
    figures.count("faults injected", 1, "three replicas adopting one orphaned job")


@pytest.mark.parametrize("claims_cleared", [False, True], ids=["claimed", "claims-cleared"])
def test_a_run_that_was_taken_over_stops_without_writing(settings, figures, claims_cleared):
    """... also when the later attempt already ended and its end cleared the job's claims:
    the record's attempt count still tells the old run that it lost."""
    storage = LocalStorage(settings.storage_dir, "http://x")
    gate = Gate()

    async def main():
        a = replica(settings, storage, gate.graph_for("a"), "replica-a")
        await a.submit(record("j1"))
        await until(lambda: gate.runs, what="the run starts")
        # another replica adopted the job (a's heartbeats looked lost to it) and ran attempt 2
        assert a.store.claim("j1", 2, "replica-b")
        done = a.store.get("j1")
        done.status, done.attempts, done.owner = JobStatus.COMPLETED, 2, "replica-b"
        done.result = JobResult(success=True, output={"by": "b"})
        a.store.save(done)
        if claims_cleared:
            a.store.clear_working_files("j1")
            assert storage.list("jobs/j1/claims/") == []
        await until(lambda: "j1" not in a._tasks, what="the taken-over run stops")
        return a, a.store.get("j1")

    a, rec = asyncio.run(main())
    assert "j1" not in a._tasks and a.counts["taken_over"] == 1
    assert rec.status == JobStatus.COMPLETED and rec.result.output == {"by": "b"}
    if not claims_cleared:
        figures.count("faults injected", 1, "a run taken over by another replica")


def test_storage_outage_longer_than_retries_loses_nothing(settings, monkeypatch, figures):
    storage = FlakyStorage(settings.storage_dir, "http://x")
    runs = []

    async def main():
        release = asyncio.Event()

        async def graph(ctx):
            runs.append(ctx.job_id)
            await release.wait()
            return JobResult(success=True, output={"ok": True})

        a = replica(settings, storage, graph, "replica-a")
        a.start_reaper()
        await a.submit(record("j1"))
        await until(lambda: runs, what="the run starts")
        storage.down = True          # outage: heartbeats and the replica beat fail...
        await until(lambda: storage.failed_calls >= 3, what="failed beats")
        release.set()                # ...and the job ends while storage is still down
        failed = storage.failed_calls
        await until(lambda: storage.failed_calls > failed + 1, what="failed final saves")
        beats_alive = a._beat is not None and not a._beat.done()
        storage.down = False         # back inside the final-save backoff
        rec = await wait_record_final(a, "j1")
        await a.shutdown()
        return rec, beats_alive

    rec, beats_alive = asyncio.run(main())
    assert storage.failed_calls >= 5
    assert beats_alive
    assert rec.status == JobStatus.COMPLETED and rec.result.output == {"ok": True}
    assert runs == ["j1"] and rec.attempts == 1  # recorded by its own run, not re-run
    figures.count("faults injected", 1, "storage down across heartbeats and the final save")


def test_storage_outage_past_every_retry_is_rerun_by_a_reaper(settings, figures):
    """Storage stays down past the final-save backoff: the record keeps its stale lease and the
    next reaper pass re-runs the job once storage is back."""
    storage = FlakyStorage(settings.storage_dir, "http://x")
    runs = []
    clock = FakeClock()

    async def main():
        async def graph(ctx):
            runs.append(ctx.job_id)
            if len(runs) == 1:
                storage.down = True  # goes down before the result can be written
            return JobResult(success=True, output={"run": len(runs)})

        a = replica(settings, storage, graph, "replica-a", clock, lease_s=60)
        await a.submit(record("j1"))
        await until(lambda: runs and "j1" not in a._tasks, what="every final-save retry fails")
        storage.down = False
        stuck = a.store.get("j1")
        b = replica(settings, storage, graph, "replica-b", clock, lease_s=60)
        clock.advance(61)            # a's lease on the job runs out
        acted = await b.reap()
        rec = await wait_record_final(b, "j1")
        return stuck, acted, rec

    stuck, acted, rec = asyncio.run(main())
    assert stuck.status == JobStatus.IN_PROGRESS
    assert acted == ["j1"] and runs == ["j1", "j1"]
    assert rec.status == JobStatus.COMPLETED and rec.result.output == {"run": 2}
    figures.count("faults injected", 1, "storage down past every final-save retry")


def test_slow_storage_never_blocks_the_event_loop(settings, figures):
    """Every storage call takes 0.2 s (a slow S3): none of them may run on the event loop's
    thread (where status requests are answered) while jobs are submitted, run, cancelled and
    finish, and the heartbeats and reaper run."""
    storage = FlakyStorage(settings.storage_dir, "http://x")
    storage.delay_s = 0.2

    async def graph(ctx):
        await ctx.call(TEST_STAGE, {})
        return JobResult(success=True, output={})

    async def main():
        loop_thread = threading.get_ident()
        a = replica(settings, storage, graph, "replica-a")
        a.start_reaper()
        await asyncio.gather(*(a.submit(record(f"j{i}")) for i in range(2)))
        recs = [await wait_record_final(a, f"j{i}", timeout=30) for i in range(2)]
        await a.cancel("j0")
        await a.reap()
        await a.shutdown()
        return recs, loop_thread

    recs, loop_thread = asyncio.run(main())
    assert all(r.status == JobStatus.COMPLETED for r in recs)
    assert storage.threads and loop_thread not in storage.threads
    figures.count("faults injected", 1, "storage answering 0.2 s per call")


def test_an_adoption_waiting_for_a_slot_never_runs_a_later_attempt(settings, figures):
    """Two replicas adopt one orphan; one of them has no free slot. Its copy must not wake up
    later, see the other's attempt and start yet another one."""
    storage = LocalStorage(settings.storage_dir, "http://x")
    runs = []

    async def main():
        gate_b = asyncio.Event()

        async def graph_a(ctx):
            runs.append(("a", ctx.job_id))
            return JobResult(success=True, output={"by": "a"})

        async def graph_b(ctx):
            runs.append(("b", ctx.job_id))
            if ctx.job_id == "busy":
                await gate_b.wait()
            return JobResult(success=True, output={"by": "b"})

        a = replica(settings, storage, graph_a, "replica-a", lease_s=1.0)
        b = replica(settings, storage, graph_b, "replica-b", lease_s=1.0, max_running_jobs=1)
        await b.submit(record("busy"))          # b's only slot is taken
        orphan = record("orphan")
        orphan.status, orphan.owner = JobStatus.IN_PROGRESS, "dead-replica"
        orphan.attempts, orphan.heartbeat_at = 1, time.time() - 60
        a.store.create(orphan)
        # Both scans must read the orphan before either writes its claim: unsynchronised, b's
        # scan can finish first, a then sees b's fresh claim and leaves the orphan to b alone
        # (queued behind "busy", which this test releases only after the orphan is final).
        both_read = threading.Barrier(2, timeout=10)
        for r in (a, b):
            def owner_alive(rec, now, _check=r._owner_alive):
                if rec.id == "orphan":
                    both_read.wait()
                return _check(rec, now)
            r._owner_alive = owner_alive
        acted = await asyncio.gather(a.reap(), b.reap())
        assert acted == [["orphan"], ["orphan"]]  # both adopted it
        done = await wait_record_final(a, "orphan")
        gate_b.set()                              # b's queued copy of the orphan now gets a slot
        await wait_record_final(b, "busy")
        await until(lambda: "orphan" not in b._tasks, what="b's queued copy ends")
        return done, a.store.get("orphan")

    done, final = asyncio.run(main())
    assert [r for r in runs if r[1] == "orphan"] in ([("a", "orphan")], [("b", "orphan")])
    assert final.status == JobStatus.COMPLETED and final.attempts == 2 == done.attempts
    figures.count("faults injected", 1, "an adoption queued behind a busy slot")


def test_a_heartbeat_in_flight_never_lands_after_the_final_record(settings, figures):
    """The job ends while a heartbeat's save is still being written (a slow bucket): the final
    record must be the last word, not the beat's IN_PROGRESS copy."""
    beat_writing = threading.Event()

    class SlowBeats(LocalStorage):
        running_writes = 0

        def put_bytes(self, key, data):
            if key.endswith("record.json") and b'"IN_PROGRESS"' in data:
                self.running_writes += 1
                if self.running_writes > 1:  # the first is the run's start; then heartbeats
                    beat_writing.set()
                    time.sleep(0.3)          # a beat's write is slow...
            return super().put_bytes(key, data)

    storage = SlowBeats(settings.storage_dir, "http://x")

    async def graph(ctx):
        await until(beat_writing.is_set, what="a heartbeat writing")
        return JobResult(success=True, output={"done": True})   # ...and the job ends meanwhile

    async def main():
        a = replica(settings, storage, graph, "replica-a")
        await a.submit(record("j1"))
        await until(lambda: "j1" not in a._tasks, what="the run ends")
        await asyncio.sleep(0.5)         # past any beat still writing (0.3 s): then read
        return a.store.get("j1")

    rec = asyncio.run(main())
    assert rec.status == JobStatus.COMPLETED and rec.result.output == {"done": True}
    figures.count("faults injected", 1, "a heartbeat write racing the final record")
