"""JobRunner without Ray: idempotency, timeouts, cancel, lost workers, adoption of orphans."""
from __future__ import annotations

import asyncio
import time

import pytest

from core.errors import StageError
from core.jobs import JobResult, JobStatus, JobStore
from core.runner import QueueFull
from core.storage import LocalStorage
from tests.support.jobs import TEST_STAGE, FakeClock, make_runner, record, wait_record_final


class RayActorError(Exception):
    """Stands in for Ray's error of the same name (the runner matches it by name)."""


def test_completes_once_and_resubmit_returns_same_job(settings):
    runs = []

    async def graph(ctx):
        runs.append(ctx.job_id)
        out = await ctx.call(TEST_STAGE, {"a": 1})
        return JobResult(success=True, output={"echo": out["stage"]})

    async def main():
        runner = make_runner(settings, graph)
        rec, created = await runner.submit(record())
        again, created_again = await runner.submit(record())
        final = await wait_record_final(runner, "j1")
        third, created_third = await runner.submit(record())
        await asyncio.sleep(0.05)
        return final, created, created_again, created_third, third

    final, created, created_again, created_third, third = asyncio.run(main())
    assert (created, created_again, created_third) == (True, False, False)
    assert runs == ["j1"]
    assert final.status == JobStatus.COMPLETED and final.result.output == {"echo": "lipsync"}
    assert final.result.metadata["stages"][0]["stage"] == "lipsync"
    assert third.status == JobStatus.COMPLETED
    assert JobStore(LocalStorage(settings.storage_dir, "x")).active_ids() == []


def test_timeout_ends_timed_out(settings):
    async def graph(ctx):
        await asyncio.sleep(30)

    async def main():
        runner = make_runner(settings, graph, job_timeout_s=0.3)
        await runner.submit(record())
        return await wait_record_final(runner, "j1")

    rec = asyncio.run(main())
    assert rec.status == JobStatus.TIMED_OUT and rec.error.code == "TIMED_OUT"


def test_cancel_while_running(settings):
    async def graph(ctx):
        await asyncio.sleep(30)

    async def main():
        runner = make_runner(settings, graph)
        await runner.submit(record())
        await asyncio.sleep(0.1)
        assert runner.store.get("j1").status == JobStatus.IN_PROGRESS
        await runner.cancel("j1")
        rec = await wait_record_final(runner, "j1", timeout=3)
        return rec, runner.store.cancel_requested("j1")

    rec, marker = asyncio.run(main())
    assert rec.status == JobStatus.CANCELLED and marker


def test_stage_error_fails_with_its_code(settings):
    async def graph(ctx):
        raise StageError("NO_FACE", "no face found")

    async def main():
        runner = make_runner(settings, graph)
        await runner.submit(record())
        return await wait_record_final(runner, "j1")

    rec = asyncio.run(main())
    assert rec.status == JobStatus.FAILED
    assert rec.error.code == "NO_FACE" and rec.result.success is False
    assert rec.result.error.message == "no face found"


@pytest.mark.parametrize("failures,expected", [(1, JobStatus.COMPLETED), (9, JobStatus.FAILED)])
def test_lost_stage_worker_is_retried_then_failed(settings, monkeypatch, failures, expected):

    calls = []

    async def call(stage, method, req):
        calls.append(stage)
        if len(calls) <= failures:
            raise RayActorError("replica died")
        return "ok"

    async def graph(ctx):
        return JobResult(success=True, output={"r": await ctx.call(TEST_STAGE, {})})

    async def main():
        runner = make_runner(settings, graph, call)
        await runner.submit(record())
        return await wait_record_final(runner, "j1")

    rec = asyncio.run(main())
    assert rec.status == expected
    if expected == JobStatus.FAILED:
        assert rec.error.code == "WORKER_LOST" and len(calls) == 3
    else:
        assert rec.result.metadata["stages"][0]["attempts"] == 2


@pytest.mark.parametrize("attempts,expected", [(1, JobStatus.COMPLETED), (2, JobStatus.FAILED)])
def test_orphaned_job_is_adopted_or_failed(settings, attempts, expected):
    """A job whose ingress replica died (stale heartbeat) is re-run by another replica, or
    failed with a reason once it has used its attempts — never left IN_PROGRESS."""

    async def graph(ctx):
        return JobResult(success=True, output={"adopted_by": "me"})

    async def main():
        runner = make_runner(settings, graph, lease_s=1.0)
        orphan = record("orphan")
        orphan.status, orphan.owner = JobStatus.IN_PROGRESS, "dead-replica"
        orphan.attempts, orphan.heartbeat_at = attempts, time.time() - 30
        runner.store.create(orphan)
        fresh = record("fresh")
        fresh.status, fresh.owner, fresh.heartbeat_at = JobStatus.IN_PROGRESS, "alive", time.time()
        runner.store.create(fresh)
        acted = await runner.reap()
        rec = await wait_record_final(runner, "orphan")
        return acted, rec, runner.store.get("fresh")

    acted, rec, fresh = asyncio.run(main())
    assert acted == ["orphan"]
    assert rec.status == expected
    assert fresh.status == JobStatus.IN_PROGRESS  # a live owner's job is left alone
    if expected == JobStatus.FAILED:
        assert rec.error.code == "WORKER_LOST"
    else:
        assert rec.attempts == attempts + 1


def test_queue_full_refuses_with_retry_hint(settings):
    async def graph(ctx):
        await asyncio.sleep(30)

    async def main():
        runner = make_runner(settings, graph, max_running_jobs=1, max_queued_jobs=1)
        runner.check_capacity()
        await runner.submit(record("a"))
        await asyncio.sleep(0.05)
        runner.check_capacity()          # a is running, nobody waiting
        await runner.submit(record("b"))
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull) as e:
            runner.check_capacity()      # b waits: the queue (1) is full
        await runner.shutdown()
        return e.value

    err = asyncio.run(main())
    assert err.retry_after_s >= 5


def test_policy_ttl_drops_a_job_that_waited_too_long_and_execution_timeout_caps_a_run(settings):
    """RunPod's policy: ttl (ms in the queue) ends a job that waited longer TIMED_OUT without
    running it; executionTimeout (ms of running) ends a run that takes longer, with the reason,
    inside our own job limit."""
    clock = FakeClock()
    runs = []

    async def blocking(ctx):
        runs.append(ctx.job_id)
        await asyncio.Event().wait()       # never ends by itself

    async def main():
        runner = make_runner(settings, blocking, clock=clock, max_running_jobs=1)
        stale = record("stale")
        stale.ttl_s = 5.0
        stale.created_at = clock.now - 6.0         # waited 6 s before a slot was free
        fresh = record("capped")
        fresh.execution_timeout_s = 0.2
        await runner.submit(stale)
        await runner.submit(fresh)
        return (await wait_record_final(runner, "stale"),
                await wait_record_final(runner, "capped"))

    stale, capped = asyncio.run(main())
    assert stale.status == JobStatus.TIMED_OUT and "policy.ttl (5000 ms)" in stale.error.message
    assert capped.status == JobStatus.TIMED_OUT
    assert "policy.executionTimeout (200 ms)" in capped.error.message
    assert runs == ["capped"]              # the stale job never ran
