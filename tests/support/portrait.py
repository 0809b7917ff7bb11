"""The one portrait the tests use: samples/portrait.png, NASA's public-domain astronaut (the same
pixels scikit-image ships as `data.astronaut()`), at the sizes the tests need. Face positions
hand-marked on it (tests/faces, tests/lipsync) hold for every copy made here.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

PORTRAIT = Path(__file__).resolve().parents[2] / "samples" / "portrait.png"
# Hand-marked on the 512 px portrait, halved for the 256 px copy.
MOUTH_BOX_256 = (94, 62, 132, 86)          # lips and the skin just below, x0, y0, x1, y1
EYES_BOX_256 = (92, 44, 132, 56)


@lru_cache(maxsize=1)
def _portrait() -> np.ndarray:
    rgb = np.asarray(Image.open(PORTRAIT).convert("RGB"))
    rgb.setflags(write=False)
    return rgb


def portrait() -> np.ndarray:
    """The 512 x 512 RGB uint8 portrait (a fresh writable copy)."""
    return _portrait().copy()


def portrait_256() -> np.ndarray:
    """The portrait at 256 px (area-averaged, as a camera would see it smaller)."""
    import cv2

    return cv2.resize(_portrait(), (256, 256), interpolation=cv2.INTER_AREA)


def portrait_patch(top: int, left: int, size: int) -> np.ndarray:
    """A real photo patch of the portrait, RGB uint8."""
    return np.ascontiguousarray(_portrait()[top:top + size, left:left + size])


def face_crop(size: int = 512) -> np.ndarray:
    """The astronaut's face, resized to an aligned-crop-like size x size RGB uint8."""
    import cv2

    return cv2.resize(_portrait()[20:220, 140:340], (size, size), interpolation=cv2.INTER_CUBIC)
