"""Running ffmpeg and ffprobe: argv lists only, stderr in every error.

Every other module that touches media goes through `run()` and `probe()` here, so the binary
lookup, the error text and the thread budget live in one place.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable, Sequence

# Longest ffmpeg/ffprobe call we allow before calling it hung (a 3-min render encodes in well
# under this on 2 cores; the caller may pass a tighter bound).
DEFAULT_TIMEOUT_S = 1800
# stderr can be megabytes; the tail names the cause.
STDERR_TAIL_CHARS = 4000
# Input option for every local file we read: ffmpeg may open nothing but local files, so a
# crafted input (an HLS or DASH playlist, an SDP file, a concat list) cannot make it reach
# the network, e.g. http://169.254.169.254/ or udp://. Put it before the `-i` it guards.
LOCAL_FILES_ONLY = ("-protocol_whitelist", "file")


class MediaError(RuntimeError):
    """ffmpeg/ffprobe failed or the media is not what we need. `stderr` holds ffmpeg's words."""

    def __init__(self, message: str, stderr: str = ""):
        self.stderr = stderr[-STDERR_TAIL_CHARS:] if stderr else ""
        super().__init__(message + (f"\nffmpeg said:\n{self.stderr}" if self.stderr else ""))


def ffmpeg_bin() -> str:
    return _find("FFMPEG_BINARY", "ffmpeg")


def ffprobe_bin() -> str:
    return _find("FFPROBE_BINARY", "ffprobe")


def _find(env: str, name: str) -> str:
    path = os.environ.get(env) or shutil.which(name)
    if not path:
        raise MediaError(f"{name} not found on PATH (install ffmpeg, or set {env})")
    return path


def run(args: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S, what: str = "ffmpeg",
        input_bytes: bytes | None = None) -> bytes:
    """Run `ffmpeg <args>` (no shell). Returns stdout; raises MediaError with stderr on failure."""
    cmd = [ffmpeg_bin(), "-hide_banner", "-nostdin", "-y", *[str(a) for a in args]]
    if input_bytes is not None:
        cmd.remove("-nostdin")
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, input=input_bytes)
    except subprocess.TimeoutExpired as e:
        raise MediaError(f"{what}: ffmpeg did not finish within {timeout_s:.0f}s",
                         (e.stderr or b"").decode("utf-8", "replace")) from None
    if proc.returncode != 0:
        raise MediaError(f"{what}: ffmpeg exited with {proc.returncode}",
                         proc.stderr.decode("utf-8", "replace"))
    return proc.stdout


@dataclass(frozen=True)
class StreamInfo:
    codec_type: str          # "video" | "audio" | ...
    codec_name: str
    width: int = 0
    height: int = 0
    fps: float = 0.0         # avg_frame_rate as a float (0 when unknown)
    rate: str = ""           # the same rate as ffprobe's rational ("25/1", "30000/1001")
    pix_fmt: str = ""
    sample_rate: int = 0
    channels: int = 0
    nb_frames: int = 0       # 0 when the container does not say
    duration_s: float = 0.0


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    duration_s: float
    streams: tuple[StreamInfo, ...]
    raw: dict

    @property
    def video(self) -> StreamInfo | None:
        return next((s for s in self.streams if s.codec_type == "video"), None)

    @property
    def audio(self) -> StreamInfo | None:
        return next((s for s in self.streams if s.codec_type == "audio"), None)


def _rate(text: str | None) -> float:
    if not text or text in ("0/0", "N/A"):
        return 0.0
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den) if float(den) else 0.0
    return float(text)


def _num(value, cast=float, default=0):
    try:
        return cast(value)
    except (TypeError, ValueError):
        return default


def probe(path: str | os.PathLike, *, timeout_s: float = 60, count_frames: bool = False,
          formats: Iterable[str] = ()) -> MediaInfo:
    """ffprobe a local file (no other protocol: LOCAL_FILES_ONLY). `formats`, when given, are
    the only demuxers ffprobe may use (for files from clients: a playlist is then refused at
    once instead of being read). Raises MediaError (with ffprobe's stderr) when it is not
    readable media."""
    cmd = [ffprobe_bin(), "-v", "error", *LOCAL_FILES_ONLY, "-print_format", "json",
           "-show_format", "-show_streams"]
    if formats:
        cmd += ["-format_whitelist", ",".join(sorted(formats))]
    if count_frames:
        cmd += ["-count_frames"]
    cmd.append(str(path))
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffprobe did not finish within {timeout_s:.0f}s on {path}") from None
    if proc.returncode != 0:
        raise MediaError(f"not readable media: {os.path.basename(str(path))}",
                         proc.stderr.decode("utf-8", "replace"))
    data = json.loads(proc.stdout or b"{}")
    streams = []
    for s in data.get("streams", []):
        frames = s.get("nb_read_frames") if count_frames else s.get("nb_frames")
        streams.append(StreamInfo(
            codec_type=s.get("codec_type", ""),
            codec_name=s.get("codec_name", ""),
            width=_num(s.get("width"), int),
            height=_num(s.get("height"), int),
            fps=_rate(s.get("avg_frame_rate")) or _rate(s.get("r_frame_rate")),
            rate=next((r for r in (s.get("avg_frame_rate"), s.get("r_frame_rate"))
                       if _rate(r)), ""),
            pix_fmt=s.get("pix_fmt", ""),
            sample_rate=_num(s.get("sample_rate"), int),
            channels=_num(s.get("channels"), int),
            nb_frames=_num(frames, int),
            duration_s=_num(s.get("duration"), float, 0.0),
        ))
    fmt = data.get("format", {})
    return MediaInfo(format_name=fmt.get("format_name", ""),
                     duration_s=_num(fmt.get("duration"), float, 0.0),
                     streams=tuple(streams), raw=data)
