"""Box arithmetic for face detection and tracking: IoU, non-maximum suppression, squaring.

Boxes are float arrays (N, 4) of (x0, y0, x1, y1) in pixels. numpy only, so the rest of the
product (takes, lip-sync) can use it without torch.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0) + max(0.0, bx1 - bx0) * max(0.0, by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float,
        mode: Literal["union", "min"] = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns the kept indices, best score first.

    `mode="min"` divides the overlap by the smaller box's area, which also removes a small box
    sitting inside a bigger one (used on the final MTCNN stage).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x0, y0, x1, y1 = boxes.T
    area = box_area(boxes)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        ih = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = iw * ih
        if mode == "min":
            denom = np.minimum(area[i], area[rest])
        else:
            denom = area[i] + area[rest] - inter
        overlap = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (side = the longer side)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b[:, 0] += (w - side) / 2
    b[:, 1] += (h - side) / 2
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def apply_offsets(boxes: np.ndarray, offsets: np.ndarray, *, inclusive: bool = True) -> np.ndarray:
    """Move box edges by regression offsets given in units of the box size.

    MTCNN's later stages measure width as x1 - x0 + 1 (inclusive pixel count); its first stage
    does not. `inclusive` picks which, to match how the nets were trained.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    extra = 1.0 if inclusive else 0.0
    w = b[:, 2] - b[:, 0] + extra
    h = b[:, 3] - b[:, 1] + extra
    scale = np.stack([w, h, w, h], axis=1)
    return b + np.asarray(offsets, dtype=np.float64).reshape(-1, 4) * scale


# 5 landmarks from a face box alone (stylised faces a detector misses), as fractions of the box:
# eyes, nose tip, mouth corners (MTCNN order). The mouth sits 74% down and 36% wide, where the
# CPU animator puts it; eyes and nose follow a mean face for an MTCNN-shaped box.
BOX_LANDMARKS = np.array([[0.30, 0.38], [0.70, 0.38], [0.50, 0.57], [0.32, 0.74], [0.68, 0.74]])


def landmarks_from_box(box: Sequence[float]) -> np.ndarray:
    """(5, 2) landmarks placed by the box's proportions."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([x0, y0]) + BOX_LANDMARKS * np.array([x1 - x0, y1 - y0])
