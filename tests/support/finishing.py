"""Synthetic inputs for the finisher tests, and measurements taken on its outputs.

Everything is generated (fixed seeds): silent lossless frame clips like the lip-sync stage
writes, voices, music beds and clicks as WAVs. Measurements decode the finished file with
ffmpeg, never with the code under test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from media.ffmpeg import run
from media.frames import FrameWriter, read_frames, write_wav

SR = 48000


def write_frames(path: Path, frames, fps: float = 25) -> str:
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with FrameWriter(path, w, h, fps) as fw:
        for f in frames:
            fw.write(f)
    return str(path)


def solid_frames(n: int, w: int, h: int, rgb=(60, 60, 60)) -> list[np.ndarray]:
    return [np.full((h, w, 3), rgb, np.uint8) for _ in range(n)]


def write_audio(path: Path, samples: np.ndarray, sr: int = SR) -> str:
    write_wav(path, np.asarray(samples, np.float32), sr)
    return str(path)


def tone(freq: float, seconds: float, level_db: float = -20.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (10 ** (level_db / 20) * np.sqrt(2) * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speechlike(seconds: float, bursts, seed: int = 0, level_db: float = -20.0,
               sr: int = SR) -> np.ndarray:
    """Band-limited noise (300 Hz-3.4 kHz) in the given (start, end) bursts, silence elsewhere."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    spec[(f < 300) | (f > 3400)] = 0
    noise = np.fft.irfft(spec, n)
    noise *= 10 ** (level_db / 20) / (noise.std() + 1e-12)
    gate = np.zeros(n)
    for a, b in bursts:
        gate[int(a * sr):int(b * sr)] = 1.0
    return (noise * gate).astype(np.float32)


def decode_audio(path: str, sr: int = SR) -> np.ndarray:
    raw = run(["-i", path, "-map", "0:a:0", "-ac", "2", "-ar", str(sr), "-f", "f32le", "-"])
    return np.frombuffer(raw, np.float32).reshape(-1, 2)


def ebur128(path: str, tmp_path: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) of a file's audio, by ffmpeg's own ebur128 filter."""
    log = tmp_path / "r128.txt"
    run(["-i", path, "-map", "0:a:0", "-af",
         f"ebur128=peak=true:metadata=1,ametadata=mode=print:file={log}", "-f", "null", "-"])
    integrated = true_peak = None
    for line in log.read_text().splitlines():
        if line.startswith("lavfi.r128.I="):
            integrated = float(line.split("=", 1)[1])
        elif line.startswith("lavfi.r128.true_peak="):
            true_peak = float(line.split("=", 1)[1])
    assert integrated is not None and true_peak is not None, "ebur128 printed no summary"
    return integrated, 20 * np.log10(max(true_peak, 1e-12))


def all_frames(path: str) -> list[np.ndarray]:
    return list(read_frames(path))


def click_time(path: str, sr: int = SR) -> tuple[float, float]:
    """(time in s, peak over median) of the loudest broadband event in the file's first channel:
    everything under 5 kHz removed, so voices and tonal beds drop out and a click stands alone."""
    audio = decode_audio(path, sr)[:, 0].astype(np.float64)
    spec = np.fft.rfft(audio)
    spec[np.fft.rfftfreq(len(audio), 1 / sr) < 5000] = 0
    high = np.abs(np.fft.irfft(spec, len(audio)))
    peak = int(np.argmax(high))
    return peak / sr, float(high[peak] / np.median(high))
