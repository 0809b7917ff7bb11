"""The HTTP API without Ray: the same StudioService, graphs and CPU stages, called in-process.
Media is measured with ffprobe; bad input must be a 4xx naming the field."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from media.ffmpeg import probe
from serve_app import service as service_mod
from serve_app.api import build_api
from serve_app.inprocess import build_service
from tests.support.media import b64, small_portrait, speechlike
from tests.support.servers import AppServer as LocalServer
from tests.support.servers import WebhookReceiver
from tests.support.service import BlockingStage, make_client, tiny_job, wait_final

BASE = "/v2/local"


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> Path:
    return speechlike(1.7, tmp_path_factory.mktemp("media") / "voice.wav")


@pytest.fixture(scope="module")
def portrait() -> str:
    return b64(small_portrait(256))


def test_lipsync_only_end_to_end(settings, voice, portrait, tmp_path):
    job = {"job_type": "lipsync_only", "job_id": "ls-1", "image": portrait,
           "audio": b64(voice.read_bytes()), "quality": "fast"}
    with make_client(settings) as c:
        r = c.post(f"{BASE}/run", json={"input": job})
        assert r.status_code == 200 and r.json() == {"id": "ls-1", "status": "IN_QUEUE"}
        st = wait_final(c, "ls-1")
        assert st["status"] == "COMPLETED", st
        res = st["output"]
        assert res["success"] is True and res["duration_ms"] > 0
        meta = res["metadata"]
        assert meta["job_id"] == "ls-1" and meta["quality"] == "fast" and meta["preset"] == "draft"
        assert meta["engines"]["lipsync"].startswith("embedded-mouth-animator")
        # the URL is a real link served by the API
        url = res["output"]["video"]
        assert url.startswith("http://127.0.0.1:9/files/videos/ls-1/lipsync.mp4")
        body = c.get(url.replace("http://127.0.0.1:9", ""))
        assert body.status_code == 200
        out = tmp_path / "lipsync.mp4"
        out.write_bytes(body.content)
        # resubmitting the id returns the same finished job, never a second run
        again = c.post(f"{BASE}/run", json={"input": job}).json()
        assert again == {"id": "ls-1", "status": "COMPLETED"}
        assert meta["attempts"] == 1
    info = probe(out)
    voice_s = probe(voice).duration_s
    assert info.video.width == 256 and info.video.height == 256 and info.video.fps == 25
    assert abs(info.duration_s - voice_s) <= 1 / 25 + 1e-3
    assert info.audio is not None and info.audio.codec_name == "aac"


def bad_requests(portrait: str, voice_b64: str) -> list[tuple[dict, int, str]]:
    ok = {"job_type": "lipsync_only", "job_id": "bad-1", "image": portrait, "audio": voice_b64}
    png_as_audio = portrait
    return [
        ({**ok, "job_type": "make_coffee"}, 400, "job_type"),
        ({k: v for k, v in ok.items() if k != "audio"}, 400, "input.audio"),
        ({**ok, "captons": []}, 400, "input.captons"),
        ({**ok, "job_id": "../../etc/passwd"}, 400, "input.job_id"),
        ({**ok, "quality": "ultra"}, 400, "input.quality"),
        ({**ok, "image": b64(b"this is not an image at all, just text")}, 415, "input.image"),
        ({**ok, "image": "%%%not base64%%%"}, 400, "input.image"),
        ({**ok, "audio": png_as_audio}, 415, "input.audio"),
        ({"job_type": "video_render", "job_id": "v1", "audio": voice_b64}, 400, "image"),
    ]


def test_bad_inputs_are_4xx_naming_the_field(settings, voice, portrait):
    voice_b64 = b64(voice.read_bytes())
    with make_client(settings) as c:
        for job, status, field in bad_requests(portrait, voice_b64):
            r = c.post(f"{BASE}/run", json={"input": job})
            assert 400 <= r.status_code < 500, (job.get("job_type"), r.status_code, r.text)
            err = r.json()["error"]
            assert field in err["message"], (field, err)
            if status != 400:
                assert r.status_code == status, (field, r.status_code, err)
        assert c.post(f"{BASE}/run", content=b"{not json", headers={
            "content-type": "application/json"}).status_code == 400
        # nothing was stored for the rejected jobs
        assert c.get(f"{BASE}/status/bad-1").status_code == 404


def test_oversize_payload_is_413(settings, portrait):
    with make_client(settings.model_copy(update={"max_request_bytes": 200_000})) as c:
        r = c.post(f"{BASE}/run", json={"input": {
            "job_type": "lipsync_only", "job_id": "big", "image": portrait,
            "audio": "A" * 300_000}})
        assert r.status_code == 413
        assert "limit" in r.json()["error"]["message"]


def test_no_face_fails_with_reason_and_face_box_rescues(settings, voice):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (120, 160, 200)).save(buf, format="PNG")
    flat = b64(buf.getvalue())
    voice_b64 = b64(voice.read_bytes())
    with make_client(settings) as c:
        c.post(f"{BASE}/run", json={"input": {"job_type": "lipsync_only", "job_id": "noface",
                                              "image": flat, "audio": voice_b64}})
        st = wait_final(c, "noface")
        assert st["status"] == "FAILED"
        assert st["output"]["error"]["code"] == "NO_FACE" and "face_box" in st["error"]
        c.post(f"{BASE}/run", json={"input": {"job_type": "lipsync_only", "job_id": "boxed",
                                              "image": flat, "audio": voice_b64,
                                              "face_box": [60, 40, 140, 160]}})
        st = wait_final(c, "boxed")
        assert st["status"] == "COMPLETED", st


def test_api_key_guards_everything_but_health(settings, voice, portrait):
    from pydantic import SecretStr

    key = "k3y-" + "x" * 28
    with make_client(settings.model_copy(update={"api_key": SecretStr(key)})) as c:
        assert c.get(f"{BASE}/health").status_code == 200
        assert c.get(f"{BASE}/status/x").status_code == 401
        assert c.get(f"{BASE}/status/x", headers={"Authorization": "Bearer wrong"}).status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        assert c.get(f"{BASE}/status/x", headers=auth).status_code == 404
        job = {"job_type": "lipsync_only", "job_id": "authed", "image": portrait,
               "audio": b64(voice.read_bytes())}
        assert c.post(f"{BASE}/run", json={"input": job}).status_code == 401
        assert c.post(f"{BASE}/run", json={"input": job}, headers=auth).status_code == 200
        st = wait_final(c, "authed", headers=auth)
        url = st["output"]["output"]["video"].replace("http://127.0.0.1:9", "")
        assert "sig=" in url
        assert c.get(url).status_code == 200                       # signed link: no key needed
        assert c.get(url.replace("sig=", "sig=0")).status_code == 403
        assert c.get(url.split("?")[0]).status_code == 403
        dump = json.dumps(st)
        assert key not in dump


def test_links_from_stages_that_open_their_own_storage(settings, voice, portrait, monkeypatch):
    """Under Serve every stage replica opens its own storage (deployments.common.stage_setup)
    from PF_API_KEY in its environment: the links the finisher makes there must be ones the
    ingress's /files route accepts, and nothing opens without a valid signature."""
    from deployments.common import stage_setup
    from stages.finish import FinishStage
    from stages.lipsync import LipSyncStage

    key = "stage-key-" + "s" * 24
    monkeypatch.setenv("PF_API_KEY", key)
    local = {k: getattr(settings, k) for k in (
        "storage", "storage_dir", "cache_dir", "models_dir", "personas_dir", "public_base_url")}
    stages = {"lipsync": LipSyncStage(*stage_setup(local)),
              "finisher": FinishStage(*stage_setup(local))}
    ingress, _ = stage_setup(local)
    assert ingress.api_key.get_secret_value() == key
    app = build_api()
    app.state.service = build_service(ingress, stages=stages)
    auth = {"Authorization": f"Bearer {key}"}
    job = {"job_type": "lipsync_only", "job_id": "own-storage", "image": portrait,
           "audio": b64(voice.read_bytes()), "quality": "fast"}
    with TestClient(app) as c:
        assert c.post(f"{BASE}/run", json={"input": job}, headers=auth).status_code == 200
        st = wait_final(c, "own-storage", headers=auth)
        assert st["status"] == "COMPLETED", st
        url = st["output"]["output"]["video"].replace("http://127.0.0.1:9", "")
        body = c.get(url)  # no key: the link's signature is the credential
        assert body.status_code == 200, body.text
        bare = url.split("?")[0]
        assert c.get(bare).status_code == 403
        assert c.get(bare, headers=auth).status_code == 403  # the key is no link signature
    out = settings.cache_dir / "got.mp4"
    out.write_bytes(body.content)
    assert abs(probe(out).duration_s - probe(voice).duration_s) <= 1 / 25 + 1e-3


def run_runpod_client(app, client_code: str, job: dict, tmp_path, *args: str) -> dict:
    """Run `client_code` (after `import json, sys, runpod` and `ep = runpod.Endpoint('local')`)
    in a subprocess with the official client pointed at `app` served on 127.0.0.1; the job's
    JSON is in sys.argv[1], `args` follow. Returns the JSON the code printed last."""
    script = tmp_path / "client.py"
    script.write_text("import json, sys, runpod\n"
                      "runpod.api_key = 'unused-on-an-open-local-server'\n"
                      "ep = runpod.Endpoint('local')\n"
                      "job = json.load(open(sys.argv[1]))\n" + client_code)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    with LocalServer(app) as server:
        env = dict(os.environ, RUNPOD_ENDPOINT_BASE_URL=f"{server.url}/v2")
        proc = subprocess.run([sys.executable, str(script), str(job_file), *args],
                              capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runpod_client_unchanged(settings, voice, portrait, tmp_path):
    """The official runpod client, pointed at us with RUNPOD_ENDPOINT_BASE_URL, runs a job
    with run_sync and with run/status/output."""
    app = build_api()
    app.state.service = build_service(settings.model_copy(update={"runsync_wait_s": 0.5}))
    job = {"job_type": "lipsync_only", "image": portrait, "audio": b64(voice.read_bytes()),
           "quality": "fast"}
    got = run_runpod_client(app, (
        "out1 = ep.run_sync({'input': dict(job, job_id='rp-sync')}, timeout=120)\n"
        "run = ep.run({'input': dict(job, job_id='rp-async')})\n"
        "out2 = run.output(timeout=120)\n"
        "print(json.dumps({'sync': out1, 'async': out2, 'status': run.status(),\n"
        "                  'health': ep.health()}))\n"), job, tmp_path)
    for name in ("sync", "async"):
        assert got[name]["success"] is True, got[name]
        assert got[name]["output"]["video"].endswith(f"videos/rp-{name}/lipsync.mp4")
    assert got["status"] == "COMPLETED"
    assert got["health"]["jobs"]["completed"] == 2


def test_runsync_answers_before_the_proxy_limit_however_long_it_is_asked_to_wait(settings, tmp_path,
                                                                                monkeypatch):
    """A job that never ends (a blocking lip-sync) and a runsync asked to wait 300 s, behind a
    proxy limit of 33 s with a 30 s margin (so it is short here): runsync answers with the job's
    id and running status, in our shape, inside the limit."""
    voice = speechlike(0.3, tmp_path / "v.wav")
    media = {"image": b64(small_portrait(96)), "audio": b64(voice.read_bytes()),
             "face_box": [20, 10, 76, 80]}
    monkeypatch.setattr(service_mod, "RESPONSE_MARGIN_S", 30.0)
    s = settings.model_copy(update={"request_timeout_s": 33.0, "runsync_wait_s": 300.0})
    with make_client(s, wrap={"lipsync": BlockingStage}) as c:
        r = c.post(f"{BASE}/runsync?wait=300000", json={"input": tiny_job(media, "slow-sync")})
        assert r.status_code == 200 and r.json()["id"] == "slow-sync"
        assert r.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
        assert c.post(f"{BASE}/cancel/slow-sync").status_code == 200


def test_runpod_client_drives_a_job_with_a_webhook_and_a_policy(settings, voice, portrait, tmp_path):
    """The official client sends RunPod's top-level webhook and policy with `run`; the job
    completes, the webhook receives the final status once, and status shows the delivery."""
    hook = WebhookReceiver()
    app = build_api()
    app.state.service = build_service(settings.model_copy(update={
        "allow_http_inputs": True, "allow_private_inputs": True}))
    job = {"job_type": "lipsync_only", "image": portrait, "audio": b64(voice.read_bytes()),
           "quality": "fast"}
    try:
        got = run_runpod_client(app, (
            "run = ep.run({'input': dict(job, job_id='rp-hook'), 'webhook': sys.argv[2],\n"
            "              'policy': {'executionTimeout': 600000, 'ttl': 600000}})\n"
            "out = run.output(timeout=120)\n"
            "print(json.dumps({'out': out, 'status': run.status()}))\n"), job, tmp_path, hook.url)
        deadline = time.monotonic() + 60       # a hang guard for the delivery
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.05)
        with TestClient(app) as c:
            st = c.get(f"{BASE}/status/rp-hook").json()
    finally:
        hook.close()
    assert got["status"] == "COMPLETED" and got["out"]["success"] is True
    assert len(hook.received) == 1
    assert json.loads(hook.received[0][1])["status"] == "COMPLETED"
    assert st["webhook"]["state"] == "delivered"
