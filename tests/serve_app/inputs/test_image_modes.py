"""Issue 21, item 4 and its class: every bit depth and colour model the image check accepts
reaches the stages as the right 8-bit RGB picture. A 16-bit grey portrait used to come out
nearly white (Pillow's convert("RGB") clips 16-bit grey at 255) and failed as NO_FACE.

Round trip: the test portrait encoded in each mode, decoded through the input path (acquire)
and the frame loader (media.frames.load_image), compared with the 8-bit reference (RGB, or its
grey version for grey modes) within a tolerance per encoding (exact for lossless ones)."""
from __future__ import annotations

import base64
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from media.frames import load_image
from serve_app.inputs import acquire
from tests.support.portrait import portrait

SIDE = 96


def _reference() -> np.ndarray:
    return np.asarray(Image.fromarray(portrait()).resize((SIDE, SIDE), Image.LANCZOS))


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _grey16_png(rgb) -> bytes:
    g16 = _grey(rgb).astype(np.uint16) * 257
    return _save(Image.fromarray(g16), "PNG")           # Pillow writes I;16 as 16-bit grey


def _rgb16_png(rgb) -> bytes:
    bgr16 = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    ok, enc = cv2.imencode(".png", bgr16)                # 16 bits per channel, colour type 2
    assert ok
    return enc.tobytes()


def _rgba16_png(rgb) -> bytes:
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA).astype(np.uint16) * 257
    ok, enc = cv2.imencode(".png", bgra)
    assert ok
    return enc.tobytes()


def _palette_with_transparency(rgb) -> bytes:
    p = Image.fromarray(rgb).quantize(256)
    return _save(p, "PNG", transparency=0)


# (name, encode(rgb) -> bytes, compared with "rgb" or "grey", mean-abs tolerance, max tolerance)
CASES = [
    ("L 8-bit grey PNG", lambda r: _save(Image.fromarray(_grey(r)), "PNG"), "grey", 0, 0),
    ("I;16 16-bit grey PNG", _grey16_png, "grey", 0, 0),
    ("16-bit grey PNG by OpenCV", lambda r: cv2.imencode(
        ".png", _grey(r).astype(np.uint16) * 257)[1].tobytes(), "grey", 0, 0),
    ("LA grey+alpha PNG", lambda r: _save(Image.fromarray(_grey(r)).convert("LA"), "PNG"),
     "grey", 0, 0),
    ("RGB 16-bit PNG", _rgb16_png, "rgb", 0, 0),
    ("RGBA 16-bit PNG", _rgba16_png, "rgb", 0, 0),
    ("RGBA PNG", lambda r: _save(Image.fromarray(r).convert("RGBA"), "PNG"), "rgb", 0, 0),
    ("P palette PNG", lambda r: _save(Image.fromarray(r).quantize(256), "PNG"), "rgb", 6, 128),
    ("P with transparency PNG", _palette_with_transparency, "rgb", 6, 128),
    ("1-bit PNG", lambda r: _save(Image.fromarray(_grey(r)).convert("1"), "PNG"), "grey",
     128, 255),
    ("CMYK JPEG", lambda r: _save(Image.fromarray(r).convert("CMYK"), "JPEG", quality=95),
     "rgb", 6, 90),
    ("RGB JPEG", lambda r: _save(Image.fromarray(r), "JPEG", quality=95), "rgb", 4, 80),
    ("L JPEG", lambda r: _save(Image.fromarray(_grey(r)), "JPEG", quality=95), "grey", 3, 60),
    ("RGB WebP lossless", lambda r: _save(Image.fromarray(r), "WEBP", lossless=True), "rgb", 0,
     0),
    ("RGBA WebP lossless", lambda r: _save(Image.fromarray(r).convert("RGBA"), "WEBP",
                                           lossless=True), "rgb", 0, 0),
    ("P GIF", lambda r: _save(Image.fromarray(r).quantize(256), "GIF"), "rgb", 6, 128),
    ("RGB BMP", lambda r: _save(Image.fromarray(r), "BMP"), "rgb", 0, 0),
    ("P BMP", lambda r: _save(Image.fromarray(r).quantize(256), "BMP"), "rgb", 6, 128),
    ("L BMP", lambda r: _save(Image.fromarray(_grey(r)), "BMP"), "grey", 0, 0),
]


@pytest.mark.parametrize("name,encode,ref,mean_tol,max_tol", CASES, ids=[c[0] for c in CASES])
def test_every_accepted_mode_decodes_to_the_8bit_reference(name, encode, ref, mean_tol, max_tol,
                                                           tmp_path):
    rgb = _reference()
    want = np.repeat(_grey(rgb)[:, :, None], 3, 2) if ref == "grey" else rgb
    got = acquire(base64.b64encode(encode(rgb)).decode(), "input.image", "image",
                  str(tmp_path))
    assert (got.width, got.height) == (SIDE, SIDE)
    out = load_image(got.path)
    assert out.shape == (SIDE, SIDE, 3) and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - want.astype(int))
    assert diff.mean() <= mean_tol + 0.5 and diff.max() <= max(max_tol, 1), (
        name, float(diff.mean()), int(diff.max()), Image.open(got.path).mode)


def test_sixteen_bit_grey_uses_the_whole_range():
    """The tester's case in numbers: a dark-to-light 16-bit ramp stays a ramp."""
    from media.frames import to_rgb8
    ramp = np.linspace(0, 65535, 256).astype(np.uint16)[None, :].repeat(4, 0)
    out = to_rgb8(Image.fromarray(ramp))
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, -1].tolist() == [255, 255, 255]
    assert abs(int(out[0, 128, 0]) - 128) <= 1


@pytest.mark.parametrize("mode,values,expect", [
    ("F", [0.0, 0.5, 1.0], [0, 128, 255]),            # 0..1 floats
    ("F", [0.0, 127.0, 255.0, 300.0], [0, 127, 255, 255]),  # 0..255 floats, clipped
    ("I", [0, 32768, 65535, 70000], [0, 128, 255, 255]),
])
def test_float_and_integer_grey(mode, values, expect):
    from media.frames import to_rgb8
    arr = np.array([values], dtype=np.float32 if mode == "F" else np.int32)
    im = Image.fromarray(arr)
    assert im.mode == mode
    out = to_rgb8(im)
    assert out[0, :, 0].tolist() == expect and (out[..., 0] == out[..., 2]).all()
