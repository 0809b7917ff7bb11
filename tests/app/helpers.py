"""Small media makers and a uvicorn-on-127.0.0.1 runner for the API tests."""
from __future__ import annotations

import base64
import io
import socket
import threading
import time
from pathlib import Path

import numpy as np

from media.frames import write_wav

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SR = 16000


def speechlike(seconds: float, path: Path) -> Path:
    """Voiced bursts (harmonics of 140 Hz under a 4 Hz syllable envelope) with gaps."""
    t = np.arange(int(seconds * SR)) / SR
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 0.7
    write_wav(path, (0.3 * voiced * envelope).astype(np.float32), SR)
    return path


def small_portrait(size: int = 256) -> bytes:
    from PIL import Image

    im = Image.open(SAMPLES / "portrait.png").convert("RGB").resize((size, size), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a thread."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
