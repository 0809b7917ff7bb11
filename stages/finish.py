"""Finisher stage (CPU): one ffmpeg pass to fit, mix, caption and encode (media/finish.py),
then upload the video, thumbnail and caption sidecar. Persona takes are encoded and also kept
on the personas volume."""
from __future__ import annotations

import time
from pathlib import Path

from media.ffmpeg import probe, run as ffmpeg
from media.finish import (Caption, CaptionStyle, Ducking, FinishOptions, SfxTrack, finish_video)
from serve_app.jobs import JobStore
from serve_app.settings import Settings
from serve_app.storage import Storage
from stages.contracts import FinishRequest, FinishResult
from stages.personas import copy_to_volume
from stages.progress import StageProgress
from stages.workspace import scratch

ENGINE = "ffmpeg (libx264, aac)"
TAKE_CRF = 12  # takes are re-read by every render on them: keep them visually lossless


class FinishStage:
    def __init__(self, settings: Settings, storage: Storage):
        self.settings = settings
        self.storage = storage  # links it returns come from here: open it signed (api.py)
        self.store = JobStore(self.storage)

    def describe(self) -> dict:
        return {"engine": ENGINE}

    def run(self, req: FinishRequest) -> FinishResult:
        t0 = time.monotonic()
        progress = StageProgress(self.store, req.job_id, "finisher")
        with scratch(self.settings, req.job_id, "finish") as tmp:
            frames = self.storage.get_file(req.frames.key, tmp)
            if req.kind == "take":
                return self._take(req, frames, tmp, t0)
            voice = self.storage.get_file(req.voice_key, tmp)
            opts = self._options(req, tmp)
            res = finish_video(str(frames), str(voice), str(tmp / "out"), opts, progress=progress)
            progress(1.0, force=True)
            self.storage.put_file(req.video_key, res.video_path)
            thumb_key = req.thumbnail_key
            if thumb_key:
                self.storage.put_file(thumb_key, res.thumbnail_path)
            srt_url = None
            if res.srt_path:
                srt_key = str(Path(req.video_key).with_suffix(".srt"))
                self.storage.put_file(srt_key, res.srt_path)
                srt_url = self.storage.url(srt_key)
            details = {"engine": ENGINE, "crf": res.crf, "x264_preset": res.x264_preset,
                       "loudness_lufs": res.loudness_lufs, "true_peak_dbtp": res.true_peak_dbtp,
                       "seconds": res.seconds}
            return FinishResult(
                video_key=req.video_key, video_url=self.storage.url(req.video_key),
                thumbnail_key=thumb_key, thumbnail_url=self.storage.url(thumb_key) if thumb_key else None,
                srt_url=srt_url, duration_s=res.duration_s, width=res.width, height=res.height,
                fps=res.fps, details=details, seconds=round(time.monotonic() - t0, 3))

    def _options(self, req: FinishRequest, tmp: Path) -> FinishOptions:
        o = dict(req.options)
        keys = req.media_keys
        path = lambda k: str(self.storage.get_file(keys[k], tmp)) if k in keys else None  # noqa: E731
        sfx = tuple(SfxTrack(path=path(f"sfx_{i}"), start_time=s["start_time"],
                             volume=s.get("volume", 1.0))
                    for i, s in enumerate(o.pop("sfx", [])) if f"sfx_{i}" in keys)
        captions = tuple(Caption(text=c["text"], start=c["start"], end=c["end"])
                         for c in o.pop("captions", []))
        style = CaptionStyle(**o.pop("caption_style", {}) or {})
        ducking = Ducking(**o.pop("ducking", {}) or {})
        return FinishOptions(music_path=path("music"), ambience_path=path("ambience"), sfx=sfx,
                             captions=captions, caption_style=style, ducking=ducking, **o)

    def _take(self, req: FinishRequest, frames: Path, tmp: Path, t0: float) -> FinishResult:
        out = tmp / Path(req.video_key).name
        # fmt: off
        ffmpeg([
            "-i", str(frames),
            "-c:v", "libx264", "-crf", str(TAKE_CRF), "-preset", "medium",
            "-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_primaries", "bt709",
            "-color_trc", "bt709", "-movflags", "+faststart", "-an",
            str(out),
        ], what="encoding persona take")
        # fmt: on
        self.storage.put_file(req.video_key, out)
        persona_id = req.video_key.split("/")[1]
        copy_to_volume(self.settings.personas_dir, persona_id, out, out.name)
        info = probe(out)
        v = info.video
        return FinishResult(video_key=req.video_key, video_url=self.storage.url(req.video_key),
                            duration_s=info.duration_s, width=v.width, height=v.height, fps=v.fps,
                            details={"engine": ENGINE, "crf": TAKE_CRF},
                            seconds=round(time.monotonic() - t0, 3))
