"""`face_restore_weight` (0..1, default 0.5, the restorer's blend strength) goes from the job's
input into the face-restore stage's request, for persona_build as for video_render (whose
end-to-end test, test_render_e2e.py, checks it there)."""
from __future__ import annotations

from fastapi.testclient import TestClient

from core.errors import StageError
from core.storage import open_storage
from serve_app.api import build_api
from serve_app.inprocess import build_service, build_stages
from tests.support.media import b64, small_portrait
from tests.support.service import BASE, RecordingStage, wait_final


class StopAfterRestore(RecordingStage):
    """Records the restore request, restores, then ends the job: the 1080x1920 take encode
    that would follow tells this test nothing."""

    def run(self, req):
        super().run(req)
        raise StageError("STOPPED_BY_TEST", "the restore request was recorded")


def test_persona_build_passes_the_weight_to_the_restore_stage(settings):
    stages = build_stages(settings, open_storage(settings))
    stages["face_restore"] = StopAfterRestore(stages["face_restore"])
    app = build_api()
    app.state.service = build_service(settings, stages=stages)
    job = {"job_type": "persona_build", "persona_id": "pw",
           "primary_image": b64(small_portrait(256)), "face_restore_weight": 0.25,
           "takes_to_generate": [{"emotion": "happy", "angle": "closeup", "intensity": 0.3}]}
    with TestClient(app) as c:
        r = c.post(f"{BASE}/run", json={"input": job})
        assert r.status_code == 200, r.text
        st = wait_final(c, r.json()["id"])
    assert st["output"]["error"]["code"] == "STOPPED_BY_TEST", st
    assert [req.weight for req in stages["face_restore"].requests] == [0.25]
