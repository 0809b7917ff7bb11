"""Production mode (PF_PRODUCTION=1): a stage serves its real model or refuses. Without weights,
each GPU stage's health check fails naming the missing files and the download command, /health
answers 503 not-ready with the reasons, and a job is refused with 503 before any input is read,
never run on an embedded engine. With (tiny) engines in place the same service is ready and runs
jobs on them. Outside production mode the embedded engines stand in, as before."""
from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from core.errors import StageError
from core.storage import open_storage
from serve_app.api import build_api
from serve_app.inprocess import build_service, build_stages
from stages.contracts import UpscaleRequest
from stages.lipsync import LipSyncStage
from stages.restore import FaceRestoreStage
from stages.upscale import UpscaleStage
from tests.support.engines import tiny_engine, tiny_restorer, tiny_upscalers
from tests.support.media import b64, small_portrait, speechlike

BASE = "/v2/local"
FACE_BOX = [20, 10, 76, 80]


def job(tmp_path, job_id="prod-1") -> dict:
    voice = speechlike(0.5, tmp_path / "v.wav")
    return {"job_type": "lipsync_only", "job_id": job_id, "quality": "fast",
            "image": b64(small_portrait(96)), "audio": b64(voice.read_bytes()), "face_box": FACE_BOX}


def test_without_weights_every_gpu_stage_refuses_with_the_files_and_the_command(settings):
    prod = settings.model_copy(update={"production": True})
    stages = build_stages(prod, open_storage(prod))
    expected = {"lipsync": ["latentsync-1.5/latentsync_unet.pt", "whisper/tiny.pt",
                            "--only lipsync --version 1.5"],
                "face_restore": ["gfpgan/GFPGANv1.4.pth", "--only restore"],
                "upscale": ["realesrgan/RealESRGAN_x4plus.pth", "--only upscale"]}
    for name, words in expected.items():
        report = stages[name].describe()
        assert report["ready"] is False and report["engine"].startswith("unavailable")
        for word in [*words, str(prod.models_dir), "python download_models.py"]:
            assert word in report["reason"], (name, word, report["reason"])
        with pytest.raises(RuntimeError, match="download_models.py"):
            stages[name].check_health()
    assert stages["finisher"].describe()["ready"] is True
    stages["finisher"].check_health()
    # a call that slips past the door still never falls back
    with pytest.raises(StageError, match="production mode") as err:
        stages["upscale"].run(UpscaleRequest(job_id="j", image_key="k", max_width=8,
                                             max_height=8, out_key="o"))
    assert err.value.code == "ENGINE_UNAVAILABLE"


def test_without_weights_health_is_503_and_jobs_are_refused_with_the_reason(settings, tmp_path):
    prod = settings.model_copy(update={"production": True})
    app = build_api()
    app.state.service = build_service(prod)
    with TestClient(app) as c:
        health = c.get(f"{BASE}/health")
        assert health.status_code == 503 and health.json()["ready"] is False
        reasons = " ".join(health.json()["reasons"])
        assert "RealESRGAN_x4plus.pth" in reasons and "GFPGANv1.4.pth" in reasons
        r = c.post(f"{BASE}/run", json={"input": job(tmp_path)})
        assert r.status_code == 503 and r.headers["Retry-After"]
        err = r.json()["error"]
        assert err["code"] == "NOT_READY" and "latentsync_unet.pt" in err["message"]
        assert c.get(f"{BASE}/status/prod-1").status_code == 404   # nothing was queued
    assert not (prod.storage_dir / "jobs" / "prod-1").exists()    # no input was even read


def test_with_engines_in_place_production_starts_and_runs_on_them(settings, tmp_path, monkeypatch):
    prod = settings.model_copy(update={"production": True})
    monkeypatch.setattr(LipSyncStage, "_load_latentsync", lambda self: tiny_engine())
    storage = open_storage(prod)
    stages = build_stages(prod, storage)
    stages["face_restore"] = FaceRestoreStage(prod, storage, restorer=tiny_restorer())
    stages["upscale"] = UpscaleStage(prod, storage, models=tiny_upscalers())
    for stage in stages.values():
        stage.check_health()
    app = build_api()
    app.state.service = build_service(prod, stages=stages)
    with TestClient(app) as c:
        health = c.get(f"{BASE}/health").json()
        assert health["ready"] is True and health["reasons"] == []
        assert c.post(f"{BASE}/run", json={"input": job(tmp_path, "prod-2")}).status_code == 200
        t0 = time.monotonic()
        while (st := c.get(f"{BASE}/status/prod-2").json())["status"] not in (
                "COMPLETED", "FAILED") and time.monotonic() - t0 < 300:
            time.sleep(0.2)
    assert st["status"] == "COMPLETED", st
    assert st["output"]["metadata"]["engines"]["lipsync"] == "latentsync-tiny-random (float32, cpu)"


def test_outside_production_the_embedded_engines_stand_in(settings):
    stages = build_stages(settings, open_storage(settings))
    for name in ("lipsync", "face_restore", "upscale"):
        report = stages[name].describe()
        assert report["ready"] is True and "no " in report["engine"]   # says what is missing
