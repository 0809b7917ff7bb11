"""The Ray Serve composition: local testing mode (fast, in-process), and one real `serve.run`
over HTTP on 127.0.0.1 that runs all three job types and measures the media."""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from media.ffmpeg import probe
from tests.support.media import b64, small_portrait, speechlike
from tests.support.servers import free_port

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



def run_in_local_testing_mode(tmp_path, job: dict, timeout_s: float = 300) -> dict:
    """The real composition (build_app: Studio + the four stage deployments, handles between
    them) in Serve's local testing mode: one process, no Ray cluster. Submits `job` through
    the ingress handle and polls it to a final status."""
    from ray import serve

    from serve_app.app import build_app

    handle = serve.run(build_app({"profile": "local", "settings": overrides(tmp_path)}),
                       name=f"pf-local-{job['job_type']}", _local_testing_mode=True)
    submitted = handle.submit.remote({"input": job}).result()
    job_id = submitted["id"]
    assert submitted == {"id": job_id, "status": "IN_QUEUE"}
    assert job_id == job.get("job_id", job_id)
    assert handle.status.remote("nope").result() is None
    t0 = time.monotonic()
    while (st := handle.status.remote(job_id).result())["status"] not in FINAL:
        assert time.monotonic() - t0 < timeout_s, st  # a hang guard, not a speed check
        time.sleep(0.3)
    assert st["status"] == "COMPLETED", st
    return st


def stages_of(st: dict) -> list[str]:
    return [s["stage"] for s in st["output"]["metadata"]["stages"]]


def test_lipsync_only_in_local_testing_mode(tmp_path, media, ray_env):
    st = run_in_local_testing_mode(tmp_path, {
        "job_type": "lipsync_only", "job_id": "local-1", "image": media["portrait"],
        "audio": media["voice_b64"]})
    assert stages_of(st) == ["lipsync", "finisher"]
    out = probe(tmp_path / "store" / "videos" / "local-1" / "lipsync.mp4")
    assert (out.video.width, out.video.height, out.video.fps) == (256, 256, 25)
    assert abs(out.duration_s - probe(media["voice"]).duration_s) <= 1 / 25 + 1e-3


def test_video_render_in_local_testing_mode(tmp_path, media, ray_env):
    st = run_in_local_testing_mode(tmp_path, {
        "job_type": "video_render", "job_id": "local-vr", "image": media["portrait"],
        "audio": media["voice_b64"], "quality": "draft",
        "captions": [{"text": "Local mode", "start": 0.1, "end": 1.0}],
        "format": {"width": 360, "height": 640, "fps": 30}})
    assert stages_of(st) == ["upscale", "lipsync", "face_restore", "finisher"]
    meta = st["output"]["metadata"]
    # upscaled once, before any frame; by Lanczos (no weights), so no model pass is counted
    assert meta["engines"]["upscale"].startswith("lanczos") and meta["counts"]["upscale_runs"] == 0
    assert meta["format"] == {"width": 360, "height": 640, "fps": 30}
    d = tmp_path / "store" / "videos" / "local-vr"
    out = probe(d / "final.mp4")
    assert (out.video.width, out.video.height, out.video.fps) == (360, 640, 30)
    assert abs(out.duration_s - probe(media["voice"]).duration_s) <= 1 / 30 + 1e-3
    assert out.audio is not None and out.audio.codec_name == "aac"
    with Image.open(d / "thumbnail.jpg") as im:
        assert im.format == "JPEG" and im.size == (360, 640)
    assert "Local mode" in (d / "final.srt").read_text()


def test_persona_build_in_local_testing_mode(tmp_path, media, ray_env):
    st = run_in_local_testing_mode(tmp_path, {
        "job_type": "persona_build", "persona_id": "lp", "primary_image": media["portrait"],
        "takes_to_generate": [{"emotion": "neutral", "angle": "front", "intensity": 0.3}]})
    assert stages_of(st) == ["upscale", "lipsync", "face_restore", "finisher"]
    assert st["output"]["metadata"]["stages"][1]["method"] == "render_take"
    takes = st["output"]["metadata"]["base_takes"]
    assert [t["id"] for t in takes] == ["lp_take_0"]
    take = probe(tmp_path / "store" / "personas" / "lp" / "takes" / "take_0.mp4")
    assert (take.video.width, take.video.height, take.video.fps) == (1080, 1920, 25)
    assert abs(take.duration_s - 5.0) <= 1 / 25 + 1e-3 and take.audio is None
    assert abs(takes[0]["duration"] - take.duration_s) <= 1e-3
    manifest = json.loads((tmp_path / "personas" / "lp" / "manifest.json").read_text())
    assert [t["id"] for t in manifest["base_takes"]] == ["lp_take_0"]
    assert probe(tmp_path / "personas" / "lp" / "take_0.mp4").duration_s == take.duration_s


@pytest.mark.slow
def test_real_serve_run_over_http_all_job_types(tmp_path, media, ray_env, monkeypatch):
    """With PF_API_KEY set (as in production), every output link a stage replica made must
    open through the Serve proxy without the key, and a tampered or unsigned link must not."""
    import ray
    from ray import serve

    from serve_app.app import build_app

    key = "serve-test-key-" + "k" * 24
    monkeypatch.setenv("PF_API_KEY", key)  # the replicas inherit it, as in production
    port = free_port()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False,
             log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # declared-gpu: the production GPU fractions (0.5/0.25/0.25) must schedule on one GPU
        serve.run(build_app({"profile": "declared-gpu", "settings": overrides(tmp_path, port)}),
                  name="pf", route_prefix="/")
        base = f"http://127.0.0.1:{port}/v2/test"
        assert httpx.get(f"{base}/status/x", timeout=30).status_code == 401
        c = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"})
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
        persona_job = ids[0]
        assert persona_job.startswith("persona_build_p1_") and ids[1:] == ["http-ls", "http-vr"]
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
        got = download_outputs(final, tmp_path / "got")
    finally:
        serve.shutdown()
        ray.shutdown()

    voice_s = probe(media["voice"]).duration_s
    ls = probe(got["http-ls/video"])
    assert (ls.video.width, ls.video.height, ls.video.fps) == (256, 256, 25)
    assert abs(ls.duration_s - voice_s) <= 1 / 25 + 1e-3
    for job_id, fps in (("http-vr", 30), ("http-take", 25)):
        vr = probe(got[f"{job_id}/video"])
        assert (vr.video.width, vr.video.height, vr.video.fps) == (360, 640, fps)
        assert abs(vr.duration_s - voice_s) <= 1 / fps + 1e-3
        assert vr.audio is not None and vr.audio.codec_name == "aac"
        with Image.open(got[f"{job_id}/thumbnail"]) as im:
            assert im.format == "JPEG" and im.size == (360, 640)
            im.load()  # decodes every byte: a truncated or HTML body fails here
    assert "Hello" in got["http-vr/captions"].read_text()
    meta = final["http-vr"]["output"]["metadata"]
    assert stages_of(final["http-vr"]) == ["upscale", "lipsync", "face_restore", "finisher"]
    assert meta["engines"]["face_restore"].startswith("passthrough")
    # on a persona take nothing is upscaled again: that happened when the persona was built
    assert stages_of(final["http-take"]) == ["lipsync", "face_restore", "finisher"]
    assert final["http-take"]["output"]["metadata"]["counts"]["upscale_runs"] == 0
    takes = final[persona_job]["output"]["metadata"]["base_takes"]
    assert [t["id"] for t in takes] == ["p1_take_0"]
    take = probe(got[f"{persona_job}/p1_take_0"])
    assert abs(take.duration_s - 5.0) <= 1 / 25 + 1e-3
    manifest_text = got[f"{persona_job}/manifest"].read_text()
    assert "http" not in manifest_text and "exp=" not in manifest_text   # keys, never links
    manifest = json.loads(manifest_text)
    assert [t["id"] for t in manifest["base_takes"]] == ["p1_take_0"]
    assert (tmp_path / "personas" / "p1" / "manifest.json").is_file()
    assert (tmp_path / "personas" / "p1" / "take_0.mp4").is_file()


def output_links(final: dict) -> dict[str, str]:
    """Every link a client is handed: each job's outputs, the persona's takes and manifest."""
    links = {}
    for job_id, st in final.items():
        res = st["output"]
        links.update({f"{job_id}/{name}": url for name, url in res["output"].items()})
        meta = res["metadata"]
        links.update({f"{job_id}/{t['id']}": t["video_url"] for t in meta.get("base_takes", [])})
        if "manifest" in meta:
            links[f"{job_id}/manifest"] = meta["manifest"]
    return links


def download_outputs(final: dict, dest) -> dict:
    """GET every output link through the Serve proxy WITHOUT the API key (links are signed);
    a tampered signature or a bare link must be refused."""
    links = output_links(final)
    persona_job = next(job_id for job_id in final if job_id.startswith("persona_build_"))
    assert {"http-ls/video", "http-vr/video", "http-vr/thumbnail", "http-vr/captions",
            "http-take/video", "http-take/thumbnail", f"{persona_job}/p1_take_0",
            f"{persona_job}/manifest"} <= set(links), sorted(links)
    dest.mkdir()
    got = {}
    with httpx.Client(timeout=60) as anon:
        for name, url in links.items():
            r = anon.get(url)
            assert r.status_code == 200, (name, url, r.status_code, r.text[:300])
            got[name] = dest / f"{name.replace('/', '__')}{Path(url.split('?')[0]).suffix}"
            got[name].write_bytes(r.content)
        url = links["http-ls/video"]
        bare, query = url.split("?")
        assert "sig=" in query
        assert anon.get(bare).status_code == 403
        assert anon.get(url.replace("sig=", "sig=0")).status_code == 403
        # a valid signature does not open another file
        other = links["http-vr/video"].split("?")[0] + "?" + query
        assert anon.get(other).status_code == 403
    return got
