"""Links that do not rot: a finished job's record keeps storage keys, and status makes the links
when it is read, with the configured lifetime. A link past its lifetime is refused (403), and
the same status read again hands out a new one that opens. The clock is injected, never slept."""
from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.storage import LINK_PREFIX
from serve_app.api import build_api
from serve_app.inprocess import build_service
from tests.support.jobs import FakeClock
from tests.support.media import b64, small_portrait, speechlike
from tests.support.service import BASE, tiny_job, wait_final

KEY = "links-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_links_made_on_read_outlive_their_first_lifetime(settings, tmp_path):
    clock = FakeClock()
    s = settings.model_copy(update={"api_key": SecretStr(KEY), "link_ttl_s": 3600})
    app = build_api()
    app.state.service = service = build_service(s, link_clock=clock)
    voice = speechlike(0.3, tmp_path / "v.wav")
    media = {"image": b64(small_portrait(96)), "audio": b64(voice.read_bytes()),
             "face_box": [20, 10, 76, 80]}
    with TestClient(app) as c:
        assert c.post(f"{BASE}/run", json={"input": tiny_job(media, "ln-1")},
                      headers=AUTH).status_code == 200
        first = wait_final(c, "ln-1", headers=AUTH)["output"]["output"]["video"]
        path = first.replace(s.public_base_url, "")
        assert c.get(path).status_code == 200                 # signed: opens without the key
        clock.advance(3601)                                   # past the link's lifetime
        assert c.get(path).status_code == 403
        second = c.get(f"{BASE}/status/ln-1", headers=AUTH).json()["output"]["output"]["video"]
        assert second != first and c.get(second.replace(s.public_base_url, "")).status_code == 200
    record = service.runner.store.get("ln-1")
    assert record.result.output["video"] == LINK_PREFIX + "videos/ln-1/lipsync.mp4"
    assert "exp=" not in record.model_dump_json()             # no expiring link was stored
