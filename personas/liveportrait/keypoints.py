"""LivePortrait's keypoint math: M's raw heads -> kp_info, head pose -> rotation, Eqn. 2 of the
paper (implicit keypoints from canonical keypoints, pose, expression, scale, translation), and
applying S's stitching and eye / lip retargeting.

Everything is batched over a leading dim B and keeps the input dtype and device. A kp_info is a
plain dict of tensors (the official wrapper's layout after `get_kp_info`):

    kp    (B, N, 3)  canonical keypoints        exp   (B, N, 3)  expression offsets
    pitch (B, 1)     degrees                    t     (B, 3)     translation (z unused)
    yaw   (B, 1)     degrees                    scale (B, 1)
    roll  (B, 1)     degrees

A take edits a copy (e.g. `yaw + 18`, `exp + delta`) and calls `transform_keypoints` on it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

# Head-pose bins: 66 bins of 3 degrees, bin i centred at 3 i - 97.5 degrees (-97.5 .. 97.5).
BIN_DEGREES = 3.0
BIN_OFFSET = 97.5

KpInfo = dict[str, torch.Tensor]


def headpose_to_degrees(bins: torch.Tensor) -> torch.Tensor:
    """(B, num_bins) logits -> (B,) degrees: the softmax expectation of the bin index, x 3,
    minus 97.5."""
    idx = torch.arange(bins.shape[1], dtype=bins.dtype, device=bins.device)
    return (bins.softmax(dim=1) * idx).sum(dim=1) * BIN_DEGREES - BIN_OFFSET


def refine_kp_info(raw: Mapping[str, torch.Tensor]) -> KpInfo:
    """M's raw heads -> kp_info (angles in degrees as (B, 1), kp and exp as (B, N, 3))."""
    b = raw["kp"].shape[0]
    info = dict(raw)
    for name in ("pitch", "yaw", "roll"):
        info[name] = headpose_to_degrees(raw[name])[:, None]
    info["kp"] = raw["kp"].reshape(b, -1, 3)
    info["exp"] = raw["exp"].reshape(b, -1, 3)
    return info


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees, each (B,) or (B, 1) -> (B, 3, 3) = (Rz(roll) Ry(yaw) Rx(pitch))^T, the matrix
    that right-multiplies row-vector keypoints."""
    x, y, z = (a.reshape(-1) / 180 * math.pi for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(x), torch.zeros_like(x)

    def mat(*rows: torch.Tensor) -> torch.Tensor:
        return torch.stack(rows, dim=-1).reshape(-1, 3, 3)

    rot_x = mat(one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos())
    rot_y = mat(y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos())
    rot_z = mat(z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one)
    return (rot_z @ rot_y @ rot_x).transpose(1, 2)


def transform_keypoints(kp_info: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Eqn. 2: x = scale * (kp @ R + exp) + [tx, ty, 0] -> (B, N, 3). `kp`/`exp` may be
    (B, N, 3) or flat (B, 3N); angles in degrees."""
    kp = kp_info["kp"]
    b = kp.shape[0]
    kp = kp.reshape(b, -1, 3)
    rot = rotation_matrix(kp_info["pitch"], kp_info["yaw"], kp_info["roll"])
    x = kp @ rot + kp_info["exp"].reshape(b, -1, 3)
    x = x * kp_info["scale"].reshape(b, 1, 1)
    t = kp_info["t"].reshape(b, 3)
    # Translation moves x and y only; depth stays as the scale left it.
    return x + torch.cat([t[:, :2], torch.zeros_like(t[:, 2:])], dim=1)[:, None, :]


def _concat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cat([a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)], dim=1)


def stitch(stitching: nn.Module, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """Apply S's stitching MLP: x_d + its 3N deltas, then its (tx, ty) added to every x and y.
    x_s, x_d: (B, N, 3) -> (B, N, 3). x_s may have batch 1 for a batch of x_d."""
    b, n = x_d.shape[:2]
    x_s = x_s.expand(b, -1, -1)
    delta = stitching(_concat(x_s, x_d))
    out = x_d + delta[:, : 3 * n].reshape(b, n, 3)
    shift = delta[:, 3 * n: 3 * n + 2].reshape(b, 1, 2)
    return out + torch.cat([shift, torch.zeros_like(shift[..., :1])], dim=-1)


def eye_retarget_delta(eye: nn.Module, x_s: torch.Tensor, eye_ratio: torch.Tensor) -> torch.Tensor:
    """S_eye's keypoint deltas (B, N, 3) for eye_ratio (B, 3) = [c_s_eye_left, c_s_eye_right,
    c_d_eye] (source eyes' openness, target openness). Add them to the driving keypoints."""
    b, n = eye_ratio.shape[0], x_s.shape[1]
    return eye(_concat(x_s.expand(b, -1, -1), eye_ratio)).reshape(b, n, 3)


def lip_retarget_delta(lip: nn.Module, x_s: torch.Tensor, lip_ratio: torch.Tensor) -> torch.Tensor:
    """S_lip's keypoint deltas (B, N, 3) for lip_ratio (B, 2) = [c_s_lip, c_d_lip] (source
    mouth openness, target openness). Add them to the driving keypoints."""
    b, n = lip_ratio.shape[0], x_s.shape[1]
    return lip(_concat(x_s.expand(b, -1, -1), lip_ratio)).reshape(b, n, 3)
