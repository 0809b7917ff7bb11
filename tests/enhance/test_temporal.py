"""ResidualStabilizer: holds the restore residual where the face is still, refreshes where it moves."""
from __future__ import annotations

import pytest
import torch

from enhance.temporal import ResidualStabilizer, StabilizerOptions, gaussian_blur


def frames_with_moving_square(n: int, size: int = 96) -> torch.Tensor:
    """A still textured background with noise, and a dark square that moves 6 px per frame."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, size, size, generator=g) * 60 + 100
    base = gaussian_blur(base, 2.0)
    frames = base.repeat(n, 1, 1, 1) + torch.randn(n, 3, size, size, generator=g) * 2.0
    for i in range(n):
        frames[i, :, 60:80, 10 + 6 * i:30 + 6 * i] = 20.0
    return frames


def test_holds_residual_on_still_pixels_and_refreshes_moving_ones():
    n = 5
    frames = frames_with_moving_square(n)
    g = torch.Generator().manual_seed(1)
    residuals = torch.randn(n, 3, 96, 96, generator=g) * 20  # "hallucinated detail" differing every frame
    out = ResidualStabilizer()(frames, residuals)
    assert torch.equal(out[0], residuals[0])  # the first frame is taken as is
    held = out[1:, :, 5:40, 5:90] - residuals[0, :, 5:40, 5:90]  # rows never touched by the square
    assert held.abs().max() < 1e-3
    # where the square's leading edge just arrived, the residual is the fresh one
    x0 = 10 + 6 * (n - 1)
    fresh = out[-1, :, 64:76, x0 + 15:x0 + 19] - residuals[-1, :, 64:76, x0 + 15:x0 + 19]
    assert fresh.abs().mean() < 1.0


def test_state_carries_across_calls_and_reset_forgets():
    frames = frames_with_moving_square(4)
    residuals = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(2)) * 20
    whole = ResidualStabilizer()(frames, residuals)
    split = ResidualStabilizer()
    parts = torch.cat([split(frames[:2], residuals[:2]), split(frames[2:], residuals[2:])])
    assert torch.allclose(whole, parts)
    split.reset()
    assert torch.equal(split(frames[3:], residuals[3:]), residuals[3:])


def test_slow_drift_eventually_refreshes():
    # +1 level per frame everywhere: each step is below motion_lo, the sum is not
    base = torch.full((1, 3, 32, 32), 100.0)
    frames = torch.cat([base + i for i in range(12)])
    residuals = torch.arange(12.0).view(12, 1, 1, 1).expand(12, 3, 32, 32).contiguous()
    out = ResidualStabilizer(StabilizerOptions(motion_lo=1.5, motion_hi=6.0))(frames, residuals)
    assert out[1].mean() == 0.0  # 1 level of change: held
    assert out[-1].mean() > 5.0  # accumulated change re-opened the gate


def test_options_are_validated():
    with pytest.raises(ValueError, match="motion_hi"):
        ResidualStabilizer(StabilizerOptions(motion_lo=5, motion_hi=5))
