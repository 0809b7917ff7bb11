"""Turning a client's `image` / `audio` / `music_url` / `ambience_url` / `sfx_tracks[].url`
value into a checked local file (https URL, base64, or data: URI).

`acquire()` is the one entry point: it decodes or fetches the value (URLs through
`serve_app.netguard`, which refuses private addresses and pins the checked IP), caps the size
while reading, then proves the bytes are what the field needs:

- images: magic bytes in the whitelist (PNG, JPEG, WebP, BMP, GIF), Pillow opens them with only
  that format's plugin (those of its openers this Pillow registers: Pillow 13 dropped the MPO
  opener), the pixel count is checked from the header BEFORE decoding (bombs), then verify() +
  load() (truncation, bad CRCs). The file is kept as sent; EXIF orientation and the conversion
  of every mode (16-bit grey, palette, CMYK, ...) to 8-bit RGB are the caller's business
  (media.frames.load_image does both);
- audio: magic bytes of a known audio/video container (so text such as an HLS playlist never
  reaches ffmpeg), ffprobe first (an audio stream, a whitelisted demuxer, declared duration),
  then the first audio track is decoded to 16-bit PCM WAV (video containers give their sound),
  downmixed to mono/stereo and resampled to at most 48 kHz WHILE decoding (what the finisher's
  mix uses anyway), capped at the duration limit and at a decoded-size budget per field and per
  request (ffmpeg stops writing at the budget: a small, highly compressible upload cannot
  become gigabytes); truncation is caught by comparing declared and decoded length.
  ffprobe and ffmpeg may open local files only (media.ffmpeg.LOCAL_FILES_ONLY): a playlist
  that slips past the magic bytes (behind an ID3 tag, say) still cannot reach the network.

Every failure is an `InputError` carrying the HTTP status, a stable code and the field name,
with a message safe to return to the client: whatever a decoder library raises on a client's
bytes becomes a 422, never a 500 (tests/serve_app/inputs/test_decoder_fuzz.py mutates files of
every accepted format). Blocking: call it from a thread in async code.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import io
import logging
import os
import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from PIL import Image

from media.ffmpeg import LOCAL_FILES_ONLY, MediaError, probe, run
from serve_app.netguard import FetchError, FetchPolicy, fetch

__all__ = ["InputError", "FetchPolicy", "Limits", "AcquiredFile", "acquire", "decode_inline",
           "fetch_url"]

log = logging.getLogger("personaforge.inputs")

MiB = 1024 * 1024
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "BMP": ".bmp",
                 "GIF": ".gif"}
# The only demuxers ffprobe may use on a client's audio, and that we decode from (format_name's
# parts). Anything else (hls, dash, sdp, concat, image2, tty, ...) is refused even if the magic
# bytes looked fine.
AUDIO_DEMUXERS = {"wav", "w64", "mp3", "ogg", "flac", "mov", "mp4", "m4a", "3gp", "3g2", "mj2",
                  "matroska", "webm", "aac", "aiff", "caf", "amr", "asf", "mpegts", "mpeg",
                  "ac3", "eac3", "flv", "avi"}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_B64_RE = re.compile(r"^[A-Za-z0-9+/\-_]*={0,2}$")
_OTHER_FORMAT_RE = re.compile(r"\[(\w+) @ [^\]]*\] Format not on whitelist")  # ffprobe's words
# Decoded audio is at most stereo and 48 kHz (the finisher mixes at 48 kHz stereo, the lip-sync
# listens at 16 kHz mono): more channels are downmixed, higher rates resampled while decoding.
MAX_DECODED_CHANNELS = 2
MAX_DECODED_SAMPLE_RATE = 48000
DECODED_AUDIO_SUFFIX = ".wav"  # the decoded file of every audio field (counted per request)
WAV_HEADER_BYTES = 4096  # room for the WAV header and ffmpeg's LIST chunk in a byte budget


class InputError(Exception):
    """A client mistake: status (400/413/415/422), field (e.g. "input.image"), message, code."""

    def __init__(self, field: str, message: str, *, status: int = 400, code: str = "BAD_INPUT"):
        self.field, self.message, self.status, self.code = field, message, status, code
        super().__init__(f"{field}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), "field": self.field}


@dataclass(frozen=True)
class Limits:
    """Size and duration bounds for one field (sfx tracks may want a smaller min_audio_seconds).

    Decoded audio has two budgets, enforced while ffmpeg writes (it stops at the budget):
    `max_decoded_audio_bytes` per field (600 s of 48 kHz stereo 16-bit PCM is 110 MiB) and
    `max_request_decoded_audio_bytes` for all the audio fields of one request together (a
    request may carry up to 3 + 64 audio fields). A request's fields are those acquired into
    the same `dest_dir` (the service decodes each request into a folder of its own)."""
    max_image_bytes: int = 20 * MiB
    max_audio_bytes: int = 100 * MiB
    max_image_pixels: int = 40_000_000
    max_image_side: int = 16384
    min_image_side: int = 16
    max_audio_seconds: float = 600.0
    min_audio_seconds: float = 0.2
    audio_decode_timeout_s: float = 300.0
    max_decoded_audio_bytes: int = 128 * MiB
    max_request_decoded_audio_bytes: int = 384 * MiB


@dataclass(frozen=True)
class AcquiredFile:
    """A checked input on local disk. For audio, `path` is the decoded WAV of the first track."""
    field: str
    kind: Literal["image", "audio"]
    path: str
    size_bytes: int          # what the client sent (before any decoding to WAV)
    sha256: str              # of what the client sent
    source: Literal["url", "base64", "data_uri"]
    format: str              # image: PNG/JPEG/WEBP/BMP/GIF (MPO = camera JPEG); audio: demuxer
    width: int = 0
    height: int = 0
    animated: bool = False   # GIF/WebP with more frames: only the first is used
    duration_s: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    audio_codec: str = ""    # codec of the client's audio track (the file at `path` is PCM)


def _human(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB and n % (MiB // 4) == 0 else f"{n} bytes"


# --- Decoding and fetching ---------------------------------------------------------------

def decode_inline(value: str, field: str, max_bytes: int) -> bytes:
    """Decode base64 (standard or URL-safe, padding optional, whitespace ignored) or a
    `data:<mime>;base64,...` URI. 400 when it is not that, 413 above `max_bytes`."""
    text = value.strip()
    if text[:5].lower() == "data:":
        header, sep, text = text[5:].partition(",")
        if not sep:
            raise InputError(field, "data: URI has no ',' before its data", code="BAD_DATA_URI")
        if "base64" not in (p.strip().lower() for p in header.split(";")[1:]):
            raise InputError(field, "data: URIs must be base64 (data:<mime>;base64,...)",
                             code="BAD_DATA_URI")
    text = re.sub(r"\s+", "", text)
    if not text:
        raise InputError(field, "is empty", code="EMPTY_INPUT")
    if len(text) // 4 * 3 > max_bytes + 3:  # checked before decoding: no huge allocations
        raise InputError(field, f"is larger than the {_human(max_bytes)} limit",
                         status=413, code="PAYLOAD_TOO_LARGE")
    if not _B64_RE.match(text) or len(text.rstrip("=")) % 4 == 1:
        hint = " (a URL must start with https://)" if "." in text[:2048] else ""
        raise InputError(field, f"is neither valid base64 nor an https URL or data: URI{hint}",
                         code="BAD_BASE64")
    urlsafe = "-" in text or "_" in text
    if urlsafe and ("+" in text or "/" in text):
        raise InputError(field, "mixes standard and URL-safe base64 alphabets", code="BAD_BASE64")
    body = text.rstrip("=")
    body += "=" * (-len(body) % 4)
    try:
        data = (base64.urlsafe_b64decode(body) if urlsafe
                else base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError):
        raise InputError(field, "is not valid base64", code="BAD_BASE64") from None
    if len(data) > max_bytes:
        raise InputError(field, f"is larger than the {_human(max_bytes)} limit",
                         status=413, code="PAYLOAD_TOO_LARGE")
    return data


def fetch_url(url: str, field: str, max_bytes: int, policy: FetchPolicy) -> bytes:
    """Fetch an http(s) URL under `policy` (see netguard); errors become InputErrors."""
    buf = io.BytesIO()
    _fetch_into(url, field, max_bytes, policy, buf)
    return buf.getvalue()


def _fetch_into(url: str, field: str, max_bytes: int, policy: FetchPolicy, sink: BinaryIO) -> None:
    try:
        fetch(url, sink, max_bytes, policy)
    except FetchError as e:
        raise InputError(field, e.message, status=e.status, code=e.code) from None


def _source_of(value: str, field: str) -> Literal["url", "base64", "data_uri"]:
    if not isinstance(value, str) or not value.strip():
        raise InputError(field, "is empty; give an https URL, base64 or a data: URI",
                         code="EMPTY_INPUT")
    m = _SCHEME_RE.match(value.lstrip())
    if not m:
        return "base64"  # decode_inline says so when it is not
    scheme = m.group(1).lower()
    if scheme in ("http", "https"):
        return "url"
    if scheme == "data":
        return "data_uri"
    raise InputError(field, f"uses the {scheme!r} scheme; give an https URL, base64 or a "
                     "data: URI", code="UNSUPPORTED_SCHEME")


# --- Entry point -------------------------------------------------------------------------

def acquire(value: str, field: str, kind: Literal["image", "audio"], dest_dir: str, *,
            policy: FetchPolicy = FetchPolicy(), limits: Limits = Limits()) -> AcquiredFile:
    """Decode or fetch `value`, check it is a usable `kind`, and store it under `dest_dir`."""
    # 1. Where the bytes come from, and how many we accept.
    if kind not in ("image", "audio"):
        raise ValueError(f"kind must be 'image' or 'audio', not {kind!r}")
    source = _source_of(value, field)
    max_bytes = limits.max_image_bytes if kind == "image" else limits.max_audio_bytes
    os.makedirs(dest_dir, exist_ok=True)
    stem = os.path.join(dest_dir, _file_stem(field))
    raw_path = stem + ".part"
    try:
        # 2. The raw bytes on disk (a URL streams straight there, capped).
        with open(raw_path, "wb") as f:
            if source == "url":
                _fetch_into(value.strip(), field, max_bytes, policy, f)
            else:
                f.write(decode_inline(value, field, max_bytes))
        size, digest = _size_and_hash(raw_path)
        # 3. Prove it is what the field needs.
        if kind == "image":
            facts = _guarded(_check_image, raw_path, field, limits)
            path = stem + IMAGE_FORMATS[facts["format"]]
            os.replace(raw_path, path)
        else:
            path = stem + DECODED_AUDIO_SUFFIX
            try:
                facts = _guarded(_check_audio, raw_path, path, field, limits)
            except BaseException:
                _remove(path)
                raise
        return AcquiredFile(field=field, kind=kind, path=path, size_bytes=size, sha256=digest,
                            source=source, **facts)
    finally:
        if os.path.exists(raw_path):
            os.remove(raw_path)



def _guarded(check, *args):
    """Run a media check; anything a decoder raises on the client's bytes, beyond what the check
    turns into an InputError itself, is still the media's fault: 422, never a 500. OSError
    stays ours (a full disk is a 5xx); the checks catch the decoders' own OSErrors."""
    field = args[-2]
    kind = "image" if check is _check_image else "audio"
    try:
        return check(*args)
    except (InputError, OSError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - see the docstring
        log.warning("decoding %s raised %s: %s", field, type(e).__name__, e)
        raise InputError(field, f"cannot be decoded as {kind} (the file is corrupt or not a "
                         "supported variant of its format)", status=422,
                         code=f"UNREADABLE_{kind.upper()}") from None


def _file_stem(field: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", field).strip("_")[:100]
    return stem or "input"


def _size_and_hash(path: str) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


# --- What the bytes are ------------------------------------------------------------------

def _sniff(head: bytes) -> tuple[str, str]:
    """(family, name) from the first bytes: family is image/audio/video/other/text."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "WEBP"
    if head[:2] == b"BM" and len(head) >= 26:
        return "image", "BMP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"msf1"):
        return "other", "HEIC/AVIF image"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "other", "TIFF image"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "audio", "WAV"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "AVI"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio", "MP3/AAC"
    if head[:4] in (b"OggS", b"fLaC", b"caff") or head[:5] == b"#!AMR":
        return "audio", head[:4].decode("latin-1")
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio", "AIFF"
    if head[:2] == b"\x0b\x77":
        return "audio", "AC-3"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "video", "MP4/MOV"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video", "Matroska/WebM"
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return "video", "ASF/WMA"
    if head[:3] == b"FLV" or head[:4] == b"\x00\x00\x01\xba" or (
            len(head) > 188 and head[0] == 0x47 and head[188] == 0x47):
        return "video", "MPEG/FLV"
    lowered = head[:64].lstrip().lower()
    for magic, name in ((b"%pdf", "PDF"), (b"pk\x03\x04", "ZIP archive"),
                        (b"#extm3u", "HLS playlist"), (b"<", "HTML/XML page"),
                        (b"{", "JSON"), (b"[", "JSON")):
        if lowered.startswith(magic):
            return "text" if name not in ("PDF", "ZIP archive") else "other", name
    try:  # final=False: a character cut at the 1024th byte is still text
        codecs.getincrementaldecoder("utf-8")().decode(head[:1024], final=False)
        return "text", "text"
    except UnicodeDecodeError:
        return "other", "unrecognised data"


def _read_head(path: str, n: int = 4096) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _check_image(path: str, field: str, limits: Limits) -> dict[str, Any]:
    family, name = _sniff(_read_head(path))
    if family != "image":
        raise InputError(field, f"looks like {name}, not an image; send PNG, JPEG, WebP, BMP "
                         "or GIF", status=415, code="UNSUPPORTED_IMAGE_FORMAT")
    # Camera JPEGs open as MPO where Pillow registers an MPO opener (up to 12); Pillow 13 opens
    # them through the JPEG opener only. A format Pillow does not register is never asked for:
    # Image.open raises KeyError for it (a 500 on a cut JPEG header, issue 21).
    Image.init()
    plugin = [f for f in ([name, "MPO"] if name == "JPEG" else [name]) if f in Image.OPEN]
    if not plugin:
        raise InputError(field, f"is a {name} image, which this server's image library cannot "
                         "open", status=415, code="UNSUPPORTED_IMAGE_FORMAT")
    try:
        # 1. Header only: size is known before a single pixel is decoded.
        with Image.open(path, formats=plugin) as im:
            width, height, fmt = im.width, im.height, im.format
            animated = bool(getattr(im, "is_animated", False))
            _check_pixels(width, height, field, limits)
            im.verify()  # structure / CRCs without decoding
        # 2. Full decode of the first frame (verify() leaves the image unusable: reopen).
        with Image.open(path, formats=plugin) as im:
            im.seek(0)
            im.load()
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(field, "declares more pixels than allowed (a decompression bomb?); "
                         f"the limit is {limits.max_image_pixels} pixels", status=413,
                         code="IMAGE_TOO_LARGE") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError,
            TypeError, ZeroDivisionError, AttributeError) as e:
        reason = "it is truncated" if "truncat" in str(e).lower() else "it is corrupt"
        raise InputError(field, f"is a {name} file that cannot be decoded: {reason}",
                         status=422, code="UNREADABLE_IMAGE") from None
    if fmt not in IMAGE_FORMATS:
        raise InputError(field, f"is a {fmt} image; send PNG, JPEG, WebP, BMP or GIF",
                         status=415, code="UNSUPPORTED_IMAGE_FORMAT")
    return {"format": fmt, "width": width, "height": height, "animated": animated}


def _check_pixels(width: int, height: int, field: str, limits: Limits) -> None:
    if width * height > limits.max_image_pixels or max(width, height) > limits.max_image_side:
        raise InputError(field, f"is {width}x{height} pixels; the limit is "
                         f"{limits.max_image_pixels} pixels and {limits.max_image_side} per side",
                         status=413, code="IMAGE_TOO_LARGE")
    if min(width, height) < limits.min_image_side:
        raise InputError(field, f"is only {width}x{height} pixels; at least "
                         f"{limits.min_image_side} per side is needed", status=422,
                         code="IMAGE_TOO_SMALL")


def _check_audio(src: str, dest: str, field: str, limits: Limits) -> dict[str, Any]:
    # 1. Magic bytes: only known audio/video containers reach ffprobe (text formats such as
    #    HLS or concat playlists would make ffmpeg open other files or URLs).
    family, name = _sniff(_read_head(src))
    if family not in ("audio", "video"):
        raise InputError(field, f"looks like {name}, not audio; send WAV, MP3, AAC/M4A, OGG, "
                         "FLAC, WebM or a video with a sound track", status=415,
                         code="UNSUPPORTED_AUDIO_FORMAT")
    # 2. ffprobe first, with only the demuxers we trust (a playlist behind an ID3 tag sniffs
    #    as MP3; ffprobe would read it, and wait on a live one): an audio stream, a duration
    #    within bounds.
    try:
        info = probe(src, formats=AUDIO_DEMUXERS)
    except MediaError as e:
        other = _OTHER_FORMAT_RE.search(e.stderr)
        if other:
            raise _unsupported_container(field, other.group(1)) from None
        raise InputError(field, f"looks like {name} but ffprobe cannot read it (corrupt or "
                         "truncated)", status=422, code="UNREADABLE_AUDIO") from None
    demuxer = next((d for d in info.format_name.split(",") if d in AUDIO_DEMUXERS), None)
    if demuxer is None:
        raise _unsupported_container(field, info.format_name)
    stream = info.audio
    if stream is None:
        raise InputError(field, f"has no audio stream ({name} with only "
                         f"{', '.join(s.codec_type for s in info.streams) or 'nothing'})",
                         status=415, code="NO_AUDIO_STREAM")
    declared = stream.duration_s or (info.duration_s if len(info.streams) == 1 else 0.0)
    if declared > limits.max_audio_seconds:
        raise _too_long(field, declared, limits)
    # 3. Decode the first audio track to PCM WAV with the demuxer ffprobe chose, capped just
    #    past the limit so a lying header cannot make us decode for ever; downmixed and
    #    resampled while decoding, and cut by ffmpeg itself at the decoded-size budget.
    channels = 1 if stream.channels == 1 else MAX_DECODED_CHANNELS
    rate = min(stream.sample_rate, MAX_DECODED_SAMPLE_RATE) if stream.sample_rate > 0 \
        else MAX_DECODED_SAMPLE_RATE
    budget, which = _decode_budget(dest, field, limits)
    try:
        run(["-v", "error", *LOCAL_FILES_ONLY, "-f", demuxer, "-i", src,
             "-map", "0:a:0", "-vn", "-sn", "-dn", "-t", f"{limits.max_audio_seconds + 1:.3f}",
             "-ac", str(channels), "-ar", str(rate), "-c:a", "pcm_s16le",
             "-fs", str(budget), "-f", "wav", dest],
            timeout_s=limits.audio_decode_timeout_s, what=f"decoding {field}")
        if os.path.exists(dest) and os.path.getsize(dest) >= budget:
            raise _over_budget(field, which, limits)
        out = probe(dest).audio
    except MediaError as e:
        _remove(dest)
        raise InputError(field, f"could not be decoded: {_ffmpeg_reason(e, src)}", status=422,
                         code="UNREADABLE_AUDIO") from None
    except InputError:
        _remove(dest)
        raise
    # 4. What decoded: truncation, duration bounds.
    try:
        decoded = out.duration_s if out else 0.0
        if _wav_truncated(src):
            raise InputError(field, "is truncated: its WAV header announces more audio than "
                             "the file holds", status=422, code="TRUNCATED_AUDIO")
        if declared > 0 and decoded < declared * 0.97 - 0.05:
            raise InputError(field, f"is truncated: it announces {declared:.2f} s of audio but "
                             f"only {decoded:.2f} s decode", status=422, code="TRUNCATED_AUDIO")
        if decoded > limits.max_audio_seconds:
            raise _too_long(field, decoded, limits)
        if decoded < limits.min_audio_seconds:
            raise InputError(field, f"is {decoded:.2f} s long; at least "
                             f"{limits.min_audio_seconds:g} s is needed", status=422,
                             code="AUDIO_TOO_SHORT")
    except InputError:
        _remove(dest)
        raise
    return {"format": demuxer, "duration_s": decoded, "sample_rate": out.sample_rate,
            "channels": out.channels, "audio_codec": stream.codec_name}


def _decode_budget(dest: str, field: str, limits: Limits) -> tuple[int, str]:
    """(bytes this field's decoded WAV may reach, which budget binds: "field" or "request").
    The request's budget is what the audio already decoded into `dest`'s folder left over."""
    folder = os.path.dirname(dest) or "."
    used = sum(e.stat().st_size for e in os.scandir(folder)
               if e.is_file() and e.name.endswith(DECODED_AUDIO_SUFFIX) and e.path != dest)
    left = limits.max_request_decoded_audio_bytes - used
    if left <= WAV_HEADER_BYTES:
        raise _over_budget(field, "request", limits)
    if left < limits.max_decoded_audio_bytes:
        return left, "request"
    return limits.max_decoded_audio_bytes, "field"


def _over_budget(field: str, which: str, limits: Limits) -> InputError:
    if which == "request":
        return InputError(field, "decodes to more audio than this request's budget allows: "
                          "all audio fields of one request together may decode to at most "
                          f"{_human(limits.max_request_decoded_audio_bytes)} of PCM (mono or "
                          f"stereo, at most {MAX_DECODED_SAMPLE_RATE} Hz, 16-bit)", status=413,
                          code="DECODED_AUDIO_BUDGET")
    return InputError(field, "decodes to more than the "
                      f"{_human(limits.max_decoded_audio_bytes)} limit of decoded audio per field "
                      f"(mono or stereo, at most {MAX_DECODED_SAMPLE_RATE} Hz, 16-bit)",
                      status=413, code="DECODED_AUDIO_TOO_LARGE")


def _unsupported_container(field: str, format_name: str) -> InputError:
    return InputError(field, f"is a {format_name} file; not an accepted audio container",
                      status=415, code="UNSUPPORTED_AUDIO_FORMAT")


def _too_long(field: str, seconds: float, limits: Limits) -> InputError:
    return InputError(field, f"is {seconds:.1f} s long; the limit is "
                      f"{limits.max_audio_seconds:g} s", status=422, code="AUDIO_TOO_LONG")


def _wav_truncated(path: str) -> bool:
    """True when a WAV's data chunk announces more bytes than the file holds (ffprobe quietly
    shortens such files, so the duration comparison alone misses them)."""
    with open(path, "rb") as f:
        if f.read(12)[8:12] != b"WAVE":
            return False
        total = os.fstat(f.fileno()).st_size
        while True:
            hdr = f.read(8)
            if len(hdr) < 8:
                return False
            cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
            if cid == b"data":
                # 0 and 0xFFFFFFFF mean "unknown" (streamed writers, RF64).
                return size not in (0, 0xFFFFFFFF) and f.tell() + size > total + 1
            f.seek(size + (size & 1), os.SEEK_CUR)


def _ffmpeg_reason(err: MediaError, src: str) -> str:
    lines = [ln.strip() for ln in err.stderr.splitlines() if ln.strip()]
    reason = (lines[-1] if lines else "ffmpeg failed").replace(src, "<input>")
    return re.sub(r"^\[[^\]]*\]\s*", "", reason)[:200]


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)
