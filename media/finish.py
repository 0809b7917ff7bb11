"""The finisher: lip-synced frames + voice -> final.mp4 (mix, captions, encode) + thumbnail.

Ray-free: the `Finisher` deployment calls `finish_video` and uploads what it wrote. Steps:
  1. mix the audio in numpy (voice, music/ambience beds with ducking, SFX) and loudness-normalise
     it (two-pass: measure, then gain + true-peak limit) -> one 48 kHz WAV;
  2. write the captions as an ASS file (our escaping; libass renders RTL and emoji) + SRT;
  3. ONE ffmpeg pass: fit the picture, output fps, hold the last frame to the voice's length,
     burn the captions, convert to BT.709 4:2:0, encode x264 with the quality preset + AAC, and
     hand back a few candidate frames (as published, before encoding) on stdout;
  4. thumbnail.jpg from the best candidate; the output's loudness measured from the file itself.
"""
from __future__ import annotations

import dataclasses

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import ffmpeg
import numpy as np

from media import captions as captions_mod
from media import loudness, mix, picture, thumbnail
from media.ffmpeg import MediaError, StreamInfo, probe, run
from media.frames import save_image
from media.options import FinishOptions
from media.presets import EncodePreset, encode_preset

AUDIO_BITRATE = "192k"
THUMBNAIL_JPEG_QUALITY = 90


@dataclass(frozen=True)
class FinishedVideo:
    """What finish_video wrote (local files) and measured."""
    video_path: str
    thumbnail_path: str
    srt_path: str | None
    audio_path: str | None          # final.m4a: the video's own AAC track, when asked for
    duration_s: float
    width: int
    height: int
    fps: float
    quality: str
    crf: int
    x264_preset: str
    loudness_lufs: float | None     # measured on final.mp4's decoded audio
    true_peak_dbtp: float | None
    seconds: dict[str, float] = field(default_factory=dict)   # time per step


def _validate(opts: FinishOptions) -> None:
    """What the option types cannot check on their own (captions, style, ducking and SFX
    placements validate themselves when they are built)."""
    picture.fps_fraction(opts.fps)
    encode_preset(opts.quality)
    for name in ("music_volume", "ambience_volume"):
        if getattr(opts, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(opts, name)}")


def finish_video(frames_path: str, voice_path: str, out_dir: str, opts: FinishOptions, *,
                 progress: Callable[[float], None] | None = None,
                 background: tuple[str, int, int] | None = None) -> FinishedVideo:
    """Mix, caption and encode `frames_path` (silent video) with `voice_path` into `out_dir`.

    `background` (image path, x, y): `frames_path` holds only a region of each frame, to be
    laid over the still image at (x, y); the picture is the still's size.

    Writes out_dir/final.mp4 (H.264 yuv420p BT.709, AAC, +faststart), out_dir/thumbnail.jpg at
    the output size and out_dir/final.srt when there are captions. The video lasts as long as
    the voice (+- one frame): the last frame is held, or the frames are cut.
    `progress(fraction)` is called between steps and all through the caption layout; it may
    raise (a cancel) to stop the finish, which then leaves nothing behind in its work folder.
    """
    report = progress or (lambda _: None)
    seconds: dict[str, float] = {}
    # 1. Check inputs before spending any time.
    _validate(opts)
    preset = encode_preset(opts.quality)
    src_info = probe(frames_path)
    src = src_info.video
    if src is None or not src.width:
        raise MediaError(f"no video stream in {os.path.basename(frames_path)}")
    raw_video = next(s for s in src_info.raw["streams"] if s.get("codec_type") == "video")
    src_bt709 = picture.is_bt709(raw_video.get("color_space"))
    if background is not None:  # the picture is the still's size; the region's timing
        still = probe(background[0]).video
        if still is None or not still.width:
            raise MediaError(f"no picture in {os.path.basename(background[0])}")
        src = dataclasses.replace(src, width=still.width, height=still.height)
    out_w, out_h = picture.output_size(src.width, src.height, opts.width, opts.height)
    fps = picture.fps_fraction(opts.fps)
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="finish_")
    try:
        # 2. Audio: mix + ducking + loudness, in numpy; the voice sets the duration.
        t0 = time.perf_counter()
        mixed = mix.build_mix(voice_path, mix.MixSpec.from_options(opts))
        if opts.normalize_loudness:
            mixed = loudness.normalize(mixed, mix.MIX_SAMPLE_RATE).samples
        else:   # level untouched, but never clipped
            mixed = loudness.peak_limit(mixed, mix.MIX_SAMPLE_RATE, true_peak_dbtp_max=0.0)
        mix_path = os.path.join(work, "mix.wav")
        mix.write_mix(mix_path, mixed)
        duration_s = len(mixed) / mix.MIX_SAMPLE_RATE
        seconds["mix"] = time.perf_counter() - t0
        report(0.25)

        # 3. Captions file (+ SRT sidecar next to the video).
        t0 = time.perf_counter()
        ass_path = srt_path = None
        if opts.captions:
            ass_path = os.path.join(work, "captions.ass")
            # the layout reports (and so checks for a cancel) all along: it is CPU work that
            # grows with the captions' text
            captions_mod.write_ass(ass_path, opts.captions, opts.caption_style, out_w, out_h,
                                   float(fps), progress=lambda f: report(0.25 + 0.05 * f))
            if opts.write_srt:
                srt_path = os.path.join(out_dir, "final.srt")
                captions_mod.write_srt(srt_path, opts.captions)
        seconds["captions"] = time.perf_counter() - t0
        report(0.3)

        # 4. One ffmpeg pass: picture + captions + encode + thumbnail candidates.
        t0 = time.perf_counter()
        video_path = os.path.join(out_dir, "final.mp4")
        n_frames = max(1, int(np.ceil(duration_s * float(fps) - 1e-6)))
        picks = thumbnail.candidate_frames(n_frames)
        raw = run(_encode_args(frames_path, mix_path, video_path, ass_path, src, src_bt709,
                               out_w, out_h, fps, duration_s, preset, opts.threads, picks,
                               background),
                  what="finishing video")
        seconds["encode"] = time.perf_counter() - t0
        report(0.9)

        # 5. Thumbnail from the best candidate frame.
        t0 = time.perf_counter()
        frame_bytes = out_w * out_h * 3
        cands = [np.frombuffer(raw[i:i + frame_bytes], np.uint8).reshape(out_h, out_w, 3)
                 for i in range(0, len(raw) - frame_bytes + 1, frame_bytes)]
        if not cands:
            raise MediaError("finishing video: ffmpeg returned no thumbnail candidates")
        thumb_path = os.path.join(out_dir, "thumbnail.jpg")
        save_image(thumb_path, cands[thumbnail.pick_thumbnail(cands)],
                   quality=THUMBNAIL_JPEG_QUALITY)
        seconds["thumbnail"] = time.perf_counter() - t0

        # 6. The audio export: the video's AAC track itself, copied out (no second encode, so
        #    it is the same sound at the same loudness, sample for sample).
        audio_path = None
        if opts.write_audio:
            audio_path = os.path.join(out_dir, "final.m4a")
            run(["-i", video_path, "-map", "0:a:0", "-c:a", "copy", "-movflags", "+faststart",
                 audio_path], what="exporting the final mix")

        # 7. Measure what we shipped, from the file itself.
        lufs = peak = None
        if opts.normalize_loudness:
            t0 = time.perf_counter()
            measured = loudness.measure_file(video_path)
            lufs, peak = measured.integrated_lufs, measured.true_peak_dbtp
            seconds["measure"] = time.perf_counter() - t0
        report(1.0)
        return FinishedVideo(
            video_path=video_path, thumbnail_path=thumb_path, srt_path=srt_path,
            audio_path=audio_path, duration_s=probe(video_path).duration_s, width=out_w, height=out_h,
            fps=float(fps), quality=preset.name, crf=preset.crf, x264_preset=preset.x264_preset,
            loudness_lufs=None if lufs is None else float(lufs),
            true_peak_dbtp=None if peak is None else float(peak), seconds=seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _encode_args(frames_path: str, mix_path: str, video_path: str, ass_path: str | None,
                 src: StreamInfo, src_bt709: bool, out_w: int, out_h: int, fps: Fraction,
                 duration_s: float, preset: EncodePreset, threads: int,
                 picks: list[int], background: tuple[str, int, int] | None = None) -> list[str]:
    """The ffmpeg argv (without the binary) of the single finish pass."""
    video = ffmpeg.input(frames_path).video
    if background is not None:
        # The region over the still, in the intermediate's own format (yuv444p, the same
        # matrix the intermediate was written with): the frames the stage would have sent.
        # The still is decoded and converted once and repeated by the loop filter (an image
        # input looped by the demuxer is decoded again for every frame).
        path, x, y = background
        # (at the intermediate's exact rate: a rounded one would drop or add frames)
        still = ffmpeg.input(path, framerate=src.rate or f"{src.fps or 25:g}").video
        still = still.filter("format", "yuv444p").filter("loop", loop=-1, size=1, start=0)
        video = ffmpeg.filter([still, video.filter("format", "yuv444p")],
                              "overlay", x=x, y=y, shortest=1, format="yuv444")
    audio = ffmpeg.input(mix_path).audio
    fitted = picture.fit_picture(video, src.width, src.height, out_w, out_h)
    # Hold the last frame long enough to cover the voice (plus slack for rounding); -t cuts.
    hold_s = max(0.0, duration_s - src.duration_s) + 2.0 / float(fps)
    timed = picture.timed_picture(fitted, fps, hold_s)
    if ass_path is not None:
        # Keyword options only: ffmpeg-python escapes positional filter arguments twice, which
        # breaks paths holding ' or : (keyword values are escaped once per level, correctly).
        timed = timed.filter("subtitles", filename=ass_path, fontsdir=captions_mod.FONTS_DIR)
    # Split only after the last filter that writes into frames: a split earlier would make the
    # caption burn-in copy every frame (shared buffers are not writable).
    split = picture.to_delivery(timed, src_bt709).filter_multi_output("split", 2)
    final = ffmpeg.output(
        split[0], audio, video_path,
        t=f"{duration_s:.6f}",
        vcodec="libx264", crf=preset.crf, preset=preset.x264_preset, pix_fmt="yuv420p",
        color_primaries="bt709", color_trc="bt709", colorspace="bt709", color_range="tv",
        acodec="aac", audio_bitrate=AUDIO_BITRATE, ar=mix.MIX_SAMPLE_RATE,
        movflags="+faststart", threads=threads)
    # Thumbnail candidates (frames as published, pre-encode) ride along on stdout: no decode.
    select = "+".join(f"eq(n,{n})" for n in picks)
    thumbs = ffmpeg.output(
        picture.rgb_for_stills(split[1].filter("select", select)), "pipe:",
        format="rawvideo", fps_mode="passthrough", frames=len(picks))
    return ffmpeg.merge_outputs(final, thumbs).compile(cmd="ffmpeg")[1:]
