"""video_render end to end through the in-process service, with every finishing input: music,
ambience and an SFX fetched from a 127.0.0.1 server, ducking, captions, a face-restore weight.
Everything is measured on what the job stored: loudness and true peak by ffmpeg's ebur128, the
click's time in the decoded audio, the duration, caption pixels per frame, the SRT sidecar next
to the video, and the thumbnail's size."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.storage import open_storage
from media.ffmpeg import probe
from media.frames import load_image, read_frames, write_wav
from serve_app.api import build_api
from serve_app.inprocess import build_service
from serve_app.inputs import FetchPolicy
from tests.support.finishing import click_time, ebur128
from tests.support.media import b64, small_portrait, speechlike
from tests.support.service import BASE, RecordingStage, wait_final

W, H, FPS = 216, 384, 30
SR = 48000
VOICE_S = 3.0
CLICK_AT = 1.30          # inside a gap of the voice (helpers.speechlike is silent 0.25-0.5 s
                         # into each half second), so only the click is broadband there
CAPTION = {"text": "Hello world", "start": 0.5, "end": 1.5}
GREEN = "#00FF00"        # a fill no portrait pixel has: caption pixels are unambiguous
WEIGHT = 0.8


def wav_bytes(samples: np.ndarray, rate: int, tmp_path, name: str) -> bytes:
    path = tmp_path / name
    write_wav(path, samples.astype(np.float32), rate)
    return path.read_bytes()


def tone(freq: float, seconds: float, rate: int, level: float) -> np.ndarray:
    return level * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


@pytest.fixture
def rendered(settings, server, tmp_path):
    from serve_app.inprocess import build_stages

    voice = speechlike(VOICE_S, tmp_path / "voice.wav")          # 16 kHz mono
    # 44.1 kHz stereo music shorter than the voice (loops); 22.05 kHz mono ambience longer
    # than it (trimmed); a 48 kHz click: three rates, one mix.
    music = np.stack([tone(200, 1.2, 44100, 0.3), tone(200, 1.2, 44100, 0.25)], axis=1)
    click = np.zeros(SR // 10)
    click[:2] = 0.9
    urls = {
        "music_url": server.serve("/music.wav", wav_bytes(music, 44100, tmp_path, "m.wav"),
                                  "audio/wav"),
        "ambience_url": server.serve("/room.wav", wav_bytes(tone(90, 5.0, 22050, 0.1), 22050,
                                                             tmp_path, "a.wav"), "audio/wav"),
        "click": server.serve("/click.wav", wav_bytes(click, SR, tmp_path, "c.wav"), "audio/wav"),
    }
    job = {"job_type": "video_render", "job_id": "render-all", "image": b64(small_portrait(256)),
           "audio": b64(voice.read_bytes()), "quality": "draft",
           "music_url": urls["music_url"], "ambience_url": urls["ambience_url"],
           "sfx_tracks": [{"url": urls["click"], "start_time": CLICK_AT, "volume": 1.0}],
           "ducking_config": {"base_volume": 0.2, "attack_ms": 40, "release_ms": 250},
           "captions": [CAPTION],
           "caption_style": {"font_size": 120, "color": GREEN, "stroke_color": "black",
                             "stroke_width": 3, "position_y": 0.8},
           "format": {"width": W, "height": H, "fps": FPS},
           "face_restore_weight": WEIGHT}
    storage = open_storage(settings)
    stages = build_stages(settings, storage)
    stages["face_restore"] = RecordingStage(stages["face_restore"])
    app = build_api()
    service = build_service(settings, stages=stages)
    service.policy = FetchPolicy(allow_http=True, trusted_networks=("127.0.0.1/32",))
    app.state.service = service
    with TestClient(app) as c:
        r = c.post(f"{BASE}/run", json={"input": job})
        assert r.status_code == 200, r.text
        st = wait_final(c, "render-all", timeout=600)
        assert st["status"] == "COMPLETED", st
        files = {}
        for name, url in st["output"]["output"].items():
            got = c.get(url.replace(settings.public_base_url, ""))
            assert got.status_code == 200, (name, got.text)
            files[name] = tmp_path / f"got_{name}"
            files[name].write_bytes(got.content)
    return {"status": st, "files": files, "voice": voice,
            "restore_requests": stages["face_restore"].requests}


def test_render_with_every_finishing_input(rendered, tmp_path):
    st, files = rendered["status"], rendered["files"]
    out = st["output"]["output"]
    assert set(out) == {"video", "thumbnail", "captions", "audio"}
    video = str(files["video"])

    # Loudness and true peak of the decoded output, by ffmpeg's own meter.
    integrated, true_peak = ebur128(video, tmp_path)
    assert abs(integrated - (-14.0)) <= 1.0
    assert true_peak <= -1.0

    # The click: the only broadband sound (voice, music and ambience are all below 1 kHz).
    at, prominence = click_time(video, SR)
    assert abs(at - CLICK_AT) <= 0.010 and prominence > 20

    # A/V length: the voice's, to a frame.
    voice_s = probe(rendered["voice"]).duration_s
    info = probe(video)
    assert abs(info.duration_s - voice_s) <= 1 / FPS + 1e-3
    assert (info.video.width, info.video.height) == (W, H) and info.video.fps == FPS

    # Caption pixels on the frames inside [start, end), none outside (one frame of slack).
    green = np.array([int(((f[..., 1] > 180) & (f[..., 0] < 110) & (f[..., 2] < 110)).sum())
                      for f in read_frames(video)])
    t = np.arange(len(green)) / FPS
    inside = (t >= CAPTION["start"] + 1 / FPS) & (t < CAPTION["end"] - 1 / FPS)
    outside = (t < CAPTION["start"] - 1 / FPS) | (t >= CAPTION["end"] + 1 / FPS)
    assert green[inside].min() > 50, green
    assert green[outside].max() == 0, green

    # The SRT sidecar sits next to the video, with the caption's own text and times.
    assert out["captions"].split("?")[0].endswith("videos/render-all/final.srt")
    assert out["video"].split("?")[0].endswith("videos/render-all/final.mp4")
    srt = files["captions"].read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:00,500 --> 00:00:01,500\nHello world")

    # The audio export: the final mix alone, AAC in .m4a, as long and as loud as the video's.
    assert out["audio"].split("?")[0].endswith("videos/render-all/audio.m4a")
    export = probe(files["audio"])
    assert export.video is None and export.audio.codec_name == "aac"
    assert abs(export.duration_s - info.duration_s) <= 1 / FPS + 1e-3
    assert abs(ebur128(str(files["audio"]), tmp_path)[0] - integrated) <= 0.5

    # The thumbnail is at the output format's size.
    assert load_image(files["thumbnail"]).shape == (H, W, 3)
    meta = st["output"]["metadata"]
    assert meta["format"] == {"width": W, "height": H, "fps": FPS}

    # The face-restore weight reached the restore stage's request.
    assert [r.weight for r in rendered["restore_requests"]] == [WEIGHT]
