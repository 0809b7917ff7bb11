"""Voices for the lip-sync tests (speech-like bursts, vowels) and a drawn cartoon face."""
from __future__ import annotations

import cv2
import numpy as np
from scipy.signal import lfilter

SR = 16000
FPS = 25
def vowel(seconds: float, f0: float = 130.0, formants=(730, 1090, 2440), seed: int = 0) -> np.ndarray:
    """A voiced vowel: pulse train at f0 through three formant resonators, peak 1."""
    n = int(seconds * SR)
    x = np.zeros(n)
    x[(np.arange(0, n, SR / f0)).astype(int)] = 1.0
    for f, bw in zip(formants, (80, 100, 140)):
        r = np.exp(-np.pi * bw / SR)
        x = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * f / SR), r * r], x)
    x += 1e-3 * np.random.default_rng(seed).standard_normal(n)
    return (x / np.abs(x).max()).astype(np.float32)


def bursts(pattern: list[tuple[float, float]], level: float = 0.5) -> np.ndarray:
    """Concatenate (seconds, on?) pieces: voiced vowel bursts with 10 ms ramps, or digital silence."""
    parts = []
    for k, (seconds, on) in enumerate(pattern):
        n = int(round(seconds * SR))
        if on:
            ramp = np.minimum(1.0, np.minimum(np.arange(n), n - 1 - np.arange(n)) / (0.01 * SR))
            parts.append(vowel(seconds, f0=120 + 10 * k, seed=k) * ramp * level)
        else:
            parts.append(np.zeros(n))
    return np.concatenate(parts).astype(np.float32)


def frame_rms(audio: np.ndarray, n_frames: int) -> np.ndarray:
    hop = SR // FPS
    padded = np.pad(audio, (0, max(0, n_frames * hop - len(audio))))
    return np.sqrt(np.mean(padded[:n_frames * hop].reshape(n_frames, hop) ** 2, axis=1))


def cartoon_face() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A flat-colour drawn face MTCNN does not see as a face, and its face box."""
    img = np.full((256, 256, 3), (90, 170, 220), dtype=np.uint8)               # sky blue
    box = (68, 48, 188, 208)
    cv2.ellipse(img, (128, 128), (60, 80), 0, 0, 360, (255, 205, 80), -1)      # yellow head
    cv2.circle(img, (105, 105), 9, (20, 20, 20), -1)
    cv2.circle(img, (151, 105), 9, (20, 20, 20), -1)
    mouth_y = int(48 + 0.74 * 160)                                             # 166
    cv2.ellipse(img, (128, mouth_y), (24, 5), 0, 0, 360, (170, 30, 40), -1)    # closed lips
    return img, box
