"""The picture half of the finish graph: fit the lip-synced frames to the output format.

Built with ffmpeg-python (it escapes option values for the filter graph); the caller adds the
captions and the outputs. The chain: fit (blurred fill when the aspect differs) in full-chroma
YUV of the source's matrix -> output fps -> last frame held -> [captions] -> BT.709 4:2:0.

Why the matrix change comes last: ffmpeg 5.1's subtitles filter blends with BT.601 coefficients
on YUV frames, so burning captions into BT.709 frames would shift their colours (pure green
comes out at G=215). Burning them into the BT.601 intermediate and converting everything once
with the `colorspace` filter keeps them exact, and that filter is several times cheaper than
swscale's YUV->YUV matrix change (which goes through RGB).
"""
from __future__ import annotations

from fractions import Fraction

import ffmpeg

# How much the blurred fill is shrunk before blurring: blur cost falls with the square of it,
# and a blurred background has no detail left to lose.
FILL_SHRINK = 8
FILL_BLUR_RADIUS = 6          # boxblur radius at the shrunk size (x8 = ~48 px at full size)
ASPECT_TOLERANCE = 0.01       # closer than this counts as the same aspect: plain scale, no fill
SCALE_FLAGS = "lanczos"
WORK_PIX_FMT = "yuv444p"      # full chroma until the end: crisp coloured caption edges
# ffprobe color_space values that already are BT.709; anything else (untagged included) is
# treated as BT.601, which is what swscale writes for our untagged intermediates.
BT709_NAMES = {"bt709"}


def even(n: float) -> int:
    """Round to the nearest even integer >= 2 (yuv420p needs even sizes)."""
    return max(2, int(round(n / 2.0)) * 2)


def output_size(src_w: int, src_h: int, width: int | None, height: int | None) -> tuple[int, int]:
    """The output frame size: both given -> as asked; one given -> the other keeps the aspect."""
    if width is None and height is None:
        return even(src_w), even(src_h)
    if width is None:
        return even(height * src_w / src_h), even(height)
    if height is None:
        return even(width), even(width * src_h / src_w)
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"output width and height must be positive and even, got {width}x{height}")
    return width, height


# 29.97 etc. mean the NTSC rates, not 2997/100.
NTSC_RATES = (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001))


def fps_fraction(fps: float) -> Fraction:
    """30 -> 30/1, 29.97 -> 30000/1001: ffmpeg wants exact rationals, not floats."""
    if not 0 < fps <= 240:
        raise ValueError(f"fps must be in (0, 240], got {fps}")
    for ntsc in NTSC_RATES:
        if abs(fps - float(ntsc)) < 0.005:
            return ntsc
    return Fraction(fps).limit_denominator(1001)


def is_bt709(color_space: str | None) -> bool:
    return (color_space or "").lower() in BT709_NAMES


def fit_picture(video, src_w: int, src_h: int, out_w: int, out_h: int):
    """Scale `video` to out_w x out_h without distortion; blurred fill where the aspect differs.
    Stays in the source's YUV matrix (no colour conversion here)."""
    if abs((src_w / src_h) / (out_w / out_h) - 1.0) <= ASPECT_TOLERANCE:
        if (src_w, src_h) != (out_w, out_h):
            video = video.filter("scale", out_w, out_h, flags=SCALE_FLAGS)
        return video.filter("format", WORK_PIX_FMT).filter("setsar", 1)
    split = video.filter_multi_output("split", 2)
    fg_src, bg_src = split[0], split[1]
    small_w, small_h = even(out_w / FILL_SHRINK), even(out_h / FILL_SHRINK)
    background = (bg_src
                  .filter("scale", small_w, small_h, force_original_aspect_ratio="increase")
                  .filter("crop", small_w, small_h)
                  .filter("format", WORK_PIX_FMT)
                  .filter("boxblur", luma_radius=f"min({FILL_BLUR_RADIUS},min(w,h)/2)",
                          luma_power=2)
                  .filter("scale", out_w, out_h, flags="bilinear")
                  .filter("setsar", 1))
    # Fit inside the frame; force_divisible_by keeps the picture even-sized and centred.
    fg = (fg_src
          .filter("scale", out_w, out_h, flags=SCALE_FLAGS, force_original_aspect_ratio="decrease",
                  force_divisible_by=2)
          .filter("format", WORK_PIX_FMT)
          .filter("setsar", 1))
    return ffmpeg.overlay(background, fg, x="(W-w)/2", y="(H-h)/2", format="yuv444",
                          eof_action="endall").filter("setsar", 1)


def timed_picture(video, fps: Fraction, hold_s: float):
    """Zero-based timestamps, output fps, then the last frame held for `hold_s` more seconds.

    The encoder's -t cuts the held tail at the voice's end, so the picture always covers the
    voice whether the frames ran short or long.
    """
    out = video.filter("setpts", "PTS-STARTPTS").filter("fps", fps=str(fps))
    if hold_s > 0:
        out = out.filter("tpad", stop_mode="clone", stop_duration=f"{hold_s:.3f}")
    return out


def to_delivery(video, source_is_bt709: bool):
    """-> limited-range BT.709 yuv420p, the format the encoder tags the stream with."""
    if source_is_bt709:
        return video.filter("format", "yuv420p")
    # fast=1: matrix only (BT.601 and BT.709 content share the sRGB-like transfer we care for).
    return video.filter("colorspace", all="bt709", iall="bt601-6-625", irange="tv", range="tv",
                        fast=1, format="yuv420p")


def rgb_for_stills(video):
    """Delivery frames (BT.709 limited range) -> rgb24 (thumbnail candidates)."""
    return video.filter("scale", in_color_matrix="bt709", in_range="tv").filter("format", "rgb24")
