"""The LipSync stage runs LatentSync when its engine loads (weights on the volume), passes the
job's quality preset through, and says so in the metadata; without weights it is the embedded
animator. The LatentSync here is a tiny random instance (never a real model's output)."""
from __future__ import annotations

import time

from fastapi.testclient import TestClient

from media.ffmpeg import probe
from serve_app.api import build_api
from serve_app.inprocess import build_service
from stages.lipsync import LipSyncStage
from tests.support.engines import tiny_engine
from tests.support.media import b64, small_portrait, speechlike


def run_job(settings, tmp_path, quality):
    app = build_api()
    app.state.service = build_service(settings)
    voice = speechlike(0.7, tmp_path / "v.wav")
    job = {"job_type": "lipsync_only", "job_id": f"ls-{quality}", "image": b64(small_portrait(256)),
           "audio": b64(voice.read_bytes()), "quality": quality}
    with TestClient(app) as c:
        assert c.post("/v2/t/run", json={"input": job}).status_code == 200
        t0 = time.monotonic()
        while (st := c.get(f"/v2/t/status/ls-{quality}").json())["status"] not in (
                "COMPLETED", "FAILED") and time.monotonic() - t0 < 300:
            time.sleep(0.3)
    assert st["status"] == "COMPLETED", st.get("error")
    return st["output"]["metadata"], voice


def test_latentsync_runs_when_loaded_and_records_the_preset(settings, tmp_path, monkeypatch,
                                                           one_torch_thread):
    monkeypatch.setattr(LipSyncStage, "_load_latentsync", lambda self: tiny_engine())
    meta, voice = run_job(settings, tmp_path, "fast")
    assert meta["engines"]["lipsync"] == "latentsync-tiny-random (float32, cpu)"
    ls = meta["lipsync_settings"]
    assert (ls["quality"], ls["steps"], ls["deepcache"]) == ("draft", 10, True)
    out = probe(settings.storage_dir / "videos/ls-fast/lipsync.mp4")
    assert abs(out.duration_s - probe(voice).duration_s) <= 1 / 25 + 1e-3


def test_without_weights_the_embedded_animator_runs(settings, tmp_path):
    meta, _ = run_job(settings, tmp_path, "high")
    assert meta["engines"]["lipsync"].startswith("embedded-mouth-animator")
    assert "steps" not in meta["lipsync_settings"]
