"""persona_build without a job_id (the seed's example) never traps the client: the same body is
the same job (idempotent: a retry returns it, never a second run), a different body is a new
job, and the same body after a FAILED or CANCELLED run runs again under a new id."""
from __future__ import annotations

import time

from core.errors import StageError
from tests.support.media import b64, small_portrait
from tests.support.service import BASE, make_client, wait_final

FACE_BOX = [20, 10, 76, 80]


class FailFirstUpscales:
    """The real upscale stage, failing its first `n` calls (a broken run of the persona)."""

    def __init__(self, stage, n: int = 1):
        self.stage, self.left, self.calls = stage, n, 0

    def describe(self) -> dict:
        return self.stage.describe()

    def run(self, req):
        self.calls += 1
        if self.left:
            self.left -= 1
            raise StageError("TEST_FAILURE", "the first build fails")
        return self.stage.run(req)


def test_same_body_same_job_different_body_new_job_failed_body_runs_again(settings):
    upscale: list[FailFirstUpscales] = []   # one wrapper, shared by both services below
    wrap = {"upscale": lambda stage: upscale[0] if upscale else
            upscale.append(FailFirstUpscales(stage)) or upscale[0]}
    body = {"job_type": "persona_build", "persona_id": "mia",
            "primary_image": b64(small_portrait(96)), "face_box": FACE_BOX,
            "takes_to_generate": [{"emotion": "happy", "angle": "front", "intensity": 0.5}]}
    with make_client(settings.model_copy(update={"max_running_jobs": 0}), wrap=wrap) as c:
        # 1. Same body twice while it waits: one job.
        first = c.post(f"{BASE}/run", json={"input": body}).json()
        again = c.post(f"{BASE}/run", json={"input": body}).json()
        assert first["id"] == again["id"] and first["id"].startswith("persona_build_mia_")
        # 2. A different body (another take) is another job.
        other = dict(body, takes_to_generate=[{"emotion": "sad", "angle": "front"}])
        assert c.post(f"{BASE}/run", json={"input": other}).json()["id"] != first["id"]
        # 3. Cancelled: the same body is a new run under the next id.
        assert c.post(f"{BASE}/cancel/{first['id']}").status_code == 200
        rerun = c.post(f"{BASE}/run", json={"input": body}).json()
        assert rerun["id"] == f"{first['id']}-r2"
        assert c.post(f"{BASE}/purge-queue").json()["removed"] == 2
    with make_client(settings, wrap=wrap) as c:
        # 4. Failed: the same body runs again (the upscale stage was called twice).
        failing = dict(body, archetype="calm")
        one = c.post(f"{BASE}/run", json={"input": failing}).json()["id"]
        assert wait_final(c, one)["status"] == "FAILED"
        two = c.post(f"{BASE}/run", json={"input": failing}).json()["id"]
        assert two == f"{one}-r2"
        deadline = time.monotonic() + 60      # a hang guard: the rerun reaches its upscale
        while upscale[0].calls < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upscale[0].calls == 2
        # (the rebuild is let run only to its upscale: the takes' encode tells nothing here)
        assert c.post(f"{BASE}/cancel/{two}").status_code == 200
