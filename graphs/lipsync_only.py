"""lipsync_only: image + voice -> lip-synced mp4 (the fast path)."""
from __future__ import annotations

from core import keys
from core.jobs import JobResult
from core.storage import link_to
from core.runner import JobContext
from media.options import FinishOptions
from stages.contracts import FINISHER, LIPSYNC, FinishRequest, LipSyncRequest


async def run(ctx: JobContext) -> JobResult:
    req, inputs = ctx.request, ctx.request["inputs"]

    # 1. Lip-sync the still image to the voice (25 fps, the model's native rate); only the face
    #    region of each frame travels to the finisher, which lays it over the still.
    synced = await ctx.call(LIPSYNC.run, LipSyncRequest(
        job_id=ctx.job_id, source_key=inputs["image"], audio_key=inputs["audio"],
        face_box=req.get("face_box"), quality=req["preset"], region_ok=True), span=(0.0, 0.8))

    # 2. Mux the voice and encode once with the quality preset; upload.
    done = await ctx.call(FINISHER.run, FinishRequest(
        job_id=ctx.job_id, kind="lipsync", frames=synced.frames, voice_key=inputs["audio"],
        options=FinishOptions(quality=req["preset"], fps=synced.frames.fps,
                              normalize_loudness=False, write_srt=False),
        video_key=keys.lipsync_video(ctx.job_id)), span=(0.8, 1.0))

    # outputs are storage keys the status route turns into fresh links (links never rot)
    return JobResult(success=True, output={"video": link_to(done.video_key)}, metadata={
        "job_id": ctx.job_id, "quality": req["quality"], "preset": req["preset"],
        "duration": done.duration_s,
        "format": {"width": done.width, "height": done.height, "fps": done.fps},
        "engines": {"lipsync": synced.engine, "finisher": done.details.get("engine", "ffmpeg")},
        "models": {"lipsync": synced.model},
        "lipsync_settings": synced.settings,
        "encode": done.details,
    })
