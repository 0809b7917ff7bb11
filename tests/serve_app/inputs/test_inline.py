"""base64 and data: URI values: every accepted spelling decodes to the same bytes; everything
else is a 400 (or 413 when too big) naming the field."""
from __future__ import annotations

import base64
import textwrap

import pytest

from serve_app.inputs import InputError, acquire, decode_inline
from tests.support.media import png_bytes

FIELD = "input.audio"
DATA = bytes(range(256)) * 3 + b"\xfb\xff"  # '+', '/' and '-', '_' both show up


def _spellings(data: bytes) -> list[str]:
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    return [std, std.rstrip("="), url, url.rstrip("="), "\n".join(textwrap.wrap(std, 76)) + "\n",
            f"  {std[:40]} \t{std[40:]}  ", "data:audio/wav;base64," + std,
            "DATA:audio/wav;name=voice.wav;base64," + url.rstrip("="), "data:;base64," + std]


@pytest.mark.parametrize("value", _spellings(DATA))
def test_accepted_spellings_decode_to_the_same_bytes(value):
    assert decode_inline(value, FIELD, 10_000) == DATA


@pytest.mark.parametrize("value,code", [
    ("not base64!!", "BAD_BASE64"),
    ("abcde", "BAD_BASE64"),                        # 5 symbols cannot be base64
    ("ab=c", "BAD_BASE64"),                         # padding in the middle
    ("ab+-cd/_", "BAD_BASE64"),                     # both alphabets at once
    ("data:image/png,%89PNG", "BAD_DATA_URI"),      # not base64
    ("data:image/png;base64", "BAD_DATA_URI"),      # no comma
    ("data:image/png;base64,", "EMPTY_INPUT"),
    ("   \n ", "EMPTY_INPUT"),
])
def test_malformed_inline_values_are_400(value, code):
    with pytest.raises(InputError) as info:
        decode_inline(value, FIELD, 10_000)
    assert (info.value.status, info.value.code) == (400, code)
    assert FIELD in str(info.value)


@pytest.mark.parametrize("value,code", [
    ("ftp://example.com/voice.wav", "UNSUPPORTED_SCHEME"),
    ("file:///etc/passwd", "UNSUPPORTED_SCHEME"),
    ("gopher://127.0.0.1:6379/", "UNSUPPORTED_SCHEME"),
    ("/tmp/voice.wav", "BAD_BASE64"),
    ("www.example.com/voice.wav", "BAD_BASE64"),
    ("", "EMPTY_INPUT"),
])
def test_values_that_are_neither_url_nor_inline_are_400(value, code, tmp_path):
    with pytest.raises(InputError) as info:
        acquire(value, FIELD, "audio", str(tmp_path))
    assert (info.value.status, info.value.code) == (400, code) and FIELD in str(info.value)
    if value.startswith("www."):
        assert "https://" in info.value.message  # tells the client what it got wrong


def test_oversize_inline_is_413_naming_field_and_limit():
    value = base64.b64encode(b"\0" * 2000).decode()
    with pytest.raises(InputError) as info:
        decode_inline(value, FIELD, 1000)
    assert info.value.status == 413 and "1000 bytes" in str(info.value) and FIELD in str(info.value)
    # A huge value is refused from its length, before any decoding allocates it.
    with pytest.raises(InputError) as info:
        decode_inline("A" * 50_000_000, FIELD, 20 * 1024 * 1024)
    assert info.value.status == 413 and "20 MiB" in info.value.message


def test_data_uri_image_is_acquired(tmp_path):
    png = png_bytes(40, 30)
    got = acquire("data:image/png;base64," + base64.b64encode(png).decode(), "input.image",
                  "image", str(tmp_path))
    assert (got.source, got.format, got.width, got.height) == ("data_uri", "PNG", 40, 30)
    assert open(got.path, "rb").read() == png and got.path.endswith("input_image.png")
