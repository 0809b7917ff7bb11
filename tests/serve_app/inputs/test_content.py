"""What the bytes are: real images and audio pass with measured facts; bombs, truncated files,
text in disguise and the wrong kind of media fail with the right status and the field name."""
from __future__ import annotations

import base64
import io
import struct
import wave
import zlib

import numpy as np
import pytest
from PIL import Image

from media.ffmpeg import probe
from serve_app.inputs import InputError, Limits, acquire
from tests.support.media import ffmpeg_media, png_bytes, wav_bytes

SINE = ["-f", "lavfi", "-i", "sine=f=440:d=1:sample_rate=16000"]
VIDEO = ["-f", "lavfi", "-i", "testsrc=size=64x64:rate=10:d=1"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _fails(data: bytes, kind: str, tmp_path, limits: Limits = Limits()) -> InputError:
    field = f"input.{kind}"
    dest = tmp_path / "in"
    with pytest.raises(InputError) as info:
        acquire(b64(data), field, kind, str(dest), limits=limits)
    assert field in str(info.value)
    assert list(dest.iterdir()) == []  # nothing half-checked is left behind
    return info.value


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(side: int) -> bytes:
    """A valid 1-bit greyscale PNG of side x side zero pixels: tiny on disk, huge decoded."""
    comp, row = zlib.compressobj(9), b"\0" * (1 + (side + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


# --- images ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,ext", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"),
                                     ("BMP", ".bmp")])
def test_whitelisted_image_formats_pass_with_their_size(fmt, ext, tmp_path):
    data = png_bytes(72, 50, fmt=fmt)
    got = acquire(b64(data), "input.image", "image", str(tmp_path))
    assert (got.format, got.width, got.height, got.path[-len(ext):]) == (fmt, 72, 50, ext)
    assert open(got.path, "rb").read() == data


def test_animated_gif_first_frame_ok(tmp_path):
    frames = [Image.new("RGB", (32, 24), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    got = acquire(b64(buf.getvalue()), "input.image", "image", str(tmp_path))
    assert (got.format, got.width, got.height, got.animated) == ("GIF", 32, 24, True)


def test_decompression_bomb_png_is_413(tmp_path):
    data = bomb_png(20000)  # 400 Mpixel
    assert len(data) < 200_000
    err = _fails(data, "image", tmp_path)
    assert (err.status, err.code) == (413, "IMAGE_TOO_LARGE")


def test_image_over_our_pixel_limit_below_pillows_is_413(tmp_path):
    err = _fails(bomb_png(7000), "image", tmp_path)  # 49 Mpixel > 40 M, < Pillow's 89 M
    assert (err.status, err.code) == (413, "IMAGE_TOO_LARGE") and "7000x7000" in err.message


def test_truncated_png_is_422(tmp_path):
    data = png_bytes(128, 128)
    err = _fails(data[: len(data) // 2], "image", tmp_path)
    assert (err.status, err.code) == (422, "UNREADABLE_IMAGE") and "truncated" in err.message


def test_truncated_jpeg_and_bad_crc_png_are_422(tmp_path):
    jpg = png_bytes(128, 128, fmt="JPEG")
    assert _fails(jpg[: len(jpg) // 2], "image", tmp_path).status == 422
    png = bytearray(png_bytes(64, 64))
    png[png.index(b"IDAT") + 40] ^= 0xFF  # one flipped byte in the pixel data
    assert _fails(bytes(png), "image", tmp_path).code == "UNREADABLE_IMAGE"


def test_tiny_image_is_422(tmp_path):
    err = _fails(png_bytes(8, 8), "image", tmp_path)
    assert (err.status, err.code) == (422, "IMAGE_TOO_SMALL")


@pytest.mark.parametrize("data,name", [
    (b"<html><body>Not found</body></html>", "HTML"),
    (wav_bytes(0.5), "WAV"),
    (b"II*\x00" + b"\0" * 64, "TIFF"),
    (b"\0\0\0\x18ftypheic" + b"\0" * 64, "HEIC"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n", "text"),
])
def test_non_images_are_415_saying_what_they_look_like(data, name, tmp_path):
    err = _fails(data, "image", tmp_path)
    assert (err.status, err.code) == (415, "UNSUPPORTED_IMAGE_FORMAT") and name in err.message


# --- audio ----------------------------------------------------------------------------------

def _pcm(path: str) -> np.ndarray:
    with wave.open(path, "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")


def test_valid_wav_round_trips_exactly(tmp_path):
    data = wav_bytes(1.5, rate=22050)
    got = acquire(b64(data), "input.audio", "audio", str(tmp_path))
    assert (got.format, got.sample_rate, got.channels, got.audio_codec) == (
        "wav", 22050, 1, "pcm_s16le")
    assert got.duration_s == pytest.approx(1.5, abs=1e-3)
    assert np.array_equal(_pcm(got.path), _pcm_from_bytes(data))


def _pcm_from_bytes(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")


def test_mp3_is_decoded_to_wav(tmp_path):
    data = ffmpeg_media(tmp_path, "v.mp3", [*SINE, "-c:a", "libmp3lame", "-b:a", "64k"])
    got = acquire(b64(data), "input.audio", "audio", str(tmp_path / "in"))
    assert (got.format, got.audio_codec, got.sample_rate) == ("mp3", "mp3", 16000)
    assert got.duration_s == pytest.approx(1.0, abs=0.08)
    info = probe(got.path)
    assert info.format_name == "wav" and info.audio.codec_name == "pcm_s16le"
    assert np.abs(_pcm(got.path)).max() > 3000  # the tone, not silence


def test_video_with_sound_gives_its_audio(tmp_path):
    data = ffmpeg_media(tmp_path, "talk.mp4", [*VIDEO, *SINE, *X264, "-c:a", "aac", "-shortest"])
    got = acquire(b64(data), "input.audio", "audio", str(tmp_path / "in"))
    assert got.format == "mov" and got.audio_codec == "aac"
    info = probe(got.path)
    assert [s.codec_type for s in info.streams] == ["audio"]
    assert info.duration_s == pytest.approx(1.0, abs=0.1)


def test_video_without_sound_is_415(tmp_path):
    data = ffmpeg_media(tmp_path, "mute.mp4", [*VIDEO, *X264])
    err = _fails(data, "audio", tmp_path)
    assert (err.status, err.code) == (415, "NO_AUDIO_STREAM") and "video" in err.message


def test_png_given_as_audio_is_415(tmp_path):
    err = _fails(png_bytes(), "audio", tmp_path)
    assert (err.status, err.code) == (415, "UNSUPPORTED_AUDIO_FORMAT") and "PNG" in err.message


def test_text_served_as_mp3_is_415(server, tmp_path):
    from serve_app.inputs import FetchPolicy
    url = server.serve("/voice.mp3", b"hello, this is not audio at all\n", "audio/mpeg")
    policy = FetchPolicy(allow_http=True, trusted_networks=("127.0.0.1/32",))
    with pytest.raises(InputError) as info:
        acquire(url, "input.audio", "audio", str(tmp_path), policy=policy)
    assert (info.value.status, info.value.code) == (415, "UNSUPPORTED_AUDIO_FORMAT")
    assert "input.audio" in str(info.value) and "text" in info.value.message


@pytest.mark.parametrize("trick", [b"", b"\0"])
def test_playlists_never_reach_ffmpeg(trick, server, tmp_path):
    # An HLS playlist would make ffprobe fetch its segments (SSRF through ffmpeg). A NUL byte
    # makes it "binary" to a naive text check; the magic-byte whitelist still refuses it.
    seg = server.serve("/seg.ts", b"\x47" * 376)
    playlist = (b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n" + trick +
                b"#EXTINF:1,\n" + seg.encode() + b"\n#EXT-X-ENDLIST\n")
    err = _fails(playlist, "audio", tmp_path)
    assert err.status == 415 and server.hits == []


def test_truncated_wav_is_422(tmp_path):
    data = wav_bytes(2.0)
    err = _fails(data[: len(data) // 2], "audio", tmp_path)
    assert (err.status, err.code) == (422, "TRUNCATED_AUDIO")


def test_truncated_mp3_is_422(tmp_path):
    data = ffmpeg_media(tmp_path, "long.mp3", ["-f", "lavfi", "-i", "sine=d=2", "-c:a",
                                               "libmp3lame"])
    err = _fails(data[: len(data) // 2], "audio", tmp_path)
    assert (err.status, err.code) == (422, "TRUNCATED_AUDIO") and "announces 2." in err.message


def test_corrupt_wav_is_422(tmp_path):
    err = _fails(b"RIFF\x10\x00\x00\x00WAVE" + b"\x13" * 200, "audio", tmp_path)
    assert (err.status, err.code) == (422, "UNREADABLE_AUDIO")


def test_too_long_and_too_short_audio_are_422(tmp_path):
    err = _fails(wav_bytes(2.0), "audio", tmp_path, Limits(max_audio_seconds=1.0))
    assert (err.status, err.code) == (422, "AUDIO_TOO_LONG") and "1 s" in err.message
    err = _fails(wav_bytes(0.1), "audio", tmp_path)
    assert (err.status, err.code) == (422, "AUDIO_TOO_SHORT")


def test_too_long_audio_with_unknown_length_is_cut_then_refused(tmp_path):
    # A live-written Matroska file declares no duration: the decode is capped just past the
    # limit and the decoded length decides.
    data = ffmpeg_media(tmp_path, "live.mka", ["-f", "lavfi", "-i", "sine=d=3", "-c:a",
                                               "libopus", "-f", "matroska", "-live", "1"])
    assert probe(tmp_path / "live.mka").duration_s == 0.0  # really unknown up front
    err = _fails(data, "audio", tmp_path, Limits(max_audio_seconds=1.0))
    assert (err.status, err.code) == (422, "AUDIO_TOO_LONG") and "is 2.0 s" in err.message


def test_oversize_audio_is_413(tmp_path):
    err = _fails(wav_bytes(1.0), "audio", tmp_path, Limits(max_audio_bytes=10_000))
    assert (err.status, err.code) == (413, "PAYLOAD_TOO_LARGE") and "10000 bytes" in err.message
