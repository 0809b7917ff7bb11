"""Fuzz: random unicode and filter/markup metacharacters in captions and random caption styles
never make ffmpeg fail, never leak as markup, and always draw something for visible text.
(Issue 5 item 4: text is data, never ffmpeg or ASS syntax.)"""
from __future__ import annotations

import random

import numpy as np
import pytest

from media.finish import Caption, CaptionStyle, FinishOptions, finish_video
from synth_media import SR, all_frames, solid_frames, write_audio, write_frames

W, H, FPS, BG = 180, 320, 10, 60
SECONDS = 4.0
# what breaks naive filter strings and ASS: quotes, separators, escapes, override blocks,
# newlines, percent/drawtext expansions, shell-ish bits, RTL controls, zero-width, emoji
META = list("'\":,;=[]{}\\%$`|&<>#@!?*~^") + ["\n", "\r\n", "\t", "\\N", "\\n", "\\h", "{\\b1}",
                                            "{\\pos(0,0)}", "%{pts}", "${HOME}", "$(id)",
                                            "\u202e", "\u200f", "\u200b", "\ufeff", "\u0301"]
SCRIPTS = ["abcXYZ019", "مرحبا بالعالم", "שלום עולם", "Привет", "😀😃🎉👩‍🚀", "日本語テキスト",
           "é̃ñ", "Ωμέγα"]
COLOURS = ["white", "black", "yellow", "red", "#00ff00", "#FFAA00", "#123456", "cyan"]


def random_text(rng: random.Random) -> str:
    parts = [rng.choice(META) if rng.random() < 0.5 else rng.choice(SCRIPTS)
             for _ in range(rng.randint(1, 12))]
    parts += [chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(0, 6))]
    rng.shuffle(parts)
    return "".join(parts)[:300]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_captions_and_styles_render(seed, tmp_path):
    rng = random.Random(seed)
    n = 16
    slot = SECONDS / n
    captions = tuple(Caption(text=random_text(rng), start=i * slot, end=(i + 0.9) * slot)
                     for i in range(n))
    style = CaptionStyle(font_size=rng.randint(12, 140), color=rng.choice(COLOURS),
                         stroke_color=rng.choice(COLOURS), stroke_width=rng.uniform(0, 8),
                         position_y=rng.uniform(0, 1))
    frames = write_frames(tmp_path / "f.mp4", solid_frames(5, 90, 160, (BG, BG, BG)), fps=FPS)
    voice = write_audio(tmp_path / "v.wav", np.zeros(int(SECONDS * SR), np.float32))
    res = finish_video(frames, voice, str(tmp_path / "out"),
                       FinishOptions(width=W, height=H, fps=FPS, quality="draft",
                                     normalize_loudness=False, captions=captions,
                                     caption_style=style))
    out = all_frames(res.video_path)
    assert abs(len(out) - SECONDS * FPS) <= 1
    # every caption's slot shows ink (all texts hold at least one visible glyph or box)
    drawn = 0
    for i, cap in enumerate(captions):
        mid = int((cap.start + cap.end) / 2 * FPS)
        ink = np.abs(out[mid].astype(int) - BG).max(axis=2) > 40
        drawn += bool(ink.any())
    assert drawn >= n - 1, f"{drawn}/{n} captions visible"
    # the SRT sidecar holds every caption's text as written, line by line (no escaping)
    srt = open(res.srt_path, encoding="utf-8").read()
    for cap in captions:
        for line in cap.text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            if line.strip():
                assert line in srt, (line, srt[:500])
