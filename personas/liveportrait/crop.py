"""The LivePortrait source crop from our own landmarks, the networks' input, and paste-back.

LivePortrait renders a 512x512 face crop; the crop must be the one its networks were trained on
or the motion extractor reads the pose wrong. The official recipe (src/utils/crop.py with
src/config/crop_config.py) reduces the landmarks to two points (eye centre and mouth centre),
turns the picture so that eye->mouth axis is vertical (which levels the eyes), takes the
landmarks' square bounding box in that turned frame, grows it by `scale` and shifts it by
`vy_ratio` of its size towards the forehead. We feed it the five MTCNN points (or five points
derived from a client face box with faces.boxes.landmarks_from_box); the code is our own.

Conventions: images are RGB uint8 (H, W, 3), as everywhere in the product; points are (N, 2)
float (x, y) pixels. A Crop maps image pixels to a `size`-pixel square (512 by default).

Paste-back: the official pipeline multiplies the rendered crop, warped back into the frame,
with a mask template image (a white face-sized region with a soft border). We draw our own mask
procedurally (a rounded square with a smoothstep edge) so no binary asset is needed and the
feather width is a documented number: the rendered crop changes the head, hair and neck, while
its border carries background the model cannot be trusted to reproduce exactly, so the mask is
fully opaque over the central region and fades to exactly 0 before the crop's edge, which hides
the seam. A still portrait's frame never changes, so PasteBack warps the mask once and every
rendered frame of a take only costs one warp of the rendered crop into the mask's bounding box.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from faces.boxes import landmarks_from_box

# ---- Constants (official values unless said otherwise) -------------------------------------
CROP_SIZE = 512            # the rendered crop (G's output) and the source crop, pixels
MODEL_INPUT_SIZE = 256     # what F and M read: the 512 crop resized, RGB 0..1
CROP_SCALE = 2.3           # face box -> crop side; the brief's value (the current official
                           # crop_config.py default reads 2.5; both are within what M accepts)
CLOSEUP_CROP_SCALE = 1.9   # ours: a tighter crop for closeup takes (face fills more of it)
VX_RATIO = 0.0             # horizontal shift of the crop centre, in crop sides
VY_RATIO = -0.125          # vertical shift, in crop sides; negative moves the crop up (forehead)
# Mask (ours): superellipse |x|^p + |y|^p in crop-normalised coordinates (-1..1); opaque out to
# MASK_INNER, smoothstep down to exactly 0 at MASK_OUTER (< 1, so the crop's edge never shows).
MASK_EXPONENT = 4.0        # 2 = ellipse, larger = squarer; 4 keeps the corners (hair, shoulders)
MASK_INNER = 0.70
MASK_OUTER = 0.94


@dataclass(frozen=True, eq=False)
class Crop:
    """A similarity transform from image pixels to a `size`-pixel square crop.

    matrix: (2, 3) image -> crop; inverse: (2, 3) crop -> image. centre (image px), side (image
    px covered by the crop), angle (radians; the image's rotation removed by the crop, positive
    when the face's eye->mouth axis leans clockwise from vertical in the image).
    """

    matrix: np.ndarray
    inverse: np.ndarray
    size: int
    centre: np.ndarray
    side: float
    angle: float
    scale: float

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Image pixels (..., 2) -> crop pixels."""
        return _apply(self.matrix, points)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels (..., 2) -> image pixels."""
        return _apply(self.inverse, points)

    def resized(self, size: int) -> "Crop":
        """The same region sampled at another resolution (e.g. 256 for the model input)."""
        k = size / self.size
        m = self.matrix * k
        return Crop(m, _invert(m), int(size), self.centre, self.side, self.angle, self.scale)


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def _invert(m: np.ndarray) -> np.ndarray:
    a = m[:, :2]
    a_inv = np.linalg.inv(a)
    return np.concatenate([a_inv, -(a_inv @ m[:, 2])[:, None]], axis=1)


def crop_from_landmarks(points: np.ndarray, *, scale: float = CROP_SCALE,
                        vx_ratio: float = VX_RATIO, vy_ratio: float = VY_RATIO,
                        size: int = CROP_SIZE) -> Crop:
    """The official LivePortrait crop of a face from its five MTCNN points.

    points: (5, 2) left eye, right eye, nose, left mouth corner, right mouth corner (image px).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise ValueError(f"expected (5, 2) finite landmarks, got {pts.shape}")
    if scale <= 0:
        raise ValueError(f"crop scale must be > 0, got {scale}")
    # The two points that fix the roll: mid-eyes and mid-mouth. The face's "down" axis runs
    # from one to the other; "right" is that axis turned a quarter turn anticlockwise on screen.
    eyes, mouth = pts[:2].mean(axis=0), pts[3:5].mean(axis=0)
    down = mouth - eyes
    length = float(np.hypot(*down))
    down = down / length if length > 1e-3 else np.array([0.0, 1.0])
    right = np.array([down[1], -down[0]])
    rot = np.stack([right, down])                  # image offsets -> face-aligned offsets
    # Square bounding box of all five points in the face-aligned frame, grown by `scale`.
    mean = pts.mean(axis=0)
    local = (pts - mean) @ rot.T
    lo, hi = local.min(axis=0), local.max(axis=0)
    side = float(max(hi - lo)) * scale
    if side <= 0:
        raise ValueError("landmarks are degenerate (all five at one point)")
    mid = (lo + hi) / 2
    centre = mean + rot.T @ mid + right * (vx_ratio * side) + down * (vy_ratio * side)
    # Image -> crop: rotate into the face frame about the centre, scale to `size`, centre it.
    s = size / side
    a = s * rot
    matrix = np.concatenate([a, (size / 2 - a @ centre)[:, None]], axis=1)
    angle = math.atan2(right[1], right[0])
    return Crop(matrix, _invert(matrix), int(size), centre, side, angle, float(scale))


def crop_from_box(box: Sequence[float], **kwargs) -> Crop:
    """The crop from a client face box [x0, y0, x1, y1]: five mean-face points placed in the box
    (faces.boxes.landmarks_from_box) then the landmark recipe."""
    return crop_from_landmarks(landmarks_from_box(box), **kwargs)


def crop_image(image: np.ndarray, crop: Crop, size: int = CROP_SIZE) -> np.ndarray:
    """The crop's pixels at `size` x `size` (bilinear; outside the image is black, as official)."""
    c = crop if size == crop.size else crop.resized(size)
    return cv2.warpAffine(image, c.matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def model_input(image: np.ndarray, crop: Crop, *, chw: bool = False,
                crop_512: np.ndarray | None = None) -> np.ndarray:
    """F's and M's input: float32 RGB in 0..1, 256x256, HWC (256, 256, 3) or CHW (3, 256, 256).

    Made like the official code: the 512 crop first, then a bilinear resize to 256 (warping
    straight to 256 would sample the photo differently). Pass `crop_512` if already made.
    """
    big = crop_image(image, crop, CROP_SIZE) if crop_512 is None else crop_512
    small = cv2.resize(big, (MODEL_INPUT_SIZE, MODEL_INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    x = small.astype(np.float32) / 255.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)) if chw else x


def feather_mask(size: int = CROP_SIZE, *, inner: float = MASK_INNER, outer: float = MASK_OUTER,
                 exponent: float = MASK_EXPONENT) -> np.ndarray:
    """(size, size) float32 mask in 0..1: 1 in the rounded-square centre, a smoothstep feather,
    exactly 0 from `outer` (crop-normalised superellipse radius) to the crop's edge."""
    if not 0 < inner < outer <= 1:
        raise ValueError(f"need 0 < inner < outer <= 1, got {inner}, {outer}")
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1      # pixel centres, -1..1
    r = (np.abs(c)[None, :] ** exponent + np.abs(c)[:, None] ** exponent) ** (1 / exponent)
    u = np.clip((outer - r) / (outer - inner), 0, 1)
    return (u * u * (3 - 2 * u)).astype(np.float32)


class PasteBack:
    """Blend rendered crops back into one still frame; the warped mask is computed once.

    frame: the source image (H, W, 3) uint8; crop: its Crop (crop.size must match the renders);
    mask: a (size, size) 0..1 mask in crop space (default feather_mask()).
    """

    def __init__(self, frame: np.ndarray, crop: Crop, mask: np.ndarray | None = None):
        self.frame = np.asarray(frame)
        if self.frame.ndim != 3 or self.frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 (H, W, C), got {self.frame.dtype} {self.frame.shape}")
        self.crop = crop
        m = feather_mask(crop.size) if mask is None else np.asarray(mask, dtype=np.float32)
        if m.shape != (crop.size, crop.size):
            raise ValueError(f"mask must be ({crop.size}, {crop.size}), got {m.shape}")
        h, w = self.frame.shape[:2]
        # Only the crop's footprint in the frame can change: its corners bound the work.
        corners = crop.to_image(np.array([[0, 0], [crop.size, 0], [0, crop.size], [crop.size, crop.size]]))
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        self.roi = (x0, y0, x1, y1)
        if x1 <= x0 or y1 <= y0:
            self._to_roi = None
            self.mask = np.zeros((0, 0, 1), np.float32)
            return
        shift = crop.inverse.copy()
        shift[:, 2] -= (x0, y0)
        self._to_roi = shift
        warped = cv2.warpAffine(m, shift, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        self.mask = np.clip(warped, 0, 1)[..., None]          # (roi_h, roi_w, 1)

    def full_mask(self) -> np.ndarray:
        """The warped mask over the whole frame, (H, W) float32."""
        out = np.zeros(self.frame.shape[:2], np.float32)
        x0, y0, x1, y1 = self.roi
        if self._to_roi is not None:
            out[y0:y1, x0:x1] = self.mask[..., 0]
        return out

    def __call__(self, rendered: np.ndarray) -> np.ndarray:
        """rendered: (size, size, C) or (N, size, size, C) uint8 crops -> (H, W, C) or (N, H, W, C)."""
        r = np.asarray(rendered)
        single = r.ndim == 3
        batch = r[None] if single else r
        if batch.shape[1:3] != (self.crop.size, self.crop.size):
            raise ValueError(f"renders must be {self.crop.size}x{self.crop.size}, got {batch.shape}")
        out = np.repeat(self.frame[None], len(batch), axis=0)
        if self._to_roi is not None and len(batch):
            x0, y0, x1, y1 = self.roi
            size = (x1 - x0, y1 - y0)
            warped = np.stack([cv2.warpAffine(f, self._to_roi, size, flags=cv2.INTER_LINEAR,
                                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                               for f in batch]).reshape(len(batch), size[1], size[0], -1)
            base = self.frame[y0:y1, x0:x1].astype(np.float32)
            mixed = base + self.mask * (warped.astype(np.float32) - base)
            out[:, y0:y1, x0:x1] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        return out[0] if single else out


def paste_back(frame: np.ndarray, rendered: np.ndarray, crop: Crop,
               mask: np.ndarray | None = None) -> np.ndarray:
    """One-shot paste-back of one render (size, size, C) or a batch (N, size, size, C) on the
    same still; for many calls on one still, keep a PasteBack."""
    return PasteBack(frame, crop, mask)(rendered)
