"""The embedded mouth animator: the mouth moves with the voice, nothing else moves, counts exact."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from faces import load_detector
from faces.track import FaceTrack, NoFaceError
from lipsync.animator import MouthAnimator, mouth_geometry
from lipsync.source import still_frames
from lipsync.voice import frame_count, openness_curve
from media.ffmpeg import probe
from media.frames import FrameWriter
from tests.support.portrait import EYES_BOX_256, MOUTH_BOX_256
from tests.support.portrait import portrait_256 as astronaut_256
from tests.support.voices import FPS, SR, bursts, cartoon_face, frame_rms, vowel

# 2.6 s: speech bursts of 0.24-0.4 s between silences of 0.2-0.36 s.
PATTERN = [(0.2, False), (0.32, True), (0.28, False), (0.24, True), (0.2, False), (0.4, True),
           (0.36, False), (0.28, True), (0.32, False)]


@pytest.fixture(scope="module")
def animator() -> MouthAnimator:
    return MouthAnimator(load_detector())


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return astronaut_256()


def _region_change(frames: list[np.ndarray], still: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    ref = still[y0:y1, x0:x1].astype(np.int16)
    return np.array([np.abs(f[y0:y1, x0:x1].astype(np.int16) - ref).mean() for f in frames])


def test_mouth_moves_with_the_voice_and_nothing_far_from_it(animator, portrait):
    audio = bursts(PATTERN)
    track = animator.prepare(portrait)
    frames: list[np.ndarray] = []

    stats = animator.render(still_frames(portrait, 1000), track, audio, FPS, frames.append)

    n = frame_count(len(audio), FPS)
    assert stats.frames == len(frames) == n == 65
    change = _region_change(frames, portrait, MOUTH_BOX_256)
    rms = frame_rms(audio, n)
    assert np.corrcoef(change, rms)[0, 1] > 0.7
    loud, silent = rms > 0.5 * rms.max(), rms == 0
    assert change[loud].mean() > 8.0                       # visibly open (mean |diff| in 8-bit)
    # Once the jaw has had 0.2 s to close (5 frames of release), silence leaves the mouth
    # exactly as in the still; the whole of the silences stays far below the bursts.
    settled = np.array([silent[max(0, i - 5):i + 1].all() for i in range(n)])
    assert settled.sum() >= 10 and change[settled].max() == 0.0
    assert change[silent].mean() < 0.2 * change[loud].mean()
    # Far from the mouth nothing changes: the eyes, and everything outside the lower face.
    assert _region_change(frames, portrait, EYES_BOX_256).max() == 0.0
    mask = np.ones(portrait.shape[:2], bool)
    mask[50:130, 70:155] = False
    assert max(np.abs(f.astype(np.int16) - portrait)[mask].max() for f in frames) == 0


def test_frames_never_cut_to_a_block_size(animator, portrait):
    track = animator.prepare(portrait)
    for seconds in (2.17, 0.52, 1.0, 0.98):
        audio = vowel(seconds) * 0.3
        count = []
        animator.render(still_frames(portrait, 1000), track, audio, FPS, count.append)
        assert len(count) == round(seconds * FPS)
        assert len(openness_curve(audio, FPS)) == round(seconds * FPS)
    assert frame_count(int(2.17 * SR), 30) == 65         # other rates: round, not floor


def test_streams_into_frame_writer(animator, portrait, tmp_path):
    audio = bursts([(0.5, False), (1.17, True), (0.5, False)])   # 2.17 s
    out = tmp_path / "lipsync.mp4"
    track = animator.prepare(portrait)
    seen = []
    with FrameWriter(out, 256, 256, FPS) as writer:
        stats = animator.render(still_frames(portrait, 1000), track, audio, FPS, writer.write,
                                progress=seen.append)
    info = probe(out, count_frames=True)
    assert info.video.nb_frames == stats.frames == 54
    assert seen[-1] == 1.0 and all(a < b for a, b in zip(seen, seen[1:]))


def test_memory_does_not_grow_with_audio_length(animator, portrait):
    # 60 s of voice = 1500 frames of 196 KB (294 MB if kept); the render must hold about one.
    audio = np.tile(bursts(PATTERN[:3]), 75)[:60 * SR]
    track = animator.prepare(portrait)
    kept = []
    tracemalloc.start()
    try:
        stats = animator.render(still_frames(portrait, 10**6), track, audio, FPS,
                                lambda f: kept.append(float(f[70, 112, 0])))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.frames == len(kept) == 1500
    assert peak < 20 * 2**20


def test_face_box_drives_a_cartoon_mtcnn_cannot_see(animator):
    img, box = cartoon_face()
    assert animator.detector.detect(img) == []                     # the premise of the test
    with pytest.raises(NoFaceError, match="face_box"):
        animator.prepare(img)

    track = animator.prepare(img, face_box=box)
    audio = bursts(PATTERN)
    frames: list[np.ndarray] = []
    stats = animator.render(still_frames(img, 1000), track, audio, FPS, frames.append)

    assert stats.mouth_source == "face_box" == track.source
    change = _region_change(frames, img, (100, 156, 156, 190))     # the drawn mouth and chin
    rms = frame_rms(audio, len(frames))
    assert np.corrcoef(change, rms)[0, 1] > 0.7
    assert change[rms > 0.5 * rms.max()].mean() > 8.0
    assert _region_change(frames, img, (90, 90, 166, 120)).max() == 0.0   # the eyes stay


def test_face_box_near_a_detected_face_uses_its_landmarks(animator, portrait):
    track = animator.prepare(portrait, face_box=(88, 28, 136, 88))
    assert track.source == "landmarks" and track.landmarks is not None


def test_no_face_and_no_box_is_a_clear_error(animator):
    flat = np.full((200, 200, 3), 128, dtype=np.uint8)
    with pytest.raises(NoFaceError, match=r"input\.face_box=\[x0,y0,x1,y1\]"):
        animator.prepare(flat)
    with pytest.raises(ValueError, match="x1 > x0"):
        animator.prepare(flat, face_box=(50, 50, 40, 60))


def test_render_refuses_a_short_frame_source(animator, portrait):
    track = animator.prepare(portrait)
    audio = vowel(1.0)
    with pytest.raises(ValueError, match="ended after 10 of 25"):
        animator.render(still_frames(portrait, 10), track, audio, FPS, lambda f: None)


def test_openness_is_zero_in_silence_and_follows_vowels_more_than_hiss():
    assert not openness_curve(np.zeros(SR * 2, np.float32), FPS).any()
    rng = np.random.default_rng(3)
    open_vowel = vowel(1.0, formants=(750, 1150, 2500)) * 0.3
    hiss = np.fft.irfft(np.fft.rfft(rng.standard_normal(SR)) * (np.fft.rfftfreq(SR, 1 / SR) > 3500))
    hiss = (hiss / np.sqrt(np.mean(hiss ** 2)) * np.sqrt(np.mean(open_vowel ** 2))).astype(np.float32)
    pieces = np.concatenate([open_vowel, np.zeros(SR // 2, np.float32), hiss])
    curve = openness_curve(pieces, FPS)
    vowel_part, hiss_part = curve[5:22], curve[45:62]              # steady parts
    assert vowel_part.mean() > 0.6
    assert hiss_part.mean() < 0.5 * vowel_part.mean()
    # Relative loudness: the same voice 12 dB quieter moves the mouth about the same.
    quiet = openness_curve(pieces * 0.25, FPS)
    np.testing.assert_allclose(quiet, curve, atol=0.05)


def test_track_from_take_boxes_reads_ping_pong():
    boxes = np.array([[0, 0, 100, 100], [10, 0, 110, 100], [20, 0, 120, 100]], float)
    track = FaceTrack(boxes)
    xs = [mouth_geometry(track, k).center[0] for k in range(6)]
    assert xs == [50, 60, 70, 60, 50, 60]
