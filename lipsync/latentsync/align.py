"""Face alignment into LatentSync's crop and paste-back into the frame (docs/latentsync.md §2).

Geometry, as the official `AlignRestore` (3-point mode) defines it:
* three points per face: two eyebrow centres and a nose centre (`alignment_points_106/68/5`);
* template = ratio × [(17, 20), (58, 20), (37.5, 40)], crop = (int(75·ratio), int(100·ratio)) w × h,
  ratio = 2.8 · resolution / 256 (256 → 210 × 280 crop, 512 → 420 × 560);
* `similarity_transform`: Procrustes with std-ratio scale, points → template;
* translation smoothing: b = (normalised template nose) − (normalised detected nose),
  b ← 0.2 · b_prev + 0.8 · b after the first frame, M[:, 2] += b;
* warp: bilinear, fill 127, to the crop; then LANCZOS4 resize to resolution² (a 3:4 → 1:1 stretch);
* restore: bicubic (antialiased) resize back to the crop, bilinear inverse warp, a 2×2-eroded
  warped crop mask, then a soft mask α = Gaussian blur of that mask eroded by (2·w_edge)², with
  w_edge = int(√area) // 20; out = α · face + (1 − α) · frame, truncated to uint8.

Differences from the official code, on purpose: the transform is computed in float64 and not
rounded to fp16 before warping; warps run in OpenCV (uint8 crops are rounded, not truncated);
restore works inside the bounding box of the warped crop (pixels outside it are never touched,
and inside it the result equals a full-frame computation); paste geometry is cached per matrix,
so a still image aligns once and every frame reuses one mask. Optional colour matching
(`AlignOptions.color_match`, `match_color`) shifts the face's per-channel mean/std towards the
frame inside the feather band; it is off by default (official behaviour).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from faces.geometry import check_points, fit_similarity_lstsq

TEMPLATE_UNITS = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])  # official, before × ratio
CROP_UNITS = (75, 100)  # (w, h) before × ratio
RATIO_AT_256 = 2.8
SMOOTH_KEEP = 0.2  # weight of the previous (smoothed) nose offset

# 5-point detectors (MTCNN, RetinaFace, SCRFD kps) give, in image order: eye on the image left, eye
# on the image right, nose tip, mouth corner image-left, mouth corner image-right. We place those
# five and the three LatentSync points on one mean face: the OpenFace/dlib 68-point mean shape,
# levelled and mirrored symmetric, in units of 1/100 inter-ocular distance, origin between the
# eyes, y down. Eyes = mean of 68-pt 36–41 / 42–47, nose tip = 30, mouth corners = 48 / 54; the
# three points are the 1.5-era definition the template was made for: means of 17–21, 22–26 and
# 27–35. A weighted least-squares similarity from CANONICAL_5 to the detections carries
# CANONICAL_3 into the frame. Mouth corners weigh half: they move with speech.
CANONICAL_5 = np.array([[-50.0, 0.0], [50.0, 0.0], [0.0, 59.46], [-45.28, 109.07], [45.28, 109.07]])
CANONICAL_3 = np.array([[-57.22, -29.80], [57.22, -29.80], [0.0, 54.90]])
FIVE_POINT_WEIGHTS = np.array([1.0, 1.0, 1.0, 0.5, 0.5])


def alignment_points_106(lm: np.ndarray, round_points: bool = True) -> np.ndarray:
    """Official HEAD points from InsightFace 2d106: brow {43,48–51}, brow 101–105, nose {74,77,83,86}.

    With `round_points` (official) the landmarks are rounded to int first and each mean is rounded
    half-to-even, as the pipeline does.
    """
    lm = check_points(lm, 106, "106-point landmarks")
    if round_points:
        lm = np.round(lm)
    pts = np.stack([lm[[43, 48, 49, 50, 51]].mean(0), lm[101:106].mean(0), lm[[74, 77, 83, 86]].mean(0)])
    return np.round(pts) if round_points else pts


def alignment_points_68(lm: np.ndarray, round_points: bool = True) -> np.ndarray:
    """1.5-era points from 68-point landmarks: means of 17–21, 22–26 and 27–35."""
    lm = check_points(lm, 68, "68-point landmarks")
    pts = np.stack([lm[17:22].mean(0), lm[22:27].mean(0), lm[27:36].mean(0)])
    return np.round(pts) if round_points else pts


def alignment_points_5(lm: np.ndarray, round_points: bool = True) -> np.ndarray:
    """Three LatentSync points from 5 generic landmarks (eyes, nose tip, mouth corners).

    See CANONICAL_5 / CANONICAL_3 above for the mapping. An approximation: real brows sit higher
    or lower than the mean face; the error is a small shift/scale of the crop, not a flip.
    """
    lm = check_points(lm, 5, "5-point landmarks")
    M = fit_similarity_lstsq(CANONICAL_5, lm, FIVE_POINT_WEIGHTS)
    pts = CANONICAL_3 @ M[:, :2].T + M[:, 2]
    return np.round(pts) if round_points else pts


def _normalised(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    centre = pts.mean(0)
    spread = float(np.std(pts - centre, ddof=1))  # sample std over all coordinates
    if not spread > 0:
        raise ValueError("alignment points coincide: cannot fit a similarity")
    return (pts - centre) / spread, centre, spread


def similarity_transform(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Official LatentSync similarity src → dst as a (2, 3) float64 matrix (no smoothing).

    Procrustes: both sets centred and divided by their sample std; R = V Uᵀ from the SVD of
    P̂ᵀ Q̂ (reflection removed); A = (s_dst / s_src) R; t = c_dst − A c_src. Rotation and
    translation are the least-squares ones; scale is the std ratio (equal to the least-squares
    scale when the points are an exact similarity image of each other).
    """
    P, cP, sP = _normalised(check_points(src_pts, None, "source"))
    Q, cQ, sQ = _normalised(check_points(dst_pts, P.shape[0], "target"))
    U, _, Vt = np.linalg.svd(P.T @ Q)
    V = Vt.T
    R = V @ U.T
    if np.linalg.det(R) < 0:
        V[:, -1] *= -1
        R = V @ U.T
    A = (sQ / sP) * R
    return np.concatenate([A, (cQ - A @ cP)[:, None]], axis=1)


def nose_offset(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Unsmoothed translation tweak: normalised template nose − normalised detected nose (2,)."""
    P, _, _ = _normalised(check_points(src_pts, 3, "source"))
    Q, _, _ = _normalised(check_points(dst_pts, 3, "target"))
    return Q[2] - P[2]


def match_color(src: torch.Tensor, ref: torch.Tensor, band: torch.Tensor,
                max_gain: float = 1.25) -> torch.Tensor:
    """Shift `src` per sample and channel so its mean/std inside `band` match `ref`'s there.

    src, ref: (N, C, H, W) float on one device; band: (H, W) bool. The gain σ_ref/σ_src is kept
    within [1/max_gain, max_gain] so a flat band cannot blow up contrast. An empty band is a no-op.
    """
    band = band.to(src.device).bool()
    count = int(band.sum())
    if count < 2:
        return src
    s, r = src[..., band].float(), ref[..., band].float()  # (N, C, count)
    mu_s, mu_r = s.mean(-1, keepdim=True), r.mean(-1, keepdim=True)
    sd_s, sd_r = s.std(-1, keepdim=True), r.std(-1, keepdim=True)
    gain = torch.where(sd_s > 1e-6, sd_r / sd_s.clamp_min(1e-6), torch.ones_like(sd_s))
    gain = gain.clamp(1.0 / max_gain, max_gain)
    return ((src.float() - mu_s[..., None]) * gain[..., None] + mu_r[..., None]).to(src.dtype)


@dataclass(frozen=True)
class AlignOptions:
    smooth: bool = True  # official translation smoothing across consecutive `matrix` calls
    border_value: float = 127.0  # grey outside the frame, in the crop
    color_match: bool = False  # match face colours to the frame in the feather band on restore
    color_max_gain: float = 1.25


@dataclass(frozen=True)
class PasteGeometry:
    """Everything restore needs for one (frame size, matrix): ROI and masks inside it."""

    roi: tuple[int, int, int, int]  # y0, y1, x0, x1 in the frame
    inverse: np.ndarray  # crop → ROI pixel coordinates, (2, 3)
    eroded: np.ndarray  # (h, w) float32: warped crop mask after the 2×2 erosion
    alpha: np.ndarray  # (h, w) float32 soft mask
    face_weight: np.ndarray  # (h, w, 1) float32: 255 · alpha · eroded, for faces in [0, 1]
    keep_weight: np.ndarray  # (h, w, 1) float32: 1 − alpha (exactly 1 where alpha is 0)


class FaceAligner:
    """Align faces into LatentSync's crop at `resolution` and paste generated faces back.

    One instance per video: it keeps the smoothing state (`reset()` starts a new video) and a
    cache of paste geometry, so a still image (one matrix) computes its masks once.
    """

    def __init__(self, resolution: int = 512, options: AlignOptions = AlignOptions()):
        if resolution <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.resolution = resolution
        self.options = options
        ratio = RATIO_AT_256 * resolution / 256
        self.template = TEMPLATE_UNITS * ratio
        self.crop_size = (int(CROP_UNITS[0] * ratio), int(CROP_UNITS[1] * ratio))  # (w, h)
        self._prev_offset: np.ndarray | None = None
        self._geometry: dict[bytes, PasteGeometry] = {}

    def reset(self) -> None:
        """Forget the smoothing state (new video)."""
        self._prev_offset = None

    # --- alignment -------------------------------------------------------------------------
    def matrix(self, points: np.ndarray) -> np.ndarray:
        """Frame → crop (2, 3) matrix for this frame's three points (advances smoothing)."""
        points = check_points(points, 3, "alignment points")
        M = similarity_transform(points, self.template)
        if self.options.smooth:
            b = nose_offset(points, self.template)
            if self._prev_offset is not None:
                b = SMOOTH_KEEP * self._prev_offset + (1.0 - SMOOTH_KEEP) * b
            self._prev_offset = b
            M[:, 2] += b
        return M

    def warp(self, frame: np.ndarray, M: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 frame → (resolution, resolution, 3) uint8 aligned face."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        fill = (self.options.border_value,) * 3
        crop = cv2.warpAffine(frame, np.asarray(M, np.float64), self.crop_size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
        return cv2.resize(crop, (self.resolution, self.resolution), interpolation=cv2.INTER_LANCZOS4)

    def align(self, frame: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matrix + warp: returns (aligned face uint8 (R, R, 3), frame → crop matrix (2, 3))."""
        M = self.matrix(points)
        return self.warp(frame, M), M

    # --- paste-back ------------------------------------------------------------------------
    def paste_geometry(self, frame_hw: tuple[int, int], M: np.ndarray) -> PasteGeometry:
        """ROI, eroded mask and soft mask for pasting a crop made with `M` into an H × W frame."""
        M = np.asarray(M, dtype=np.float64)
        key = np.array(frame_hw, np.int64).tobytes() + M.tobytes()
        if key in self._geometry:
            return self._geometry[key]
        h, w = frame_hw
        cw, ch = self.crop_size
        inv = cv2.invertAffineTransform(M)
        # Bilinear support of the crop reaches one pixel beyond its edge pixels.
        corners = np.array([[-1, -1], [cw, -1], [-1, ch], [cw, ch]], np.float64) @ inv[:, :2].T + inv[:, 2]
        lo, hi = np.floor(corners.min(0)), np.ceil(corners.max(0))
        # A ring of zero mask around the warped crop: erosion and blur inside the ROI then see
        # what they would see in the whole frame (only zeros beyond the support), so the result
        # equals a full-frame computation (tested) while pixels outside are never touched.
        margin = 4
        x0, y0 = (int(max(v - margin, 0)) for v in lo)
        x1, y1 = int(min(hi[0] + margin + 1, w)), int(min(hi[1] + margin + 1, h))
        x1, y1 = max(x1, x0), max(y1, y0)
        inv_roi = inv.copy()
        inv_roi[:, 2] -= (x0, y0)
        eroded = np.zeros((y1 - y0, x1 - x0), np.float32)
        alpha = eroded
        if eroded.size:
            ones = np.ones((ch, cw), np.float32)
            warped = cv2.warpAffine(ones, inv_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            eroded = cv2.erode(warped, np.ones((2, 2), np.uint8))
            w_edge = int(float(eroded.sum(dtype=np.float64)) ** 0.5) // 20
            alpha = eroded
            if w_edge > 0:
                centre = cv2.erode(eroded, np.ones((2 * w_edge, 2 * w_edge), np.uint8))
                k = 2 * w_edge + 1
                sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8  # OpenCV's default for this kernel size
                alpha = cv2.GaussianBlur(centre, (k, k), sigmaX=sigma, sigmaY=sigma,
                                         borderType=cv2.BORDER_REFLECT_101)
        geom = PasteGeometry((y0, y1, x0, x1), inv_roi, eroded, alpha,
                             (255.0 * alpha * eroded)[..., None], (1.0 - alpha)[..., None])
        if len(self._geometry) >= 8:
            self._geometry.pop(next(iter(self._geometry)))
        self._geometry[key] = geom
        return geom

    def soft_mask(self, frame_hw: tuple[int, int], M: np.ndarray) -> np.ndarray:
        """Full-frame (H, W) float32 blend weight α of the face (0 = frame kept bit-exactly)."""
        geom = self.paste_geometry(frame_hw, M)
        y0, y1, x0, x1 = geom.roi
        out = np.zeros(frame_hw, np.float32)
        out[y0:y1, x0:x1] = geom.alpha
        return out

    def _faces_to_crop(self, faces: np.ndarray | torch.Tensor) -> np.ndarray:
        """Faces (N, 3, R, R) in [-1, 1] or (N, R, R, 3) uint8 → (N, ch, cw, 3) float32 in ~[0, 1]."""
        r = self.resolution
        if isinstance(faces, np.ndarray) and faces.dtype == np.uint8:
            if faces.ndim != 4 or faces.shape[1:] != (r, r, 3):
                raise ValueError(f"expected uint8 faces (N, {r}, {r}, 3), got {faces.shape}")
            t = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        else:
            t = torch.as_tensor(faces).detach().float()  # resized on its own device (GPU if there)
        if t.ndim != 4 or t.shape[1:] != (3, r, r):
            raise ValueError(f"expected faces (N, 3, {r}, {r}), got {tuple(t.shape)}")
        # channels-last: the resize runs faster and the HWC result below needs no copy
        t = t.contiguous(memory_format=torch.channels_last)
        cw, ch = self.crop_size
        t = F.interpolate(t, size=(ch, cw), mode="bicubic", align_corners=False, antialias=True)
        return (t * 0.5 + 0.5).permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def restore_batch(self, frames: np.ndarray, faces: np.ndarray | torch.Tensor,
                      M: np.ndarray) -> np.ndarray:
        """Paste N generated faces into their frames.

        Args:
            frames: (N, H, W, 3) uint8, or one (H, W, 3) frame shared by all faces (still image).
            faces: (N, 3, R, R) float in [-1, 1] (decoder output) or (N, R, R, 3) uint8.
            M: one (2, 3) frame → crop matrix for all faces, or (N, 2, 3).
        Returns:
            (N, H, W, 3) uint8; pixels outside the soft mask are the input pixels, unchanged.
        """
        crops = self._faces_to_crop(faces)
        n = crops.shape[0]
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = np.broadcast_to(frames, (n, *frames.shape))
        if frames.ndim != 4 or frames.shape[0] != n or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected {n} uint8 frames (N, H, W, 3), got {frames.shape} {frames.dtype}")
        Ms = np.asarray(M, np.float64)
        Ms = np.broadcast_to(Ms, (n, 2, 3)) if Ms.shape == (2, 3) else Ms
        if Ms.shape != (n, 2, 3):
            raise ValueError(f"expected one (2, 3) matrix or ({n}, 2, 3), got {np.shape(M)}")
        out = np.array(frames)  # writable copy
        fill = (64.0,) * 3  # the official fill 127 in [-1, 1] units, after x / 2 + 0.5
        # Per frame on purpose: the ROI blend is memory-bound and a frame at a time stays in cache
        # (measured faster than one (N, h, w, 3) numpy expression); the resize above is batched,
        # and a still image (one matrix) reuses one cached geometry for every frame.
        for i in range(n):
            geom = self.paste_geometry(frames.shape[1:3], Ms[i])
            y0, y1, x0, x1 = geom.roi
            if y1 <= y0 or x1 <= x0:
                continue  # the face lies entirely outside the frame
            warped = cv2.warpAffine(crops[i], geom.inverse, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
            np.clip(warped, 0.0, 1.0, out=warped)
            background = frames[i, y0:y1, x0:x1].astype(np.float32)
            if self.options.color_match:
                warped = self._match_seam_color(warped * 255.0, background, geom) / 255.0
            blended = warped * geom.face_weight
            blended += background * geom.keep_weight
            np.clip(blended, 0.0, 255.0, out=blended)
            out[i, y0:y1, x0:x1] = blended.astype(np.uint8)  # truncation, as the official cast
        return out

    def _match_seam_color(self, warped: np.ndarray, background: np.ndarray,
                          geom: PasteGeometry) -> np.ndarray:
        band = (geom.alpha > 0.02) & (geom.alpha < 0.98) & (geom.eroded > 0.999)
        src = torch.from_numpy(warped).permute(2, 0, 1)[None]
        ref = torch.from_numpy(background).permute(2, 0, 1)[None]
        fixed = match_color(src, ref, torch.from_numpy(band), self.options.color_max_gain)
        return np.ascontiguousarray(fixed[0].permute(1, 2, 0).numpy())

    def restore(self, frame: np.ndarray, face: np.ndarray | torch.Tensor, M: np.ndarray) -> np.ndarray:
        """Paste one face ((3, R, R) in [-1, 1] or (R, R, 3) uint8) into one (H, W, 3) uint8 frame."""
        return self.restore_batch(frame, face[None] if face.ndim == 3 else face, M)[0]
