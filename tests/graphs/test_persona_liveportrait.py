"""persona_build with LivePortrait, through the Serve composition (local testing mode): the small
golden config's checkpoints on the models volume in the official layout, CPU takes allowed. The
seed's four takes render with engine `liveportrait`, each take's stored face track follows the
director's head pose, the metadata carries the parameters used (and says how `intense` was
read), and a video_render on a take completes on that track (no detection).

Random weights: the pictures are noise in the face region; what is checked is the wiring and
the geometry, never the look.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from faces.track import FaceTrack
from media.ffmpeg import probe
from personas.liveportrait.director import plan_take
from tests.personas.liveportrait.tiny_models import write_tiny_checkpoints
from tests.serve_app.test_serve import run_in_local_testing_mode, stages_of
from tests.support.media import b64, small_portrait, speechlike

SEED_TAKES = [
    {"emotion": "happy", "angle": "front", "intensity": 0.7, "seconds": 0.5},
    {"emotion": "intense", "angle": "three_quarter", "intensity": 0.8, "seconds": 0.5},
    {"emotion": "calm", "angle": "closeup", "intensity": 0.5, "seconds": 0.5},
    {"emotion": "sad", "angle": "front", "intensity": 0.4, "seconds": 0.5},
]
FRAMES = int(round(0.5 * 25))


def nose_offset(points: np.ndarray) -> np.ndarray:
    """Per frame: the nose's x offset from the eyes' midpoint, in inter-ocular distances."""
    eyes = points[:, :2].mean(axis=1)
    iod = np.linalg.norm(points[:, 1] - points[:, 0], axis=1)
    return (points[:, 2, 0] - eyes[:, 0]) / iod


@pytest.mark.slow
def test_persona_build_with_liveportrait_then_render_on_a_take(tmp_path, ray_env, monkeypatch):
    write_tiny_checkpoints(tmp_path / "models")
    monkeypatch.setenv("PF_ALLOW_CPU_TAKES", "1")   # the replicas read it, as in production
    # 1. Build the persona: four takes of half a second (a tiny-config frame is ~2 s on a core).
    st = run_in_local_testing_mode(tmp_path, {
        "job_type": "persona_build", "persona_id": "lp4", "archetype": "calm mentor",
        "primary_image": b64(small_portrait(256)), "takes_to_generate": SEED_TAKES}, 900)
    meta = st["output"]["metadata"]
    assert stages_of(st) == ["upscale"] + ["lipsync", "face_restore", "finisher"] * 4
    assert meta["engines"]["takes"] == "liveportrait"
    takes = meta["base_takes"]
    assert [t["engine"] for t in takes] == ["liveportrait"] * 4
    assert all("PF_ALLOW_CPU_TAKES is on" in t["engine_reason"] for t in takes)

    # 2. The parameters the director used, per take; `intense` is one of its emotions (no
    #    fallback), and an emotion it does not know would say so.
    for spec, take in zip(SEED_TAKES, takes):
        p = take["params"]
        assert (p["emotion_requested"], p["angle"], p["intensity"]) == (
            spec["emotion"], spec["angle"], spec["intensity"])
        assert p["emotion"] == spec["emotion"] and p["fallback"] is False
        assert p["archetype_style"] == "calm" and p["n_frames"] == FRAMES and p["device"] == "cpu"
        assert len(p["source_pose"]) == 3 and p["face_track"] == "director (no detection)"
    assert takes[1]["params"]["base_pose"][1] == pytest.approx(18.0)
    assert plan_take("bored").params["fallback"] is True

    # 3. Each take's stored track: a box and five landmarks per frame in the 1080x1920 take,
    #    the head turned where the director turned it.
    manifest = json.loads((tmp_path / "personas" / "lp4" / "manifest.json").read_text())
    tracks = []
    for take, entry in zip(takes, manifest["base_takes"]):
        assert entry["params"] == take["params"] and entry["engine"] == "liveportrait"
        track = FaceTrack.from_bytes((tmp_path / "store" / entry["track_key"]).read_bytes())
        assert len(track) == FRAMES and track.landmarks is not None and track.source == "landmarks"
        assert (track.boxes >= 0).all() and (track.boxes[:, ::2] <= 1080).all()
        assert (track.boxes[:, 1::2] <= 1920).all()
        tracks.append(track)
    offsets = [nose_offset(t.landmarks).mean() for t in tracks]
    assert offsets[1] < min(offsets[0], offsets[3]) - 0.1       # three_quarter: +18 degrees yaw
    width = [np.mean(t.boxes[:, 2] - t.boxes[:, 0]) for t in tracks]
    assert width[2] > 1.15 * width[0]                          # closeup: framed tighter
    video = probe(tmp_path / "store" / "personas" / "lp4" / "takes" / "take_1.mp4")
    assert (video.video.width, video.video.height) == (1080, 1920)

    # 4. A render on the three-quarter take lip-syncs on that track.
    voice = speechlike(1.0, tmp_path / "voice.wav")
    rendered = run_in_local_testing_mode(tmp_path, {
        "job_type": "video_render", "job_id": "on-take", "persona_id": "lp4",
        "take_id": "lp4_take_1", "audio": b64(voice.read_bytes()), "quality": "draft",
        "format": {"width": 360, "height": 640, "fps": 25}})
    assert stages_of(rendered) == ["lipsync", "face_restore", "finisher"]
    out = probe(tmp_path / "store" / "videos" / "on-take" / "final.mp4")
    assert (out.video.width, out.video.height) == (360, 640)
    assert abs(out.duration_s - probe(voice).duration_s) <= 1 / 25 + 1e-3
