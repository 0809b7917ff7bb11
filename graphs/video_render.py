"""video_render: lip-sync, face restore, upscale once, mix + captions + encode + thumbnail."""
from __future__ import annotations

import asyncio

from serve_app.runner import JobContext
from serve_app.schemas import JobResult
from stages.contracts import (FinishRequest, LipSyncRequest, RestoreRequest, UpscaleRequest)
from stages.errors import StageError
from stages.personas import load_manifest, scale_box


async def run(ctx: JobContext) -> JobResult:
    req, inputs = ctx.request, ctx.request["inputs"]
    fmt = req["format"]
    engines: dict[str, str] = {}
    counts = {"upscale_runs": 0, "restored_faces": 0}

    # 1. The picture source. A persona take was restored and upscaled when the persona was built;
    #    a still image is upscaled ONCE here, to fit the output format, before any frame exists.
    if req.get("persona_id"):
        take = await _find_take(ctx, req["persona_id"], req["take_id"])
        source = dict(source_key=take["key"], source_kind="video", track_key=take.get("track_key"),
                      face_box=None)
        engines["upscale"] = "none (persona take, upscaled at build)"
    else:
        up = await ctx.call("upscale", "run", UpscaleRequest(
            job_id=ctx.job_id, image_key=inputs["image"], max_width=fmt["width"],
            max_height=fmt["height"], out_key=f"jobs/{ctx.job_id}/work/source.png"),
            span=(0.0, 0.1))
        source = dict(source_key=up.image_key, source_kind="image",
                      face_box=scale_box(req.get("face_box"), up.scale))
        engines["upscale"] = up.engine
        counts["upscale_runs"] += up.runs

    # 2. Lip-sync at the model's 25 fps; the finisher converts to the format's fps.
    synced = await ctx.call("lipsync", "run", LipSyncRequest(
        job_id=ctx.job_id, audio_key=inputs["audio"], quality=req["preset"], **source),
        span=(0.1, 0.6))
    engines["lipsync"] = synced.engine

    # 3. Restore only the generated face crops, with the alignment lip-sync already found.
    restored = await ctx.call("face_restore", "run", RestoreRequest(
        job_id=ctx.job_id, frames=synced.frames, faces_key=synced.faces_key,
        weight=req["face_restore_weight"]), span=(0.6, 0.7))
    engines["face_restore"] = restored.engine
    counts["restored_faces"] = restored.restored_faces

    # 4. Fit to the format, mix voice + music + ambience + SFX with ducking, burn captions,
    #    encode with the preset, thumbnail, upload.
    media_keys = {k: v for k, v in inputs.items() if k.startswith(("music", "ambience", "sfx_"))}
    done = await ctx.call("finisher", "run", FinishRequest(
        job_id=ctx.job_id, kind="render", frames=restored.frames, voice_key=inputs["audio"],
        options={"width": fmt["width"], "height": fmt["height"], "fps": fmt["fps"],
                 "quality": req["preset"], "captions": req.get("captions", []),
                 "caption_style": req.get("caption_style", {}),
                 "ducking": req.get("ducking_config", {}),
                 "sfx": [{"start_time": s["start_time"], "volume": s["volume"]}
                         for s in req.get("sfx_tracks", [])]},
        media_keys=media_keys,
        video_key=f"videos/{ctx.job_id}/final.mp4",
        thumbnail_key=f"videos/{ctx.job_id}/thumbnail.jpg"), span=(0.7, 1.0))
    engines["finisher"] = done.details.get("engine", "ffmpeg")

    output = {"video": done.video_url, "thumbnail": done.thumbnail_url}
    if done.srt_url:
        output["captions"] = done.srt_url
    return JobResult(success=True, output=output, metadata={
        "job_id": ctx.job_id, "quality": req["quality"], "preset": req["preset"],
        "duration": done.duration_s,
        "format": {"width": done.width, "height": done.height, "fps": done.fps},
        "engines": engines, "counts": counts, "models": {"lipsync": synced.model},
        "lipsync_settings": synced.settings, "encode": done.details,
        **({"persona_id": req["persona_id"], "take_id": req["take_id"]}
           if req.get("persona_id") else {}),
    })


async def _find_take(ctx: JobContext, persona_id: str, take_id: str) -> dict:
    manifest = await asyncio.to_thread(load_manifest, ctx.storage, persona_id)  # off the loop
    if manifest is None:
        raise StageError("UNKNOWN_PERSONA", f"persona {persona_id!r} has not been built")
    for take in manifest["base_takes"]:
        if take["id"] == take_id:
            return take
    known = ", ".join(t["id"] for t in manifest["base_takes"])
    raise StageError("UNKNOWN_TAKE", f"persona {persona_id!r} has no take {take_id!r} (has: {known})")
