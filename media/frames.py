"""Frames and samples in and out of ffmpeg through pipes (RGB uint8 frames, float32 audio).

Intermediate videos between stages are written near-lossless (x264 qp 0, yuv444p) so that the
finisher's encode is the only lossy step of the chain.
"""
from __future__ import annotations

import os
import subprocess
from typing import Iterator

import numpy as np

from media.ffmpeg import MediaError, STDERR_TAIL_CHARS, ffmpeg_bin, probe, run

AUDIO_SAMPLE_RATE = 16000  # what the lip-sync models listen at


def load_audio(path: str | os.PathLike, sample_rate: int = AUDIO_SAMPLE_RATE) -> np.ndarray:
    """Decode any audio ffmpeg reads to mono float32 in [-1, 1] at `sample_rate`."""
    # fmt: off
    out = run([
        "-i", str(path),
        "-map", "0:a:0",
        "-ac", "1",
        "-ar", str(sample_rate),
        "-f", "f32le",
        "-",
    ], what=f"decoding audio {os.path.basename(str(path))}")
    # fmt: on
    return np.frombuffer(out, dtype=np.float32).copy()


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono or (n, channels) float audio as 16-bit PCM WAV."""
    data = np.asarray(samples, dtype=np.float32)
    channels = 1 if data.ndim == 1 else data.shape[1]
    run(["-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "-",
         "-c:a", "pcm_s16le", str(path)], input_bytes=data.tobytes(), what="writing wav")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image to RGB uint8 (H, W, 3), EXIF orientation applied, alpha dropped.

    Every mode an accepted format decodes to is scaled to 8 bits, not clipped: Pillow's own
    convert("RGB") clips 16- and 32-bit grey to 255, so a 16-bit grey portrait came out nearly
    white (issue 21). See `to_rgb8`."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - a corrupt EXIF block: the pixels as stored
            im.load()
        return to_rgb8(im)


_SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;16LS", "I;16BS")


def to_rgb8(im) -> np.ndarray:
    """A Pillow image of any mode as RGB uint8 (H, W, 3), alpha dropped:

    - 16-bit grey (I;16*) and 32-bit integer grey (I, which 16-bit PNGs decode to in older
      Pillows) hold 0..65535: scaled by 255/65535;
    - float grey (F) holds 0..1 when its maximum is at most 1, else 0..255;
    - every other mode (1, L, LA, P with or without transparency, PA, RGB, RGBA, RGBX, CMYK,
      YCbCr, ...) goes through Pillow's conversion, which is exact for them.
    """
    if im.mode in _SIXTEEN_BIT_GREY or im.mode == "I":
        grey = np.asarray(im).astype(np.float64)
        grey = np.clip(grey, 0, 65535) * (255.0 / 65535.0)
    elif im.mode == "F":
        grey = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        grey = np.clip(grey * 255.0 if grey.size and grey.max() <= 1.0 else grey, 0, 255)
    else:
        if im.mode in ("P", "PA") or im.mode.startswith("P"):
            im = im.convert("RGBA")   # palette (and its transparency) expanded first
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    g8 = np.rint(grey).astype(np.uint8)
    return np.repeat(g8[:, :, None], 3, axis=2)


def save_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 92) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(path, quality=quality)


def read_frames(path: str | os.PathLike, *, fps: float | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of a video as RGB uint8 arrays (optionally resampled to `fps`)."""
    info = probe(path)
    v = info.video
    if v is None or not v.width:
        raise MediaError(f"no video stream in {os.path.basename(str(path))}")
    cmd = [ffmpeg_bin(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path)]
    if fps:
        cmd += ["-vf", f"fps={fps}"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    frame_bytes = v.width * v.height * 3
    finished = False
    try:
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                finished = True
                break
            yield np.frombuffer(buf, dtype=np.uint8).reshape(v.height, v.width, 3)
    finally:
        if not finished:  # the consumer stopped early: end ffmpeg quietly
            proc.kill()
        proc.stdout.close()
        stderr = proc.stderr.read().decode("utf-8", "replace")
        proc.stderr.close()
        rc = proc.wait()
        if finished and rc != 0:
            raise MediaError(f"reading frames of {os.path.basename(str(path))} failed", stderr)


class FrameWriter:
    """Pipe RGB frames into an ffmpeg encode. Use as a context manager.

    `lossless=True` (default) writes x264 qp 0 yuv444p: the intermediate format between stages.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float, *,
                 lossless: bool = True, crf: int = 18, preset: str = "veryfast",
                 audio_path: str | os.PathLike | None = None, threads: int = 0):
        if width % 2 or height % 2:
            raise ValueError(f"frame size must be even for yuv encodes, got {width}x{height}")
        self.path, self.width, self.height = str(path), width, height
        self.count = 0
        cmd = [ffmpeg_bin(), "-hide_banner", "-nostdin", "-y", "-v", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-r", f"{fps}", "-i", "-"]
        if audio_path is not None:
            cmd += ["-i", str(audio_path), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac",
                    "-shortest"]
        if lossless:
            cmd += ["-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-pix_fmt", "yuv444p"]
        else:
            cmd += ["-c:v", "libx264", "-crf", str(crf), "-preset", preset, "-pix_fmt", "yuv420p"]
        cmd += ["-threads", str(threads), self.path]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"frame shape {frame.shape} != {(self.height, self.width, 3)}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        except BrokenPipeError:
            self._fail("ffmpeg stopped reading frames")
        self.count += 1

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        rc = self._proc.wait()
        if rc != 0:
            self._fail(f"encoding {os.path.basename(self.path)} failed (exit {rc})")

    def _fail(self, msg: str) -> None:
        self._proc.kill()
        stderr = self._proc.stderr.read().decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]
        raise MediaError(msg, stderr)

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._proc.kill()
            self._proc.wait()
