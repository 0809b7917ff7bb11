"""The LivePortrait take engine on CPU with the small golden config: frame size, an untouched
background, a changed face, determinism, and a face track that follows the director's pose.

Weights are the parity fixtures' rule (weights_rule.py), written in the official file layout and
loaded by the engine's own loader: random networks, so the tests check geometry and plumbing
(where pixels change, which keypoints drive them, what the track says), never picture quality.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from faces import load_detector
from personas.liveportrait.director import plan_take
from personas.liveportrait.engine import (ENGINE, EngineOptions, LivePortraitEngine, face_points,
                                          frame_canvas)
from tests.personas.liveportrait.tiny_models import write_tiny_checkpoints
from tests.support.portrait import portrait as the_portrait

TAKE_S = 0.2          # 5 frames at 25 fps: motion, yet cheap (a tiny-config frame is ~2 s on 1 core)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    d = tmp_path_factory.mktemp("lp-models")
    write_tiny_checkpoints(d)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield LivePortraitEngine.load(d, device="cpu", options=EngineOptions(batch=4))
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def still() -> np.ndarray:
    return cv2.resize(the_portrait(), (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def landmarks(still) -> np.ndarray:
    return load_detector().detect(still)[0].landmarks


def render(engine, still, landmarks, plan, size=None):
    frames: list[np.ndarray] = []
    info = engine.render_take(still, landmarks, plan, lambda f: frames.append(f.copy()), size=size)
    return info, np.stack(frames)


def nose_offset(points: np.ndarray) -> np.ndarray:
    """Per frame: the nose's x offset from the eyes' midpoint, in inter-ocular distances."""
    eyes = points[:, :2].mean(axis=1)
    iod = np.linalg.norm(points[:, 1] - points[:, 0], axis=1)
    return (points[:, 2, 0] - eyes[:, 0]) / iod


def test_frames_have_the_size_and_only_the_face_region_changes(engine, still, landmarks):
    plan = plan_take("happy", "front", 0.7, seconds=TAKE_S, seed=1)
    info, frames = render(engine, still, landmarks, plan)
    assert info.engine == ENGINE and info.frames == len(frames) == plan.n_frames == 5
    assert frames.shape == (5, 256, 256, 3) and frames.dtype == np.uint8
    # The paste-back region of the crop, and its fully opaque core.
    source = engine.prepare(still, landmarks, plan.crop_scale)
    x0, y0, x1, y1 = source.paster.roi
    outside = np.ones((256, 256), bool)
    outside[y0:y1, x0:x1] = False
    assert 0.5 < outside.mean() < 0.99
    # Far background: the still's own pixels, bit for bit, in every frame.
    assert np.array_equal(frames[:, outside], np.broadcast_to(still[outside], frames[:, outside].shape))
    # The face (where the mask is opaque) is the network's render, and it moves over the take.
    mask = source.paster.mask[0, 0].numpy()
    core = np.zeros((256, 256), bool)
    core[y0:y1, x0:x1] = mask > 0.99
    assert core.sum() > 500
    diff = np.abs(frames[:, core].astype(int) - still[core]).mean(axis=(1, 2))
    assert (diff > 5).all()
    assert np.abs(frames[0, core].astype(int) - frames[4, core]).mean() > 0.1


def test_requested_size_frames_the_still_and_moves_the_track_with_it(engine, still, landmarks):
    plan = plan_take("calm", "front", 0.5, seconds=TAKE_S, seed=2)
    info, frames = render(engine, still, landmarks, plan, size=(144, 256))
    assert frames.shape == (5, 256, 144, 3) and (info.width, info.height) == (144, 256)
    canvas, marks = frame_canvas(still, face_points(landmarks), (144, 256))
    assert canvas.shape == (256, 144, 3)
    # Frame 0's track starts at the canvas's own landmarks, moved only by the plan's motion.
    assert np.abs(info.landmarks[0] - marks).max() < 0.1 * np.linalg.norm(marks[1] - marks[0]) + 2
    assert info.face_boxes.shape == (5, 4) and info.landmarks.shape == (5, 5, 2)
    assert np.all(info.face_boxes[:, 2] > info.face_boxes[:, 0])


def test_same_seed_same_frames_other_seed_other_frames(engine, still, landmarks):
    def take(seed):
        return render(engine, still, landmarks, plan_take("sad", "front", 0.4, seconds=TAKE_S,
                                                          seed=seed))[1]

    first = take(5)
    assert np.array_equal(first, take(5))
    assert not np.array_equal(first, take(6))


def test_track_follows_the_directors_yaw(engine, still, landmarks):
    front = plan_take("neutral", "front", 0.6, seconds=TAKE_S, seed=3)
    turned = plan_take("neutral", "three_quarter", 0.6, seconds=TAKE_S, seed=3)
    info_front, _ = render(engine, still, landmarks, front)
    info_turned, _ = render(engine, still, landmarks, turned)
    assert info_turned.params["base_pose"][1] == pytest.approx(18.0)
    # Director convention: +yaw turns the nose towards the image's left; the box narrows.
    shift = nose_offset(info_turned.landmarks).mean() - nose_offset(info_front.landmarks).mean()
    assert shift < -0.1
    width = lambda b: (b[:, 2] - b[:, 0]).mean()
    assert width(info_turned.face_boxes) < 0.99 * width(info_front.face_boxes)
    assert info_turned.params["emotion"] == "neutral" and info_turned.params["fallback"] is False
