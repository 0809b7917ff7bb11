"""Embedded CPU lip-sync ("embedded-mouth-animator"): opens and closes a face's mouth with the voice.

No model weights and no GPU. The voice gives an openness value per video frame (loudness, plus a
viseme-like shaping from the spectrum: open vowels have a high first formant, fricatives little
low-frequency energy), smoothed with attack/release so the jaw moves like a jaw. Each frame then
has its lower lip and jaw warped down by that openness (a smooth displacement field that is zero
above the lip line and fades out at the mouth corners, the cheeks and below the chin), and the
gap between the lips is filled with a soft dark inner-mouth ellipse. Honest scope: this moves the
mouth in time with speech; it does not shape phonemes the way a learned model (LatentSync) does.

    animator = MouthAnimator(load_detector())               # once
    track = animator.prepare(portrait)                      # per image (raises NoFaceError)
    with FrameWriter(out, w, h, 25) as writer:
        animator.render(still_frames(portrait, n), track, voice, 25, writer.write)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from faces.mtcnn import FaceDetector
from faces.track import FaceTrack, locate_face
from lipsync.engine import RenderStats
from lipsync.voice import VoiceOptions, openness_curve
from media.frames import AUDIO_SAMPLE_RATE

ENGINE = "embedded-mouth-animator"
# Where the mouth sits in a face box when only the box is known (stylised faces): the lip line
# at 74% of the box height, mouth 36% of the box wide. Close for MTCNN boxes and drawn faces.
BOX_MOUTH_Y = 0.74
BOX_MOUTH_WIDTH = 0.36


@dataclass(frozen=True)
class MouthOptions:
    max_jaw_drop: float = 0.38           # lower-lip travel at openness 1, in mouth widths
    inner_mouth_rgb: tuple[int, int, int] = (58, 22, 28)
    voice: VoiceOptions = VoiceOptions()  # how the voice becomes openness (lipsync.voice)


@dataclass(frozen=True)
class MouthGeometry:
    center: tuple[float, float]          # middle of the lip line (between the corners)
    width: float                         # corner-to-corner distance, pixels
    down: tuple[float, float]            # unit vector from upper to lower lip


class MouthAnimator:
    """The embedded CPU lip-sync engine. `detector` may be None (then a face_box is required)."""

    engine = ENGINE

    def __init__(self, detector: FaceDetector | None, options: MouthOptions = MouthOptions()):
        self.detector = detector
        self.options = options

    def prepare(self, image: np.ndarray, face_box: Sequence[float] | None = None) -> FaceTrack:
        """Locate the mouth in a still (or a video's first frame).

        With `face_box` (client-given, for stylised faces): a detected face overlapping it lends
        its landmarks; otherwise the mouth comes from the box's proportions.
        Raises NoFaceError when nothing is found and no face_box was given.
        """
        return locate_face(self.detector, image, face_box)

    def changed_region(self, frame_hw: tuple[int, int],
                       track: FaceTrack) -> tuple[int, int, int, int] | None:
        """For a still (a one-entry track): (x0, y0, x1, y1) holding every pixel a render
        changes (the mouth warp's region); None for a video track, or when nothing changes."""
        if len(track) != 1:
            return None
        return mouth_roi(mouth_geometry(track, 0), *frame_hw)

    def render(self, frames: Iterable[np.ndarray], track: FaceTrack, audio: np.ndarray,
               fps: float, write: Callable[[np.ndarray], None],
               progress: Callable[[float], None] | None = None,
               sample_rate: int = AUDIO_SAMPLE_RATE) -> RenderStats:
        """Animate `frames` with the voice and hand each result to `write`, one at a time.

        Args:
            frames: RGB uint8 frames; at least round(seconds x fps) of them (use
                `still_frames` / `video_frames`). They are never modified in place.
            track: from `prepare`, or `FaceTrack(boxes, landmarks)` for a take.
            audio: the voice, mono float32 at `sample_rate`.
            fps: output frame rate.
            write: called with each finished frame, in order (e.g. FrameWriter.write).
            progress: called with the fraction done, about 100 times per render.
        """
        # 1. Check inputs and turn the voice into one openness value per frame.
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        started = time.perf_counter()
        curve = openness_curve(audio, fps, sample_rate, self.options.voice)
        n = len(curve)
        every = max(1, n // 100)
        source = iter(frames)
        mouth = _MouthWarp(self.options)
        # 2. One frame at a time: warp the mouth, write, drop the frame.
        for i in range(n):
            frame = next(source, None)
            if frame is None:
                raise ValueError(f"the frame source ended after {i} of {n} frames")
            write(mouth.apply(frame, mouth_geometry(track, i), float(curve[i])))
            if progress is not None and (i + 1) % every == 0:
                progress((i + 1) / n)
        if progress is not None and n % every:
            progress(1.0)
        return RenderStats(
            engine=self.engine, frames=n, fps=float(fps), seconds=n / fps,
            mouth_source=track.source,
            mean_openness=float(curve.mean()) if n else 0.0,
            peak_openness=float(curve.max()) if n else 0.0,
            render_s=time.perf_counter() - started)


class _MouthWarp:
    """Per-frame mouth opening; caches the displacement field while the geometry holds still."""

    def __init__(self, options: MouthOptions):
        self.options = options
        self._key: tuple | None = None            # geometry + frame size the cache is for
        self._roi: tuple[int, int, int, int] | None = None
        self._xs = self._ys = self._u = self._v = self._weight = np.zeros((0, 0), np.float32)

    def apply(self, frame: np.ndarray, geo: MouthGeometry, openness: float) -> np.ndarray:
        if openness <= 0.0:
            return frame                 # closed mouth: the source frame as it is
        h, w = frame.shape[:2]
        key = (round(geo.center[0], 2), round(geo.center[1], 2), round(geo.width, 2),
               round(geo.down[0], 4), round(geo.down[1], 4), h, w)
        if key != self._key:
            self._build(geo, h, w)
            self._key = key
        if self._roi is None:
            return frame
        x0, y0, x1, y1 = self._roi
        # 1. Pull the lower lip and jaw down: sample each pixel from above by the local shift.
        drop = openness * self.options.max_jaw_drop * geo.width
        map_x = self._xs - (drop * geo.down[0]) * self._weight
        map_y = self._ys - (drop * geo.down[1]) * self._weight
        patch = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # 2. Darken the gap that opened between the lips (a soft ellipse, drop tall).
        half_w = 0.36 * geo.width * (0.85 + 0.15 * openness)
        half_h = max(0.45 * drop, 0.5)         # leaves a band of lip above and below
        r = np.sqrt((self._u / half_w) ** 2 + ((self._v - 0.5 * drop) / half_h) ** 2)
        alpha = (np.clip((1.0 - r) / 0.3, 0.0, 1.0) * min(1.0, drop / 3.0))[..., None]
        inner = np.asarray(self.options.inner_mouth_rgb, dtype=np.float32)
        patch = patch.astype(np.float32) * (1.0 - 0.88 * alpha) + inner * (0.88 * alpha)
        out = frame.copy()
        out[y0:y1, x0:x1] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
        return out

    def _build(self, geo: MouthGeometry, h: int, w: int) -> None:
        """Region of interest and displacement weight (0..1) in the mouth's own frame."""
        W, (cx, cy), (dx, dy) = geo.width, geo.center, geo.down
        ax, ay = dy, -dx                                   # along the lip line
        self._roi = mouth_roi(geo, h, w)
        if self._roi is None:
            return
        x0, y0, x1, y1 = self._roi
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        u = (xs - cx) * ax + (ys - cy) * ay
        v = (xs - cx) * dx + (ys - cy) * dy
        # Vertically: nothing moves above the lip line; lip and chin move fully; fade to the neck.
        vertical = _smoothstep(-0.04 * W, 0.08 * W, v) * (1.0 - _smoothstep(0.55 * W, 1.2 * W, v))
        # Sideways: a smooth bump anchored near the mouth corners, wider at the jaw than the lip.
        reach = 0.7 * W + 0.35 * W * np.clip(v / (0.6 * W), 0.0, 1.0)
        sideways = np.clip(1.0 - (u / reach) ** 2, 0.0, 1.0) ** 2
        self._xs, self._ys = xs, ys
        self._u, self._v = u, v
        self._weight = (vertical * sideways).astype(np.float32)


def mouth_roi(geo: MouthGeometry, h: int, w: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of an h x w frame that the mouth warp may change; None if too small."""
    W, (cx, cy), (dx, dy) = geo.width, geo.center, geo.down
    ax, ay = dy, -dx                                       # along the lip line
    # The field is zero outside |u| < 1.05 W and -0.1 W < v < 1.25 W; pad by the travel.
    corners_u = np.array([-1.1, 1.1, -1.1, 1.1]) * W
    corners_v = np.array([-0.2, -0.2, 1.3, 1.3]) * W
    px = cx + corners_u * ax + corners_v * dx
    py = cy + corners_u * ay + corners_v * dy
    x0, x1 = int(max(0, np.floor(px.min()))), int(min(w, np.ceil(px.max()) + 1))
    y0, y1 = int(max(0, np.floor(py.min()))), int(min(h, np.ceil(py.max()) + 1))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return (x0, y0, x1, y1)


def _smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _mouth_from_landmarks(points: np.ndarray) -> MouthGeometry:
    eyes = (points[0] + points[1]) / 2
    left, right = points[3], points[4]
    center = (left + right) / 2
    width = float(np.linalg.norm(right - left))
    along = (right - left) / max(width, 1e-6)
    down = np.array([-along[1], along[0]])
    if np.dot(down, center - eyes) < 0:                # point away from the eyes
        down = -down
    return MouthGeometry((float(center[0]), float(center[1])), max(width, 2.0),
                         (float(down[0]), float(down[1])))


def _mouth_from_box(box: np.ndarray) -> MouthGeometry:
    x0, y0, x1, y1 = (float(v) for v in box)
    return MouthGeometry(((x0 + x1) / 2, y0 + BOX_MOUTH_Y * (y1 - y0)),
                         max(BOX_MOUTH_WIDTH * (x1 - x0), 2.0), (0.0, 1.0))




def mouth_geometry(track: FaceTrack, frame_index: int) -> MouthGeometry:
    """Where the mouth of output frame `frame_index` is: from landmarks, else the box."""
    i = track.index(frame_index)
    if track.landmarks is not None:
        return _mouth_from_landmarks(track.landmarks[i])
    return _mouth_from_box(track.boxes[i])
