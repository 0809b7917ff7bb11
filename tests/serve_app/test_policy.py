"""RunPod's top-level `policy` over HTTP: executionTimeout caps a job's run (TIMED_OUT with the
reason), a policy with wrong types or unknown keys is a 400 naming it, and unknown top-level
keys stay a 400 (the runner's own ttl/executionTimeout rules: tests/core/test_runner.py)."""
from __future__ import annotations

from tests.support.media import b64, small_portrait, speechlike
from tests.support.service import BASE, BlockingStage, make_client, tiny_job, wait_final


def test_execution_timeout_ends_the_job_timed_out_with_the_reason(settings, tmp_path):
    voice = speechlike(0.3, tmp_path / "v.wav")
    media = {"image": b64(small_portrait(96)), "audio": b64(voice.read_bytes()),
             "face_box": [20, 10, 76, 80]}
    with make_client(settings, wrap={"lipsync": BlockingStage}) as c:
        r = c.post(f"{BASE}/run", json={"input": tiny_job(media, "slow-policy"),
                                        "policy": {"executionTimeout": 1500, "ttl": 600000}})
        assert r.status_code == 200, r.text
        st = wait_final(c, "slow-policy")
        assert st["status"] == "TIMED_OUT"
        assert "policy.executionTimeout (1500 ms)" in st["error"]
        for bad, field in (({"executionTimeout": "soon"}, "executionTimeout"),
                           ({"executionTimeout": -5}, "executionTimeout"),
                           ({"ttl": 1e300}, "ttl"), ({"retries": 3}, "retries")):
            r = c.post(f"{BASE}/run", json={"input": tiny_job(media, "p2"), "policy": bad})
            assert r.status_code == 400 and field in r.json()["error"]["message"], (bad, r.text)
        r = c.post(f"{BASE}/run", json={"input": tiny_job(media, "p3"), "callback": "x"})
        assert r.status_code == 400 and "callback" in r.json()["error"]["message"]
