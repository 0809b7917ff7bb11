"""Bench: our finisher against one hand-written plain ffmpeg command doing the same job.

Generates its own inputs (a 10 s 1080x1920 lossless frames clip, a speech-like voice, a music
loop, a click SFX, captions), then runs, side by side in one process:
  ours  - media.finish.finish_video (numpy mix + ducking + two-pass loudness, ASS captions,
          one ffmpeg pass, thumbnail, loudness measured on the output);
  plain - one ffmpeg command: sidechaincompress ducking, adelay SFX, amix, one-pass loudnorm,
          subtitles, BT.709 conversion, the same x264 settings.
Prints wall and CPU time per run, the ratios ours/plain (min over the alternating repeats;
target <= 1.15) and both outputs' loudness.

    .venv/bin/python bench/finish.py [--seconds 10] [--quality standard] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from media import captions as captions_mod  # noqa: E402
from media.ffmpeg import run  # noqa: E402
from media.finish import finish_video  # noqa: E402
from media.options import Caption, FinishOptions, SfxTrack  # noqa: E402
from media.frames import write_wav  # noqa: E402
from media.loudness import measure_file  # noqa: E402
from media.presets import encode_preset  # noqa: E402

W, H, SRC_FPS, OUT_FPS, SR = 1080, 1920, 25, 30, 48000


def make_inputs(d: str, seconds: float) -> dict[str, str]:
    rng = np.random.default_rng(0)
    frames = os.path.join(d, "frames.mp4")
    # The lip-sync stage's intermediate format: x264 qp 0, yuv444p, 25 fps.
    run(["-f", "lavfi", "-i", f"testsrc2=s={W}x{H}:r={SRC_FPS}:d={seconds}",
         "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-pix_fmt", "yuv444p", frames])
    n = int(seconds * SR)
    t = np.arange(n) / SR
    # Voice: band-limited noise in syllable-like bursts (speech's level and rhythm, not words).
    freqs = np.fft.rfftfreq(n, 1 / SR)
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * ((freqs > 200) & (freqs < 4000)), n)
    syllables = (np.sin(2 * np.pi * 4 * t) > -0.2) & (np.sin(2 * np.pi * 0.3 * t) > -0.6)
    voice = (noise / noise.std() * 0.08 * syllables).astype(np.float32)
    m = int(4.0 * SR)                          # a 4 s music loop (shorter than the voice)
    tm = np.arange(m) / SR
    music = 0.2 * (np.sin(2 * np.pi * 220 * tm) + 0.5 * np.sin(2 * np.pi * 330 * tm))
    click = np.zeros(SR // 10)
    click[:48] = 0.8
    paths = {"frames": frames}
    for name, x in (("voice", voice), ("music", music), ("click", click)):
        paths[name] = os.path.join(d, f"{name}.wav")
        write_wav(paths[name], np.asarray(x, np.float32), SR)
    return paths


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg): on a shared box this is
    the steadier measure of work done, where wall time also counts other people's load."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[float, float, dict]:
    w0, c0 = time.perf_counter(), cpu_seconds()
    info = fn(*args)
    return time.perf_counter() - w0, cpu_seconds() - c0, info


def run_ours(paths, out_dir, captions, quality) -> dict:
    opts = FinishOptions(width=W, height=H, fps=OUT_FPS, quality=quality,
                         music=paths["music"], music_volume=0.5,
                         sfx=(SfxTrack(paths["click"], 1.234, 1.0),), captions=captions)
    res = finish_video(paths["frames"], paths["voice"], out_dir, opts)
    return {"steps": {k: round(v, 2) for k, v in res.seconds.items()}, "video": res.video_path}


def run_plain(paths, out_dir, captions, quality, seconds) -> dict:
    """What a careful person writes by hand: one command, ffmpeg's own filters throughout."""
    os.makedirs(out_dir, exist_ok=True)
    srt = os.path.join(out_dir, "captions.srt")
    captions_mod.write_srt(srt, captions)
    preset = encode_preset(quality)
    fs = 48 * W / 1080
    audio = (
        "[1:a]aresample=48000,aformat=channel_layouts=stereo,asplit=2[voice][key];"
        "[2:a]aresample=48000,aformat=channel_layouts=stereo,volume=0.5[music];"
        "[music][key]sidechaincompress=threshold=0.02:ratio=20:attack=50:release=300[ducked];"
        "[3:a]aresample=48000,aformat=channel_layouts=stereo,adelay=1234:all=1[sfx];"
        "[voice][ducked][sfx]amix=inputs=3:duration=first:normalize=0,"
        "loudnorm=I=-14:TP=-1:LRA=11,aresample=48000,aformat=channel_layouts=stereo[a]")
    video = (
        f"[0:v]fps={OUT_FPS},tpad=stop_mode=clone:stop_duration=1,"
        f"subtitles={srt}:force_style='Fontname=DejaVu Sans,Bold=1,Fontsize={fs:.0f},"
        f"Outline=2,Alignment=2,MarginV={int(H * 0.25)}':original_size={W}x{H}"
        f":fontsdir={captions_mod.FONTS_DIR},"
        "colorspace=all=bt709:iall=bt601-6-625:fast=1:format=yuv420p[v]")
    args = ["-i", paths["frames"], "-i", paths["voice"], "-stream_loop", "-1", "-i", paths["music"],
            "-i", paths["click"], "-filter_complex", audio + ";" + video,
            "-map", "[v]", "-map", "[a]", "-t", f"{seconds}",
            "-c:v", "libx264", "-crf", str(preset.crf), "-preset", preset.x264_preset,
            "-pix_fmt", "yuv420p", "-color_primaries", "bt709", "-color_trc", "bt709",
            "-colorspace", "bt709", "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart",
            os.path.join(out_dir, "plain.mp4")]
    run(args, what="plain ffmpeg")
    return {"video": os.path.join(out_dir, "plain.mp4")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--quality", default="standard")
    ap.add_argument("--repeats", type=int, default=1, help="alternate runs; the min counts")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_finish_") as d:
        paths = make_inputs(d, args.seconds)
        captions = tuple(Caption(f"Caption number {i + 1}: \"quoted\", 100% {{kept}}",
                                 i * 2.5, i * 2.5 + 2.0) for i in range(int(args.seconds // 2.5)))
        ours, plain = [], []           # (wall s, cpu s) per run, alternating
        for r in range(args.repeats):
            *t, info_o = timed(run_ours, paths, os.path.join(d, f"ours{r}"), captions,
                               args.quality)
            ours.append(t)
            *t, info_p = timed(run_plain, paths, os.path.join(d, f"plain{r}"), captions,
                               args.quality, args.seconds)
            plain.append(t)
        lo, lp = measure_file(info_o["video"]), measure_file(info_p["video"])
        report = {
            "clip": f"{args.seconds:g}s {W}x{H} {SRC_FPS}->{OUT_FPS} fps, {args.quality}",
            "ours_wall_s": [round(w, 2) for w, _ in ours],
            "plain_wall_s": [round(w, 2) for w, _ in plain],
            "ours_cpu_s": [round(c, 2) for _, c in ours],
            "plain_cpu_s": [round(c, 2) for _, c in plain],
            "ratio_wall": round(min(w for w, _ in ours) / min(w for w, _ in plain), 3),
            "ratio_cpu": round(min(c for _, c in ours) / min(c for _, c in plain), 3),
            "target": 1.15,
            "ours_steps_s": info_o["steps"],
            "ours_loudness": {"lufs": round(lo.integrated_lufs, 2),
                              "true_peak_dbtp": round(lo.true_peak_dbtp, 2)},
            "plain_loudness": {"lufs": round(lp.integrated_lufs, 2),
                               "true_peak_dbtp": round(lp.true_peak_dbtp, 2)},
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
