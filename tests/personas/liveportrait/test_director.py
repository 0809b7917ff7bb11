"""The take director: angles, emotions, blinks, idle loop, mouth left to lip-sync, face track."""
import numpy as np
import pytest

from personas.liveportrait.crop import CLOSEUP_CROP_SCALE, crop_from_landmarks
from personas.liveportrait.director import (ANGLES, BROW_KEYS, EMOTIONS, EYE_KEYS, MOUTH_KEYS,
                                             TakePlan, boxes_from_landmarks, control_offsets,
                                             plan_take, rotation_matrix, track_points)
from faces.boxes import landmarks_from_box

SOURCE_POINTS = np.array([[200.0, 230.0], [312.0, 230.0], [256.0, 300.0],
                          [215.0, 360.0], [297.0, 360.0]])


@pytest.mark.parametrize("angle", list(ANGLES))
def test_angle_reached_on_average(angle):
    plan = plan_take("neutral", angle, intensity=0.5, seconds=6, fps=25, seed=3)
    want = ANGLES[angle]
    assert plan.n_frames == 150 and plan.exp_delta.shape == (150, 21, 3)
    assert plan.t_delta.shape == (150, 3) and plan.scale.shape == (150,)
    assert abs(plan.yaw.mean() - want.yaw) < 0.05
    assert abs(plan.pitch.mean() - want.pitch) < 0.05
    assert abs(plan.roll.mean() - want.roll) < 0.05
    assert plan.crop_scale == want.crop_scale == plan.params["crop_scale"]
    assert np.abs(plan.yaw - want.yaw).max() < 5          # idle motion stays small
    if angle == "three_quarter":
        assert 15 <= plan.yaw.mean() <= 22
    if angle == "closeup":
        assert plan.crop_scale == CLOSEUP_CROP_SCALE


def test_blinks_at_drawn_times_only():
    plan = plan_take("happy", "front", intensity=0.8, seconds=12, fps=25, seed=11)
    assert len(plan.blinks) >= 2
    in_blink = np.zeros(plan.n_frames, bool)
    for s, e in plan.blinks:
        assert 2 <= e - s <= 7                                # 100-250 ms at 25 fps
        in_blink[s:e] = True
        assert plan.eye_open[s:e].min() < 0.1                 # (almost) shut at its peak
        assert 0 < s and e < plan.n_frames                    # never across the loop point
    for (s0, _), (s1, _) in zip(plan.blinks, plan.blinks[1:]):
        assert 2 * 25 - 1 <= s1 - s0 <= 6 * 25 + 1
    assert np.all(plan.eye_open[in_blink] < 1) and np.all(plan.eye_open[~in_blink] == 1)
    # Expression moves from its held value exactly in blink frames, on eye (and brow) keys.
    moved = np.abs(plan.exp_delta - plan.exp_delta[~in_blink][0]) > 0
    np.testing.assert_array_equal(moved.any(axis=(1, 2)), in_blink)
    keys = np.nonzero(moved.any(axis=(0, 2)))[0]
    assert set(EYE_KEYS) <= set(keys) <= set(EYE_KEYS) | set(BROW_KEYS)
    assert plan.params["blink_times_s"] == [[s / 25, e / 25] for s, e in plan.blinks]


def test_short_take_still_blinks():
    plan = plan_take(seconds=1.5, fps=25, seed=5)
    assert len(plan.blinks) == 1


def test_intensity_zero_is_no_expression():
    plan = plan_take("angry", "front", intensity=0.0, seconds=8, fps=25, seed=2)
    open_frames = plan.eye_open == 1
    assert open_frames.any() and not open_frames.all()
    assert np.all(plan.exp_delta[open_frames] == 0)
    assert plan.base_pose == (0.0, 0.0, 0.0)
    # ... while a blink still closes the lids by the blink amount alone.
    shut = control_offsets({"eyes": -20.0})
    i = int(np.argmin(plan.eye_open))
    np.testing.assert_allclose(plan.exp_delta[i], (1 - plan.eye_open[i]) * shut, atol=1e-15)


def test_intensity_scales_emotion():
    half = plan_take("surprised", intensity=0.5, seconds=3, seed=1)
    full = plan_take("surprised", intensity=1.0, seconds=3, seed=1)
    i = int(np.nonzero(half.eye_open == 1)[0][0])
    np.testing.assert_allclose(full.exp_delta[i], 2 * half.exp_delta[i], atol=1e-15)
    assert np.abs(full.exp_delta[i]).max() > 0


def test_loop_closure():
    plan = plan_take("calm", "three_quarter", intensity=0.7, archetype="playful streamer",
                     seconds=5, fps=30, seed=9)
    n = plan.n_frames
    at_n = plan.idle_at([n, n - 1])
    base = plan.base_pose
    assert abs(plan.pitch[0] - (base[0] + at_n["pitch"][0])) < 1e-9
    assert abs(plan.yaw[0] - (base[1] + at_n["yaw"][0])) < 1e-9
    assert abs(plan.roll[0] - (base[2] + at_n["roll"][0])) < 1e-9
    assert abs(plan.scale[0] - (1 + at_n["scale"][0])) < 1e-12
    assert abs(plan.t_delta[0, 1] - at_n["ty"][0]) < 1e-12
    assert abs(plan.yaw[n - 1] - (base[1] + at_n["yaw"][1])) < 1e-9
    # The seam step (last -> first frame) is no bigger than the steps inside the take.
    for ch in (plan.pitch, plan.yaw, plan.roll, plan.scale):
        assert abs(ch[0] - ch[-1]) <= np.abs(np.diff(ch)).max() + 1e-12
    assert plan.eye_open[0] == plan.eye_open[-1] == 1


@pytest.mark.parametrize("emotion", list(EMOTIONS) + ["joyful", "no-such-feeling"])
def test_mouth_keys_never_move(emotion):
    plan = plan_take(emotion, "closeup", intensity=1.0, seconds=10, fps=25, seed=4)
    assert np.all(plan.exp_delta[:, list(MOUTH_KEYS), :] == 0)


def test_emotions_differ_from_neutral():
    for name in EMOTIONS:
        plan = plan_take(name, intensity=1.0, seconds=2, seed=0)
        i = int(np.nonzero(plan.eye_open == 1)[0][0])
        assert (np.abs(plan.exp_delta[i]).max() > 0) == (name != "neutral"), name


def test_same_seed_same_plan_different_seed_differs():
    a, b = (plan_take("sad", "front", 0.6, "wise mentor", 6, 24, seed=7) for _ in range(2))
    for field in ("pitch", "yaw", "roll", "exp_delta", "t_delta", "scale", "eye_open"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.blinks == b.blinks and a.params == b.params
    c = plan_take("sad", "front", 0.6, "wise mentor", 6, 24, seed=8)
    assert not np.array_equal(a.yaw, c.yaw) and a.blinks != c.blinks


def test_unknown_emotion_falls_back_to_neutral():
    plan = plan_take("flabbergasted", intensity=1.0, seconds=2, seed=0)
    assert plan.params["emotion"] == "neutral" and plan.params["fallback"] is True
    assert "flabbergasted" in plan.params["fallback_reason"]
    ok = plan_take("Happy", seconds=2)
    assert ok.params["emotion"] == "happy" and ok.params["fallback"] is False
    assert ok.params["fallback_reason"] is None


def test_archetype_energy_by_keywords():
    calm = plan_take(archetype="A wise, calm mentor", seconds=8, seed=1)
    lively = plan_take(archetype="Energetic & playful host", seconds=8, seed=1)
    other = plan_take(archetype="pirate captain", seconds=8, seed=1)
    assert calm.params["archetype_style"] == "calm" and lively.params["archetype_style"] == "energetic"
    assert other.params["archetype_style"] == "default" and other.params["energy"] == 1.0
    assert np.ptp(calm.yaw) < np.ptp(other.yaw) < np.ptp(lively.yaw)


@pytest.mark.parametrize("kwargs, match", [
    ({"intensity": 1.5}, "intensity"), ({"intensity": -0.1}, "intensity"),
    ({"seconds": 0}, "seconds"), ({"seconds": -2}, "seconds"),
    ({"fps": 0}, "fps"), ({"fps": -25}, "fps"),
    ({"angle": "profile"}, "angle"), ({"seed": -1}, "seed"),
])
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_take(**kwargs)


def test_rotation_matrix_is_lp_convention():
    r = rotation_matrix(10.0, -20.0, 30.0)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rotation_matrix(0, 0, 0), np.eye(3))
    # +yaw sends a point in front of the face (negative z) towards negative x (image left).
    nose = np.array([0.0, 0.0, -1.0]) @ rotation_matrix(0, 20.0, 0)
    assert nose[0] < 0


def _still(plan: TakePlan) -> TakePlan:
    n = plan.n_frames
    return TakePlan(plan.fps, np.zeros(n), np.zeros(n), np.zeros(n), plan.exp_delta,
                    np.zeros((n, 3)), np.ones(n), plan.eye_open, plan.blinks, plan.crop_scale,
                    (0.0, 0.0, 0.0), (), {})


def test_track_zero_motion_returns_source():
    crop = crop_from_landmarks(np.array([[300, 250], [380, 250], [340, 300], [310, 340], [370, 340]], float))
    track = track_points(SOURCE_POINTS, _still(plan_take(seconds=1, seed=0)), (3.0, -5.0, 2.0), crop)
    np.testing.assert_allclose(track.points_crop, np.broadcast_to(SOURCE_POINTS, track.points_crop.shape), atol=1e-9)
    np.testing.assert_allclose(track.points, np.broadcast_to(crop.to_image(SOURCE_POINTS), track.points.shape), atol=1e-9)
    np.testing.assert_allclose(track.boxes[0], boxes_from_landmarks(crop.to_image(SOURCE_POINTS)))


def test_track_follows_yaw_turn():
    crop = crop_from_landmarks(np.array([[300, 250], [380, 250], [340, 300], [310, 340], [370, 340]], float))
    plan = plan_take("neutral", "three_quarter", intensity=0.0, archetype="calm", seconds=4, seed=0)
    track = track_points(SOURCE_POINTS, plan, (0.0, 0.0, 0.0), crop)
    assert track.points.shape == (plan.n_frames, 5, 2) and track.boxes.shape == (plan.n_frames, 4)
    rel = track.points_crop[:, 2, 0] - track.points_crop[:, :2, 0].mean(axis=1)
    rel0 = SOURCE_POINTS[2, 0] - SOURCE_POINTS[:2, 0].mean()
    assert np.all(rel < rel0 - 5)                     # the nose swings to the viewer's left
    eye_gap = np.diff(track.points_crop[:, :2, 0], axis=1)[:, 0]
    assert np.all(eye_gap < SOURCE_POINTS[1, 0] - SOURCE_POINTS[0, 0])   # foreshortened


def test_boxes_round_trip_box_landmarks():
    box = np.array([120.0, 80.0, 320.0, 330.0])
    np.testing.assert_allclose(boxes_from_landmarks(landmarks_from_box(box)), box, atol=1e-9)
