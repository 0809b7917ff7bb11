"""Face geometry shared by every stage that places a face: point checks and the similarity fit
that takes landmarks onto a template (lip-sync's alignment, face restore's FFHQ crop, the
LivePortrait crop)."""
from __future__ import annotations

import numpy as np


def check_points(pts: np.ndarray, n: int | None, what: str) -> np.ndarray:
    arr = np.asarray(pts, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or (n is not None and arr.shape[0] != n):
        want = f"({n}, 2)" if n is not None else "(N, 2)"
        raise ValueError(f"{what}: expected points of shape {want}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: points contain NaN or inf")
    return arr


def fit_similarity_lstsq(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares similarity (rotation, uniform scale, translation) src → dst, (2, 3)."""
    src, dst = check_points(src, None, "source"), check_points(dst, src.shape[0], "target")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    cs, cd = (w[:, None] * src).sum(0) / w.sum(), (w[:, None] * dst).sum(0) / w.sum()
    s, d = src - cs, dst - cd
    norm = (w * (s ** 2).sum(1)).sum()
    if norm <= 0:
        raise ValueError("source points coincide: no similarity can be fitted")
    a = (w * (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1])).sum() / norm
    b = (w * (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0])).sum() / norm
    A = np.array([[a, -b], [b, a]])
    return np.concatenate([A, (cd - A @ cs)[:, None]], axis=1)
