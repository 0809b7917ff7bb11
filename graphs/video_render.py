"""video_render: lip-sync, face restore, upscale once, mix + captions + encode + thumbnail."""
from __future__ import annotations

import asyncio

from core import keys
from core.errors import StageError
from core.jobs import JobResult
from core.runner import JobContext
from core.storage import link_to
from media.options import Caption, CaptionStyle, Ducking, FinishOptions, SfxTrack
from personas.manifest import load_manifest
from stages.contracts import (FACE_RESTORE, FINISHER, LIPSYNC, UPSCALE, FinishRequest,
                              LipSyncRequest, RestoreRequest, UpscaleRequest)


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
        up = await ctx.call(UPSCALE.run, UpscaleRequest(
            job_id=ctx.job_id, image_key=inputs["image"], max_width=fmt["width"],
            max_height=fmt["height"], out_key=keys.work(ctx.job_id, "source.png")),
            span=(0.0, 0.1))
        source = dict(source_key=up.image_key, source_kind="image",
                      face_box=up.scaled_box(req.get("face_box")))
        engines["upscale"] = up.engine
        counts["upscale_runs"] += up.runs

    # 2. Lip-sync at the model's 25 fps; the finisher converts to the format's fps. From a
    #    still, only the region holding the face (and its restore crop) travels on: restore and
    #    the finisher work on it, and the finisher lays it over the still once.
    synced = await ctx.call(LIPSYNC.run, LipSyncRequest(
        job_id=ctx.job_id, audio_key=inputs["audio"], quality=req["preset"], region_ok=True,
        restore_follows=True, **source), span=(0.1, 0.6))
    engines["lipsync"] = synced.engine

    # 3. Restore only the generated face crops, with the alignment lip-sync already found.
    restored = await ctx.call(FACE_RESTORE.run, RestoreRequest(
        job_id=ctx.job_id, frames=synced.frames, faces_key=synced.faces_key,
        weight=req["face_restore_weight"]), span=(0.6, 0.7))
    engines["face_restore"] = restored.engine
    counts["restored_faces"] = restored.restored_faces

    # 4. Fit to the format, mix voice + music + ambience + SFX with ducking, burn captions,
    #    encode with the preset, thumbnail, upload.
    done = await ctx.call(FINISHER.run, FinishRequest(
        job_id=ctx.job_id, kind="render", frames=restored.frames, voice_key=inputs["audio"],
        options=FinishOptions(
            width=fmt["width"], height=fmt["height"], fps=fmt["fps"], quality=req["preset"],
            music=inputs.get("music"), ambience=inputs.get("ambience"),
            sfx=tuple(SfxTrack(**s) for s in req.get("sfx_tracks", [])),
            captions=tuple(Caption(**c) for c in req.get("captions", [])),
            caption_style=CaptionStyle(**req.get("caption_style", {})),
            ducking=Ducking(**req.get("ducking_config", {}))),
        video_key=keys.final_video(ctx.job_id), thumbnail_key=keys.thumbnail(ctx.job_id),
        audio_key=keys.audio_export(ctx.job_id)), span=(0.7, 1.0))
    engines["finisher"] = done.details.get("engine", "ffmpeg")

    # outputs are storage keys the status route turns into fresh links (links never rot)
    output = {"video": link_to(done.video_key), "thumbnail": link_to(done.thumbnail_key),
              "audio": link_to(done.audio_key)}
    if done.srt_key:
        output["captions"] = link_to(done.srt_key)
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
