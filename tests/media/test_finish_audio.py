"""The finisher's audio, measured: loudness, true peak, ducking depth and timing, SFX placement,
bed looping/trimming. Loudness is checked by ffmpeg's ebur128 and pyloudnorm, not by our meter."""
from __future__ import annotations

import dataclasses

import numpy as np
import pyloudnorm
import pytest

from media import loudness, mix
from media.finish import finish_video
from media.options import Ducking, FinishOptions, SfxTrack
from tests.support.finishing import (SR, decode_audio, ebur128, solid_frames, speechlike, tone,
                                     write_audio, write_frames)

BASE = 0.15
DROP_DB = 20 * np.log10(BASE)          # -16.5 dB
WINDOW_MS = mix.ENVELOPE_WINDOW_MS


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    return write_frames(d / "frames.mp4", solid_frames(50, 64, 64))


def _click(level: float = 0.9) -> np.ndarray:
    c = np.zeros(4800, np.float32)
    c[:24] = level                       # 0.5 ms pulse, then silence
    return c


# --- loudness ------------------------------------------------------------------------------------

def test_meter_agrees_with_pyloudnorm():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((SR * 3, 2)) * 0.05).astype(np.float32)
    x[SR:2 * SR] *= 4                     # a louder middle exercises the relative gate
    ours = loudness.integrated_loudness(x)
    ref = pyloudnorm.Meter(SR).integrated_loudness(x.astype(np.float64))
    assert abs(ours - ref) < 0.1


def test_final_mix_is_minus_14_lufs_with_true_peak_under_minus_1(frames, tmp_path):
    # Quiet voice, loud looping music and two full-scale clicks: needs gain AND limiting.
    voice = write_audio(tmp_path / "v.wav", speechlike(4.0, [(0.5, 1.5), (2.0, 3.5)], level_db=-32))
    music = write_audio(tmp_path / "m.wav", tone(220, 1.3, -18))
    click = write_audio(tmp_path / "c.wav", _click(0.99))
    opts = FinishOptions(width=64, height=64, fps=25, quality="draft", music=music,
                         sfx=(SfxTrack(click, 1.0), SfxTrack(click, 3.0, 1.0)))
    res = finish_video(frames, voice, str(tmp_path / "out"), opts)
    integrated, true_peak = ebur128(res.video_path, tmp_path)
    assert abs(integrated - (-14.0)) <= 1.0
    assert true_peak <= -1.0
    assert abs(res.loudness_lufs - integrated) < 0.2       # what we report is what ships
    decoded = decode_audio(res.video_path).astype(np.float64)
    assert abs(pyloudnorm.Meter(SR).integrated_loudness(decoded) - (-14.0)) <= 1.0


def test_limiter_keeps_true_peak_under_ceiling_on_intersample_overs():
    # A full-scale tone at fs/4 with a 45-degree phase: samples at 0.707, true peak at 1.0.
    n = SR
    x = np.sin(2 * np.pi * (SR / 4) * np.arange(n) / SR + np.pi / 4).astype(np.float32)
    assert loudness.true_peak_dbtp(x) > -0.5          # the meter sees the inter-sample peak
    y = loudness.peak_limit(np.repeat(x[:, None], 2, 1), true_peak_dbtp_max=-1.0)
    assert loudness.true_peak_dbtp(y) <= -1.0 - loudness.AAC_HEADROOM_DB + 0.05


# --- ducking -------------------------------------------------------------------------------------

def _music_gain(out: np.ndarray, music: np.ndarray) -> np.ndarray:
    """The gain the mixer put on the music, per sample (where the tone is far from zero)."""
    g = np.full(len(out), np.nan)
    ok = np.abs(music) > 0.5 * np.abs(music).max()
    g[ok] = out[ok, 0] / music[ok]
    return g


@pytest.mark.parametrize("voice_db", [-12.0, -36.0])
def test_ducking_depth_and_attack_on_the_music_component(voice_db, tmp_path):
    # The ducked level must not depend on how loud the voice is (a compressor's would: ffmpeg's
    # sidechaincompress ducks this music by 2.5 dB under a -35 dB voice, 21 dB under -15 dB).
    voice = speechlike(5.0, [(1.0, 2.0), (3.0, 4.0)], level_db=voice_db)
    music = tone(220, 6.0, -20)
    spec = mix.MixSpec(
        beds=(mix.Bed(write_audio(tmp_path / "m.wav", music), 1.0),),
        ducking=Ducking(BASE, attack_ms=50, release_ms=300, hold_ms=100),
        voice_gain=0.0)           # test hook: voice drives the ducker but is not in the output
    out = mix.build_mix(write_audio(tmp_path / "v.wav", voice), spec)
    gain_db = 20 * np.log10(np.clip(_music_gain(out, music[:len(out)]), 1e-9, None))

    def median_db(a, b):
        return float(np.nanmedian(gain_db[int(a * SR):int(b * SR)]))

    silence, speech = median_db(0.2, 0.9), median_db(1.2, 1.9)
    assert abs((speech - silence) - DROP_DB) <= 1.5
    # 90% of the drop within attack + one analysis window of the speech onset.
    t = np.arange(len(gain_db)) / SR
    reached = t[(t >= 1.0) & (gain_db <= 0.9 * DROP_DB)][0]
    assert reached - 1.0 <= (50 + WINDOW_MS) / 1000
    assert reached - 1.0 >= 0.5 * 50 / 1000          # and it is a ramp, not a jump
    # Back to within 10% of the drop after hold + release + one window.
    back = t[(t >= 2.0) & (gain_db >= 0.1 * DROP_DB)][0]
    assert back - 2.0 <= (100 + 300 + WINDOW_MS) / 1000


@pytest.mark.parametrize("hold_ms", [0.0, 200.0])
def test_music_comes_back_after_hold_then_release(hold_ms, tmp_path):
    # hold_ms (API: ducking_config.hold_ms) keeps the music down after speech ends, then the
    # release_ms ramp brings it back: with hold 0 the release starts with the silence.
    release_ms = 300
    opts = FinishOptions(music=write_audio(tmp_path / "m.wav", tone(220, 4.0, -20)),
                         ducking=Ducking(BASE, attack_ms=50, release_ms=release_ms,
                                         hold_ms=hold_ms))
    spec = dataclasses.replace(mix.MixSpec.from_options(opts), voice_gain=0.0)
    voice = write_audio(tmp_path / "v.wav", speechlike(3.5, [(1.0, 2.0)], level_db=-20))
    out = mix.build_mix(voice, spec)
    gain_db = 20 * np.log10(np.clip(_music_gain(out, tone(220, 4.0, -20)[:len(out)]), 1e-9, None))
    t = np.arange(len(gain_db)) / SR
    after = t >= 2.0
    rising = t[after & (gain_db > DROP_DB + 0.1)][0] - 2.0      # the release has begun
    back = t[after & (gain_db >= 0.1 * DROP_DB)][0] - 2.0        # 90% of the way back
    assert hold_ms / 1000 <= rising <= (hold_ms + WINDOW_MS + 5) / 1000
    assert back <= (hold_ms + release_ms + WINDOW_MS) / 1000
    assert back >= (hold_ms + 0.8 * release_ms) / 1000           # a ramp of release_ms


def test_ducking_survives_the_whole_pipeline(frames, tmp_path):
    # Voice and music in separate bands: a 3 kHz voice tone, a 200 Hz music tone; the music
    # level is read back from the decoded AAC output with an FFT band filter.
    voice = np.zeros(SR * 4, np.float32)
    voice[SR:2 * SR] = tone(3000, 1.0, -20)
    voice[int(2.8 * SR):int(3.6 * SR)] = tone(3000, 0.8, -20)
    opts = FinishOptions(width=64, height=64, fps=25, quality="draft",
                         music=write_audio(tmp_path / "m.wav", tone(200, 5.0, -20)),
                         ducking=Ducking(base_volume=BASE))
    res = finish_video(frames, write_audio(tmp_path / "v.wav", voice), str(tmp_path / "out"),
                       opts)
    out = decode_audio(res.video_path)[:, 0].astype(np.float64)
    spec = np.fft.rfft(out)
    f = np.fft.rfftfreq(len(out), 1 / SR)
    spec[(f < 150) | (f > 250)] = 0
    music_part = np.fft.irfft(spec, len(out))

    def rms_db(a, b):
        seg = music_part[int(a * SR):int(b * SR)]
        return 10 * np.log10(np.mean(seg ** 2))

    drop = rms_db(1.3, 1.9) - rms_db(0.2, 0.9)
    assert abs(drop - DROP_DB) <= 1.5


# --- SFX and beds --------------------------------------------------------------------------------

def test_sfx_click_lands_at_its_start_time(frames, tmp_path):
    voice = write_audio(tmp_path / "v.wav", speechlike(3.0, [(0.2, 2.8)], level_db=-40))
    click = write_audio(tmp_path / "c.wav", _click())
    opts = FinishOptions(width=64, height=64, fps=25, quality="draft", normalize_loudness=False,
                         sfx=(SfxTrack(click, start_time=1.234, volume=1.0),))
    res = finish_video(frames, voice, str(tmp_path / "out"), opts)
    out = np.abs(decode_audio(res.video_path)[:, 0])
    onset = np.flatnonzero(out > 0.3)[0] / SR
    assert abs(onset - 1.234) <= 0.010


def test_short_bed_loops_and_long_bed_is_trimmed_with_a_fade(tmp_path):
    voice = write_audio(tmp_path / "v.wav", np.zeros(SR * 3, np.float32))
    short = write_audio(tmp_path / "short.wav", tone(300, 0.7, -12))
    long_ = write_audio(tmp_path / "long.wav", tone(500, 10.0, -12))
    for path in (short, long_):
        out = mix.build_mix(voice, mix.MixSpec(beds=(mix.Bed(path, 1.0),)))
        assert len(out) == 3 * SR                         # the voice sets the length
        rms = [np.sqrt(np.mean(out[int(a * SR):int(a * SR) + SR // 10, 0] ** 2))
               for a in (0.1, 1.0, 2.0)]
        assert min(rms) > 0.5 * max(rms)                  # sounding all the way (looped)
        assert np.abs(out[-10:]).max() < 0.01             # faded out, not cut
        seam = out[int(0.65 * SR):int(0.75 * SR), 0]      # short bed's first loop seam
        assert np.abs(np.diff(seam)).max() < 0.1          # no click at the seam
