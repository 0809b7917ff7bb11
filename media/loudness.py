"""Loudness: ITU-R BS.1770-4 integrated loudness and true peak, and two-pass normalisation.

Normalising = measure the mix (pass 1), apply the gain that brings it to the target, pass it
through a look-ahead true-peak limiter, measure again and correct the gain (the limiter takes a
little loudness away), until within LOUDNESS_TOLERANCE_LU. The limiter sits a little under the
delivery ceiling because AAC's reconstruction adds small inter-sample overs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import resample_poly, sosfilt

from media.ffmpeg import run

TARGET_LUFS = -14.0
TARGET_TRUE_PEAK_DBTP = -1.0
AAC_HEADROOM_DB = 0.5             # limiter ceiling = target TP - this (AAC adds small overs)
LOUDNESS_TOLERANCE_LU = 0.05
MAX_PASSES = 5
MAX_GAIN_DB = 40.0                # never lift near-silence into noise
LOOKAHEAD_MS = 3.0                # limiter attack: the gain is already down when a peak arrives
RELEASE_DB_PER_S = 40.0           # limiter recovery rate
TRUE_PEAK_OVERSAMPLE = 4          # BS.1770-4 Annex 2: 4x at 48 kHz

# BS.1770 K-weighting at 48 kHz (pre-filter shelf, then RLB high-pass), as second-order sections.
K_WEIGHTING_48K = np.array([
    [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241,
     0.73248077421585],
    [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
])
BLOCK_S, HOP_S = 0.4, 0.1          # gating blocks of 400 ms, 75% overlap
ABSOLUTE_GATE_LUFS, RELATIVE_GATE_LU = -70.0, -10.0


@dataclass(frozen=True)
class Loudness:
    integrated_lufs: float
    true_peak_dbtp: float


@dataclass(frozen=True)
class Normalized:
    samples: np.ndarray            # (n, channels) float32
    integrated_lufs: float
    true_peak_dbtp: float
    gain_db: float                 # the linear gain applied before limiting
    passes: int


def _check_rate(sample_rate: int) -> None:
    if sample_rate != 48000:
        raise ValueError(f"loudness is measured at 48 kHz; resample first (got {sample_rate})")


def _as_2d(x: np.ndarray) -> np.ndarray:
    return x[:, None] if x.ndim == 1 else x


def integrated_loudness(x: np.ndarray, sample_rate: int = 48000) -> float:
    """Gated integrated loudness in LUFS (-inf when every block is below the absolute gate)."""
    _check_rate(sample_rate)
    x = _as_2d(np.asarray(x, np.float32))
    block, hop = int(BLOCK_S * sample_rate), int(HOP_S * sample_rate)
    if len(x) < block:
        return float("-inf")
    # Channel weights are 1 for L, R (and C); sum the channels' squares, then block means.
    power = np.zeros(len(x), np.float64)
    for c in range(x.shape[1]):
        power += sosfilt(K_WEIGHTING_48K.astype(np.float32), x[:, c]).astype(np.float64) ** 2
    csum = np.concatenate([np.zeros(1), np.cumsum(power)])
    starts = np.arange(0, len(x) - block + 1, hop)
    z = (csum[starts + block] - csum[starts]) / block
    with np.errstate(divide="ignore"):
        levels = -0.691 + 10 * np.log10(z)
    kept = levels > ABSOLUTE_GATE_LUFS
    if not kept.any():
        return float("-inf")
    relative = -0.691 + 10 * np.log10(z[kept].mean()) + RELATIVE_GATE_LU
    kept &= levels > relative
    return float(-0.691 + 10 * np.log10(z[kept].mean()))


def _peak_per_sample(x: np.ndarray) -> np.ndarray:
    """The largest oversampled |value| around each input sample, over all channels.

    Per channel, 1-D and float32, with elementwise maxima: numpy's reductions over a short
    trailing axis are several times slower than this on minutes of audio.
    """
    x = _as_2d(np.asarray(x, np.float32))
    n = len(x)
    peak = np.zeros(n, np.float32)
    for c in range(x.shape[1]):
        np.maximum(peak, np.abs(x[:, c]), out=peak)
        up = np.abs(resample_poly(x[:, c], TRUE_PEAK_OVERSAMPLE, 1))[:n * TRUE_PEAK_OVERSAMPLE]
        phases = up.reshape(n, TRUE_PEAK_OVERSAMPLE)
        for k in range(TRUE_PEAK_OVERSAMPLE):
            np.maximum(peak, phases[:, k], out=peak)
    return peak


def true_peak_dbtp(x: np.ndarray, sample_rate: int = 48000) -> float:
    _check_rate(sample_rate)
    return _to_db(float(_peak_per_sample(x).max()) if len(x) else 0.0)


def _to_db(linear: float) -> float:
    return 20 * float(np.log10(linear)) if linear > 0 else float("-inf")


def limiter_gain_db(peaks: np.ndarray, ceiling_db: float, sample_rate: int) -> np.ndarray:
    """Per-sample gain (dB, <= 0) keeping peaks * gain under the ceiling, with look-ahead.

    need(t) = the gain sample t needs. Taking the minimum over +-L, then (after the release) the
    mean over +-L, keeps gain(t) <= need(t) everywhere: every value averaged at t is a minimum
    over a window that contains t. Release: gain rises at most RELEASE_DB_PER_S, computed as
    k*t + cummin(g - k*t) (the lower envelope of slope k), vectorised.
    """
    with np.errstate(divide="ignore"):
        need = np.minimum(0.0, ceiling_db - 20 * np.log10(np.maximum(peaks, 1e-12)))
    half = max(1, int(round(LOOKAHEAD_MS * sample_rate / 1000)))
    held = minimum_filter1d(need, size=2 * half + 1, mode="nearest")
    k = RELEASE_DB_PER_S / sample_rate
    t = np.arange(len(held), dtype=np.float64)
    released = k * t + np.minimum.accumulate(held - k * t)
    return uniform_filter1d(released, size=2 * half + 1, mode="nearest")


def normalize(x: np.ndarray, sample_rate: int = 48000, *, target_lufs: float = TARGET_LUFS,
              true_peak_dbtp_max: float = TARGET_TRUE_PEAK_DBTP) -> Normalized:
    """Two-pass loudness normalisation with a true-peak limiter (see the module docstring)."""
    _check_rate(sample_rate)
    x = _as_2d(np.asarray(x, np.float32))
    ceiling_db = true_peak_dbtp_max - AAC_HEADROOM_DB
    measured = integrated_loudness(x, sample_rate)
    if not np.isfinite(measured):        # silence: nothing to normalise, only keep peaks safe
        gain_db, measured = 0.0, float("-inf")
    else:
        gain_db = min(MAX_GAIN_DB, target_lufs - measured)
    peaks = _peak_per_sample(x)          # oversampled once; the gains below scale it
    y, passes, total = x, 0, np.zeros(len(x))
    for passes in range(1, MAX_PASSES + 1):
        limit_db = limiter_gain_db(peaks * 10 ** (gain_db / 20), ceiling_db, sample_rate)
        total = gain_db + limit_db
        y = x * (10 ** (total / 20)).astype(np.float32)[:, None]
        measured = integrated_loudness(y, sample_rate)
        if not np.isfinite(measured) or abs(measured - target_lufs) <= LOUDNESS_TOLERANCE_LU:
            break
        gain_db = min(MAX_GAIN_DB, gain_db + target_lufs - measured)
    # The gain moves slowly against the oversampling filter, so peaks x gain is the true peak
    # of y to within a few hundredths of a dB (the shipped file is measured afterwards anyway).
    estimated_peak = float((peaks * 10 ** (total / 20)).max()) if len(x) else 0.0
    return Normalized(y, measured, _to_db(estimated_peak), gain_db, passes)


def peak_limit(x: np.ndarray, sample_rate: int = 48000,
               true_peak_dbtp_max: float = TARGET_TRUE_PEAK_DBTP) -> np.ndarray:
    """Only the limiter (no loudness gain): keeps an unnormalised mix from clipping."""
    x = _as_2d(np.asarray(x, np.float32))
    peaks = _peak_per_sample(x)
    ceiling_db = true_peak_dbtp_max - AAC_HEADROOM_DB
    if _to_db(float(peaks.max()) if len(x) else 0.0) <= ceiling_db:
        return x
    gain = 10 ** (limiter_gain_db(peaks, ceiling_db, sample_rate) / 20)
    return x * gain.astype(np.float32)[:, None]


def measure_file(path: str) -> Loudness:
    """Integrated loudness and true peak of a file's first audio stream, decoded at 48 kHz."""
    raw = run(["-i", path, "-map", "0:a:0", "-ac", "2", "-ar", "48000", "-f", "f32le", "-"],
              what="measuring loudness")
    x = np.frombuffer(raw, np.float32).reshape(-1, 2)
    return Loudness(integrated_loudness(x), true_peak_dbtp(x))
