"""Choosing the thumbnail: a representative frame, not a black one and not a mid-blink first one.

The finish graph hands us a few candidate frames (the published picture before encoding, at the
output size) spread over the middle of the video; we score each by sharpness (a blink or a
motion blur softens the face) and by exposure (black, washed-out) and keep the best.
"""
from __future__ import annotations

import numpy as np

# Where candidates are taken, as fractions of the duration: away from the first frame (fade-ins,
# a mouth still closing) and from the held last frame.
CANDIDATE_POSITIONS = (0.2, 0.35, 0.5, 0.65, 0.8)
# Mean luma outside this band (0..1) counts as too dark / too bright to show.
LUMA_OK = (0.12, 0.9)
SCORE_SIZE = 256   # frames are scored at this longer side: cheaper, and noise-insensitive


def candidate_frames(n_frames: int) -> list[int]:
    """Distinct frame numbers at CANDIDATE_POSITIONS of an n-frame video (at least frame 0)."""
    if n_frames <= 0:
        raise ValueError(f"cannot pick a thumbnail from {n_frames} frames")
    picks = sorted({min(n_frames - 1, int(p * n_frames)) for p in CANDIDATE_POSITIONS})
    return picks or [0]


def _luma(rgb: np.ndarray) -> np.ndarray:
    step = max(1, max(rgb.shape[:2]) // SCORE_SIZE)
    small = rgb[::step, ::step].astype(np.float32) / 255.0
    return small @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def frame_score(rgb: np.ndarray) -> tuple[bool, float]:
    """(well exposed, sharpness): compared as a tuple, badly exposed frames lose to any well
    exposed one, then the sharper frame wins."""
    y = _luma(rgb)
    mean = float(y.mean())
    # Variance of a discrete Laplacian: the standard focus measure.
    lap = -4 * y[1:-1, 1:-1] + y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:]
    sharpness = float(lap.var()) if lap.size else 0.0
    return LUMA_OK[0] <= mean <= LUMA_OK[1], sharpness


def pick_thumbnail(frames: list[np.ndarray]) -> int:
    """Index of the best frame in `frames`."""
    if not frames:
        raise ValueError("no candidate frames for the thumbnail")
    scores = [frame_score(f) for f in frames]
    return max(range(len(frames)), key=lambda i: scores[i])
