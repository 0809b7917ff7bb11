"""Base takes for a persona on CPU: a short looping clip of the portrait per (angle, emotion).

Honest scope of this embedded engine ("embedded-take-reframer"): it does not re-pose the head or
re-act the face. An angle is a camera framing of the same photo (front = the whole portrait
centred on the face, three_quarter = a tighter off-centre crop with a mild perspective tilt that
suggests a turn, closeup = a tight crop on the face); idle life is a slow breathing scale and a
small sway, periodic over the take so it loops; emotion is a mild colour grade (warm for happy,
cool for sad, ...). Every frame's face box (and landmarks, when given) is returned, so lip-sync
on the take needs no face detection.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from faces.mtcnn import Face
from media.frames import FrameWriter

ENGINE = "embedded-take-reframer"
ANGLES = ("front", "three_quarter", "closeup")
# Crop heights: a closeup shows ~2.4 face heights; the front crop leaves room for the sway.
CLOSEUP_FACE_HEIGHTS = 2.4
MOTION_MARGIN = 1.08
BREATH_PERIOD_S = 4.0
# Three-quarter: face placed off-centre by this fraction of the frame width, and the far side
# of the picture squeezed vertically by this fraction (a plane turned about a vertical axis).
THREE_QUARTER_OFFSET = 0.08
THREE_QUARTER_KEYSTONE = 0.06

# Mild colour grades: per-channel gains (R, G, B) and a saturation factor, at full strength.
GRADES: dict[str, tuple[str, tuple[float, float, float], float]] = {
    "happy": ("warm", (1.06, 1.02, 0.92), 1.08),
    "joyful": ("warm", (1.06, 1.02, 0.92), 1.08),
    "excited": ("warm", (1.07, 1.02, 0.90), 1.12),
    "confident": ("warm", (1.04, 1.01, 0.95), 1.05),
    "sad": ("cool", (0.94, 0.99, 1.07), 0.85),
    "melancholic": ("cool", (0.94, 0.99, 1.07), 0.85),
    "angry": ("red", (1.08, 0.97, 0.95), 1.05),
    "calm": ("soft cool", (0.98, 1.00, 1.03), 0.95),
    "serious": ("muted", (1.00, 1.00, 1.00), 0.88),
    "surprised": ("bright", (1.04, 1.04, 1.04), 1.02),
    "neutral": ("none", (1.0, 1.0, 1.0), 1.0),
}


@dataclass(frozen=True, eq=False)
class TakeInfo:
    path: str
    frames: int
    fps: float
    width: int
    height: int
    face_boxes: np.ndarray               # (frames, 4) x0, y0, x1, y1 in output pixels
    landmarks: np.ndarray | None         # (frames, 5, 2) when the face came with landmarks
    angle: str
    emotion: str
    intensity: float
    grade: str                           # the colour grade applied ("none" when unknown)
    engine: str = ENGINE


def render_take(image: np.ndarray, face: Face | Sequence[float], angle: str, emotion: str,
                intensity: float, out_path: str | os.PathLike, seconds: float = 5.0,
                fps: float = 25, size: tuple[int, int] | None = None, *,
                lossless: bool = False) -> TakeInfo:
    """Render one take of `image` to `out_path` (mp4, x264 crf 18 or lossless).

    Args:
        image: RGB uint8 portrait.
        face: the face to frame: a detected `Face` (its landmarks are tracked too) or a box.
        angle: one of ANGLES.
        emotion: free label; known ones (GRADES) get a colour grade, others none.
        intensity: 0..1, scales the idle motion (0 = a still frame) and the grade.
        seconds, fps: take length; frames = round(seconds x fps).
        size: output (width, height), even; default the image's size rounded down to even.
    """
    # 1. Check inputs.
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if angle not in ANGLES:
        raise ValueError(f"unknown angle {angle!r}; known angles: {', '.join(ANGLES)}")
    if not 0.0 <= float(intensity) <= 1.0:
        raise ValueError(f"intensity must be within 0..1, got {intensity}")
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"seconds and fps must be positive, got {seconds}, {fps}")
    box, marks = _face_parts(face, image.shape)
    h, w = image.shape[:2]
    out_w, out_h = size if size is not None else (w - w % 2, h - h % 2)
    n = int(round(seconds * fps))
    intensity = float(intensity)

    # 2. Framing for the angle (source -> output), and the grade once on the source.
    base = _framing(angle, box, (w, h), (out_w, out_h))
    grade_name, graded = _grade(image, emotion, 0.5 + 0.5 * intensity)
    face_centre = _apply(base, np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]]))[0]
    corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]])

    # 3. Frame by frame: idle motion about the face, warp, write; keep each frame's face box.
    face_boxes = np.zeros((n, 4))
    face_marks = np.zeros((n, 5, 2)) if marks is not None else None
    with FrameWriter(out_path, out_w, out_h, fps, lossless=lossless, crf=18) as writer:
        for i in range(n):
            full = _idle_motion(i, n, fps, intensity, face_centre, (out_w, out_h)) @ base
            writer.write(cv2.warpPerspective(graded, full, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_REFLECT101))
            moved = _apply(full, corners)
            face_boxes[i] = (*moved.min(axis=0), *moved.max(axis=0))
            if face_marks is not None:
                face_marks[i] = _apply(full, marks)
    return TakeInfo(path=str(out_path), frames=n, fps=float(fps), width=out_w, height=out_h,
                    face_boxes=face_boxes, landmarks=face_marks, angle=angle, emotion=emotion,
                    intensity=intensity, grade=grade_name)


def _face_parts(face: Face | Sequence[float], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(face, Face):
        box, marks = np.asarray(face.box, dtype=np.float64), np.asarray(face.landmarks, np.float64)
    else:
        box, marks = np.asarray(face, dtype=np.float64).reshape(-1), None
    if box.shape != (4,) or not (box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"face must be a Face or a box [x0, y0, x1, y1], got {face!r}")
    h, w = shape[:2]
    if box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h:
        raise ValueError(f"face box {box.tolist()} lies outside the {w}x{h} image")
    return box, marks


def _framing(angle: str, box: np.ndarray, src_wh: tuple[int, int],
             out_wh: tuple[int, int]) -> np.ndarray:
    """3x3 map from source pixels to output pixels for the angle's crop (and tilt)."""
    (w, h), (out_w, out_h) = src_wh, out_wh
    aspect = out_w / out_h
    face_h = box[3] - box[1]
    fcx, fcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    fit_h = min(h, w / aspect) / MOTION_MARGIN           # largest crop with room for the sway
    close_h = min(fit_h, CLOSEUP_FACE_HEIGHTS * face_h)
    offset = 0.0
    if angle == "front":
        crop_h, cy = fit_h, fcy
    elif angle == "closeup":
        crop_h, cy = close_h, fcy + 0.05 * face_h        # a little chin room
    else:                                                 # three_quarter: between the two
        crop_h, cy = math.sqrt(fit_h * close_h), fcy
        # The subject "turns" toward the roomier side of the photo: the face sits off-centre,
        # away from that side, leaving look room (+1: turned right).
        offset = THREE_QUARTER_OFFSET if fcx < w / 2 else -THREE_QUARTER_OFFSET
    crop_w = crop_h * aspect
    cx = fcx + offset * crop_w
    cx = float(np.clip(cx, crop_w / 2, w - crop_w / 2)) if crop_w <= w else w / 2
    cy = float(np.clip(cy, crop_h / 2, h - crop_h / 2)) if crop_h <= h else h / 2
    s = out_h / crop_h
    crop = np.array([[s, 0, out_w / 2 - s * cx], [0, s, out_h / 2 - s * cy], [0, 0, 1.0]])
    if angle != "three_quarter":
        return crop
    # Keystone: the side the subject turns toward recedes (shrinks), the other keeps its height.
    k = THREE_QUARTER_KEYSTONE * out_h / 2
    far_x = out_w if offset > 0 else 0
    src = np.float32([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]])
    dst = src.copy()
    for j in range(4):
        if dst[j, 0] == far_x:
            dst[j, 1] += k if dst[j, 1] == 0 else -k
    return cv2.getPerspectiveTransform(src, dst) @ crop


def _idle_motion(i: int, n: int, fps: float, intensity: float, centre: np.ndarray,
                 out_wh: tuple[int, int]) -> np.ndarray:
    """3x3 breathing scale + sway + tilt about the face; every term repeats over the take."""
    if intensity <= 0.0:
        return np.eye(3)
    out_w, out_h = out_wh
    phase = 2 * math.pi * i / n
    breaths = max(1, round(n / fps / BREATH_PERIOD_S))   # whole breaths so the take loops
    breath = math.sin(breaths * phase)
    scale = 1.0 + 0.015 * intensity * breath
    angle = 0.8 * intensity * math.sin(phase + 1.3)      # degrees
    dx = 0.012 * out_w * intensity * math.sin(phase)
    dy = 0.006 * out_h * intensity * math.sin(2 * phase + 0.7) - 0.004 * out_h * intensity * breath
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    m[:, 2] += (dx, dy)
    return np.vstack([m, [0.0, 0.0, 1.0]])


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.column_stack([pts, np.ones(len(pts))]) @ m.T
    return out[:, :2] / out[:, 2:3]


def _grade(image: np.ndarray, emotion: str, strength: float) -> tuple[str, np.ndarray]:
    name, gains, saturation = GRADES.get(emotion.strip().lower(), ("none", (1.0, 1.0, 1.0), 1.0))
    if name == "none":
        return name, image
    x = image.astype(np.float32)
    gains_now = 1.0 + (np.asarray(gains, dtype=np.float32) - 1.0) * strength
    x = x * gains_now
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * (1.0 + (saturation - 1.0) * strength)
    return name, np.clip(x + 0.5, 0, 255).astype(np.uint8)
