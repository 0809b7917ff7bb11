"""Real media the tests send as inputs: a speech-like voice, the portrait as PNG bytes, random
PNGs, tones as WAV, anything ffmpeg's lavfi sources can encode."""
from __future__ import annotations

import base64
import io
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from media.ffmpeg import run
from media.frames import write_wav
from tests.support.portrait import portrait

SR = 16000


def speechlike(seconds: float, path: Path) -> Path:
    """Voiced bursts (harmonics of 140 Hz under a 4 Hz syllable envelope) with gaps."""
    t = np.arange(int(seconds * SR)) / SR
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 0.7
    write_wav(path, (0.3 * voiced * envelope).astype(np.float32), SR)
    return path


def small_portrait(size: int = 256) -> bytes:
    """The portrait at size x size, as PNG bytes (what a client uploads)."""
    im = Image.fromarray(portrait()).resize((size, size), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_bytes(w: int = 96, h: int = 80, seed: int = 0, fmt: str = "PNG") -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


def wav_bytes(seconds: float = 1.0, rate: int = 16000, freq: float = 440.0) -> bytes:
    t = np.arange(int(round(seconds * rate))) / rate
    pcm = (0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def ffmpeg_media(tmp_path, name: str, args: list[str]) -> bytes:
    """Encode real media with ffmpeg's lavfi sources (`args` between the inputs and the file)."""
    out = tmp_path / name
    run([*args, str(out)], what=f"test media {name}")
    return out.read_bytes()
