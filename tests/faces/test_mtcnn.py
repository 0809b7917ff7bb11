"""MTCNN with the real weights: the astronaut's face where a person marked it, nothing elsewhere."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from faces import Face, iou, load_detector, nms
from faces.boxes import square

# Marked by hand on a 4x zoom of skimage's astronaut (512x512): pupils, nose tip, lip corners,
# and the face's extent (cheek to cheek, brow line to chin).
HAND_LANDMARKS = np.array([[204, 101], [246, 104], [224, 127], [204, 141], [244, 142]], float)
HAND_FACE_X = (178, 270)
HAND_BROW_Y, HAND_CHIN_Y = 62, 160


@pytest.fixture(scope="module")
def detector():
    return load_detector()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def test_astronaut_has_one_face_where_marked(detector, astronaut):
    faces = detector.detect(astronaut)

    assert len(faces) == 1
    face = faces[0]
    assert isinstance(face, Face) and face.score > 0.99
    x0, y0, x1, y1 = face.box
    assert abs(x0 - HAND_FACE_X[0]) < 10 and abs(x1 - HAND_FACE_X[1]) < 10
    assert abs(y0 - HAND_BROW_Y) < 10
    assert HAND_CHIN_Y - 5 < y1 < HAND_CHIN_Y + 20      # MTCNN boxes end a little below the chin
    assert face.landmarks.shape == (5, 2)
    np.testing.assert_allclose(face.landmarks, HAND_LANDMARKS, atol=6)


def test_landmarks_inside_box_in_order(detector, astronaut):
    face = detector.detect(astronaut)[0]
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    x0, y0, x1, y1 = face.box
    assert np.all((face.landmarks[:, 0] > x0) & (face.landmarks[:, 0] < x1))
    assert np.all((face.landmarks[:, 1] > y0) & (face.landmarks[:, 1] < y1))
    assert lx < nx < rx and mlx < nx < mrx                # left/right as seen in the image
    assert max(ly, ry) < ny < min(mly, mry)               # eyes above nose above mouth


@pytest.mark.parametrize("kind", ["noise", "flat", "gradient"])
def test_no_face_on_non_face_images(detector, kind):
    rng = np.random.default_rng(7)
    if kind == "noise":
        img = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    elif kind == "flat":
        img = np.full((360, 480, 3), (200, 160, 120), dtype=np.uint8)
    else:
        img = np.repeat(np.linspace(0, 255, 480, dtype=np.uint8)[None, :, None], 360, 0).repeat(3, 2)
    assert detector.detect(img) == []


def test_box_follows_scaling_and_offset_through_downscaled_search(detector, astronaut):
    # 2.5x larger and pasted off-centre in a 1700x1500 canvas: larger than max_side (1280), so
    # the search runs downscaled and the box must come back in full-resolution pixels.
    big = cv2.resize(astronaut, None, fx=2.5, fy=2.5, interpolation=cv2.INTER_CUBIC)
    canvas = np.full((1500, 1700, 3), 90, dtype=np.uint8)
    ox, oy = 300, 160
    canvas[oy:oy + big.shape[0], ox:ox + big.shape[1]] = big
    ref = detector.detect(astronaut)[0]
    expected = (ref.box[0] * 2.5 + ox, ref.box[1] * 2.5 + oy, ref.box[2] * 2.5 + ox, ref.box[3] * 2.5 + oy)

    faces = detector.detect(canvas)

    assert len(faces) == 1
    assert iou(faces[0].box, expected) > 0.8
    np.testing.assert_allclose(faces[0].landmarks, HAND_LANDMARKS * 2.5 + (ox, oy), atol=15)


def test_largest_face_first(detector, astronaut):
    face = astronaut[40:200, 150:300]
    canvas = np.full((400, 700, 3), 235, dtype=np.uint8)
    canvas[20:180, 20:170] = face                                          # small copy
    big = cv2.resize(face, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)
    canvas[20:20 + big.shape[0], 400:400 + big.shape[1]] = big             # larger copy

    faces = detector.detect(canvas)

    assert len(faces) == 2
    assert faces[0].box[0] > 350 and faces[1].box[0] < 200
    assert faces[0].width > faces[1].width * 1.3


def test_nms_keeps_best_of_overlaps_and_min_mode_drops_nested():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], float)
    scores = np.array([0.9, 0.95, 0.5, 0.4])
    # [1] beats [0] (IoU 81/119 = 0.68 > 0.5); [2] is apart; [3] (area 16) is inside [1]
    # (IoU 16/100 = 0.16): kept with union overlap, removed with min overlap (16/16 = 1).
    assert nms(boxes, scores, 0.5).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [1, 2]
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    np.testing.assert_allclose(square(np.array([[0, 0, 10, 4]])), [[0, -3, 10, 7]])


def test_missing_weights_and_bad_input_are_clear(tmp_path, detector):
    with pytest.raises(FileNotFoundError, match="pnet.pt"):
        load_detector(tmp_path)
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((64, 64), dtype=np.uint8))
