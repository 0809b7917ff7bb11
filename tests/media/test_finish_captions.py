"""Burned-in captions, measured on the decoded frames: on exactly the frames of [start, end),
wrapped inside the safe area, and special characters rendered as text, never as markup."""
from __future__ import annotations

import numpy as np
import pytest

from media.captions import safe_area
from media.finish import finish_video
from media.options import Caption, CaptionStyle, FinishOptions
from tests.support.finishing import SR, all_frames, solid_frames, write_audio, write_frames

W, H, FPS = 270, 480, 30
BG = 60
STYLE = CaptionStyle(font_size=96, color="white", stroke_color="#000000", stroke_width=4)


def _render(tmp_path, captions, seconds: float, style=STYLE) -> tuple[list[np.ndarray], object]:
    frames = write_frames(tmp_path / "f.mp4", solid_frames(10, 90, 160, (BG, BG, BG)))
    voice = write_audio(tmp_path / "v.wav", np.zeros(int(seconds * SR), np.float32))
    res = finish_video(frames, voice, str(tmp_path / "out"),
                       FinishOptions(width=W, height=H, fps=FPS, quality="draft",
                                     normalize_loudness=False, captions=tuple(captions),
                                     caption_style=style))
    return all_frames(res.video_path), res


def _ink(frame: np.ndarray) -> np.ndarray:
    """Caption pixels: anything clearly off the flat grey background (fill or outline)."""
    return np.abs(frame.astype(int) - BG).max(axis=2) > 40


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_caption_is_on_exactly_the_frames_inside_its_interval(tmp_path):
    caps = [Caption("Hello", 1.0, 2.0), Caption("again", 2.52, 2.98)]
    frames, res = _render(tmp_path, caps, 3.5)
    shown = np.array([_ink(f).sum() > 50 for f in frames])
    t = np.arange(len(frames)) / FPS
    expected = ((t >= 1.0 - 1e-6) & (t < 2.0 - 1e-6)) | ((t >= 2.52) & (t < 2.98))
    assert shown.sum() > 0
    np.testing.assert_array_equal(shown, expected)
    srt = open(res.srt_path, encoding="utf-8").read()
    assert "00:00:01,000 --> 00:00:02,000\nHello" in srt
    assert "00:00:02,520 --> 00:00:02,980\nagain" in srt


def test_long_caption_wraps_inside_the_safe_area(tmp_path):
    text = ("This caption is far too long for one line of a vertical video, so it has to wrap "
            "onto several lines without leaving the safe area")
    style = CaptionStyle(font_size=96, stroke_width=4, position_y=0.75)
    frames, _ = _render(tmp_path, [Caption(text, 0.0, 1.0)], 1.0, style)
    x0, y0, x1, y1 = _bbox(_ink(frames[10]))
    area = safe_area(W, H)
    assert area.left <= x0 and x1 <= area.right and area.top <= y0 and y1 <= area.bottom
    line_px = 96 * W / 1080
    assert (y1 - y0) > 2.5 * line_px                     # wrapped to at least 3 lines
    assert y1 <= 0.75 * H + 2                            # block sits on position_y


def test_caption_near_the_bottom_is_pulled_into_the_safe_area(tmp_path):
    style = CaptionStyle(font_size=96, stroke_width=4, position_y=0.99)
    frames, _ = _render(tmp_path, [Caption("Low caption", 0.0, 1.0)], 1.0, style)
    _, _, _, y1 = _bbox(_ink(frames[10]))
    assert y1 <= safe_area(W, H).bottom


def test_special_characters_render_as_text_not_markup(tmp_path):
    caps = [
        Caption("abc", 0.0, 0.5),
        Caption("{\\i1}abc{x}", 0.5, 1.0),                  # braces and tags stay visible text
        Caption("C:\\New", 1.0, 1.5),                       # "\N" must not break the line
        Caption("CNew", 1.5, 2.0),
        Caption("He said \"hi\": 'a', b; 100% [x]\nline two", 2.0, 2.5),
        Caption("😀 مرحبا بالعالم שלום", 2.5, 3.0),
    ]
    frames, _ = _render(tmp_path, caps, 3.0)
    boxes = [_bbox(_ink(frames[int((c.start + c.end) / 2 * FPS)])) for c in caps]
    widths = [b[2] - b[0] for b in boxes]
    heights = [b[3] - b[1] for b in boxes]
    assert widths[1] > 2 * widths[0]                     # "{\i1}" and "{x}" were drawn
    assert heights[2] < 1.3 * heights[3]                 # one line: "\N" was not a line break
    assert widths[2] > widths[3]                         # and the backslash itself is drawn
    assert heights[4] > 1.6 * heights[0]                 # a real newline does break
    assert widths[5] > 60                                # emoji, Arabic, Hebrew: drawn


@pytest.mark.parametrize("colour", ["yellow", "#00FF00"])
def test_fill_colour_by_name_or_hex(colour, tmp_path):
    style = CaptionStyle(font_size=140, color=colour, stroke_width=0)
    frames, _ = _render(tmp_path, [Caption("IIII", 0.0, 0.5)], 0.5, style)
    ink = _ink(frames[5])
    fill = frames[5][ink].astype(int)
    away = np.abs(fill - BG).sum(axis=1)
    core = fill[away >= np.percentile(away, 75)]          # fully covered, not edge pixels
    want = {"yellow": (255, 255, 0), "#00FF00": (0, 255, 0)}[colour]
    assert np.abs(np.median(core, axis=0) - want).max() < 25


def test_cjk_and_emoji_render_as_their_own_glyphs_not_boxes(tmp_path):
    """DejaVu has no CJK and few emoji: libass falls back through fontconfig to the fonts
    scripts/system_deps.sh installs. Two different characters give different ink when each has a
    glyph, and the same box (or nothing) when both fall back to "missing glyph"."""
    pairs = [("中", "文"), ("字", "語"), ("🎉", "🚀"), ("🎈", "🍕")]
    caps = [Caption(ch, i * 0.5, (i + 1) * 0.5) for i, ch in enumerate(c for pair in pairs for c in pair)]
    frames, _ = _render(tmp_path, caps, len(caps) * 0.5, CaptionStyle(font_size=240, stroke_width=0))
    inks = [_ink(frames[int((c.start + c.end) / 2 * FPS)]) for c in caps]
    assert all(ink.sum() > 300 for ink in inks), [int(ink.sum()) for ink in inks]
    for i, pair in enumerate(pairs):
        a, b = inks[2 * i], inks[2 * i + 1]
        iou = (a & b).sum() / (a | b).sum()
        assert iou < 0.8, f"{pair} drew the same shape (IoU {iou:.2f}): a missing-glyph box"
