"""samples/: committed demo inputs match their generator, are small, and sound like speech."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipsync.voice import openness_curve
from media.ffmpeg import probe
from media.frames import load_audio, load_image
from samples import make_samples

SAMPLES = Path(make_samples.__file__).resolve().parent
NAMES = ("portrait.png", "voice.wav", "music.wav", "click.wav")


def test_committed_samples_are_what_the_script_writes(tmp_path):
    make_samples.main(tmp_path)
    for name in NAMES:
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name
    assert sum((SAMPLES / n).stat().st_size for n in NAMES) < 2 * 2**20
    assert (SAMPLES / "portrait.png").stat().st_size < 500 * 2**10


@pytest.mark.parametrize("name, rate, lo, hi", [("voice.wav", 16000, 6.0, 8.0),
                                                ("music.wav", 32000, 9.99, 10.01),
                                                ("click.wav", 44100, 0.05, 0.5)])
def test_sample_audio_format(name, rate, lo, hi):
    audio = probe(SAMPLES / name).audio
    assert (audio.sample_rate, audio.channels) == (rate, 1)
    assert lo <= audio.duration_s <= hi


def test_voice_has_syllables_at_about_4_hz_and_pauses():
    voice = load_audio(SAMPLES / "voice.wav")
    curve = openness_curve(voice, 25)
    talking = curve > 0.05
    peaks = np.count_nonzero((curve[1:-1] > curve[:-2]) & (curve[1:-1] >= curve[2:])
                             & (curve[1:-1] > 0.3))
    assert 0.1 < 1 - talking.mean() < 0.5                  # pauses, but mostly speech
    assert 3.0 < peaks / (talking.sum() / 25) < 6.0         # syllable peaks per talking second
    # Vowel spectra: most energy below 1 kHz, as in voiced speech.
    spec = np.abs(np.fft.rfft(voice)) ** 2
    freqs = np.fft.rfftfreq(len(voice), 1 / 16000)
    assert spec[freqs < 1000].sum() / spec.sum() > 0.6


def test_portrait_is_512_rgb_with_one_face():
    from faces import load_detector

    img = load_image(SAMPLES / "portrait.png")
    assert img.shape == (512, 512, 3)
    assert len(load_detector().detect(img)) == 1
