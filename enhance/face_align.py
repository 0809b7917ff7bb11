"""Face crops for GFPGAN from landmarks the lip-sync stage already found (no second detection).

GFPGAN was trained on FFHQ-aligned 512x512 faces: a similarity transform puts the five points
(eyes, nose tip, mouth corners) on the FFHQ template. These template coordinates are the
published constants of that alignment (facts, not code).
"""
from __future__ import annotations

import cv2
import numpy as np

from faces.geometry import fit_similarity_lstsq

CROP = 512
# left eye, right eye, nose tip, mouth left, mouth right at 512x512
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.19360],
                              [256.63416, 314.01935], [201.26117, 371.41043],
                              [313.08905, 371.15118]], dtype=np.float64)


def frame_to_crop(landmarks: np.ndarray, size: int = CROP) -> np.ndarray:
    """(2, 3) similarity taking frame pixels to the aligned `size` crop."""
    template = FFHQ_TEMPLATE_512 * (size / 512.0)
    return fit_similarity_lstsq(np.asarray(landmarks, np.float64).reshape(5, 2), template)


def crop_faces(frames: np.ndarray, to_crop: np.ndarray, size: int = CROP) -> np.ndarray:
    """(N, size, size, 3) aligned crops of (N, H, W, 3) frames with per-frame (N, 2, 3) matrices."""
    return np.stack([cv2.warpAffine(f, m, (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT101)
                     for f, m in zip(frames, to_crop)])


def crop_region(landmarks: np.ndarray, frame_hw: tuple[int, int], size: int = CROP,
                margin: int = 2) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1): the frame pixels the aligned crop of these landmarks reads (and its
    paste-back writes), `margin` px more for the interpolation. None when the crop reaches past
    the frame's edge (its border is then reflected from the frame, so a part of the frame would
    not crop the same)."""
    to_crop = frame_to_crop(landmarks, size)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64).T
    pts = cv2.invertAffineTransform(to_crop) @ corners
    h, w = frame_hw
    x0, y0 = int(np.floor(pts[0].min())) - margin, int(np.floor(pts[1].min())) - margin
    x1, y1 = int(np.ceil(pts[0].max())) + margin, int(np.ceil(pts[1].max())) + margin
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        return None
    return (x0, y0, x1, y1)


def invert(to_crop: np.ndarray) -> np.ndarray:
    """Crop->frame matrices (what enhance.restore.paste_back takes) from frame->crop ones."""
    return np.stack([cv2.invertAffineTransform(m) for m in np.asarray(to_crop, np.float64)])
