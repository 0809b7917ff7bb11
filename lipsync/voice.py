"""How open the mouth should be, frame by frame, from the voice: the cue every lip-sync engine
reports (the embedded animator drives the jaw with it; LatentSync records it in its stats).

Loudness relative to the clip's own loud frames, shaped by a viseme-like spectral cue (open
vowels have a high first formant, fricatives little low-frequency energy), smoothed with
attack/release so it moves like a jaw.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from media.frames import AUDIO_SAMPLE_RATE

# Analysis window per video frame, in frames: long enough for two pitch periods of a low voice,
# short enough that the gaps between syllables still close the mouth.
WINDOW_FRAMES = 1.25
# >1 makes quiet frames open less than loud ones, so syllable dips show on the lips.
LOUD_EXPONENT = 1.2


@dataclass(frozen=True)
class VoiceOptions:
    attack_s: float = 0.03               # time constant of the mouth opening
    release_s: float = 0.06              # time constant of the mouth closing (slower, like a jaw)
    silence_dbfs: float = -45.0          # frames quieter than this keep the mouth shut
    dynamic_range_db: float = 24.0       # this far below the clip's loud frames -> closed
    closed_below: float = 0.03           # openness under this snaps to exactly closed


def frame_count(n_samples: int, fps: float, sample_rate: int = AUDIO_SAMPLE_RATE) -> int:
    """Video frames covering the voice: round(seconds x fps), never cut to a block size."""
    return int(round(n_samples / sample_rate * fps))


def openness_curve(audio: np.ndarray, fps: float, sample_rate: int = AUDIO_SAMPLE_RATE,
                   options: VoiceOptions = VoiceOptions()) -> np.ndarray:
    """Mouth openness in [0, 1] per video frame (float32, length `frame_count`)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    n = frame_count(len(audio), fps, sample_rate)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    db, f1, voiced = _frame_features(audio, n, fps, sample_rate)
    # 1. Loudness relative to this clip's loud frames, so quiet and hot recordings both move.
    speech = db > options.silence_dbfs
    ref = np.percentile(db[speech], 95) if speech.any() else 0.0
    loud = np.clip((db - (ref - options.dynamic_range_db)) / options.dynamic_range_db, 0, 1)
    loud[~speech] = 0.0
    # 2. Viseme-ish shaping: open vowels (high F1) open wider; hiss (s, f) barely opens.
    target = loud ** LOUD_EXPONENT * (0.55 + 0.45 * f1) * (0.35 + 0.65 * voiced)
    # 3. Attack/release smoothing: fast to open, slower to close.
    up = 1.0 - np.exp(-1.0 / (fps * options.attack_s))
    down = 1.0 - np.exp(-1.0 / (fps * options.release_s))
    out = np.empty(n, dtype=np.float32)
    level = 0.0
    for i, t in enumerate(target):
        level += (up if t > level else down) * (t - level)
        out[i] = level
    out[out < options.closed_below] = 0.0
    return out


def _frame_features(audio: np.ndarray, n: int, fps: float, sr: int,
                    chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: level (dBFS), F1-ish openness cue in [0,1], voiced share of energy in [0,1]."""
    win = int(round(WINDOW_FRAMES * sr / fps))     # a little over a frame, centred on it
    n_fft = 1 << (win - 1).bit_length()
    window = np.hanning(win).astype(np.float32)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    low = (freqs >= 80) & (freqs < 1000)           # voicing and the first formant
    f1_band = (freqs >= 250) & (freqs < 1000)
    high = (freqs >= 2500) & (freqs < 7000)        # frication
    padded = np.pad(audio, (win, win))
    db, f1, voiced = (np.empty(n, dtype=np.float32) for _ in range(3))
    for start in range(0, n, chunk):               # chunks bound memory on long voices
        idx = np.arange(start, min(start + chunk, n))
        centres = np.round((idx + 0.5) * sr / fps).astype(np.int64) + win
        segs = padded[centres[:, None] - win // 2 + np.arange(win)[None, :]] * window
        power = np.mean(segs ** 2, axis=1) / np.mean(window ** 2)
        db[idx] = 10 * np.log10(power + 1e-10)
        spec = np.abs(np.fft.rfft(segs, n=n_fft, axis=1)) ** 2
        # Floors relative to each frame's own energy keep the cues independent of the gain.
        floor = 1e-9 * spec.sum(1) + 1e-30
        e_low, e_high, e_f1 = spec[:, low].sum(1), spec[:, high].sum(1), spec[:, f1_band].sum(1)
        voiced[idx] = e_low / (e_low + e_high + floor)
        centroid = (spec[:, f1_band] * freqs[f1_band]).sum(1) / (e_f1 + floor)
        f1[idx] = np.clip((centroid - 300.0) / 400.0, 0, 1)
    return db, f1, voiced
