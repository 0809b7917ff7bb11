"""Fuzz: random unicode and filter/markup metacharacters in captions and random caption styles
never make ffmpeg fail, never leak as markup, and always draw something for visible text; and
through the API, hostile caption_style colours are refused with a 4xx naming the field or
render (issue 5 item 4: text and style values are data, never ffmpeg or ASS syntax)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from media.ffmpeg import probe
from media.finish import finish_video
from media.options import Caption, CaptionStyle, FinishOptions
from tests.support.finishing import SR, all_frames, solid_frames, write_audio, write_frames
from tests.support.media import b64, small_portrait, speechlike
from tests.support.service import BASE, TINY_FACE_BOX, Sandbox, make_client, wait_final

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
def test_random_captions_and_styles_render(seed, tmp_path, figures):
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
    figures.count("bad inputs tried", len(captions), "hostile captions rendered")
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


# ---- caption_style colours through the API --------------------------------------------------

VALID_COLOURS = ["white", "Yellow", " red ", "#0f0", "#00FF00", "#ffaa0080", "rgb(10, 200, 30)",
                 "hsl(200, 50%, 50%)", "cyan"]
STYLE_FIELDS = ("input.caption_style.color", "input.caption_style.stroke_color")


def random_colour(rng: random.Random) -> tuple[str, bool]:
    """(colour, hostile?): a valid form, one with metacharacters or unicode spliced in, a
    metacharacter soup, or random code points (sometimes past the 32-character limit)."""
    r = rng.random()
    if r < 0.3:
        return rng.choice(VALID_COLOURS), False
    if r < 0.6:
        base = rng.choice(VALID_COLOURS)
        i = rng.randint(0, len(base))
        return base[:i] + rng.choice(META + [w[:3] for w in SCRIPTS]) + base[i:], True
    if r < 0.8:
        return "".join(rng.choice(META) for _ in range(rng.randint(1, 5))), True
    return "".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(1, 40))), True


def test_hostile_caption_style_colours_are_refused_or_render(tmp_path, figures):
    """Each style is refused with a 4xx naming a colour field, or the job renders: never a 5xx,
    never a job that fails in the finisher (ffmpeg or ASS choking on a colour)."""
    rng = random.Random(5)
    image = b64(small_portrait(96))
    audio = b64(speechlike(0.5, tmp_path / "voice.wav").read_bytes())
    sandbox = Sandbox(tmp_path, tmp_path)
    accepted, refused, hostile = [], 0, 0
    with make_client(sandbox.settings()) as c:
        for i in range(30):
            (color, bad_fill), (stroke, bad_stroke) = random_colour(rng), random_colour(rng)
            hostile += bad_fill or bad_stroke
            job = {"job_type": "video_render", "job_id": f"style-{i}", "image": image,
                   "audio": audio, "face_box": TINY_FACE_BOX, "quality": "draft",
                   "format": {"width": 96, "height": 128, "fps": 10},
                   "captions": [{"text": random_text(rng), "start": 0.0, "end": 0.5}],
                   "caption_style": {"color": color, "stroke_color": stroke}}
            r = c.post(f"{BASE}/run", json={"input": job})
            assert r.status_code < 500, (color, stroke, r.status_code, r.text)
            if r.status_code == 200:
                accepted.append((job["job_id"], color, stroke))
                continue
            assert 400 <= r.status_code < 500, (color, stroke, r.text)
            message = r.json()["error"]["message"]
            assert any(f in message for f in STYLE_FIELDS), (color, stroke, message)
            refused += 1
        for job_id, color, stroke in accepted:
            st = wait_final(c, job_id, timeout=300)
            assert st["status"] == "COMPLETED", (color, stroke, st.get("error"), st)
            info = probe(sandbox.roots / "store" / "videos" / job_id / "final.mp4")
            assert (info.video.width, info.video.height) == (96, 128) and info.audio is not None
            assert abs(info.duration_s - 0.5) <= 0.15, info.duration_s
    assert accepted and refused  # both outcomes were exercised
    figures.count("bad inputs tried", hostile, "hostile caption_style colours over HTTP")
    figures.note("caption_style fuzz", f"{len(accepted) + refused} styles: {refused} refused "
                 f"(4xx naming the field), {len(accepted)} rendered, 0 failed")
