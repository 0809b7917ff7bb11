"""A stage replica killed mid-job under a real `serve.run` (declared-gpu profile, HTTP on
127.0.0.1): the LipSync replica's actor is killed while a job is IN_PROGRESS in lip-sync.
Serve starts a new replica, the runner retries the lost call, and the job ends COMPLETED (or
FAILED with WORKER_LOST) within a bounded time — never stuck IN_PROGRESS."""
from __future__ import annotations

import time

import httpx
import pytest

from media.ffmpeg import probe
from tests.support.servers import free_port
from tests.support.service import FINAL, long_job, raw_request

BOUND_S = 300  # the job must be final this long after the kill
LIMIT = 8 * 1024 * 1024  # the long job (~2.5 MB of base64) fits



def _replicas(ray, deployment: str) -> list[str]:
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in a["name"])


@pytest.mark.slow
def test_killed_lipsync_replica_mid_job_is_retried_not_stuck(tmp_path, long_media, ray_env,
                                                             figures):
    import ray
    from ray import serve

    from serve_app.app import build_app

    port = free_port()
    overrides = {"storage_dir": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache"),
                 "models_dir": str(tmp_path / "models"),
                 "personas_dir": str(tmp_path / "personas"),
                 "public_base_url": f"http://127.0.0.1:{port}",
                 "max_request_bytes": LIMIT}
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False,
             log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"profile": "declared-gpu", "settings": overrides}), name="pfk",
                  route_prefix="/")
        base = f"http://127.0.0.1:{port}/v2/kill"
        c = httpx.Client(timeout=60)
        before = _replicas(ray, "LipSync")
        assert len(before) == 1, before
        assert c.post(f"{base}/run", json={"input": long_job(long_media, "kill-1")}).status_code == 200
        # 1. Wait until lip-sync is really running (it has reported progress), then kill it.
        t0 = time.monotonic()
        while True:
            st = c.get(f"{base}/status/kill-1").json()
            if st["status"] == "IN_PROGRESS" and st.get("stage") == "lipsync.run" \
                    and st["progress"] > 0.05:
                break
            assert st["status"] in ("IN_QUEUE", "IN_PROGRESS") and time.monotonic() - t0 < 240, st
            time.sleep(0.1)
        progress_at_kill = st["progress"]
        ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
        figures.count("faults injected", 1, "stage replica killed mid-job")
        t_kill = time.monotonic()
        # 2. Bounded: a final state comes, whatever it is.
        while (st := c.get(f"{base}/status/kill-1").json())["status"] not in FINAL:
            assert time.monotonic() - t_kill < BOUND_S, f"job stuck after the kill: {st}"
            time.sleep(0.5)
        settle_s = time.monotonic() - t_kill
        after = _replicas(ray, "LipSync")
        health = c.get(f"{base}/health").json()
        # 3. Through Serve's proxy too, a chunked body past the limit is refused unread.
        head = ("POST /v2/kill/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                "application/json\r\nTransfer-Encoding: chunked").encode()
        big = raw_request(port, head, [b"A" * 65536] * 256, finish=False, timeout=30)
        figures.count("bad inputs tried", 1, "oversized bodies")
    finally:
        serve.shutdown()
        ray.shutdown()

    assert after and after != before  # Serve replaced the killed replica
    assert big[0] == 413, big[1][:300]
    figures.note("replica kill", f"LipSync killed at {progress_at_kill:.0%} of the job; job "
                 f"{st['status']} {settle_s:.1f}s later; replicas {len(before)} -> {len(after)} "
                 f"(new actor); health {health['jobs']}")
    if st["status"] == "FAILED":
        assert st["output"]["error"]["code"] == "WORKER_LOST", st
        return
    assert st["status"] == "COMPLETED", st
    lipsync = [s for s in st["output"]["metadata"]["stages"] if s["stage"] == "lipsync"]
    assert lipsync[0]["attempts"] >= 2  # the lost call was retried, not silently lost
    out = tmp_path / "store" / "videos" / "kill-1" / "lipsync.mp4"
    assert abs(probe(out).duration_s - probe(long_media["voice_path"]).duration_s) <= 1 / 25 + 1e-3
