"""finish_video's contract: options from job JSON, readable input errors, ffmpeg's words in
media errors, progress, and paths that would break filter-graph syntax."""
from __future__ import annotations

import tempfile

import numpy as np
import pytest

from media.ffmpeg import MediaError, probe
from media.finish import finish_video
from media.options import Caption, CaptionStyle, Ducking, FinishOptions, SfxTrack
from media.presets import encode_preset
from tests.support.finishing import SR, solid_frames, write_audio, write_frames


@pytest.fixture
def inputs(tmp_path):
    frames = write_frames(tmp_path / "f.mp4", solid_frames(10, 64, 64))
    voice = write_audio(tmp_path / "v.wav", np.zeros(int(0.5 * SR), np.float32))
    return frames, voice


def test_options_from_job_json():
    opts = FinishOptions.from_dict({
        "width": 1080, "height": 1920, "fps": 30, "quality": "premium",
        "captions": [{"text": "hi", "start": 0, "end": 1}],
        "caption_style": {"font_size": 60, "color": "#ffcc00"},
        "ducking": {"base_volume": 0.2, "attack_ms": 40, "release_ms": 250},
        "sfx": [{"url": "/x.wav", "start_time": 1.5, "volume": 0.5}],
    })
    assert opts.captions == (Caption("hi", 0, 1),)
    assert opts.caption_style == CaptionStyle(font_size=60, color="#ffcc00")
    assert opts.ducking == Ducking(base_volume=0.2, attack_ms=40, release_ms=250)
    assert opts.sfx == (SfxTrack("/x.wav", 1.5, 0.5),)
    with pytest.raises(ValueError, match="colour"):
        FinishOptions.from_dict({"colour": "red"})


def test_quality_aliases_and_unknown_quality():
    assert encode_preset("fast") == encode_preset("draft")
    assert encode_preset("high").crf == 18
    with pytest.raises(ValueError, match="unknown quality 'ultra'"):
        encode_preset("ultra")


@pytest.mark.parametrize("make,message", [
    (lambda: FinishOptions(quality="ultra"), "unknown quality"),
    (lambda: FinishOptions(fps=0), "fps\n  Input should be greater than 0"),
    (lambda: FinishOptions(fps=float("inf")), "fps\n  Input should be a finite number"),
    (lambda: FinishOptions(width=101, height=100), "must be positive and even"),
    (lambda: FinishOptions(captions=(Caption("x", 2.0, 1.0),)), "needs 0 <= start < end"),
    (lambda: FinishOptions(ducking=Ducking(base_volume=1.5)), "base_volume"),
    (lambda: FinishOptions(caption_style=CaptionStyle(color="not-a-colour"),
                           captions=(Caption("x", 0, 1),)), "unknown colour"),
    (lambda: FinishOptions(sfx=(SfxTrack("/x.wav", start_time=-1),)), "start_time"),
])
def test_bad_options_fail_early_and_readably(make, message, inputs, tmp_path):
    """Wrong values fail when the options are built or, at the latest, before any work."""
    with pytest.raises(ValueError, match=message):
        finish_video(*inputs, str(tmp_path / "out"), make())


def test_unreadable_input_raises_media_error_with_ffmpegs_words(inputs, tmp_path):
    bogus = tmp_path / "frames.mp4"
    bogus.write_text("not a video")
    with pytest.raises(MediaError) as err:
        finish_video(str(bogus), inputs[1], str(tmp_path / "out"), FinishOptions())
    assert "Invalid data" in str(err.value) or "moov atom not found" in str(err.value)


def test_progress_rises_to_one(inputs, tmp_path):
    seen: list[float] = []
    finish_video(*inputs, str(tmp_path / "out"), FinishOptions(quality="draft"),
                 progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3


def test_paths_with_filter_syntax_characters(inputs, tmp_path, monkeypatch):
    # ' : , [ ] ; in the temp dir (where the captions file lives) and in the output dir.
    odd = tmp_path / "it's: a, [odd]; dir"
    (odd / "tmp").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(odd / "tmp"))
    res = finish_video(*inputs, str(odd / "out"),
                       FinishOptions(quality="draft", captions=(Caption("odd: path", 0, 0.5),)))
    assert probe(res.video_path).video.codec_name == "h264"
    assert open(res.srt_path, encoding="utf-8").read().startswith("1\n00:00:00,000 --> ")
