"""RunPod's webhook: exactly one successful delivery of the final status per job (a 500 is
retried), signed when a secret is set, recorded in the job and shown by status; a receiver that
hangs delays nothing else; a receiver that never answers ends as a recorded failure; a webhook
URL the input rules refuse is a 400 naming it. Receivers are servers on 127.0.0.1."""
from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from pydantic import SecretStr

from serve_app import webhooks
from tests.support.media import b64, small_portrait, speechlike
from tests.support.servers import WebhookReceiver, free_port
from tests.support.service import BASE, make_client, tiny_job, wait_final

SECRET = "whsec-test"


@pytest.fixture
def media(tmp_path) -> dict:
    voice = speechlike(0.3, tmp_path / "v.wav")
    return {"image": b64(small_portrait(96)), "audio": b64(voice.read_bytes()),
            "face_box": [20, 10, 76, 80]}


@pytest.fixture
def local(settings, monkeypatch):
    monkeypatch.setattr(webhooks, "WEBHOOK_BACKOFF_S", (0.05,) * 5)
    return settings.model_copy(update={"allow_http_inputs": True, "allow_private_inputs": True,
                                       "webhook_secret": SecretStr(SECRET)})


def wait_delivery(c, job_id: str) -> dict:
    import time
    deadline = time.monotonic() + 60       # a hang guard: deliveries take milliseconds here
    while (st := c.get(f"{BASE}/status/{job_id}").json()).get("webhook") is None:
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    return st


def test_one_signed_delivery_per_final_job_after_a_500(local, media, figures):
    hook = WebhookReceiver(script=(500, 200))
    try:
        with make_client(local) as c:
            r = c.post(f"{BASE}/run", json={"input": tiny_job(media, "wh-1"), "webhook": hook.url})
            assert r.status_code == 200, r.text
            st = wait_delivery(c, "wh-1")
    finally:
        hook.close()
    assert st["status"] == "COMPLETED"
    assert st["webhook"]["state"] == "delivered" and st["webhook"]["attempts"] == 2
    assert len(hook.received) == 2          # the 500, then the one successful delivery
    headers, body = hook.received[-1]
    sent = json.loads(body)
    assert sent["id"] == "wh-1" and sent["status"] == "COMPLETED"
    assert sent["output"]["output"]["video"] == st["output"]["output"]["video"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-PersonaForge-Signature"], expected)
    figures.count("faults injected", 1, "webhook receiver answering 500")


def test_a_hanging_or_closed_receiver_delays_nothing_and_failure_is_recorded(local, media):
    hang = WebhookReceiver(script=("hang",))
    closed = f"http://127.0.0.1:{free_port()}/hook"     # nothing listens there
    try:
        with make_client(local) as c:
            for job_id, url in (("wh-hang", hang.url), ("wh-closed", closed)):
                r = c.post(f"{BASE}/run", json={"input": tiny_job(media, job_id), "webhook": url})
                assert r.status_code == 200, r.text
            # while the first job's webhook hangs, a third job (no webhook) runs to its end
            assert c.post(f"{BASE}/run", json={"input": tiny_job(media, "wh-none")}).status_code == 200
            assert wait_final(c, "wh-none")["status"] == "COMPLETED"
            assert wait_final(c, "wh-hang")["status"] == "COMPLETED"
            failed = wait_delivery(c, "wh-closed")["webhook"]
            assert failed["state"] == "failed" and failed["attempts"] == 6
            assert "URL_UNREACHABLE" in failed["error"]
            hang.release.set()
            assert wait_delivery(c, "wh-hang")["webhook"]["state"] == "delivered"
    finally:
        hang.close()


@pytest.mark.parametrize("url,code", [("ftp://example.com/hook", "URL_SCHEME_NOT_ALLOWED"),
                                      ("http://169.254.169.254/hook", "URL_NOT_ALLOWED"),
                                      ("https://user:pw@example.com/hook", "URL_HAS_CREDENTIALS")])
def test_a_webhook_the_input_rules_refuse_is_a_400_naming_it(local, media, url, code):
    with make_client(local) as c:
        r = c.post(f"{BASE}/run", json={"input": tiny_job(media, "wh-bad"), "webhook": url})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == code and err["message"].startswith("webhook"), err
        assert c.get(f"{BASE}/status/wh-bad").status_code == 404
