"""Clients whose URLs drip slowly cost input workers, never the status route: over real HTTP
(uvicorn on 127.0.0.1, in-process service, the fetch guard letting 127.0.0.1 through), status
answers for an existing job keep coming while a batch of submissions is stuck fetching, and
the URLs of one request share a single fetch budget."""
from __future__ import annotations

import asyncio
import statistics
import threading
import time

import httpx
import pytest

from serve_app.api import build_api
from serve_app.inputs import FetchPolicy
from serve_app.service import INPUT_WORKERS
from tests.support.media import b64, small_portrait, speechlike, wav_bytes
from tests.support.servers import AppServer as ApiServer
from tests.support.service import (BASE, TINY_FACE_BOX, Sandbox, tiny_job, wait_final,
                                   watched_service)

SLOW = 3 * INPUT_WORKERS      # submissions stuck fetching: rounds of the input pool
FETCH_LIMIT_S = 6.0           # each slow URL is cut here (FetchPolicy.total_timeout_s)
HANG_GUARD_S = 3.0            # a status answer slower than this means status waited for a thread


def _service_app(tmp_path, policy: FetchPolicy):
    app = build_api()
    service = watched_service(Sandbox(tmp_path, tmp_path).settings())
    service.policy = policy
    app.state.service = service
    return app, service


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


@pytest.mark.slow
def test_slow_dripping_urls_do_not_starve_status(server, tmp_path, figures):
    media = {"image": b64(small_portrait(96)), "face_box": TINY_FACE_BOX,
             "audio": b64(speechlike(0.3, tmp_path / "v.wav").read_bytes())}
    # one byte every 0.2 s: no read timeout ever fires, only the fetch's total limit
    slow_url = server.drip("/slow.wav", wav_bytes(1.0), piece=1, every_s=0.2)
    policy = FetchPolicy(allow_http=True, trusted_networks=("127.0.0.1/32",),
                         read_timeout_s=5, total_timeout_s=FETCH_LIMIT_S)
    app, service = _service_app(tmp_path, policy)
    with ApiServer(app) as api, httpx.Client(base_url=api.url, timeout=120) as c:
        # 1. An existing job to ask about.
        assert c.post(f"{BASE}/run", json={"input": tiny_job(media, "known")}).status_code == 200
        assert wait_final(c, "known")["status"] == "COMPLETED"

        # 2. A batch of submissions whose audio drips, sent together from another thread.
        answers: list[httpx.Response] = []

        async def slow_batch():
            async with httpx.AsyncClient(base_url=api.url, timeout=300,
                                         limits=httpx.Limits(max_connections=SLOW)) as ac:
                jobs = [{**tiny_job(media, f"slow-{i}"), "audio": slow_url} for i in range(SLOW)]
                answers.extend(await asyncio.gather(
                    *(ac.post(f"{BASE}/run", json={"input": j}) for j in jobs)))
        batch = threading.Thread(target=asyncio.run, args=(slow_batch(),))
        batch.start()
        while sum(p == "/slow.wav" for p, _ in server.hits) < INPUT_WORKERS:
            assert batch.is_alive(), answers
            time.sleep(0.02)

        # 3. Status of the known job while they are stuck (measured, hang-guarded).
        latencies = []
        while batch.is_alive():
            t0 = time.perf_counter()
            r = c.get(f"{BASE}/status/known")
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.json()["status"] == "COMPLETED"
            time.sleep(0.05)
        batch.join()

    # every slow submission ends as a 400 naming its field, none is lost or left waiting
    assert len(answers) == SLOW
    for r in answers:
        assert r.status_code == 400 and r.json()["error"]["code"] == "URL_TIMEOUT", r.text
        assert "input.audio" in r.json()["error"]["message"]
    assert service.runner.store.active_ids() == []
    assert len(latencies) >= 10, latencies
    p50, p99 = _pct(latencies, 0.5), _pct(latencies, 0.99)
    figures.note("status latency behind slow URLs",
                 f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max "
                 f"{max(latencies) * 1000:.1f} ms over {len(latencies)} GET /status while {SLOW} "
                 f"submissions dripped ({INPUT_WORKERS} input workers, mean "
                 f"{statistics.mean(latencies) * 1000:.1f} ms)")
    assert max(latencies) < HANG_GUARD_S, sorted(latencies)[-5:]


def test_urls_of_one_request_share_one_fetch_budget(server, tmp_path):
    """Every URL arrives within its own limit, but together they take longer than the
    request's budget: the request is refused at the field where the budget ran out, and the
    URLs after it are never fetched."""
    wav = wav_bytes(0.5, rate=8000)
    piece = len(wav) // 10 + 1
    urls = {name: server.drip(f"/{name}.wav", wav, piece=piece, every_s=0.2)  # ~2 s each
            for name in ("audio", "music", "ambience", "sfx0", "sfx1")}
    policy = FetchPolicy(allow_http=True, trusted_networks=("127.0.0.1/32",),
                         read_timeout_s=5, total_timeout_s=10)
    app, service = _service_app(tmp_path, policy)
    service.fetch_budget_s = 5.0
    job = {"job_type": "video_render", "job_id": "budget-1",
           "image": b64(small_portrait(96)), "audio": urls["audio"],
           "music_url": urls["music"], "ambience_url": urls["ambience"],
           "sfx_tracks": [{"url": urls["sfx0"]}, {"url": urls["sfx1"]}]}
    with ApiServer(app) as api, httpx.Client(base_url=api.url, timeout=120) as c:
        r = c.post(f"{BASE}/run", json={"input": job})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "INPUT_FETCH_BUDGET", r.text
    assert "5 s fetch budget" in err["message"], err
    # ~2 s per URL: the budget runs out during the third (the second at worst, on a busy host)
    assert err["message"].startswith(("input.ambience_url", "input.music_url")), err
    fetched = [p for p, _ in server.hits]
    assert "/sfx0.wav" not in fetched and "/sfx1.wav" not in fetched, fetched
    assert service.runner.store.get("budget-1") is None
