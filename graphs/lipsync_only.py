"""lipsync_only: image + voice -> lip-synced mp4 (the fast path)."""
from __future__ import annotations

from serve_app.runner import JobContext
from serve_app.schemas import JobResult
from stages.contracts import FinishRequest, LipSyncRequest


async def run(ctx: JobContext) -> JobResult:
    req, inputs = ctx.request, ctx.request["inputs"]

    # 1. Lip-sync the still image to the voice (25 fps, the model's native rate).
    synced = await ctx.call("lipsync", "run", LipSyncRequest(
        job_id=ctx.job_id, source_key=inputs["image"], audio_key=inputs["audio"],
        face_box=req.get("face_box"), quality=req["preset"]), span=(0.0, 0.8))

    # 2. Mux the voice and encode once with the quality preset; upload.
    done = await ctx.call("finisher", "run", FinishRequest(
        job_id=ctx.job_id, kind="lipsync", frames=synced.frames, voice_key=inputs["audio"],
        options={"quality": req["preset"], "fps": synced.frames.fps, "normalize_loudness": False,
                 "write_srt": False},
        video_key=f"videos/{ctx.job_id}/lipsync.mp4"), span=(0.8, 1.0))

    return JobResult(success=True, output={"video": done.video_url}, metadata={
        "job_id": ctx.job_id, "quality": req["quality"], "preset": req["preset"],
        "duration": done.duration_s,
        "format": {"width": done.width, "height": done.height, "fps": done.fps},
        "engines": {"lipsync": synced.engine, "finisher": done.details.get("engine", "ffmpeg")},
        "models": {"lipsync": synced.model},
        "lipsync_settings": synced.settings,
        "encode": done.details,
    })
