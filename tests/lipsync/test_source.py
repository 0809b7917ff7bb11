"""Frame sources: stills without copies, takes looped forward-backward without a jump cut."""
from __future__ import annotations

import numpy as np
import pytest

from lipsync.source import pingpong_index, still_frames, video_frames
from media.frames import FrameWriter

M = 5        # frames in the test clip; frame k is filled with grey level 40 * k + 20


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("source") / "take.mp4"
    with FrameWriter(path, 32, 24, 25) as writer:
        for k in range(M):
            writer.write(np.full((24, 32, 3), 40 * k + 20, dtype=np.uint8))
    return str(path)


def _levels(frames) -> list[int]:
    return [int(round((float(f.mean()) - 20) / 40)) for f in frames]


def test_pingpong_order():
    assert [pingpong_index(k, 4) for k in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [pingpong_index(k, 1) for k in range(3)] == [0, 0, 0]
    assert [pingpong_index(k, 2) for k in range(4)] == [0, 1, 0, 1]
    with pytest.raises(ValueError):
        pingpong_index(0, 0)


def test_still_frames_are_the_same_array():
    img = np.zeros((4, 4, 3), np.uint8)
    frames = list(still_frames(img, 3))
    assert len(frames) == 3 and all(f is img for f in frames)


def test_video_frames_loop_forward_then_backward(clip):
    frames = list(video_frames(clip, 13))
    assert len(frames) == 13
    assert _levels(frames) == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    # No jump cut: neighbouring frames never differ by more than one step of the clip.
    assert max(abs(a - b) for a, b in zip(_levels(frames), _levels(frames[1:]))) == 1


def test_video_frames_shorter_request_stops_early(clip):
    assert _levels(video_frames(clip, 3)) == [0, 1, 2]
    assert list(video_frames(clip, 0)) == []


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_stopping_early_on_a_long_clip_is_quiet(tmp_path):
    # Enough raw video that ffmpeg is still writing when we stop reading (pipe buffers fill).
    path = tmp_path / "long.mp4"
    rng = np.random.default_rng(0)
    with FrameWriter(path, 128, 96, 25) as writer:
        for _ in range(40):
            writer.write(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    assert len(list(video_frames(path, 2))) == 2
    abandoned = video_frames(path, 100)
    next(abandoned)
    abandoned.close()
