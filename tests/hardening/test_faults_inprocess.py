"""Faults without Ray (it adds nothing here): the S3 server dies mid-job and comes back; a
cancel stops the running stage and frees the only slot for the next job; a job past
job_timeout_s ends TIMED_OUT and its stage stops too. The real CPU stages run, watched by a
recorder that notes each call's end and exception."""
from __future__ import annotations

import logging
import threading
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.errors import JobCancelled
from core.jobs import JobStore
from core.storage import LocalStorage, open_storage
from media.ffmpeg import probe
from serve_app.api import build_api
from serve_app.inprocess import build_service, build_stages
from tests.support.s3server import KEY, SECRET, S3Server
from tests.support.service import (BASE, BlockingStage, Recorder, Watched, long_job, make_client,
                                   tiny_job, wait_final)


def wait_running_stage(client, job_id: str, stage: str, timeout: float = 120) -> dict:
    """Until the job is IN_PROGRESS in `stage` and the stage has reported some progress."""
    t0 = time.monotonic()
    st: dict = {}
    while time.monotonic() - t0 < timeout:
        st = client.get(f"{BASE}/status/{job_id}").json()
        if st["status"] == "IN_PROGRESS" and st.get("stage") == stage and st["progress"] > 0.02:
            return st
        assert st["status"] in ("IN_QUEUE", "IN_PROGRESS"), st
        time.sleep(0.05)
    raise AssertionError(f"{job_id} never ran {stage}: {st}")


def _fraction(store: JobStore, job_id: str) -> float:
    return (store.get_progress(job_id) or {}).get("fraction", 0.0)


@pytest.mark.slow
def test_cancel_stops_the_stage_and_frees_the_slot(sandbox, longer_media, tiny_media, figures):
    rec = Recorder()
    settings = sandbox.settings(max_running_jobs=1)
    store = JobStore(LocalStorage(settings.storage_dir, "http://x"))
    with make_client(settings, rec) as c:
        assert c.post(f"{BASE}/run", json={"input": long_job(longer_media, "long-a")}).status_code == 200
        assert c.post(f"{BASE}/run", json={"input": tiny_job(tiny_media, "next-b")}).status_code == 200
        assert c.post(f"{BASE}/run", json={"input": tiny_job(tiny_media, "queued-c")}).status_code == 200
        wait_running_stage(c, "long-a", "lipsync.run")
        assert c.get(f"{BASE}/status/next-b").json()["status"] == "IN_QUEUE"  # one slot only
        # 0. A job still waiting is cancelled at once, and never runs.
        r = c.post(f"{BASE}/cancel/queued-c")
        assert r.status_code == 200 and r.json() == {"id": "queued-c", "status": "CANCELLED"}
        assert c.get(f"{BASE}/status/queued-c").json()["status"] == "CANCELLED"
        t_cancel = time.time()
        r = c.post(f"{BASE}/cancel/long-a")
        assert r.status_code == 200 and r.json()["id"] == "long-a"
        b = wait_final(c, "next-b")
        a = wait_final(c, "long-a")
        # 1. The cancelled stage raised JobCancelled inside its own thread (the progress check).
        call = rec.wait_ended("long-a", "lipsync")
        assert isinstance(call.error, JobCancelled), call.error
        frozen = _fraction(store, "long-a")
        time.sleep(1.5)  # longer than StageProgress's report interval
        assert _fraction(store, "long-a") == frozen < 1.0
        assert not rec.of("long-a", "finisher")
        assert not (settings.storage_dir / "scratch/long-a/work/lipsync.mp4").exists()
        assert not (settings.storage_dir / "videos/long-a").exists()
        # 2. The next job took the freed slot and finished.
        assert a["status"] == "CANCELLED" and a["output"]["error"]["code"] == "CANCELLED"
        assert b["status"] == "COMPLETED", b
        b_rec = store.get("next-b")
        assert b_rec.started_at >= t_cancel
        assert (settings.storage_dir / "videos/next-b/lipsync.mp4").is_file()
        assert not rec.of("queued-c") and store.get("queued-c").status.value == "CANCELLED"
        assert store.active_ids() == []
    figures.count("faults injected", 1, "cancel mid-lip-sync")
    figures.note("cancel", f"stage stopped {call.ended - call.started:.2f}s into lip-sync at "
                 f"its last progress report; next job started {b_rec.started_at - t_cancel:.2f}s after the cancel")


@pytest.mark.slow
def test_job_past_its_time_limit_ends_timed_out_and_stops(sandbox, tiny_media, figures):
    """A lip-sync that would never end (a blocking stand-in that only a cancel stops) against a
    2 s job limit: the job ends TIMED_OUT, the stage stops at its next progress check, nothing
    of it is written, and the slot is free for the next job."""
    rec = Recorder()
    blocking: list[BlockingStage] = []
    settings = sandbox.settings(max_running_jobs=1, job_timeout_s=2.0)
    store = JobStore(LocalStorage(settings.storage_dir, "http://x"))
    wrap = {"lipsync": lambda stage: blocking.append(BlockingStage(stage)) or blocking[0]}
    with make_client(settings, rec, wrap) as c:
        assert c.post(f"{BASE}/run", json={"input": tiny_job(tiny_media, "slow-1")}).status_code == 200
        st = wait_final(c, "slow-1")
        assert st["status"] == "TIMED_OUT" and st["output"]["error"]["code"] == "TIMED_OUT", st
        assert st["output"]["success"] is False and "2s" in st["error"]
        # the stage does not run on for nothing: it stops at its next progress check
        call = rec.wait_ended("slow-1", "lipsync")
        assert isinstance(call.error, JobCancelled), call.error
        reports = len(blocking[0].reported)
        time.sleep(0.5)
        assert len(blocking[0].reported) == reports and blocking[0].reported[-1] < 1.0
        frozen = blocking[0].reported[-1]
        # the job's progress went with its other working files when it ended
        assert store.get_progress("slow-1") is None
        assert not (settings.storage_dir / "scratch/slow-1/work/lipsync.mp4").exists()
        # and the slot is free for the next job
        assert c.post(f"{BASE}/run", json={"input": tiny_job(tiny_media, "after-t")}).status_code == 200
        assert wait_final(c, "after-t")["status"] == "COMPLETED"
    figures.count("faults injected", 1, "job past its time limit")
    figures.note("timeout", f"TIMED_OUT; lip-sync stopped at {frozen:.0%}")


class OutageAtUpload:
    """The stages' storage, delegating every call; the first upload of `key` first stops the
    S3 server and has it restarted `down_s` later (the fault lands exactly on an upload)."""

    def __init__(self, storage, key: str, server: S3Server, down_s: float):
        self._storage, self._key, self._server, self._down_s = storage, key, server, down_s
        self.restarted: S3Server | None = None
        self._timer: threading.Timer | None = None

    def __getattr__(self, name):
        return getattr(self._storage, name)

    def put_file(self, key, path):
        if key == self._key and self._timer is None:
            self._server.stop()
            self._timer = threading.Timer(self._down_s, self._restart)
            self._timer.start()
        return self._storage.put_file(key, path)

    def _restart(self):
        self.restarted = S3Server(self._server.root, self._server.port).start()

    def stop(self):
        if self._timer is not None:
            self._timer.join()
        if self.restarted is not None:
            self.restarted.stop()


@pytest.mark.slow
def test_s3_outages_mid_job_are_retried_and_the_job_completes(tmp_path, sandbox, long_media,
                                                             caplog, monkeypatch, figures):
    """Two outages of the S3 server in one job: one at a random point of the lip-sync stage
    (progress writes, cancel checks, heartbeats hit it), one exactly on the final upload."""
    monkeypatch.setattr("core.storage.UPLOAD_BACKOFF_S", 0.5)
    (tmp_path / "s3" / "media").mkdir(parents=True)
    s3 = S3Server(tmp_path / "s3").start()
    settings = sandbox.settings(storage="s3", r2_endpoint=s3.endpoint,
                                r2_access_key=SecretStr(KEY), r2_secret_key=SecretStr(SECRET),
                                r2_bucket="media")
    caplog.set_level(logging.WARNING, logger="personaforge")
    caplog.set_level(logging.DEBUG, logger="botocore.endpoint")
    rec = Recorder()
    final_key = "videos/s3-1/lipsync.mp4"
    outage_s, servers = 4.0, [s3]
    storage = OutageAtUpload(open_storage(settings), final_key, s3, down_s=3.0)
    stages = {n: Watched(n, st, rec) for n, st in build_stages(settings, storage).items()}
    app = build_api()
    app.state.service = build_service(settings, stages=stages)
    try:
        with TestClient(app) as c:
            assert c.post(f"{BASE}/run", json={"input": long_job(long_media, "s3-1")}).status_code == 200
            wait_running_stage(c, "s3-1", "lipsync.run")
            # 1. The storage goes away mid-stage, and comes back on the same address.
            s3.stop()
            time.sleep(outage_s)
            servers.append(S3Server(s3.root, s3.port).start())
            storage._server = servers[-1]
            # 2. ... and again exactly when the finished video is uploaded (OutageAtUpload).
            st = wait_final(c, "s3-1", timeout=240)
    finally:
        storage.stop()
        for server in servers:
            server.stop()
    failed_sends = [r for r in caplog.records if r.name == "botocore.endpoint"
                    and "Exception received" in r.getMessage()]
    upload_retries = [r.getMessage() for r in caplog.records if r.name == "personaforge.storage"
                      and r.getMessage().startswith(f"upload {final_key}: attempt")]
    assert st["status"] == "COMPLETED", st
    # the outages were really hit, and the final upload was retried with backoff
    assert len(failed_sends) >= 2 and upload_retries, (len(failed_sends), upload_retries)
    assert "retrying in 0.5s" in upload_retries[0]
    stages_run = st["output"]["metadata"]["stages"]
    assert [s["attempts"] for s in stages_run] == [1, 1]  # no stage had to be re-run
    video = tmp_path / "s3" / "media" / final_key
    assert abs(probe(video).duration_s - probe(long_media["voice_path"]).duration_s) <= 1 / 25 + 1e-3
    assert rec.wait_ended("s3-1", "lipsync").error is None
    figures.count("faults injected", 2, "S3 server stopped")
    figures.note("s3 outages", f"{outage_s:.0f}s mid-lip-sync + 3s at the final upload; "
                 f"{len(failed_sends)} failed S3 requests, upload retries: {upload_retries}; COMPLETED")


def test_storage_failing_in_an_unexpected_way_is_503_not_500(sandbox, tiny_media, monkeypatch, figures):
    """Seen under the S3 restart above: botocore raised AttributeError (not one of its own
    errors) parsing a 5xx GetObject body. A status read failing like that answers 503 with
    Retry-After, and the job is still there once storage answers again."""
    settings = sandbox.settings(max_running_jobs=0)  # the job waits: nothing else reads
    with make_client(settings) as c:
        assert c.post(f"{BASE}/run", json={"input": tiny_job(tiny_media, "odd-1")}).status_code == 200
        storage = c.app.state.service.runner.store.storage

        def broken(key):
            raise AttributeError("'StreamingChecksumBody' object has no attribute 'strip'")

        with monkeypatch.context() as m:
            m.setattr(storage, "get_bytes", broken)
            r = c.get(f"{BASE}/status/odd-1")
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        assert r.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
        assert c.get(f"{BASE}/status/odd-1").json()["status"] == "IN_QUEUE"
        c.post(f"{BASE}/purge-queue")
    figures.count("faults injected", 1, "storage raising an unexpected error")
