"""Issue 21, item 5 and its class: decoded audio is bounded while it is decoded. A small, highly
compressible multichannel high-rate file inside every upload limit used to become a WAV ~2000x
its size at submit (8 channels at 192 kHz kept as they were), and one request may carry dozens
of audio fields. Now the decoder downmixes to mono/stereo and resamples to at most 48 kHz as it
decodes, and ffmpeg itself stops at a decoded-size budget per field and per request: 413
naming the limit."""
from __future__ import annotations

import base64
import dataclasses
import os

import pytest

from serve_app.inputs import MiB, InputError, Limits, acquire
from tests.support.media import ffmpeg_media
from tests.support.service import BASE, Sandbox, make_client

SECONDS = 10


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def wide_audio(tmp_path_factory) -> bytes:
    """SECONDS of 8-channel (7.1) 192 kHz silence as FLAC: a few tens of KiB that decode to
    30 MiB of 16-bit PCM as sent."""
    d = tmp_path_factory.mktemp("wide")
    expr = "|".join(["0"] * 8)
    return ffmpeg_media(d, "wide.flac", ["-f", "lavfi", "-i",
                                         f"aevalsrc={expr}:s=192000:c=7.1:d={SECONDS}",
                                         "-c:a", "flac", "-compression_level", "8"])


def test_multichannel_high_rate_audio_is_downmixed_and_resampled_while_decoding(wide_audio,
                                                                                tmp_path,
                                                                                figures):
    as_sent = SECONDS * 192000 * 8 * 2
    got = acquire(b64(wide_audio), "input.audio", "audio", str(tmp_path))
    size = os.path.getsize(got.path)
    figures.note("wide audio", f"{len(wide_audio)} bytes of FLAC (8 ch, 192 kHz, {SECONDS} s): "
                 f"{as_sent / len(wide_audio):.0f}x as sent, decoded now to {size} bytes "
                 f"({size / len(wide_audio):.0f}x)")
    assert len(wide_audio) < as_sent / 200  # the kind of file the tester sent
    assert (got.channels, got.sample_rate) == (2, 48000)
    assert got.duration_s == pytest.approx(SECONDS, abs=0.05)
    assert size <= SECONDS * 48000 * 2 * 2 + 4096  # a quarter of the rate, a quarter the channels


def test_per_field_budget_stops_the_decoder_with_a_413(wide_audio, tmp_path):
    limits = Limits(max_decoded_audio_bytes=1 * MiB)
    dest = tmp_path / "in"
    with pytest.raises(InputError) as info:
        acquire(b64(wide_audio), "input.music_url", "audio", str(dest), limits=limits)
    err = info.value
    assert (err.status, err.code) == (413, "DECODED_AUDIO_TOO_LARGE"), err
    assert "input.music_url" in str(err) and "1 MiB" in err.message
    assert list(dest.iterdir()) == []  # the partial decode is gone


def test_per_request_budget_counts_every_field_decoded_into_the_request(wide_audio, tmp_path):
    # each decode is ~1.83 MiB: two fit in 4 MiB, the third does not
    limits = Limits(max_request_decoded_audio_bytes=4 * MiB)
    dest = tmp_path / "req"
    for i in range(2):
        acquire(b64(wide_audio), f"input.sfx_tracks[{i}].url", "audio", str(dest),
                limits=limits)
    with pytest.raises(InputError) as info:
        acquire(b64(wide_audio), "input.sfx_tracks[2].url", "audio", str(dest), limits=limits)
    err = info.value
    assert (err.status, err.code) == (413, "DECODED_AUDIO_BUDGET"), err
    assert "input.sfx_tracks[2].url" in str(err) and "4 MiB" in err.message
    assert len(os.listdir(dest)) == 2
    # another request (another folder) has its own budget
    acquire(b64(wide_audio), "input.audio", "audio", str(tmp_path / "other"), limits=limits)


def test_a_request_with_dozens_of_audio_fields_is_413_over_http(wide_audio, tmp_path, figures):
    """Through the API: 40 SFX of the same small upload. The service's per-request budget is
    lowered for the test (the default, 384 MiB, would need 210 of them)."""
    from tests.support.media import small_portrait
    with make_client(Sandbox(tmp_path, tmp_path).settings()) as c:
        service = c.app.state.service
        service.limits = dataclasses.replace(service.limits,
                                             max_request_decoded_audio_bytes=8 * MiB)
        service.sfx_limits = dataclasses.replace(service.sfx_limits,
                                                 max_request_decoded_audio_bytes=8 * MiB)
        sfx = [{"url": b64(wide_audio), "start_time": i * 0.1} for i in range(40)]
        job = {"job_type": "video_render", "job_id": "many-sfx",
               "image": b64(small_portrait(96)), "audio": b64(wide_audio), "sfx_tracks": sfx,
               "format": {"width": 96, "height": 96}}
        r = c.post(f"{BASE}/run", json={"input": job})
        figures.count("bad inputs tried", 1, "requests over the decoded-audio budget")
        assert r.status_code == 413, r.text[:500]
        err = r.json()["error"]
        assert err["code"] == "DECODED_AUDIO_BUDGET" and "input.sfx_tracks[" in err["message"]
        assert "8 MiB" in err["message"]
        assert c.get(f"{BASE}/status/many-sfx").status_code == 404
