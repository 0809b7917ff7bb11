"""CPU base takes: length, framing per angle, small looping motion, grades, tracked face boxes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from faces import iou, load_detector
from faces.track import FaceTrack
from lipsync.animator import MouthAnimator
from lipsync.source import pingpong_index, video_frames
from media.ffmpeg import probe
from media.frames import read_frames
from personas.takes import ANGLES, render_take
from tests.support.voices import bursts


@pytest.fixture(scope="module")
def detector():
    return load_detector()


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def face(detector, portrait):
    return detector.detect(portrait)[0]


@pytest.fixture(scope="module")
def angle_takes(portrait, face, tmp_path_factory):
    out = tmp_path_factory.mktemp("angles")
    takes = {}
    for angle in ANGLES:
        info = render_take(portrait, face, angle, "neutral", 1.0, out / f"{angle}.mp4", seconds=1.2)
        takes[angle] = (info, list(read_frames(info.path)))
    return takes


def _mean_step(frames: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(b.astype(np.int16) - a).mean() for a, b in zip(frames, frames[1:])]))


def test_take_is_five_seconds_at_25_fps(portrait, face, tmp_path):
    info = render_take(portrait, face, "front", "happy", 0.5, tmp_path / "take.mp4")
    media = probe(info.path, count_frames=True)
    assert info.frames == media.video.nb_frames == 125
    assert media.video.fps == 25 and abs(media.duration_s - 5.0) < 0.05
    assert (media.video.width, media.video.height) == (info.width, info.height) == (256, 256)
    assert info.face_boxes.shape == (125, 4) and info.landmarks.shape == (125, 5, 2)


def test_angles_frame_the_face_differently(angle_takes, detector):
    # Measured on the rendered frames with the detector, not from what render_take says.
    share = {}
    for angle, (info, frames) in angle_takes.items():
        found = detector.detect(frames[0])
        assert len(found) == 1
        share[angle] = found[0].height / info.height
    assert share["closeup"] > 1.15 * share["three_quarter"] > 1.15 * 1.15 * share["front"]
    # three_quarter is not just a zoom: the face sits off-centre and the picture is tilted.
    info, frames = angle_takes["three_quarter"]
    cx = np.mean(detector.detect(frames[0])[0].box[::2])
    assert abs(cx - info.width / 2) > 0.05 * info.width


def test_returned_face_boxes_track_the_face(angle_takes, detector):
    for angle, (info, frames) in angle_takes.items():
        for k in (0, 7, 15, 22, len(frames) - 1):
            found = detector.detect(frames[k])
            assert iou(found[0].box, info.face_boxes[k]) > 0.6, (angle, k)
            assert np.abs(found[0].landmarks - info.landmarks[k]).max() < 0.06 * info.height


def test_motion_is_small_scaled_by_intensity_and_loops(portrait, face, tmp_path):
    steps, seams = {}, {}
    for intensity in (0.0, 0.5, 1.0):
        info = render_take(portrait, face, "front", "neutral", intensity,
                           tmp_path / f"i{intensity}.mp4", seconds=2.0, lossless=True)
        frames = list(read_frames(info.path))
        steps[intensity] = _mean_step(frames)
        seams[intensity] = float(np.abs(frames[-1].astype(np.int16) - frames[0]).mean())
        boxes = info.face_boxes
        drift = np.abs(boxes - boxes[0]).max()
        assert drift <= 1e-6 if intensity == 0 else 0.5 < drift < 0.06 * info.width
    assert steps[0.0] < 0.05                                   # intensity 0: a still frame
    assert steps[0.0] < steps[0.5] < steps[1.0] < 6.0          # present, growing, small
    assert seams[1.0] < 2.0 * steps[1.0]                       # last -> first is one more step


def test_emotion_is_a_mild_colour_grade(portrait, face, tmp_path):
    def red_blue(emotion: str) -> tuple[float, float]:
        info = render_take(portrait, face, "closeup", emotion, 0.0, tmp_path / f"{emotion}.mp4",
                           seconds=0.2, lossless=True)
        frame = list(read_frames(info.path))[0].astype(float)
        return frame[..., 0].mean() / frame[..., 2].mean(), info.grade

    neutral, grade_n = red_blue("neutral")
    happy, grade_h = red_blue("happy")
    sad, grade_s = red_blue("sad")
    unknown, grade_u = red_blue("wistful-ish")
    assert (grade_n, grade_h, grade_s, grade_u) == ("none", "warm", "cool", "none")
    assert neutral * 1.03 < happy < neutral * 1.2                # warmer, but mild
    assert neutral / 1.2 < sad < neutral / 1.03                  # cooler, but mild
    assert unknown == pytest.approx(neutral, rel=1e-3)


def test_unknown_angle_lists_the_known_ones(portrait, face, tmp_path):
    with pytest.raises(ValueError, match="front, three_quarter, closeup"):
        render_take(portrait, face, "profile", "neutral", 0.5, tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="intensity"):
        render_take(portrait, face, "front", "neutral", 1.5, tmp_path / "x.mp4")


def test_take_feeds_lipsync_without_detection(angle_takes, portrait):
    info, frames = angle_takes["closeup"]
    # 2.4 s of speech over a 1.2 s take: the take loops ping-pong under the voice.
    audio = bursts([(0.2, False), (0.6, True), (0.3, False), (0.9, True), (0.4, False)])
    animator = MouthAnimator(detector=None)                      # no detection available
    track = FaceTrack(info.face_boxes, info.landmarks)
    out: list[np.ndarray] = []

    stats = animator.render(video_frames(info.path, 10**6), track, audio, 25, out.append)

    assert stats.frames == len(out) > info.frames
    # The only changes vs the looped take are at the mouth the take's landmarks point to.
    loop = [frames[pingpong_index(k, info.frames)] for k in range(len(out))]
    diffs = [np.abs(o.astype(np.int16) - f).max(axis=2) for o, f in zip(out, loop)]
    k = int(np.argmax([d.sum() for d in diffs]))
    ys, xs = np.nonzero(diffs[k] > 8)
    mouth = info.landmarks[pingpong_index(k, info.frames), 3:].mean(axis=0)
    assert len(xs) > 50
    assert abs(np.median(xs) - mouth[0]) < 0.1 * info.width
    assert 0 < np.median(ys) - mouth[1] < 0.12 * info.height
