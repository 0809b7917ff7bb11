"""Inputs at other sample rates and channel counts than the mix: a 16 kHz mono voice, 44.1 kHz
stereo music, a 22.05 kHz mono click, all resampled into one 48 kHz stereo mix. Measured on the
decoded output: duration, the click's time, loudness and true peak (ffmpeg's ebur128)."""
from __future__ import annotations

import numpy as np
import pytest

from media.ffmpeg import probe
from media.finish import finish_video
from media.options import FinishOptions, SfxTrack
from tests.support.finishing import (click_time, ebur128, solid_frames, speechlike, tone,
                                     write_audio, write_frames)

OUT_SR = 48000
FPS = 25
CLICK_AT = 1.234


@pytest.mark.parametrize("voice_sr", [16000, 22050])
def test_mixed_rates_keep_duration_timing_and_loudness(voice_sr, tmp_path):
    voice_s = 3.0
    voice = write_audio(tmp_path / "v.wav",
                        speechlike(voice_s, [(0.2, 1.1), (1.6, 2.8)], level_db=-26, sr=voice_sr),
                        voice_sr)
    music = np.stack([tone(220, 1.7, -18, sr=44100), tone(330, 1.7, -20, sr=44100)], axis=1)
    click = np.zeros(2205, np.float32)
    click[:2] = 0.9                        # ~90 us pulse: broadband, unlike voice and music
    frames = write_frames(tmp_path / "f.mp4", solid_frames(40, 64, 64))
    opts = FinishOptions(width=64, height=64, fps=FPS, quality="draft",
                         music=write_audio(tmp_path / "m.wav", music, 44100),
                         sfx=(SfxTrack(write_audio(tmp_path / "c.wav", click, 22050), CLICK_AT),))
    res = finish_video(frames, voice, str(tmp_path / "out"), opts)

    info = probe(res.video_path)
    assert (info.audio.sample_rate, info.audio.channels) == (OUT_SR, 2)
    assert abs(info.duration_s - voice_s) <= 1 / FPS + 1e-3

    integrated, true_peak = ebur128(res.video_path, tmp_path)
    assert abs(integrated - (-14.0)) <= 1.0
    assert true_peak <= -1.0

    # The click is the only sound above 5 kHz (the voice is band-limited to 3.4 kHz, the music
    # is two tones): its time is the peak of the high band.
    at, prominence = click_time(res.video_path, OUT_SR)
    assert abs(at - CLICK_AT) <= 0.010 and prominence > 20
