"""Frame sources for lip-sync: a still reused for every frame, or a take video looped ping-pong.

Both stream: memory does not grow with the number of frames asked for. A take shorter than the
voice is played forward then backward (0, 1, ..., m-1, m-2, ..., 1, 0, 1, ...) so the loop has
no jump cut; the frames of the first pass are spooled to a temporary file on disk, not to RAM.
"""
from __future__ import annotations

import os
import tempfile
from typing import Iterator

import numpy as np

from faces.track import pingpong_index
from media.ffmpeg import MediaError
from media.frames import read_frames


def still_frames(image: np.ndarray, n: int) -> Iterator[np.ndarray]:
    """Yield the same array n times (no copies: consumers must not modify it in place)."""
    if n < 0:
        raise ValueError(f"frame count must be >= 0, got {n}")
    for _ in range(n):
        yield image


def video_frames(path: str | os.PathLike, n: int, fps: float = 25) -> Iterator[np.ndarray]:
    """Yield n RGB frames of the video at `path` (resampled to `fps`), ping-pong looped.

    Frames after the first pass are read back from a raw spool file (one frame in memory at a
    time), which is deleted when the generator finishes or is closed.
    """
    if n < 0:
        raise ValueError(f"frame count must be >= 0, got {n}")
    if n == 0:
        return
    spool = None
    shape: tuple[int, ...] | None = None
    m = 0
    reader = read_frames(path, fps=fps)
    try:
        # 1. First pass: stream straight from the decoder, spooling each frame in case we loop.
        for frame in reader:
            if m + 1 < n:
                if spool is None:
                    shape = frame.shape
                    spool = tempfile.TemporaryFile(prefix="take_frames_")
                spool.write(np.ascontiguousarray(frame).tobytes())
            yield frame
            m += 1
            if m == n:
                return
        if m == 0:
            raise ValueError(f"{os.path.basename(str(path))} has no frames to loop")
        # 2. Later passes: ping-pong over the spooled frames.
        spool.flush()
        frames = np.memmap(spool, dtype=np.uint8, mode="r", shape=(m, *shape))
        for k in range(m, n):
            yield np.array(frames[pingpong_index(k, m)])
        del frames
    finally:
        _close_reader(reader)
        if spool is not None:
            spool.close()


def _close_reader(reader: Iterator[np.ndarray]) -> None:
    # Closing read_frames before its end (we, or our consumer, stopped early) makes ffmpeg die
    # of a broken pipe, which read_frames reports as MediaError: our doing, not a decode error.
    # Once the reader has run to its end, close() does nothing.
    try:
        reader.close()
    except MediaError:
        pass
