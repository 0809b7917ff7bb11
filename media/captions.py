"""Captions: an ASS file we write ourselves (burned in by libass) and an SRT sidecar.

Why ASS + libass: libass shapes with HarfBuzz and orders with FriBidi (Arabic joins, Hebrew and
mixed lines read right), and caption text never passes through ffmpeg's filter syntax: it lives
in a file, escaped for ASS only (backslash, braces, newlines). We wrap lines ourselves (measured
with the shipped font) so we know the block's size and can keep it inside the safe area, and we
snap times to the output frame grid so a caption is on exactly the frames inside [start, end).

Layout is the finisher's CPU loop that grows with the text: every loop in it calls a `check`
callback (the stage's progress report, which raises JobCancelled once the job is cancelled), so
a cancel stops a caption-heavy render within about a second, and its cost is bounded: a long
word is split by bisection on its width (not one measure per character), and the font-shrink
search counts lines with plain greedy wrapping, balancing only the size it settles on.
"""
from __future__ import annotations

import math
import os
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

from PIL import ImageColor, ImageFont

FONTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "assets", "fonts")
FONT_FILE = os.path.join(FONTS_DIR, "DejaVuSans-Bold.ttf")
FONT_FAMILY = "DejaVu Sans"        # bold face selected by the style's Bold flag
REFERENCE_WIDTH = 1080             # caption_style sizes are given for a 1080-wide frame
WRAP_SLACK = 0.94                  # our measure is unshaped: leave room for shaping differences
MIN_FONT_PX = 8
WORD_JOINER = "\u2060"             # zero-width; splits "\" from the next char so libass can't
                                   # read "\N", "\h", "\n" in user text as its own escapes


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def safe_area(width: int, height: int) -> Box:
    """Where captions may go. Vertical (9:16-like) frames lose their edges to the platforms'
    buttons and text (right rail, bottom description), landscape ones use title-safe 5%."""
    if height > 1.2 * width:
        mx, top, bottom = 0.10, 0.10, 0.15
    else:
        mx, top, bottom = 0.05, 0.05, 0.05
    return Box(round(width * mx), round(height * top), round(width * (1 - mx)),
               round(height * (1 - bottom)))


def ass_colour(colour: str) -> str:
    """CSS name, #RGB, #RRGGBB or #RRGGBBAA -> ASS &HAABBGGRR (ASS alpha: 00 = opaque)."""
    try:
        rgba = ImageColor.getrgb(colour.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"unknown colour {colour!r}: use a CSS name or #RRGGBB") from None
    r, g, b = rgba[:3]
    a = rgba[3] if len(rgba) == 4 else 255
    return f"&H{255 - a:02X}{b:02X}{g:02X}{r:02X}"


def escape_ass(line: str) -> str:
    """One line of caption text as literal ASS event text (no override tags, no escapes)."""
    line = "".join(" " if unicodedata.category(c) == "Cc" else c for c in line)
    return (line.replace("\\", "\\" + WORD_JOINER)
                .replace("{", "\\{").replace("}", "\\}"))


@lru_cache(maxsize=16)
def _font(em_px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONT_FILE, em_px, layout_engine=ImageFont.Layout.BASIC)


def _em_per_ass_size() -> float:
    # libass sizes a font by its real height (ascender + descender), Pillow by its em.
    ascent, descent = _font(1000).getmetrics()
    return 1000.0 / (ascent + descent)


Check = Callable[[], None]


def _no_check() -> None:
    return None


def _split_long_word(word: str, measure, max_w: float, check: Check = _no_check) -> list[str]:
    """Pieces of a word too wide for a line: each the longest prefix of the rest that fits
    (at least one character; never cut before a combining mark). Found by galloping then
    bisection, so a piece of L characters costs O(L log L) measured characters, not O(L^2)
    (one measure per character) nor O(n log n) (bisecting the whole rest of the word)."""
    pieces, start, n = [], 0, len(word)
    while start < n:
        check()
        lo, step = start + 1, 1        # word[start:lo] is taken whatever its width
        hi = None                      # first end known not to fit
        while hi is None:
            end = min(n, lo + step)
            if measure(word[start:end]) <= max_w:
                if end == n:
                    break
                lo, step = end, step * 2
            else:
                hi = end
        if hi is None:
            pieces.append(word[start:])
            break
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if measure(word[start:mid]) <= max_w:
                lo = mid
            else:
                hi = mid
        while lo < n and unicodedata.combining(word[lo]):
            lo += 1
        pieces.append(word[start:lo])
        start = lo
    return pieces


def _greedy(words: list[str], measure, max_w: float, check: Check = _no_check) -> list[str]:
    lines, cur = [], ""
    for word in words:
        check()
        for piece in (_split_long_word(word, measure, max_w, check) if measure(word) > max_w
                      else [word]):
            trial = f"{cur} {piece}" if cur else piece
            if cur and measure(trial) > max_w:
                lines.append(cur)
                cur = piece
            else:
                cur = trial
    return lines + ([cur] if cur else [])


def _paragraphs(text: str) -> list[list[str]]:
    paras = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [words for words in (p.split() for p in paras) if words]


def _measure(font_px: float):
    return _font(max(1, round(font_px * _em_per_ass_size()))).getlength


def _line_count(text: str, font_px: float, max_width_px: float, check: Check) -> int:
    """How many lines wrap_text gives (balancing keeps the greedy count), without balancing."""
    measure = _measure(font_px)
    return sum(len(_greedy(words, measure, max_width_px, check)) for words in _paragraphs(text))


def wrap_text(text: str, font_px: float, max_width_px: float,
              check: Check = _no_check) -> list[str]:
    """Lines of `text` no wider than max_width_px at font_px (ASS size), balanced: the same
    number of lines as greedy wrapping, but as even as possible. User newlines are kept.
    `check` is called throughout (a cancel check may raise from it)."""
    measure = _measure(font_px)
    out: list[str] = []
    for words in _paragraphs(text):
        lines = _greedy(words, measure, max_width_px, check)
        # Shrink the width while the line count holds: evens out a long first / short last line.
        lo, hi = max_width_px * 0.5, max_width_px
        for _ in range(12):
            mid = (lo + hi) / 2
            if len(_greedy(words, measure, mid, check)) == len(lines):
                hi = mid
            else:
                lo = mid
        out.extend(_greedy(words, measure, hi, check))
    return out


@dataclass(frozen=True)
class CaptionLayout:
    lines: tuple[str, ...]
    font_px: float
    outline_px: float
    x: float            # centre of the block
    y_bottom: float     # bottom of the block (ASS \an2 anchor)


def layout_caption(text: str, style, width: int, height: int,
                   check: Check = _no_check) -> CaptionLayout:
    """Wrap and place one caption inside the safe area, shrinking the font if it cannot fit.
    `check` is called throughout (a cancel check may raise from it)."""
    area = safe_area(width, height)
    scale = width / REFERENCE_WIDTH
    font_px = max(MIN_FONT_PX, style.font_size * scale)
    outline = max(0.0, style.stroke_width * scale)
    max_w = (area.width - 2 * outline) * WRAP_SLACK
    # The sizes tried: the style's, then 10% smaller each step, down to MIN_FONT_PX. The block
    # shrinks with the size, so the largest size that fits is found by bisection over the steps
    # (a handful of wraps instead of one per step).
    sizes = [font_px]
    while sizes[-1] > MIN_FONT_PX:
        sizes.append(max(MIN_FONT_PX, sizes[-1] * 0.9))

    def fits(i: int) -> bool:
        block = _line_count(text, sizes[i], max_w, check) * sizes[i] + 2 * outline
        return block <= area.height

    if fits(0):
        font_px = sizes[0]
    else:
        lo, hi = 0, len(sizes) - 1        # sizes[lo] does not fit; sizes[hi] is the last resort
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid
        font_px = sizes[hi]
    lines = wrap_text(text, font_px, max_w, check)
    block_h = len(lines) * font_px + 2 * outline
    y = min(style.position_y * height, area.bottom - outline)
    y = max(y, area.top + block_h - outline)
    return CaptionLayout(tuple(lines), font_px, outline, (area.left + area.right) / 2, y)


def frame_span(start: float, end: float, fps: float) -> tuple[int, int]:
    """First and one-past-last output frame whose time t satisfies start <= t < end."""
    eps = 1e-6
    return max(0, math.ceil(start * fps - eps)), max(0, math.ceil(end * fps - eps))


def _ass_time(seconds: float) -> str:
    cs = max(0, int(round(seconds * 100)))
    return f"{cs // 360000}:{cs // 6000 % 60:02d}:{cs // 100 % 60:02d}.{cs % 100:02d}"


def write_ass(path: str, captions: Sequence, style, width: int, height: int,
              fps: float, progress: Callable[[float], None] | None = None) -> None:
    """Write the ASS file for `captions` (objects with text/start/end) on a width x height frame.

    Event times sit half a frame before the first and after the last frame to show, so
    centisecond rounding (ASS's resolution) can never move a caption by a frame (fps <= 100).
    `progress(fraction of the captions laid out)` is called throughout the layout, often: it
    must be cheap (a StageProgress writes at most once a second) and may raise to stop it.
    """
    primary, outline_c = ass_colour(style.color), ass_colour(style.stroke_color)
    base = max(MIN_FONT_PX, style.font_size * width / REFERENCE_WIDTH)
    head = [
        "[Script Info]", "ScriptType: v4.00+", f"PlayResX: {width}", f"PlayResY: {height}",
        "WrapStyle: 2", "ScaledBorderAndShadow: yes", "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
        "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
        "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding",
        # Encoding -1: libass picks each line's base direction from its text (RTL lines read
        # right to left; plain 1 would force a left-to-right paragraph).
        f"Style: Caption,{FONT_FAMILY},{base:.2f},{primary},{primary},{outline_c},&H80000000,"
        f"-1,0,0,0,100,100,0,0,1,{style.stroke_width * width / REFERENCE_WIDTH:.2f},0,2,0,0,0,-1",
        "", "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    events = []
    n = max(1, len(captions))
    for i, cap in enumerate(captions):
        check = _no_check if progress is None else (lambda f=i / n: progress(f))
        check()
        first, stop = frame_span(cap.start, cap.end, fps)
        if stop <= first:
            continue          # shorter than a frame and between two: nothing to show
        lay = layout_caption(cap.text, style, width, height, check)
        if not lay.lines:
            continue
        text = "\\N".join(escape_ass(line) for line in lay.lines)
        tags = (f"{{\\an2\\q2\\pos({lay.x:.1f},{lay.y_bottom:.1f})\\fs{lay.font_px:.2f}"
                f"\\bord{lay.outline_px:.2f}}}")
        t0, t1 = max(0.0, (first - 0.5) / fps), (stop - 0.5) / fps
        events.append(f"Dialogue: 0,{_ass_time(t0)},{_ass_time(t1)},Caption,,0,0,0,,{tags}{text}")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(head + events) + "\n")


def _srt_time(seconds: float) -> str:
    ms = max(0, int(round(seconds * 1000)))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_srt(path: str, captions: Sequence) -> None:
    """The SRT sidecar: the captions' own times and text (blank lines would end a cue early)."""
    blocks = []
    for i, cap in enumerate(sorted(captions, key=lambda c: c.start), start=1):
        lines = [ln for ln in cap.text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
                 if ln.strip()]
        blocks.append(f"{i}\n{_srt_time(cap.start)} --> {_srt_time(cap.end)}\n"
                      + "\n".join(lines or [" "]) + "\n")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(blocks))
