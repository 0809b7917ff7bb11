"""Issue 21, item 2 and its class: client media decoding never raises anything but a 4xx
InputError, whatever the bytes and whatever the decoder library does with them. A JPEG whose
header is cut short (`FF D8 FF 00 00 00`) made Pillow 13 look up its removed MPO opener: the
KeyError escaped as a 500.

The fuzz tests mutate real files of every accepted format (images: PNG, JPEG, WebP, GIF, BMP;
audio: WAV, MP3, FLAC, Ogg/Opus, M4A/AAC, WebM, AIFF) by truncation, byte flips, insertions,
overwrites and header splices of one format onto another, at a fixed seed; an accepted image
must then also load through the frame loader. tests/serve_app/inputs/fuzzing.py says how to
run them longer by hand."""
from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from media.frames import load_image
from serve_app.inputs import InputError, acquire
from tests.serve_app.inputs.fuzzing import examples, fuzz_settings
from tests.support.media import ffmpeg_media, png_bytes

SINE = ["-f", "lavfi", "-i", "sine=f=440:d=0.6:sample_rate=16000"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    d = tmp_path_factory.mktemp("fuzz-seeds")
    images = {fmt: png_bytes(40, 32, fmt=fmt) for fmt in ("PNG", "JPEG", "WEBP", "BMP")}
    buf = io.BytesIO()
    frames = [Image.new("RGB", (32, 24), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    images["GIF"] = buf.getvalue()
    audio = {name: ffmpeg_media(d, name, [*SINE, *args]) for name, args in (
        ("a.wav", ["-c:a", "pcm_s16le"]), ("a.mp3", ["-c:a", "libmp3lame", "-b:a", "32k"]),
        ("a.flac", ["-c:a", "flac"]), ("a.ogg", ["-c:a", "libopus", "-b:a", "24k"]),
        ("a.m4a", ["-c:a", "aac", "-b:a", "32k"]), ("a.webm", ["-c:a", "libopus"]),
        ("a.aiff", ["-c:a", "pcm_s16be"]))}
    return {"image": images, "audio": audio}


@st.composite
def mutated(draw, pool: dict[str, bytes], everything: list[bytes]) -> tuple[str, bytes]:
    """(how, bytes): one seed changed by one to three mutations, often near its header."""
    name = draw(st.sampled_from(sorted(pool)))
    data = bytearray(pool[name])
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        n = len(data)
        near_head = draw(st.booleans())
        pos = draw(st.integers(0, max(0, min(n, 64) - 1) if near_head else max(0, n - 1)))
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "overwrite", "splice",
                                     "delete"]))
        if kind == "truncate":
            data = data[:pos]
        elif kind == "flip" and n:
            data[min(pos, n - 1)] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "overwrite" and n:
            junk = draw(st.binary(min_size=1, max_size=32))
            data[pos:pos + len(junk)] = junk
        elif kind == "splice":  # another file's header onto this file's body
            other = draw(st.sampled_from(everything))
            cut = draw(st.integers(1, min(len(other), 96)))
            data = bytearray(other[:cut]) + data[pos:]
        elif kind == "delete":
            data[pos:pos + draw(st.integers(1, 64))] = b""
        steps.append(f"{kind}@{pos}")
    return f"{name}: {', '.join(steps)}", bytes(data)


def _outcome(data: bytes, kind: str, dest) -> str:
    """'accepted' or 'refused'; anything else fails the test."""
    field = f"input.{kind}"
    try:
        got = acquire(b64(data), field, kind, str(dest))
    except InputError as e:
        assert 400 <= e.status < 500 and field in str(e), e
        assert not dest.exists() or not any(dest.iterdir())  # nothing half-checked is left
        return "refused"
    if kind == "image":
        rgb = load_image(got.path)  # what the stages do next must work too
        assert rgb.dtype == np.uint8 and rgb.shape == (got.height, got.width, 3)
    else:
        assert got.channels in (1, 2) and 0 < got.sample_rate <= 48000
    return "accepted"


@pytest.fixture
def tally(figures):
    seen: dict = {"outcomes": {}, "name": "?"}
    t0 = time.monotonic()
    yield seen
    n = sum(seen["outcomes"].values())
    figures.note(f"decoder fuzz ({seen['name']})", f"{n} mutated files, {seen['outcomes']}, "
                 f"{time.monotonic() - t0:.1f} s")


# --- item 2 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"\xff\xd8\xff\x00\x00\x00", b"\xff\xd8\xff",
                                  b"\xff\xd8\xff\x00" * 8, b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"])
def test_jpeg_with_its_header_cut_short_is_422(data, tmp_path):
    with pytest.raises(InputError) as info:
        acquire(b64(data), "input.image", "image", str(tmp_path / "in"))
    assert (info.value.status, info.value.code) == (422, "UNREADABLE_IMAGE"), info.value
    assert "input.image" in str(info.value)


def test_requirements_pin_pillow_to_the_tested_major():
    import re
    from pathlib import Path

    import PIL

    line = next(ln for ln in (Path(__file__).parents[3] / "requirements.txt").read_text()
                .splitlines() if ln.lower().startswith("pillow"))
    upper = re.search(r"<\s*(\d+)", line)
    assert upper, f"pillow is not pinned below a major version: {line!r}"
    assert int(PIL.__version__.split(".")[0]) < int(upper.group(1))


# --- the class: mutated files of every accepted format ---------------------------------------

# (kind, the other kind, examples, refusals at least): images are cheap to try, audio is not
MUTATED = [("image", "audio", 1500, 200), ("audio", "image", 150, 20)]


@pytest.mark.parametrize("kind, other, n, min_refused", MUTATED, ids=["images", "audio"])
def test_mutated_files_are_decoded_or_4xx(seeds, tmp_path, tally, kind, other, n, min_refused):
    tally["name"] = "images" if kind == "image" else "audio"
    pool = seeds[kind]
    everything = list(pool.values()) + list(seeds[other].values())

    @fuzz_settings(examples(n))
    @given(case=mutated(pool, everything))
    def run(case):
        how, data = case
        out = _outcome(data, kind, tmp_path / f"in{sum(tally['outcomes'].values())}")
        tally["outcomes"][out] = tally["outcomes"].get(out, 0) + 1
    run()
    assert tally["outcomes"].get("refused", 0) > min_refused
