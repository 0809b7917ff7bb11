"""Finisher stage (CPU): one ffmpeg pass to fit, mix, caption and encode (media/finish.py),
then upload the video, thumbnail and caption sidecar. Persona takes are encoded and also kept
on the personas volume."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from core import keys
from core.jobs import JobStore
from core.settings import Settings
from core.storage import Storage
from media.ffmpeg import MediaError, ffmpeg_bin, ffprobe_bin, probe
from media.ffmpeg import run as ffmpeg
from media.finish import finish_video
from personas.manifest import copy_to_volume
from stages.contracts import FinishRequest, FinishResult
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
        try:
            self.check_health()
        except MediaError as e:
            return {"engine": ENGINE, "ready": False, "reason": f"Finisher: {e}"}
        return {"engine": ENGINE, "ready": True, "reason": None}

    def check_health(self) -> None:
        """ffmpeg and ffprobe are where the finisher looks for them (MediaError otherwise)."""
        ffmpeg_bin()
        ffprobe_bin()

    def run(self, req: FinishRequest) -> FinishResult:
        t0 = time.monotonic()
        progress = StageProgress(self.store, req.job_id, "finisher")
        with scratch(self.settings, req.job_id, "finish") as tmp:
            frames = self.storage.get_file(req.frames.key, tmp)
            if req.kind == "take":
                return self._take(req, frames, tmp, t0)
            voice = self.storage.get_file(req.voice_key, tmp)
            # the options' media are storage keys: the same options, on local copies
            opts = req.options.with_media(lambda key: str(self.storage.get_file(key, tmp)))
            if req.audio_key:
                opts = dataclasses.replace(opts, write_audio=True)
            background = None
            if req.frames.region is not None:  # a region of each frame over the still
                still = self.storage.get_file(req.frames.background_key, tmp)
                background = (str(still), req.frames.region[0], req.frames.region[1])
            res = finish_video(str(frames), str(voice), str(tmp / "out"), opts, progress=progress,
                               background=background)
            progress(1.0, force=True)
            self.storage.put_file(req.video_key, res.video_path)
            thumb_key = req.thumbnail_key
            if thumb_key:
                self.storage.put_file(thumb_key, res.thumbnail_path)
            srt_url = srt_key = None
            if res.srt_path:
                srt_key = keys.captions_sidecar(req.video_key)
                self.storage.put_file(srt_key, res.srt_path)
                srt_url = self.storage.url(srt_key)
            audio_url = None
            if req.audio_key and res.audio_path:
                self.storage.put_file(req.audio_key, res.audio_path)
                audio_url = self.storage.url(req.audio_key)
            details = {"engine": ENGINE, "crf": res.crf, "x264_preset": res.x264_preset,
                       "loudness_lufs": res.loudness_lufs, "true_peak_dbtp": res.true_peak_dbtp,
                       "seconds": res.seconds}
            return FinishResult(
                video_key=req.video_key, video_url=self.storage.url(req.video_key),
                thumbnail_key=thumb_key, thumbnail_url=self.storage.url(thumb_key) if thumb_key else None,
                srt_url=srt_url, srt_key=srt_key,
                audio_key=req.audio_key if audio_url else None,
                audio_url=audio_url, duration_s=res.duration_s, width=res.width, height=res.height,
                fps=res.fps, details=details, seconds=round(time.monotonic() - t0, 3))

    def _take(self, req: FinishRequest, frames: Path, tmp: Path, t0: float) -> FinishResult:
        out = tmp / Path(req.video_key).name
        picture = ["-i", str(frames)]
        if req.frames.region is not None:
            # the take's region over its framed still, in the intermediate's own format
            # (yuv444p, the matrix it was written with): the whole frames it stands for. The
            # still is decoded once and repeated by the loop filter.
            still = self.storage.get_file(req.frames.background_key, tmp)
            x, y = req.frames.region[:2]
            # (the rate as FrameWriter wrote the frames: a rounded one would drop or add frames)
            picture = ["-framerate", f"{req.frames.fps}", "-i", str(still),
                       "-i", str(frames), "-filter_complex",
                       f"[0:v]format=yuv444p,loop=loop=-1:size=1:start=0[b];"
                       f"[1:v]format=yuv444p[f];[b][f]overlay=x={x}:y={y}:shortest=1:format=yuv444"]
        # fmt: off
        ffmpeg([
            *picture,
            "-c:v", "libx264", "-crf", str(TAKE_CRF), "-preset", "medium",
            "-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_primaries", "bt709",
            "-color_trc", "bt709", "-movflags", "+faststart", "-an",
            str(out),
        ], what="encoding persona take")
        # fmt: on
        self.storage.put_file(req.video_key, out)
        if req.persona_id is None:
            raise ValueError("a take's finish request names its persona_id")
        copy_to_volume(self.settings.personas_dir, req.persona_id, out, out.name)
        info = probe(out)
        v = info.video
        return FinishResult(video_key=req.video_key, video_url=self.storage.url(req.video_key),
                            duration_s=info.duration_s, width=v.width, height=v.height, fps=v.fps,
                            details={"engine": ENGINE, "crf": TAKE_CRF},
                            seconds=round(time.monotonic() - t0, 3))
