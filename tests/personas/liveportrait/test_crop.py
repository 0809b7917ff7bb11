"""The LivePortrait crop from five points, its inverse, the model input and paste-back."""
import math

import cv2
import numpy as np
import pytest

from faces.boxes import landmarks_from_box
from personas.liveportrait.crop import (CROP_SCALE, CROP_SIZE, VY_RATIO, PasteBack, crop_from_box,
                                         crop_from_landmarks, crop_image, feather_mask, model_input,
                                         paste_back)


def face_points(cx=300.0, cy=260.0, eye_half=40.0, mouth_half=28.0, mouth_drop=90.0, tilt_deg=0.0):
    """Symmetric five points around (cx, cy) (the eye centre), turned by tilt_deg on screen."""
    local = np.array([[-eye_half, 0], [eye_half, 0], [0, 50], [-mouth_half, mouth_drop],
                      [mouth_half, mouth_drop]], dtype=np.float64)
    t = math.radians(tilt_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return local @ rot.T + [cx, cy]


def gradient_image(h=600, w=640):
    """Smooth (linear) picture: bilinear resampling reproduces it, so a round trip is exact."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([40 + 0.25 * x, 30 + 0.3 * y, 200 - 0.1 * x - 0.1 * y], axis=-1)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("tilt", [0.0, 17.0, -25.0])
def test_eyes_level_and_where_expected(tilt):
    pts = face_points(tilt_deg=tilt)
    crop = crop_from_landmarks(pts)
    c = crop.to_crop(pts)
    assert abs(c[0, 1] - c[1, 1]) < 1e-6                      # eyes level
    assert c[0, 0] < c[1, 0]                                   # left eye stays on the left
    assert abs((c[0, 0] + c[1, 0]) / 2 - CROP_SIZE / 2) < 1e-6  # face centred horizontally
    # Expected by hand: aligned box is 80 wide x 90 tall -> side = 90 * scale; the box centre
    # sits 45 px below the eyes, then the crop moves up by 0.125 side.
    side = 90 * CROP_SCALE
    s = CROP_SIZE / side
    eye_y = CROP_SIZE / 2 + s * (-45 + (-VY_RATIO) * side)
    assert abs(c[0, 1] - eye_y) < 1e-6
    assert abs((c[1, 0] - c[0, 0]) - 80 * s) < 1e-6
    assert abs(math.degrees(crop.angle) - tilt) < 1e-9


def test_inverse_round_trip_and_matrix():
    pts = face_points(tilt_deg=11.0)
    crop = crop_from_landmarks(pts, scale=1.9)
    rng = np.random.default_rng(0)
    p = rng.uniform(-100, 900, size=(50, 2))
    assert np.abs(crop.to_image(crop.to_crop(p)) - p).max() < 1e-6
    assert np.abs(crop.to_crop(crop.to_image(p)) - p).max() < 1e-6
    full = np.vstack([crop.matrix, [0, 0, 1]]) @ np.vstack([crop.inverse, [0, 0, 1]])
    np.testing.assert_allclose(full, np.eye(3), atol=1e-12)


def test_closeup_scale_is_tighter():
    pts = face_points()
    wide, tight = crop_from_landmarks(pts), crop_from_landmarks(pts, scale=1.9)
    assert tight.side < wide.side
    eye_gap = lambda c: np.diff(c.to_crop(pts[:2])[:, 0])[0]
    assert eye_gap(tight) > eye_gap(wide)


def test_model_input_layouts():
    img = gradient_image()
    crop = crop_from_landmarks(face_points())
    hwc = model_input(img, crop)
    chw = model_input(img, crop, chw=True)
    assert hwc.shape == (256, 256, 3) and hwc.dtype == np.float32
    assert chw.shape == (3, 256, 256)
    np.testing.assert_array_equal(chw.transpose(1, 2, 0), hwc)
    assert 0 <= hwc.min() and hwc.max() <= 1


def test_feather_mask_shape():
    m = feather_mask()
    assert m.shape == (512, 512) and m[256, 256] == 1
    assert m[0].max() == 0 and m[:, 0].max() == 0 and m[-1].max() == 0 and m[:, -1].max() == 0
    assert 0 < m[256, 480] < 1 or 0 < m[256, 470] < 1         # a soft edge, not a step


def test_identity_paste_back_reproduces_frame_and_stays_in_mask():
    img = gradient_image()
    crop = crop_from_landmarks(face_points(tilt_deg=8.0))
    rendered = crop_image(img, crop)
    out = paste_back(img, rendered, crop)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).max() <= 1
    # A render of another colour only changes pixels where the warped mask is non-zero.
    pb = PasteBack(img, crop)
    changed = np.any(pb(np.full_like(rendered, 7)) != img, axis=-1)
    support = pb.full_mask() > 0
    assert changed.any() and not np.any(changed & ~support)


def test_face_edit_changes_only_face_region_batched():
    img = gradient_image()
    pts = face_points()
    crop = crop_from_landmarks(pts)
    base = crop_image(img, crop)
    edited = base.copy()
    c = crop.to_crop(pts)
    x0, y0 = np.floor(c.min(axis=0)).astype(int)
    x1, y1 = np.ceil(c.max(axis=0)).astype(int)
    edited[y0:y1, x0:x1] = 255 - edited[y0:y1, x0:x1]         # "the face moved"
    pb = PasteBack(img, crop)
    out = pb(np.stack([base, edited, base]))
    assert out.shape == (3,) + img.shape
    np.testing.assert_array_equal(out[0], out[2])
    diff = np.any(np.abs(out[1].astype(int) - out[0]) > 1, axis=-1)
    ys, xs = np.nonzero(diff)
    region = crop.to_image(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=float))
    lo, hi = region.min(axis=0) - 2, region.max(axis=0) + 2
    assert len(xs) > 0
    assert xs.min() >= lo[0] and xs.max() <= hi[0] and ys.min() >= lo[1] and ys.max() <= hi[1]


def test_box_derived_landmarks_work():
    box = [200, 150, 420, 400]
    crop = crop_from_box(box)
    ref = crop_from_landmarks(landmarks_from_box(box))
    np.testing.assert_allclose(crop.matrix, ref.matrix)
    c = crop.to_crop(landmarks_from_box(box))
    assert abs(c[0, 1] - c[1, 1]) < 1e-6
    assert np.all((c > 0) & (c < CROP_SIZE))


def test_crop_partly_outside_frame_and_bad_input():
    img = gradient_image(200, 200)
    crop = crop_from_landmarks(face_points(cx=20, cy=30))
    # The official crop pads with black; an identity render that repeats the border instead
    # shows that paste-back itself adds nothing at the frame's edge.
    rendered = cv2.warpAffine(img, crop.matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    out = paste_back(img, rendered, crop)
    assert out.shape == img.shape and np.abs(out.astype(int) - img).max() <= 1
    with pytest.raises(ValueError):
        crop_from_landmarks(np.zeros((4, 2)))
    with pytest.raises(ValueError):
        crop_from_landmarks(np.zeros((5, 2)))
