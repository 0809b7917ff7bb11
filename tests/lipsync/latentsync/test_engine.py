"""LatentSyncEngine: the animator's interface over the LatentSync pipeline (tiny RANDOM models, CPU).

The models are random: these tests check the engine contract (face finding, frame counts, fps,
affines, weight-file gating), never lip-sync quality.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from faces import load_detector
from faces.boxes import BOX_LANDMARKS, landmarks_from_box
from faces.track import FaceTrack, NoFaceError
from lipsync.latentsync.config import tiny_unet_config
from lipsync.latentsync.engine import EngineSettings, LatentSyncEngine, load_latentsync_engine
from lipsync.latentsync.pipeline import LatentSyncPipeline, PipelineOptions
from lipsync.latentsync.unet import build_unet
from lipsync.latentsync.vae import tiny_vae
from lipsync.latentsync.whisper import WhisperEncoderDims, load_whisper_encoder
from lipsync.source import still_frames
from tests.support.portrait import portrait_256 as astronaut_256
from tests.support.voices import bursts, cartoon_face
from weights.registry import latentsync_names, model_path


@pytest.fixture(scope="module")
def engine() -> LatentSyncEngine:
    torch.manual_seed(0)
    unet = build_unet(tiny_unet_config())
    whisper = load_whisper_encoder(None, tiny_config=WhisperEncoderDims(n_audio_state=64, n_audio_head=2,
                                                                        n_audio_layer=1))
    pipeline = LatentSyncPipeline(unet, tiny_vae(), whisper, options=PipelineOptions())
    # draft = 10 steps + DeepCache: the cheapest preset, and the cached UNet path gets exercised.
    return LatentSyncEngine(pipeline, load_detector(), EngineSettings(quality="draft"),
                            engine="latentsync-tiny-random (float32, cpu)")


@pytest.mark.parametrize("version", ["1.5", "1.6"])
def test_no_engine_without_weights(tmp_path, version):
    assert load_latentsync_engine(tmp_path, version) is None
    # All but one file present: still None (the UNet is missing).
    for name in latentsync_names(version)[1:]:
        path = model_path(tmp_path, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert load_latentsync_engine(tmp_path, version) is None


def test_prepare_finds_the_face_with_landmarks(engine):
    track = engine.prepare(astronaut_256())
    assert track.source == "landmarks" and len(track) == 1
    x0, y0, x1, y1 = track.boxes[0]
    marks = track.landmarks[0]
    assert ((marks[:, 0] > x0) & (marks[:, 0] < x1) & (marks[:, 1] > y0) & (marks[:, 1] < y1)).all()


def test_prepare_without_face_raises_and_face_box_gives_box_landmarks(engine):
    blank = np.full((200, 200, 3), 90, np.uint8)
    with pytest.raises(NoFaceError):
        engine.prepare(blank)
    image, box = cartoon_face()
    track = engine.prepare(image, face_box=box)
    assert track.source == "face_box"
    x0, y0, x1, y1 = box
    expected = np.array([x0, y0]) + BOX_LANDMARKS * [x1 - x0, y1 - y0]
    np.testing.assert_allclose(track.landmarks[0], expected)
    np.testing.assert_allclose(landmarks_from_box(box), expected)
    assert expected[0, 0] < expected[1, 0] and expected[2, 1] < expected[3, 1]  # eyes l/r, nose above mouth


def test_render_rejects_other_frame_rates(engine):
    image = astronaut_256()
    with pytest.raises(ValueError, match="25 fps"):
        engine.render(still_frames(image, 30), engine.prepare(image), np.zeros(16000, np.float32), 30,
                      lambda f: None)


def test_render_still_counts_frames_from_audio_and_records_affines(engine):
    image = astronaut_256()
    track = engine.prepare(image)
    audio = bursts([(0.3, True), (0.2, False), (0.4, True)])  # 0.9 s at 16 kHz
    n = math.ceil(len(audio) * 25 / 16000)
    out: list[np.ndarray] = []
    progress: list[float] = []
    stats = engine.render(still_frames(image, n), track, audio, 25, out.append, progress.append)
    assert stats.frames == len(out) == n == 23
    assert stats.engine == "latentsync-tiny-random (float32, cpu)" and stats.mouth_source == "landmarks"
    assert (stats.quality, stats.steps, stats.deepcache, stats.guidance_scale) == ("draft", 10, True, 1.5)
    assert progress[-1] == pytest.approx(1.0) and progress == sorted(progress)
    affines = engine.affines
    assert affines.shape == (n, 2, 3) and np.isfinite(affines).all()
    assert np.allclose(affines, affines[0])  # a still: one alignment for every frame
    assert all(f.shape == image.shape for f in out) and (out[0] != image).any()
    assert stats.mean_openness > 0  # the voice has speech in it


def test_render_resamples_audio_given_at_another_rate(engine):
    image = astronaut_256()
    audio_22k = np.zeros(int(0.5 * 22050), np.float32)
    out: list[np.ndarray] = []
    stats = engine.render(still_frames(image, 13), engine.prepare(image), audio_22k, 25, out.append,
                          sample_rate=22050, quality="draft")
    assert stats.frames == len(out) == 13  # 0.5 s


def test_render_take_track_passes_faceless_frames_through(engine):
    image = astronaut_256()
    face = engine.prepare(image)
    boxes = np.repeat(face.boxes, 12, axis=0)
    marks = np.repeat(face.landmarks, 12, axis=0)
    boxes[3] = np.nan
    marks[3] = np.nan
    frames = [np.roll(image, k, axis=1) for k in range(12)]
    track = FaceTrack(boxes, marks, "landmarks")
    out: list[np.ndarray] = []
    stats = engine.render(iter(frames), track, np.zeros(int(0.48 * 16000), np.float32), 25, out.append)
    assert stats.frames == 12 and stats.face_frames == 11
    np.testing.assert_array_equal(out[3], frames[3])
    assert np.isnan(engine.affines[3]).all()
    assert (out[2] != frames[2]).any()
