"""Write the demo inputs in samples/ deterministically (same bytes on every run).

    python samples/make_samples.py            # needs scikit-image only for portrait.png

- portrait.png: scikit-image's `astronaut` (NASA photo of Eileen Collins, public domain), 512x512.
- voice.wav: synthetic speech-like voice (glottal pulses through vowel formant filters,
  ~4 syllables/s in phrases with pauses), 16 kHz mono.
- music.wav: a soft four-chord bed, 10 s, 32 kHz mono.
- click.wav: a short click/pop sound effect, 44.1 kHz mono.
All audio is generated from formulas here: no recordings, no licence attached.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import butter, lfilter

HERE = Path(__file__).resolve().parent
SEED = 20261125
VOICE_SR = 16000
MUSIC_SR = 32000
CLICK_SR = 44100

# Formants (F1, F2, F3 in Hz) of five vowels, averaged adult values.
VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (300, 2200, 2950),
          "o": (570, 840, 2410), "u": (320, 920, 2200)}
FORMANT_BANDWIDTHS = (80, 100, 140)


def _resonator(x: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    """Two-pole resonance (one formant) with unit gain at DC."""
    r = np.exp(-np.pi * bandwidth / sr)
    a1, a2 = -2 * r * np.cos(2 * np.pi * freq / sr), r * r
    return lfilter([1 + a1 + a2], [1, a1, a2], x)


def _glottal_source(n: int, f0: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Rosenberg-like glottal pulses at a varying pitch, differentiated (lip radiation)."""
    out = np.zeros(n)
    t = 0.0
    while t < n:
        period = sr / f0[min(int(t), n - 1)] * (1 + 0.01 * rng.standard_normal())  # jitter
        opening, closing = int(0.4 * period), int(0.16 * period)
        start = int(t)
        pulse = np.concatenate([0.5 * (1 - np.cos(np.pi * np.arange(opening) / opening)),
                                np.cos(0.5 * np.pi * np.arange(closing) / closing)])
        end = min(n, start + len(pulse))
        out[start:end] += pulse[:end - start]
        t += period
    return np.diff(out, prepend=0.0)


def _syllable(duration_s: float, vowel: str, f0: float, sr: int, rng: np.random.Generator,
              fricative: bool) -> np.ndarray:
    n = int(duration_s * sr)
    glide = np.linspace(f0 * 1.06, f0 * 0.94, n)                  # falling pitch inside a syllable
    x = _glottal_source(n, glide, sr, rng)
    for freq, bw in zip(VOWELS[vowel], FORMANT_BANDWIDTHS):
        x = _resonator(x, freq, bw, sr)
    ramp = np.minimum(1.0, np.arange(n) / (0.03 * sr))           # 30 ms onset
    decay = np.minimum(1.0, (n - np.arange(n)) / (0.08 * sr))    # 80 ms offset
    x = x / (np.abs(x).max() + 1e-9) * ramp * decay
    if fricative:                                                # an "s" before the vowel
        m = int(0.07 * sr)
        b, a = butter(4, [3500 / (sr / 2), 7000 / (sr / 2)], btype="band")
        hiss = lfilter(b, a, rng.standard_normal(m)) * np.hanning(m) * 0.25
        x = np.concatenate([hiss, x])
    return x


def make_voice(seconds: float = 7.0, sr: int = VOICE_SR, seed: int = SEED) -> np.ndarray:
    """Phrases of 4-7 syllables at ~4 Hz separated by 0.35-0.6 s pauses; peak -3 dBFS."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * sr))
    pos = int(0.3 * sr)
    phrase_f0 = 125.0
    while pos < len(out) - int(0.5 * sr):
        for _ in range(int(rng.integers(4, 8))):
            syl = _syllable(float(rng.uniform(0.16, 0.24)), str(rng.choice(list(VOWELS))),
                            phrase_f0 * float(rng.uniform(0.92, 1.1)), sr, rng,
                            fricative=bool(rng.random() < 0.3))
            syl *= float(rng.uniform(0.55, 1.0))
            end = min(len(out), pos + len(syl))
            out[pos:end] += syl[:end - pos]
            pos += len(syl) + int(rng.uniform(0.02, 0.06) * sr)
            if pos >= len(out) - int(0.5 * sr):
                break
        pos += int(rng.uniform(0.35, 0.6) * sr)
        phrase_f0 = float(rng.uniform(110, 140))
    return (out / np.abs(out).max() * 10 ** (-3 / 20)).astype(np.float32)


def make_music(seconds: float = 10.0, sr: int = MUSIC_SR) -> np.ndarray:
    """Cmaj7 - Am7 - Fmaj7 - G6 pads (soft partials, slow swells); peak -12 dBFS."""
    chords = [(48, 52, 55, 59), (45, 52, 55, 60), (41, 48, 52, 57), (43, 50, 55, 59)]
    n = int(seconds * sr)
    out = np.zeros(n)
    seg = n // len(chords)
    t = np.arange(seg + sr // 2) / sr                            # each chord rings into the next
    env = np.minimum(1.0, t / 0.6) * np.exp(-np.maximum(0.0, t - seg / sr) / 0.25)
    for k, notes in enumerate(chords):
        pad = np.zeros_like(t)
        for note in notes:
            f = 440.0 * 2 ** ((note - 69) / 12)
            for harmonic, gain in ((1, 1.0), (2, 0.3), (3, 0.12)):
                pad += gain * np.sin(2 * np.pi * f * harmonic * t + 0.7 * note * harmonic)
        start = k * seg
        end = min(n, start + len(t))
        out[start:end] += (pad * env)[:end - start]
    out *= np.minimum(1.0, (n - np.arange(n)) / (0.5 * sr))      # fade out at the end
    return (out / np.abs(out).max() * 10 ** (-12 / 20)).astype(np.float32)


def make_click(sr: int = CLICK_SR, seed: int = SEED) -> np.ndarray:
    """A 150 ms pop: a decaying 1.8 kHz tone plus a short noise transient; peak -6 dBFS."""
    rng = np.random.default_rng(seed + 1)
    t = np.arange(int(0.15 * sr)) / sr
    tone = np.sin(2 * np.pi * 1800 * t) * np.exp(-t / 0.018)
    noise = rng.standard_normal(len(t)) * np.exp(-t / 0.004)
    out = tone + 0.5 * noise
    return (out / np.abs(out).max() * 10 ** (-6 / 20)).astype(np.float32)


def _write_wav(path: Path, samples: np.ndarray, sr: int) -> None:
    wavfile.write(path, sr, np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16))


def make_portrait(path: Path) -> None:
    from PIL import Image
    from skimage import data                                    # only this step needs it

    Image.fromarray(data.astronaut()).resize((512, 512), Image.LANCZOS).save(path, optimize=True)


def main(out_dir: Path = HERE) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    make_portrait(out_dir / "portrait.png")
    _write_wav(out_dir / "voice.wav", make_voice(), VOICE_SR)
    _write_wav(out_dir / "music.wav", make_music(), MUSIC_SR)
    _write_wav(out_dir / "click.wav", make_click(), CLICK_SR)
    for name in ("portrait.png", "voice.wav", "music.wav", "click.wav"):
        print(f"{name}: {(out_dir / name).stat().st_size} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
