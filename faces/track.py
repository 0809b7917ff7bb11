"""Where the face is, frame by frame: the face track every stage shares (lip-sync writes it, face
restore and the take renderer read it), how it is stored, and how a still's face is located.

A track shorter than a render is read ping-pong, the same way a looped take is played.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from faces.boxes import iou, landmarks_from_box
from faces.mtcnn import Face, FaceDetector

# A client face_box this close to a detected face means "that face": use its landmarks.
FACE_BOX_MATCH_IOU = 0.3


def pingpong_index(k: int, m: int) -> int:
    """Index into an m-frame clip of output frame k when the clip is looped forward-backward."""
    if m <= 0:
        raise ValueError("a clip needs at least one frame")
    if m == 1:
        return 0
    period = 2 * m - 2
    p = k % period
    return p if p < m else period - p


class NoFaceError(ValueError):
    """The image has no detectable face and the client gave no face_box."""


@dataclass(frozen=True, eq=False)
class FaceTrack:
    """Where the face is, per source frame. A still has one entry used for every frame.

    A track shorter than the render is read ping-pong, the same way `video_frames` loops a take.
    """

    boxes: np.ndarray                    # (m, 4) x0, y0, x1, y1
    landmarks: np.ndarray | None = None  # (m, 5, 2) MTCNN order, or None (box proportions)
    source: Literal["landmarks", "face_box"] = "landmarks"

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if not len(boxes):
            raise ValueError("a face track needs at least one box")
        object.__setattr__(self, "boxes", boxes)
        if self.landmarks is not None:
            marks = np.asarray(self.landmarks, dtype=np.float64).reshape(-1, 5, 2)
            if len(marks) != len(boxes):
                raise ValueError(f"{len(marks)} landmark sets for {len(boxes)} boxes")
            object.__setattr__(self, "landmarks", marks)

    @classmethod
    def from_face(cls, face: Face) -> "FaceTrack":
        return cls(np.asarray([face.box]), np.asarray([face.landmarks]), "landmarks")

    @classmethod
    def from_box(cls, box: Sequence[float]) -> "FaceTrack":
        return cls(np.asarray([box], dtype=np.float64), None, "face_box")

    def __len__(self) -> int:
        return len(self.boxes)

    def index(self, frame_index: int) -> int:
        """The track entry of output frame `frame_index` (ping-pong over the track)."""
        return pingpong_index(frame_index, len(self))

    def five_points(self) -> np.ndarray:
        """(m, 5, 2) landmarks per entry; from the box's proportions where none were found."""
        if self.landmarks is not None:
            return self.landmarks
        return np.stack([landmarks_from_box(b) for b in self.boxes])

    def to_bytes(self) -> bytes:
        """The track as .npz: boxes (m, 4) and, when known, landmarks (m, 5, 2)."""
        buf = io.BytesIO()
        arrays = {"boxes": self.boxes}
        if self.landmarks is not None:
            arrays["landmarks"] = self.landmarks
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "FaceTrack":
        data = np.load(io.BytesIO(raw))
        marks = data["landmarks"] if "landmarks" in data.files else None
        return cls(data["boxes"], marks, "landmarks" if marks is not None else "face_box")


def check_face_box(face_box: Sequence[float], w: int, h: int) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in face_box)
    except (TypeError, ValueError):
        raise ValueError(f"face_box must be [x0, y0, x1, y1] in pixels, got {face_box!r}") from None
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"face_box needs x1 > x0 and y1 > y0, got {face_box!r}")
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise ValueError(f"face_box {face_box!r} lies outside the {w}x{h} image")
    return (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))


def locate_face(detector: FaceDetector | None, image: np.ndarray,
                face_box: Sequence[float] | None = None) -> FaceTrack:
    """The face of a still as a one-entry FaceTrack (shared by every lip-sync engine).

    With `face_box`: a detection overlapping it (IoU >= FACE_BOX_MATCH_IOU) lends its landmarks,
    else the track is the box alone (source "face_box"). Raises NoFaceError when nothing is
    found and no face_box was given; ValueError for a face_box outside the image.
    """
    h, w = np.asarray(image).shape[:2]
    box = check_face_box(face_box, w, h) if face_box is not None else None
    faces = detector.detect(image) if detector is not None else []
    if box is not None:
        match = max(faces, key=lambda f: iou(f.box, box), default=None)
        if match is not None and iou(match.box, box) >= FACE_BOX_MATCH_IOU:
            return FaceTrack.from_face(match)
        return FaceTrack.from_box(box)
    if not faces:
        raise NoFaceError("no face found in the image; pass input.face_box=[x0,y0,x1,y1] "
                          "for stylised faces")
    return FaceTrack.from_face(faces[0])
