"""The Ray Serve composition: local testing mode (fast, in-process), and one real `serve.run`
over HTTP on 127.0.0.1 that runs all three job types and measures the media."""
from __future__ import annotations

import time

import httpx
import pytest

from media.ffmpeg import probe
from tests.app.helpers import b64, free_port, small_portrait, speechlike

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


def overrides(tmp_path, port=9) -> dict:
    return {"storage_dir": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache"),
            "models_dir": str(tmp_path / "models"), "personas_dir": str(tmp_path / "personas"),
            "public_base_url": f"http://127.0.0.1:{port}"}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve-media")
    voice = speechlike(1.5, d / "voice.wav")
    return {"voice": voice, "voice_b64": b64(voice.read_bytes()), "portrait": b64(small_portrait(256))}



def test_composition_in_local_testing_mode(tmp_path, media, ray_env):
    from ray import serve

    from serve_app.app import build_app

    handle = serve.run(build_app({"profile": "local", "settings": overrides(tmp_path)}),
                       name="pf-local", _local_testing_mode=True)
    job = {"job_type": "lipsync_only", "job_id": "local-1", "image": media["portrait"],
           "audio": media["voice_b64"]}
    assert handle.submit.remote({"input": job}).result() == {"id": "local-1", "status": "IN_QUEUE"}
    t0 = time.monotonic()
    while True:
        st = handle.status.remote("local-1").result()
        if st["status"] in FINAL or time.monotonic() - t0 > 120:
            break
        time.sleep(0.3)
    assert st["status"] == "COMPLETED", st
    stages = [s["stage"] for s in st["output"]["metadata"]["stages"]]
    assert stages == ["lipsync", "finisher"]
    assert handle.status.remote("nope").result() is None
    out = tmp_path / "store" / "videos" / "local-1" / "lipsync.mp4"
    assert abs(probe(out).duration_s - probe(media["voice"]).duration_s) <= 1 / 25 + 1e-3


@pytest.mark.slow
def test_real_serve_run_over_http_all_job_types(tmp_path, media, ray_env):
    import ray
    from ray import serve

    from serve_app.app import build_app

    port = free_port()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False,
             log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # declared-gpu: the production GPU fractions (0.5/0.25/0.25) must schedule on one GPU
        serve.run(build_app({"profile": "declared-gpu", "settings": overrides(tmp_path, port)}),
                  name="pf", route_prefix="/")
        base = f"http://127.0.0.1:{port}/v2/test"
        c = httpx.Client(timeout=60)
        jobs = [
            {"job_type": "persona_build", "persona_id": "p1", "primary_image": media["portrait"],
             "takes_to_generate": [{"emotion": "happy", "angle": "closeup", "intensity": 0.4}]},
            {"job_type": "lipsync_only", "job_id": "http-ls", "image": media["portrait"],
             "audio": media["voice_b64"], "quality": "fast"},
            {"job_type": "video_render", "job_id": "http-vr", "image": media["portrait"],
             "audio": media["voice_b64"], "quality": "draft",
             "captions": [{"text": "Hello: \"world\" 100% {ok}", "start": 0.2, "end": 1.2}],
             "format": {"width": 360, "height": 640, "fps": 30}},
        ]
        posted = [c.post(f"{base}/run", json={"input": j}) for j in jobs]
        assert all(p.status_code == 200 for p in posted), [(p.status_code, p.text[:500]) for p in posted]
        ids = [p.json()["id"] for p in posted]
        assert ids == ["persona_build_p1", "http-ls", "http-vr"]
        seen_progress = False
        final = {}
        t0 = time.monotonic()
        while len(final) < len(ids) and time.monotonic() - t0 < 400:
            for i in ids:
                if i in final:
                    continue
                st = c.get(f"{base}/status/{i}").json()
                if st["status"] in FINAL:
                    final[i] = st
                elif st["status"] == "IN_PROGRESS" and st.get("stage"):
                    seen_progress = True
            time.sleep(0.5)
        assert all(final[i]["status"] == "COMPLETED" for i in ids), final
        assert seen_progress
        # a render on the persona's take: only the face is redone
        r = c.post(f"{base}/run", json={"input": {
            "job_type": "video_render", "job_id": "http-take", "persona_id": "p1",
            "take_id": "p1_take_0", "audio": media["voice_b64"], "quality": "draft",
            "format": {"width": 360, "height": 640, "fps": 25}}})
        assert r.status_code == 200
        while (st := c.get(f"{base}/status/http-take").json())["status"] not in FINAL:
            time.sleep(0.5)
        assert st["status"] == "COMPLETED", st
        final["http-take"] = st
        health = c.get(f"{base}/health").json()
        assert health["jobs"]["completed"] >= 4
    finally:
        serve.shutdown()
        ray.shutdown()

    voice_s = probe(media["voice"]).duration_s
    store = tmp_path / "store"
    ls = probe(store / "videos/http-ls/lipsync.mp4")
    assert (ls.video.width, ls.video.height, ls.video.fps) == (256, 256, 25)
    assert abs(ls.duration_s - voice_s) <= 1 / 25 + 1e-3
    for job_id, fps in (("http-vr", 30), ("http-take", 25)):
        vr = probe(store / f"videos/{job_id}/final.mp4")
        assert (vr.video.width, vr.video.height, vr.video.fps) == (360, 640, fps)
        assert abs(vr.duration_s - voice_s) <= 1 / fps + 1e-3
        assert (store / f"videos/{job_id}/thumbnail.jpg").is_file()
    meta = final["http-vr"]["output"]["metadata"]
    assert meta["counts"]["upscale_runs"] == 1
    assert meta["engines"]["face_restore"].startswith("passthrough")
    assert final["http-take"]["output"]["metadata"]["counts"]["upscale_runs"] == 0
    takes = final["persona_build_p1"]["output"]["metadata"]["base_takes"]
    assert [t["id"] for t in takes] == ["p1_take_0"]
    take = probe(store / "personas/p1/takes/take_0.mp4")
    assert abs(take.duration_s - 5.0) <= 1 / 25 + 1e-3
    assert (tmp_path / "personas" / "p1" / "manifest.json").is_file()
    assert (tmp_path / "personas" / "p1" / "take_0.mp4").is_file()
