"""The finisher's picture and container, measured with ffprobe, x264's own SEI and the pixels."""
from __future__ import annotations

import numpy as np
import pytest

from media.ffmpeg import probe
from media.finish import finish_video
from media.frames import load_image
from media.options import FinishOptions
from media.presets import encode_preset
from tests.support.finishing import (SR, all_frames, decode_audio, solid_frames, write_audio,
                                     write_frames)


def _voice(tmp_path, seconds: float, name: str = "v.wav") -> str:
    rng = np.random.default_rng(0)
    return write_audio(tmp_path / name, (rng.standard_normal(int(seconds * SR)) * 0.05))


def _x264_options(path: str) -> dict[str, str]:
    data = open(path, "rb").read()
    start = data.find(b"x264 - core")
    assert start >= 0, "no x264 SEI in the stream"
    text = data[start:data.find(b"\x00", start)].decode("ascii", "replace")
    return dict(kv.split("=", 1) for kv in text.split("options: ", 1)[1].split() if "=" in kv)


# x264's preset definitions (common/base.c): what each preset sets, as written in the SEI.
PRESET_SIGNATURE = {
    "draft": {"me": "dia", "subme": "0", "ref": "1", "bframes": "0", "cabac": "0"},
    "standard": {"me": "hex", "subme": "7", "ref": "3", "bframes": "3", "rc_lookahead": "40"},
    "premium": {"me": "hex", "subme": "8", "ref": "5", "trellis": "2", "rc_lookahead": "50"},
    "cinematic": {"me": "umh", "subme": "10", "ref": "16", "bframes": "8", "rc_lookahead": "60"},
}


@pytest.mark.parametrize("quality", ["draft", "standard", "premium", "cinematic"])
def test_stream_matches_format_and_preset(quality, tmp_path):
    frames = write_frames(tmp_path / "f.mp4", solid_frames(25, 96, 96, (90, 120, 150)))
    opts = FinishOptions(width=64, height=112, fps=30, quality=quality, normalize_loudness=False)
    res = finish_video(frames, _voice(tmp_path, 1.0), str(tmp_path / "out"), opts)
    info = probe(res.video_path)
    v, a = info.video, info.audio
    assert (v.codec_name, v.width, v.height, v.pix_fmt) == ("h264", 64, 112, "yuv420p")
    assert v.fps == pytest.approx(30.0)
    assert a is not None and a.codec_name == "aac" and a.sample_rate == 48000
    raw = info.raw["streams"][0]
    assert (raw.get("color_space"), raw.get("color_transfer"), raw.get("color_primaries"),
            raw.get("color_range")) == ("bt709", "bt709", "bt709", "tv")
    data = open(res.video_path, "rb").read()
    assert data.find(b"moov") < data.find(b"mdat")        # +faststart
    options = _x264_options(res.video_path)
    preset = encode_preset(quality)
    assert float(options["crf"]) == preset.crf == res.crf
    for key, value in PRESET_SIGNATURE[quality].items():
        assert options[key] == value, (quality, key)
    assert res.x264_preset == preset.x264_preset


@pytest.mark.parametrize("n_frames,voice_s,fps", [(20, 1.5, 30), (60, 1.3, 25), (25, 1.0, 24)])
def test_duration_follows_the_voice(n_frames, voice_s, fps, tmp_path):
    frames = write_frames(tmp_path / "f.mp4", solid_frames(n_frames, 64, 64))
    opts = FinishOptions(fps=fps, quality="draft", normalize_loudness=False)
    res = finish_video(frames, _voice(tmp_path, voice_s), str(tmp_path / "out"), opts)
    info = probe(res.video_path, count_frames=True)
    assert abs(info.duration_s - voice_s) <= 1 / fps + 1e-3
    assert abs(info.video.nb_frames / fps - voice_s) <= 1 / fps + 1e-3
    assert (res.width, res.height) == (64, 64)           # None = keep the source size


def test_flash_and_click_stay_in_sync(tmp_path):
    # A white flash on source frame 25 (t = 1.0 s at 25 fps) and a click at 1.0 s in the voice;
    # after 25 -> 30 fps, loudness normalisation and AAC, both must still meet within a frame.
    frames = solid_frames(60, 64, 64, (20, 20, 20))
    frames[25] = np.full((64, 64, 3), 255, np.uint8)
    voice = np.zeros(int(2.4 * SR), np.float32)
    voice[SR:SR + 48] = 0.8
    res = finish_video(write_frames(tmp_path / "f.mp4", frames, fps=25),
                       write_audio(tmp_path / "v.wav", voice), str(tmp_path / "out"),
                       FinishOptions(fps=30, quality="draft"))
    luma = np.array([f.mean() for f in all_frames(res.video_path)])
    flash_t = np.flatnonzero(luma > 128)[0] / 30
    audio = np.abs(decode_audio(res.video_path)[:, 0])
    click_t = np.flatnonzero(audio > 0.5 * audio.max())[0] / SR
    assert abs(flash_t - click_t) <= 1 / 30 + 1e-3


def test_other_aspect_is_fitted_without_distortion_on_a_blurred_fill(tmp_path):
    # A centred disc on a bright frame: after fitting square -> 9:16 it must stay round, and
    # the bands above and below must be filled (blurred picture), not black.
    yy, xx = np.mgrid[:96, :96]
    src = np.full((96, 96, 3), 230, np.uint8)
    src[(yy - 48) ** 2 + (xx - 48) ** 2 < 30 ** 2] = (200, 30, 30)
    res = finish_video(write_frames(tmp_path / "f.mp4", [src] * 10), _voice(tmp_path, 0.4),
                       str(tmp_path / "out"), FinishOptions(width=72, height=128, fps=25,
                                                             quality="draft"))
    frame = all_frames(res.video_path)[5].astype(int)
    red = (frame[..., 0] > 150) & (frame[..., 1] < 90)
    ys, xs = np.nonzero(red)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert abs(height - width) <= 2                       # round, not stretched
    assert abs(width - 72 * 60 / 96) <= 3                 # scaled to fit the width
    assert frame[:10].mean() > 100 and frame[-10:].mean() > 100    # filled, not black bars


def test_colours_survive_with_bt709_tags(tmp_path):
    rgb = (200, 60, 40)
    res = finish_video(write_frames(tmp_path / "f.mp4", solid_frames(10, 64, 64, rgb)),
                       _voice(tmp_path, 0.4), str(tmp_path / "out"),
                       FinishOptions(fps=25, quality="premium", normalize_loudness=False))
    # Decode as a BT.709-aware player would (the stream says bt709), compare the centre.
    got = all_frames(res.video_path)[3][16:48, 16:48].reshape(-1, 3).mean(axis=0)
    assert np.abs(got - np.array(rgb)).max() <= 6


def test_thumbnail_is_a_sharp_exposed_frame_at_output_size(tmp_path):
    black = solid_frames(15, 64, 64, (0, 0, 0))            # first 30%: black
    flat = solid_frames(10, 64, 64, (128, 128, 128))       # exposed but featureless (blink-ish)
    checker = np.kron((np.indices((8, 8)).sum(0) % 2) * 200 + 28, np.ones((8, 8)))
    sharp = [np.repeat(checker[..., None], 3, 2).astype(np.uint8)] * 25
    res = finish_video(write_frames(tmp_path / "f.mp4", black + flat + sharp),
                       _voice(tmp_path, 2.0), str(tmp_path / "out"),
                       FinishOptions(width=64, height=64, fps=25, quality="draft",
                                     normalize_loudness=False))
    thumb = load_image(res.thumbnail_path)
    assert thumb.shape == (64, 64, 3)
    assert thumb.std() > 60                                # the checkerboard, not black/flat


@pytest.mark.parametrize("out_w,out_h", [(96, 160), (48, 32)])
def test_thumbnail_is_at_the_output_size_not_the_source_size(out_w, out_h, tmp_path):
    # 64x64 source frames fitted to a taller (blurred fill) or a smaller, wider output: the
    # thumbnail is the published picture, so it matches the output's size and its pixels.
    checker = np.kron((np.indices((8, 8)).sum(0) % 2) * 200 + 28, np.ones((8, 8)))
    sharp = np.repeat(checker[..., None], 3, 2).astype(np.uint8)
    res = finish_video(write_frames(tmp_path / "f.mp4", [sharp] * 25), _voice(tmp_path, 1.0),
                       str(tmp_path / "out"),
                       FinishOptions(width=out_w, height=out_h, fps=25, quality="premium",
                                     normalize_loudness=False))
    thumb = load_image(res.thumbnail_path).astype(int)
    assert thumb.shape == (out_h, out_w, 3)
    published = all_frames(res.video_path)[12].astype(int)
    assert np.abs(thumb - published).mean() < 8


def test_presets_are_monotone_in_encode_cost_and_quality():
    """draft <= standard <= premium <= cinematic in x264 effort (its presets, fastest first) and
    in quality (CRF, lower is better); lipsync_only's fast | standard | high follow the same
    order, so no faster preset encodes slower (issue 20)."""
    from media.presets import PRESETS

    x264_order = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                  "slower", "veryslow", "placebo"]
    chain = [encode_preset(q) for q in ("draft", "standard", "premium", "cinematic")]
    assert chain == list(PRESETS.values())
    effort = [x264_order.index(p.x264_preset) for p in chain]
    assert effort == sorted(effort) and len(set(effort)) == len(effort)
    crf = [p.crf for p in chain]
    assert crf == sorted(crf, reverse=True)
    assert [encode_preset(q).name for q in ("fast", "standard", "high")] == ["draft", "standard", "premium"]
