"""Face alignment geometry and paste-back (docs/latentsync.md §2)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lipsync.latentsync.align import (AlignOptions, FaceAligner, alignment_points_5,
                                      alignment_points_68, alignment_points_106,
                                      fit_similarity_lstsq, match_color, nose_offset,
                                      similarity_transform)


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def _apply(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ M[:, :2].T + M[:, 2]


def _smooth_frame(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = [128 + 60 * np.sin(xx / 37) * np.cos(yy / 53), 128 + 50 * np.cos(xx / 29 + yy / 41),
           128 + 40 * np.sin((xx + yy) / 61)]
    return np.stack(rgb, -1).astype(np.uint8)


def _face_points(aligner: FaceAligner, M_frame_from_crop: np.ndarray) -> np.ndarray:
    return _apply(M_frame_from_crop, aligner.template)


@pytest.mark.parametrize("resolution, crop, template", [
    (256, (210, 280), [[47.6, 56], [162.4, 56], [105, 112]]),
    (512, (420, 560), [[95.2, 112], [324.8, 112], [210, 224]]),
])
def test_template_and_crop_size_follow_spec(resolution, crop, template):
    aligner = FaceAligner(resolution)
    assert aligner.crop_size == crop
    np.testing.assert_allclose(aligner.template, template, atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_similarity_maps_points_exactly_onto_template_for_true_similarity(seed):
    rng = np.random.default_rng(seed)
    template = FaceAligner(512).template
    S = _similarity(rng.uniform(0.3, 3), rng.uniform(-np.pi, np.pi), *rng.uniform(-400, 400, 2))
    detected = _apply(cv2.invertAffineTransform(S), template)
    M = similarity_transform(detected, template)
    np.testing.assert_allclose(_apply(M, detected), template, atol=1e-9)
    np.testing.assert_allclose(M, S, atol=1e-9)


def test_similarity_on_noisy_points_is_least_squares_rotation_and_translation():
    rng = np.random.default_rng(11)
    dst = FaceAligner(256).template
    src = _apply(_similarity(1.7, 0.4, 30, -12), dst) + rng.normal(0, 4, (3, 2))
    M = similarity_transform(src, dst)
    # rotation: the least-squares angle of the centred sets (closed form, independent of scale)
    p, q = src - src.mean(0), dst - dst.mean(0)
    best_angle = np.arctan2((p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]).sum(), (p * q).sum())
    assert np.isclose(np.arctan2(M[1, 0], M[0, 0]), best_angle, atol=1e-12)
    # scale is the spec's std ratio; translation then zeroes the mean residual
    assert np.isclose(np.hypot(M[0, 0], M[1, 0]), np.std(q, ddof=1) / np.std(p, ddof=1), atol=1e-12)
    np.testing.assert_allclose((_apply(M, src) - dst).mean(0), 0, atol=1e-9)
    # never a reflection, even for mirrored input
    mirrored = src * [-1, 1]
    assert np.linalg.det(similarity_transform(mirrored, dst)[:, :2]) > 0


def test_translation_smoothing_follows_the_recurrence():
    rng = np.random.default_rng(5)
    aligner = FaceAligner(512)
    Q = aligner.template
    seq = [_apply(_similarity(0.8, 0.05 * k, 300 + 3 * k, 200), Q) + rng.normal(0, 3, (3, 2))
           for k in range(6)]

    def norm_nose(P):
        c = P - P.mean(0)
        return c[2] / np.std(c, ddof=1)

    prev = None
    for P in seq:
        raw = norm_nose(Q) - norm_nose(P)
        expected_b = raw if prev is None else 0.2 * prev + 0.8 * raw
        prev = expected_b
        M = aligner.matrix(P)
        np.testing.assert_allclose(M[:, :2], similarity_transform(P, Q)[:, :2], atol=1e-12)
        np.testing.assert_allclose(M[:, 2] - similarity_transform(P, Q)[:, 2], expected_b, atol=1e-12)
    aligner.reset()
    np.testing.assert_allclose(aligner.matrix(seq[3])[:, 2] - similarity_transform(seq[3], Q)[:, 2],
                               nose_offset(seq[3], Q), atol=1e-12)
    plain = FaceAligner(512, AlignOptions(smooth=False))
    np.testing.assert_allclose(plain.matrix(seq[2]), similarity_transform(seq[2], Q), atol=1e-12)


def test_alignment_points_from_106_landmarks_use_spec_indices_and_even_rounding():
    lm = np.zeros((106, 2))
    lm[[43, 48, 49, 50, 51]] = [[10, 20], [12, 20], [14, 22], [16, 20], [18, 23]]  # mean (14, 21)
    lm[101:106] = [[60, 20], [62, 21], [64, 20], [66, 21], [68, 20]]  # mean (64, 20.4)
    lm[[74, 77, 83, 86]] = [[40, 50], [41, 50], [41, 51], [40, 51]]  # mean (40.5, 50.5): ties
    lm[[0, 44, 72, 97]] = 999  # neighbours that must not be used
    np.testing.assert_array_equal(alignment_points_106(lm), [[14, 21], [64, 20], [40, 50]])
    np.testing.assert_allclose(alignment_points_106(lm, round_points=False),
                               [[14, 21], [64, 20.4], [40.5, 50.5]])


def test_alignment_points_from_68_landmarks_use_brow_and_nose_ranges():
    lm = np.full((68, 2), 999.0)
    lm[17:22], lm[22:27], lm[27:36] = [10, 20], [50, 22], [30, 40]
    np.testing.assert_array_equal(alignment_points_68(lm), [[10, 20], [50, 22], [30, 40]])


def test_five_point_mapping_is_similarity_equivariant_and_upright():
    # an upright face: eyes at y = 100, nose tip below, mouth corners lower still
    five = np.array([[100, 100], [160, 100], [130, 136], [103, 165], [157, 165]], float)
    three = alignment_points_5(five, round_points=False)
    assert three[0, 0] < three[2, 0] < three[1, 0]  # brow left, nose between, brow right
    assert three[0, 1] < 100 and three[1, 1] < 100  # brows above the eyes
    assert 100 < three[2, 1] < 165  # nose centre between eyes and mouth
    S = _similarity(1.9, 0.7, 40, -25)
    moved = alignment_points_5(_apply(S, five), round_points=False)
    np.testing.assert_allclose(moved, _apply(S, three), atol=1e-9)
    # the aligned crop puts the eye line level and the face in the template's place
    M = similarity_transform(three, FaceAligner(256).template)
    eyes = _apply(M, five[:2])
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-6
    assert np.allclose(_apply(M, three), FaceAligner(256).template, atol=25)


def test_weighted_lstsq_similarity_recovers_exact_similarity():
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 100, (5, 2))
    S = _similarity(0.6, -1.1, 5, 9)
    np.testing.assert_allclose(fit_similarity_lstsq(src, _apply(S, src), [1, 2, 1, 0.5, 0.5]), S, atol=1e-9)


def test_warp_fills_outside_the_frame_with_grey():
    aligner = FaceAligner(256)
    frame = np.zeros((200, 200, 3), np.uint8)
    pts = _face_points(aligner, _similarity(0.5, 0.0, -30, -30))  # face partly left/above the frame
    face, M = aligner.align(frame, pts)
    assert face.shape == (256, 256, 3)
    assert (face[:20, :20] == 127).all()


@pytest.mark.parametrize("resolution", [256, 512])
def test_align_then_restore_round_trip_returns_original_pixels(resolution):
    frame = _smooth_frame(480, 640)
    aligner = FaceAligner(resolution)
    scale = 256 / resolution * 0.9  # face about as large in the frame as in the crop
    pts = _face_points(aligner, _similarity(scale, 0.15, 250, 60))
    face, M = aligner.align(frame, pts)
    out = aligner.restore(frame, face, M)
    alpha = aligner.soft_mask(frame.shape[:2], M)
    inside = alpha > 0.99
    assert inside.sum() > 0.1 * alpha.size
    err = np.abs(out.astype(np.int16) - frame.astype(np.int16))[inside]
    assert err.mean() < 1.5 and err.max() <= 10


def test_paste_back_leaves_pixels_outside_the_soft_mask_untouched():
    rng = np.random.default_rng(9)
    frame = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    aligner = FaceAligner(256)
    M = aligner.matrix(_face_points(aligner, _similarity(0.7, -0.3, 120, 10)))
    black = -torch.ones(1, 3, 256, 256)  # a face that differs from the frame everywhere
    out = aligner.restore_batch(frame, black, M)[0]
    alpha = aligner.soft_mask(frame.shape[:2], M)
    assert np.array_equal(out[alpha == 0], frame[alpha == 0])
    assert (out[alpha > 0.5] != frame[alpha > 0.5]).any(axis=-1).mean() > 0.9


def _full_frame_restore(aligner: FaceAligner, frame: np.ndarray, face: torch.Tensor,
                        M: np.ndarray) -> np.ndarray:
    """Straightforward whole-frame version of the spec's restore, for comparison with the ROI one."""
    h, w = frame.shape[:2]
    cw, ch = aligner.crop_size
    crop = F.interpolate(face[None], size=(ch, cw), mode="bicubic", align_corners=False, antialias=True)[0]
    crop = crop.permute(1, 2, 0).numpy()
    inv = cv2.invertAffineTransform(M)
    warped = cv2.warpAffine(crop, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(127, 127, 127))
    warped = np.clip(warped / 2 + 0.5, 0, 1) * 255
    mask = cv2.warpAffine(np.ones((ch, cw), np.float32), inv, (w, h))
    mask = cv2.erode(mask, np.ones((2, 2), np.uint8))
    w_edge = int(mask.sum() ** 0.5) // 20
    centre = cv2.erode(mask, np.ones((2 * w_edge, 2 * w_edge), np.uint8))
    k = 2 * w_edge + 1
    alpha = cv2.GaussianBlur(centre, (k, k), 0.3 * ((k - 1) / 2 - 1) + 0.8)[..., None]
    return np.clip(alpha * mask[..., None] * warped + (1 - alpha) * frame, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("tx, ty", [(150, 40), (-60, -70)])  # inside, and cut by the frame's corner
def test_roi_restore_matches_full_frame_restore(tx, ty):
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    aligner = FaceAligner(256)
    M = aligner.matrix(_face_points(aligner, _similarity(0.8, 0.2, tx, ty)))
    face = torch.rand(3, 256, 256) * 2 - 1
    ours = aligner.restore(frame, face, M).astype(np.int16)
    ref = _full_frame_restore(aligner, frame, face, M).astype(np.int16)
    assert np.abs(ours - ref).max() <= 1
    assert (ours != ref).mean() < 0.01


def test_batch_restore_of_a_still_image_equals_per_frame_restore():
    frame = _smooth_frame(240, 320)
    aligner = FaceAligner(256)
    face, M = aligner.align(frame, _face_points(aligner, _similarity(0.6, 0.1, 90, 20)))
    faces = torch.rand(4, 3, 256, 256) * 2 - 1
    batch = aligner.restore_batch(frame, faces, M)
    for i in range(4):
        assert np.array_equal(batch[i], aligner.restore(frame, faces[i], M))
    # per-frame matrices (a video): frame 0 keeps M, the others move by a fraction of a pixel
    Ms = np.stack([M] * 4)
    Ms[:, 1, 2] += 0.3 * np.arange(4)
    per_frame = aligner.restore_batch(np.stack([frame] * 4), faces, Ms)
    assert np.array_equal(per_frame[0], batch[0])
    for i in range(1, 4):
        assert np.array_equal(per_frame[i], aligner.restore(frame, faces[i], Ms[i]))
        assert not np.array_equal(per_frame[i], batch[i])


def test_match_color_equalises_band_statistics():
    rng = np.random.default_rng(1)
    ref = torch.from_numpy(rng.normal(0.5, 0.1, (2, 3, 32, 32)).astype(np.float32))
    src = ref * 1.1 + 0.2
    band = torch.zeros(32, 32, dtype=torch.bool)
    band[8:24, 8:24] = True
    out = match_color(src, ref, band)
    assert torch.allclose(out[..., band].mean(-1), ref[..., band].mean(-1), atol=1e-5)
    assert torch.allclose(out[..., band].std(-1), ref[..., band].std(-1), atol=1e-5)
    assert torch.equal(match_color(src, ref, torch.zeros(32, 32, dtype=torch.bool)), src)


def test_restore_colour_match_hides_a_colour_cast_at_the_seam():
    frame = _smooth_frame(300, 400)
    aligner = FaceAligner(256)
    face, M = aligner.align(frame, _face_points(aligner, _similarity(0.8, 0.0, 100, 20)))
    cast = face.astype(np.float32)
    cast[..., 0] += 30  # generator drifted towards red
    cast = np.clip(cast, 0, 255).astype(np.uint8)
    plain = aligner.restore(frame, cast, M)
    matched = FaceAligner(256, AlignOptions(color_match=True)).restore(frame, cast, M)
    alpha = aligner.soft_mask(frame.shape[:2], M)
    seam = (alpha > 0.05) & (alpha < 0.95)
    err_plain = np.abs(plain.astype(float) - frame)[seam].mean()
    err_matched = np.abs(matched.astype(float) - frame)[seam].mean()
    assert err_plain > 4 and err_matched < 0.5 * err_plain
