"""The take director: (emotion, angle, intensity, archetype, seconds, fps, seed) -> per-frame edits
of LivePortrait's implicit keypoints, plus the face track those edits imply.

LivePortrait places 21 keypoints as x = scale * (kp_c @ R(pitch, yaw, roll) + exp) + t. A take
is directed by numbers added to the source's own values, frame by frame:
  pitch/yaw/roll (degrees) = the angle's base pose + the emotion's head bias + idle motion;
  exp_delta (21, 3) = the emotion's offsets (constant over the take) + blinks;
  t_delta, scale = breathing. Nothing eases in: a take holds its angle and emotion from the
  first frame to the last, so takes can be looped and cut between.

Expression facts (which keypoint, which axis, how much per unit) come from the expression
editor of ComfyUI-AdvancedLivePortrait (nodes.py, `calc_fe`; units = its slider units) and the
official pipeline's region lists (live_portrait_pipeline.py: lip [6, 12, 14, 17, 19, 20], eyes
[11, 13, 15, 16, 18]). The mouth belongs to lip-sync: every keypoint that the official lip
region or the editor's mouth shapes (aaa: 17, 19; eee: 14, 20; woo: 3, 7, 14, 17) touches is
in MOUTH_KEYS and its exp_delta is exactly 0 in every frame. The editor's smile moves the
mouth corners through 3, 7, 14, 17 and 20 - the same keys as the opening shapes, so a smile
cannot be split off the opening; we keep only its eye-region part (13, 16: cheeks pushing the
lower lids up) and express emotion through brows (1, 2), eyelids and gaze (11, 13, 15, 16) and
the head.

Sign conventions (LivePortrait's): keypoint x points right and y down in the crop (they are
grid_sample coordinates); R is applied to row vectors, i.e. Rz(roll) Ry(yaw) Rx(pitch) to column
vectors. Taking the face frame as right-handed with z away from the camera (the nose at negative
z, FACE_DEPTH below) gives: +yaw moves the nose towards the image's left (the head turns to the
viewer's left), +pitch moves it down (a nod), +roll turns the face clockwise on screen. This
matches the 300W-LP/Hopenet yaw sign the pose heads descend from; it is a derivation, to be
confirmed on the first real render (flip THREE_QUARTER's sign and FACE_DEPTH together if not).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from faces.boxes import BOX_LANDMARKS
from personas.liveportrait.crop import CLOSEUP_CROP_SCALE, CROP_SCALE, Crop

NUM_KP = 21


class Angle(NamedTuple):
    pitch: float        # degrees added to the source pose for the whole take
    yaw: float
    roll: float
    crop_scale: float   # the crop.py scale this take is rendered from


class Emotion(NamedTuple):
    controls: dict      # control name -> value in the editor's slider units at intensity 1
    pose: tuple         # (pitch, yaw, roll) head bias in degrees at intensity 1


# ================================ THE TABLE ==================================================
# Angles. A three-quarter take is a real head turn, kept at 18 degrees: the issues report
# distortion past about 25 degrees (#190) and idle motion adds up to ~3 more. Closeup: a tighter
# crop and a slight nod (see the sign conventions above).
ANGLES = {
    "front": Angle(0.0, 0.0, 0.0, CROP_SCALE),
    "three_quarter": Angle(0.0, 18.0, 0.0, CROP_SCALE),
    "closeup": Angle(3.0, 0.0, 0.0, CLOSEUP_CROP_SCALE),
}

# Keypoints lip-sync owns (exp_delta always 0) and those a blink moves.
MOUTH_KEYS = (3, 6, 7, 12, 14, 17, 19, 20)
EYE_KEYS = (11, 13, 15, 16)
BROW_KEYS = (1, 2)

# Expression controls: (offsets for value > 0, offsets for value < 0); each offset is
# (keypoint, axis 0=x 1=y 2=z, exp change per slider unit). Values from the editor's calc_fe.
CONTROLS = {
    # eyelids: + opens wider (editor max 5), - closes (editor min -20 = shut); brows follow.
    "eyes": (((11, 1, -0.001), (13, 1, 0.0003), (15, 1, -0.001), (16, 1, 0.0003),
              (1, 1, -0.00025), (2, 1, 0.00025)),) * 2,
    # brows: + raised (editor max 15); - drawn together and down (editor min -10).
    "brow": (((1, 1, 0.001), (2, 1, -0.001)),
             ((1, 0, -0.001), (2, 0, 0.001), (1, 1, 0.0003), (2, 1, -0.0003))),
    # the eye-region part of the editor's smile (its unit: smile = 1): cheeks lift the lids.
    "cheek": (((13, 1, -0.00275), (16, 1, -0.00275)),) * 2,
    # gaze: pupils sideways (asymmetric per side, as the editor) and up (+) / down (-).
    "gaze_x": (((11, 0, 0.0007), (15, 0, 0.001)), ((11, 0, 0.001), (15, 0, 0.0007))),
    "gaze_y": (((11, 1, -0.001), (15, 1, -0.001)),) * 2,
}

# Emotions at intensity 1 (intensity scales everything linearly; 0 = no offset at all).
EMOTIONS = {
    "neutral": Emotion({}, (0.0, 0.0, 0.0)),
    "happy": Emotion({"cheek": 1.0, "brow": 2.0, "eyes": -1.0}, (-2.0, 0.0, 1.5)),
    "sad": Emotion({"brow": -3.0, "eyes": -5.0, "gaze_y": -4.0}, (5.0, 0.0, -2.0)),
    "angry": Emotion({"brow": -9.0, "eyes": -2.0}, (2.5, 0.0, 0.0)),
    "surprised": Emotion({"brow": 12.0, "eyes": 5.0}, (-3.0, 0.0, 0.0)),
    "calm": Emotion({"eyes": -3.0, "cheek": 0.3}, (1.0, 0.0, 0.0)),
    "confident": Emotion({"cheek": 0.4, "brow": 1.5, "eyes": -1.0}, (-3.0, 0.0, 0.0)),
    "thoughtful": Emotion({"gaze_x": 6.0, "gaze_y": 4.0, "brow": -2.0, "eyes": -1.0}, (-1.0, 0.0, 3.0)),
    "intense": Emotion({"brow": -5.0, "eyes": 3.0}, (4.0, 0.0, 0.0)),
}
EMOTION_ALIASES = {
    "joyful": "happy", "cheerful": "happy", "excited": "happy", "melancholic": "sad",
    "furious": "angry", "shocked": "surprised", "serene": "calm", "relaxed": "calm",
    "proud": "confident", "pensive": "thoughtful", "curious": "thoughtful", "serious": "intense",
    "determined": "intense", "": "neutral",
}

# Archetype energy (idle motion scale), matched by keywords of the free-text archetype; the
# first row with a hit wins, no hit -> "default".
ARCHETYPES = (
    ("calm", 0.5, ("calm", "wise", "serene", "mentor", "elder", "sage", "meditat", "stoic", "gentle")),
    ("measured", 0.75, ("professional", "corporate", "news", "anchor", "doctor", "teacher", "formal")),
    ("energetic", 1.6, ("energetic", "playful", "excited", "lively", "enthusias", "comedian",
                        "influencer", "hype", "bubbly", "fun")),
)
DEFAULT_ARCHETYPE = ("default", 1.0)

# Idle motion at energy 1: (channel, amplitude, target period s). Each wave completes a whole
# number of cycles per take (period = take / round(take / target)) so the take loops; waves
# whose period had to shrink below the target shrink their amplitude in proportion.
IDLE_WAVES = (
    ("yaw", 1.6, 7.0), ("yaw", 0.5, 2.9),
    ("pitch", 1.0, 5.5), ("pitch", 0.35, 2.3),
    ("roll", 0.6, 6.5), ("roll", 0.2, 3.1),
    ("ty", 0.0025, 4.0),        # breathing: keypoint units (1 = half the crop, 256 px)
    ("scale", 0.003, 4.0),      # breathing: relative scale
)

# Blinks: humans blink every few seconds for 100-250 ms, closing faster than opening.
BLINK_INTERVAL_S = (2.0, 6.0)   # start to start
BLINK_DURATION_S = (0.10, 0.25)
BLINK_CLOSE_FRACTION = 0.4      # share of a blink spent closing
BLINK_FIRST_S = (0.3, 2.0)      # the first blink's start
BLINK_LOOP_MARGIN_S = 0.4       # no blink this close to the end: none straddles the loop point
BLINK_SHUT_EYES = -20.0         # "eyes" control value of shut lids (the editor's minimum)
# ============================================================================================


def _check_table() -> None:
    for name, (pos, neg) in CONTROLS.items():
        for kp, axis, _ in pos + neg:
            if kp in MOUTH_KEYS or not (0 <= kp < NUM_KP and 0 <= axis < 3):
                raise RuntimeError(f"control {name!r} touches keypoint {kp} axis {axis}")
    for name, emo in EMOTIONS.items():
        if set(emo.controls) - set(CONTROLS):
            raise RuntimeError(f"emotion {name!r} uses unknown controls")


_check_table()


class Wave(NamedTuple):
    channel: str        # pitch | yaw | roll (degrees), ty (keypoint units), scale (relative)
    amplitude: float
    cycles: int         # whole cycles per take
    phase: float        # radians


def control_offsets(controls: dict) -> np.ndarray:
    """(21, 3) exp offsets for control values (slider units)."""
    exp = np.zeros((NUM_KP, 3))
    for name, value in controls.items():
        pos, neg = CONTROLS[name]
        for kp, axis, per_unit in (pos if value >= 0 else neg):
            exp[kp, axis] += value * per_unit
    return exp


def rotation_matrix(pitch, yaw, roll) -> np.ndarray:
    """LivePortrait's R for degrees (broadcast): (..., 3, 3), used as points @ R."""
    p, y, r = (np.radians(np.asarray(a, dtype=np.float64)) for a in (pitch, yaw, roll))
    p, y, r = np.broadcast_arrays(p, y, r)
    cp, sp, cy, sy, cr, sr = np.cos(p), np.sin(p), np.cos(y), np.sin(y), np.cos(r), np.sin(r)
    one, zero = np.ones_like(p), np.zeros_like(p)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(p.shape + (3, 3))
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(p.shape + (3, 3))
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(p.shape + (3, 3))
    return np.swapaxes(rz @ ry @ rx, -1, -2)


def evaluate_waves(waves: Sequence[Wave], frames, n_frames: int) -> dict:
    """Idle motion per channel at (possibly fractional or >= n) frame indices; periodic in n."""
    f = np.asarray(frames, dtype=np.float64)
    out = {c: np.zeros_like(f) for c in ("pitch", "yaw", "roll", "ty", "scale")}
    for w in waves:
        out[w.channel] += w.amplitude * np.sin(2 * math.pi * w.cycles * f / n_frames + w.phase)
    return out


@dataclass(frozen=True, eq=False)
class TakePlan:
    """Per-frame keypoint edits of one take (n frames); add them to the source's own values."""

    fps: float
    pitch: np.ndarray           # (n,) degrees
    yaw: np.ndarray             # (n,)
    roll: np.ndarray            # (n,)
    exp_delta: np.ndarray       # (n, 21, 3)
    t_delta: np.ndarray         # (n, 3) keypoint units (z always 0)
    scale: np.ndarray           # (n,) multiplier of the source scale
    eye_open: np.ndarray        # (n,) 1 open .. 0 shut
    blinks: list                # [(start, end)] frames start..end-1 are in the blink
    crop_scale: float
    base_pose: tuple            # (pitch, yaw, roll) held all take long (angle + emotion)
    waves: tuple                # the idle Waves, for evaluation at any frame
    params: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.pitch)

    def idle_at(self, frames) -> dict:
        return evaluate_waves(self.waves, frames, self.n_frames)


def _emotion(emotion: str | None) -> tuple[str, bool, str | None]:
    if emotion is None:
        return "neutral", False, None
    key = str(emotion).strip().lower().replace("-", "_").replace(" ", "_")
    key = EMOTION_ALIASES.get(key, key)
    if key in EMOTIONS:
        return key, False, None
    return "neutral", True, f"unknown emotion {emotion!r}; known: {', '.join(EMOTIONS)}"


def _archetype(archetype: str | None) -> tuple[str, float]:
    words = re.findall(r"[a-z]+", (archetype or "").lower())
    for style, energy, keys in ARCHETYPES:
        if any(w.startswith(k) for w in words for k in keys):
            return style, energy
    return DEFAULT_ARCHETYPE


def _blinks(rng: np.random.Generator, n: int, fps: float) -> list[tuple[int, int]]:
    last_end = n - int(round(BLINK_LOOP_MARGIN_S * fps))
    blinks, t = [], rng.uniform(*BLINK_FIRST_S)
    while True:
        length = max(2, int(round(rng.uniform(*BLINK_DURATION_S) * fps)))
        start = max(1, int(round(t * fps)))
        if start + length > last_end:
            break
        blinks.append((start, start + length))
        t += rng.uniform(*BLINK_INTERVAL_S)
    if not blinks:     # a short take: one blink anywhere it fits, if it fits at all
        length = max(2, int(round(rng.uniform(*BLINK_DURATION_S) * fps)))
        if last_end - length >= 1:
            start = int(rng.integers(1, last_end - length + 1))
            blinks.append((start, start + length))
    return blinks


def _closure(length: int) -> np.ndarray:
    """Lid closure (0 open .. 1 shut) over a blink's frames: quick close to shut, slower open;
    every frame of the blink is partly closed."""
    peak = max(0, int(round(BLINK_CLOSE_FRACTION * length - 0.5)))
    k = np.arange(length)
    closing = np.sin(math.pi / 2 * (k + 1) / (peak + 1))
    opening = np.sin(math.pi / 2 * (length - k) / (length - peak))
    return np.where(k <= peak, closing, opening)


def plan_take(emotion: str | None = "neutral", angle: str = "front", intensity: float = 0.6,
              archetype: str | None = None, seconds: float = 4.0, fps: float = 25.0,
              seed: int = 0) -> TakePlan:
    """Direct one take. Raises ValueError on bad parameters; an unknown emotion falls back to
    neutral and says so in params (fallback=True, fallback_reason)."""
    if angle not in ANGLES:
        raise ValueError(f"unknown angle {angle!r}; expected one of {', '.join(ANGLES)}")
    intensity, seconds, fps = float(intensity), float(seconds), float(fps)
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity must be within 0..1, got {intensity}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0, got {fps}")
    n = int(round(seconds * fps))
    if n < 1:
        raise ValueError(f"seconds * fps gives no frame ({seconds} s at {fps} fps)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    emo_name, fallback, reason = _emotion(emotion)
    style, energy = _archetype(archetype)
    emo, base = EMOTIONS[emo_name], ANGLES[angle]
    base_pose = tuple(b + intensity * e for b, e in zip(base[:3], emo.pose))
    take_s = n / fps

    # Separate random streams, so a change in one part never reshuffles the other.
    rng_idle = np.random.default_rng([int(seed), 1])
    rng_blink = np.random.default_rng([int(seed), 2])
    waves = []
    for channel, amplitude, period in IDLE_WAVES:
        cycles = max(1, int(round(take_s / period)))
        shrink = min(1.0, take_s / cycles / period)
        gain = energy if channel in ("pitch", "yaw", "roll") else math.sqrt(energy)
        waves.append(Wave(channel, amplitude * gain * shrink, cycles,
                          float(rng_idle.uniform(0, 2 * math.pi))))
    idle = evaluate_waves(waves, np.arange(n), n)

    eye_open = np.ones(n)
    blinks = _blinks(rng_blink, n, fps)
    for start, end in blinks:
        eye_open[start:end] = 1.0 - _closure(end - start)

    controls = {k: intensity * v for k, v in emo.controls.items()}
    emotion_exp = control_offsets(controls)
    # A blink drives the lids from the emotion's opening to shut, whatever the emotion.
    shut = control_offsets({"eyes": BLINK_SHUT_EYES - controls.get("eyes", 0.0)})
    exp_delta = emotion_exp[None] + (1.0 - eye_open)[:, None, None] * shut[None]
    exp_delta[:, list(MOUTH_KEYS), :] = 0.0          # lip-sync owns the mouth, always

    t_delta = np.zeros((n, 3))
    t_delta[:, 1] = idle["ty"]
    params = {
        "emotion_requested": emotion, "emotion": emo_name, "fallback": fallback,
        "fallback_reason": reason, "angle": angle, "intensity": intensity,
        "archetype": archetype, "archetype_style": style, "energy": energy,
        "seed": int(seed), "seconds": take_s, "fps": fps, "n_frames": n,
        "crop_scale": base.crop_scale, "base_pose": list(base_pose),
        "blinks": [list(b) for b in blinks],
        "blink_times_s": [[round(s / fps, 4), round(e / fps, 4)] for s, e in blinks],
        "mouth_keys": list(MOUTH_KEYS),
    }
    return TakePlan(fps, base_pose[0] + idle["pitch"], base_pose[1] + idle["yaw"],
                    base_pose[2] + idle["roll"], exp_delta, t_delta, 1.0 + idle["scale"],
                    eye_open, blinks, base.crop_scale, base_pose, tuple(waves), params)


# ---- the face track implied by a plan -------------------------------------------------------
# Depth of the five landmarks (left eye, right eye, nose, mouth corners) in inter-ocular
# distances, negative = towards the camera: a mean-face profile (nose tip ~0.55 IOD in front of
# the eyes, mouth corners a little). The eyes' depth is the rotation's depth.
FACE_DEPTH = np.array([0.0, 0.0, -0.55, -0.1, -0.1])


@dataclass(frozen=True, eq=False)
class TakeTrack:
    points_crop: np.ndarray     # (n, 5, 2) crop pixels
    points: np.ndarray          # (n, 5, 2) image pixels
    boxes: np.ndarray           # (n, 4) image pixels, faces.boxes proportions


def boxes_from_landmarks(points: np.ndarray) -> np.ndarray:
    """(..., 5, 2) -> (..., 4) the face box whose landmarks_from_box gives these eyes/mouth."""
    (ex0, ey), (ex1, _), _, (mx0, my), (mx1, _) = BOX_LANDMARKS
    p = np.asarray(points, dtype=np.float64)
    eye_mid, mouth_mid = p[..., :2, :].mean(-2), p[..., 3:5, :].mean(-2)
    w = np.linalg.norm(p[..., 1, :] - p[..., 0, :], axis=-1) / (ex1 - ex0)
    h = np.linalg.norm(mouth_mid - eye_mid, axis=-1) / (my - ey)
    x0 = eye_mid[..., 0] - (ex0 + ex1) / 2 * w
    y0 = eye_mid[..., 1] - ey * h
    return np.stack([x0, y0, x0 + w, y0 + h], axis=-1)


def track_points(source_points_crop: np.ndarray, plan: TakePlan, source_pose: Sequence[float],
                 crop: Crop) -> TakeTrack:
    """Per-frame landmarks and boxes of a take, with no detection: the source's five points
    (crop pixels) get the plan's rigid head motion the way LivePortrait moves its keypoints -
    back to the canonical frame through R(source), into R(source + delta), times the scale
    change, plus the translation change; orthographic, about the crop centre (the keypoint
    origin). Expression and the source's own translation are left out (the crop centres the face)."""
    p = np.asarray(source_points_crop, dtype=np.float64)
    if p.shape != (5, 2):
        raise ValueError(f"expected (5, 2) source points, got {p.shape}")
    half = crop.size / 2
    q = (p - half) / half
    iod = float(np.linalg.norm(q[1] - q[0]))
    pts3 = np.concatenate([q, (FACE_DEPTH * iod)[:, None]], axis=1)
    sp, sy, sr = (float(v) for v in source_pose)
    r_s = rotation_matrix(sp, sy, sr)
    r_d = rotation_matrix(sp + plan.pitch, sy + plan.yaw, sr + plan.roll)        # (n, 3, 3)
    moved = plan.scale[:, None, None] * ((pts3 @ r_s.T)[None] @ r_d)
    xy = moved[..., :2] + plan.t_delta[:, None, :2]
    points_crop = half + xy * half
    points = crop.to_image(points_crop)
    return TakeTrack(points_crop, points, boxes_from_landmarks(points))
