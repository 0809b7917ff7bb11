"""MTCNN face detection on CPU: image pyramid -> P-Net proposals -> R-Net -> O-Net + 5 landmarks.

Our own implementation of the three-stage cascade (Zhang et al. 2016) running the MIT-licensed
weights in assets/mtcnn/. Pure torch + numpy + OpenCV resizing; no torchvision.

    detector = load_detector()            # once
    faces = detector.detect(rgb)          # many times; largest face first
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch

from faces.boxes import apply_offsets, box_area, nms, square
from faces.nets import ONet, PNet, RNet

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "mtcnn"

# P-Net looks at 12x12 windows with a stride of 2 pixels in each pyramid level.
PNET_CELL = 12
PNET_STRIDE = 2
RNET_SIZE = 24
ONET_SIZE = 48


@dataclass(frozen=True)
class DetectorOptions:
    min_face_size: int = 20                      # smallest face side searched for, in pixels
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # P-, R-, O-Net face probability
    factor: float = 0.709                        # pyramid step (~1/sqrt(2): area halves)
    max_side: int | None = 1280                  # larger images are searched downscaled
    # The nets are tiny: intra-op threads cost more than they give, and on busy cores they spin
    # (measured on 2 shared cores: 0.085 s per 512px image on 1 thread, 1.9 s on 2). None keeps
    # the process setting.
    torch_threads: int | None = 1


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in the pixel coordinates of the image passed to `detect`."""

    box: tuple[float, float, float, float]       # x0, y0, x1, y1
    score: float                                 # O-Net face probability
    # (5, 2) x, y: left eye, right eye, nose, mouth left, mouth right ("left" = smaller x)
    landmarks: np.ndarray = field(repr=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


class FaceDetector:
    """The loaded cascade. Build with `load_detector()`; call `detect()` per image."""

    def __init__(self, pnet: PNet, rnet: RNet, onet: ONet, device: str = "cpu",
                 options: DetectorOptions = DetectorOptions()):
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.device = torch.device(device)
        self.options = options

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Find faces in an RGB uint8 image (H, W, 3). Largest first (then most confident)."""
        rgb = _check_image(rgb)
        h, w = rgb.shape[:2]
        shrink = 1.0
        if self.options.max_side and max(h, w) > self.options.max_side:
            shrink = self.options.max_side / max(h, w)
            rgb = cv2.resize(rgb, (round(w * shrink), round(h * shrink)), interpolation=cv2.INTER_AREA)
        with torch.inference_mode(), _torch_threads(self.options.torch_threads):
            boxes = self._propose(rgb)
            if len(boxes):
                boxes = self._refine(rgb, boxes)
            if not len(boxes):
                return []
            boxes, scores, points = self._output(rgb, boxes)
        return _to_faces(boxes, scores, points, shrink, (w, h))

    # 1. P-Net over the pyramid: candidate squares with a first box correction.
    def _propose(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        opts = self.options
        candidates = []
        for scale in pyramid_scales(h, w, opts.min_face_size, opts.factor):
            level = cv2.resize(rgb, (int(w * scale + 1), int(h * scale + 1)), interpolation=cv2.INTER_AREA)
            offsets, prob = self.pnet(self._tensor(level[None]))
            prob, offsets = prob[0].cpu().numpy(), offsets[0].cpu().numpy()
            rows, cols = np.nonzero(prob >= opts.thresholds[0])
            if not len(rows):
                continue
            # Each output cell is one 12x12 window of this level; map it back to the image.
            x0 = np.floor((PNET_STRIDE * cols + 1) / scale)
            y0 = np.floor((PNET_STRIDE * rows + 1) / scale)
            x1 = np.floor((PNET_STRIDE * cols + PNET_CELL) / scale)
            y1 = np.floor((PNET_STRIDE * rows + PNET_CELL) / scale)
            found = np.column_stack([x0, y0, x1, y1, prob[rows, cols], offsets[:, rows, cols].T])
            candidates.append(found[nms(found[:, :4], found[:, 4], 0.5)])
        if not candidates:
            return np.zeros((0, 5))
        found = np.concatenate(candidates)
        found = found[nms(found[:, :4], found[:, 4], 0.7)]
        boxes = apply_offsets(found[:, :4], found[:, 5:9], inclusive=False)
        return np.column_stack([square(boxes), found[:, 4]])

    # 2. R-Net on 24x24 crops: reject most false proposals, correct the boxes again.
    def _refine(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        offsets, prob = self.rnet(self._tensor(_crops(rgb, boxes, RNET_SIZE)))
        prob, offsets = prob.cpu().numpy(), offsets.cpu().numpy()
        keep = prob > self.options.thresholds[1]
        boxes, prob, offsets = boxes[keep, :4], prob[keep], offsets[keep]
        pick = nms(boxes, prob, 0.7)
        boxes = square(apply_offsets(boxes[pick], offsets[pick]))
        return np.column_stack([boxes, prob[pick]])

    # 3. O-Net on 48x48 crops: final score, box and the five landmarks.
    def _output(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        offsets, marks, prob = self.onet(self._tensor(_crops(rgb, boxes, ONET_SIZE)))
        prob, offsets, marks = prob.cpu().numpy(), offsets.cpu().numpy(), marks.cpu().numpy()
        keep = prob > self.options.thresholds[2]
        boxes, prob, offsets, marks = boxes[keep, :4], prob[keep], offsets[keep], marks[keep]
        # Landmarks are fractions of the (inclusive) crop box the net saw, x's first then y's.
        bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points = np.stack([boxes[:, :1] + marks[:, :5] * bw, boxes[:, 1:2] + marks[:, 5:] * bh], axis=2)
        boxes = apply_offsets(boxes, offsets)
        pick = nms(boxes, prob, 0.7, mode="min")
        return boxes[pick], prob[pick], points[pick]

    def _tensor(self, batch_hwc: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch_hwc)).to(self.device, torch.float32)
        return (x.permute(0, 3, 1, 2) - 127.5) * 0.0078125  # the nets' training normalisation


def load_detector(weights_dir: str | Path | None = None, device: str = "cpu",
                  options: DetectorOptions = DetectorOptions()) -> FaceDetector:
    """Load the three nets from `weights_dir` (default: the repo's assets/mtcnn/)."""
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    nets = []
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        path = folder / f"{name}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"MTCNN weights missing: {path} (see assets/mtcnn/README.md)")
        net = cls()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        nets.append(net.to(device).eval())
    return FaceDetector(*nets, device=device, options=options)


def pyramid_scales(h: int, w: int, min_face_size: int, factor: float) -> list[float]:
    """Scales at which a 12-pixel window covers faces from `min_face_size` up to the image."""
    scale = PNET_CELL / min_face_size
    side = min(h, w) * scale
    scales = []
    while side >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut each box (inclusive integer pixels, zero outside the image) and resize to size^2."""
    h, w = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(np.trunc(boxes[:, :4]).astype(np.int64)):
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        if bw < 2 or bh < 2:
            continue
        patch = np.zeros((bh, bw, 3), dtype=np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        out[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _to_faces(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, shrink: float,
              size_wh: tuple[int, int]) -> list[Face]:
    boxes, points = boxes / shrink, points / shrink
    w, h = size_wh
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    order = np.lexsort((-scores, -box_area(boxes)))
    return [Face(box=tuple(float(v) for v in boxes[i]), score=float(scores[i]),
                 landmarks=points[i].astype(np.float32)) for i in order if box_area(boxes[i])[0] > 0]


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    # torch's thread count is per process: set it for the detection only, then put it back.
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_image(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"detect() expects an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")
    return rgb
