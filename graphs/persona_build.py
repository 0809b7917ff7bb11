"""persona_build: pre-render reusable base takes (emotion / angle / intensity) of a persona, so
later renders only redo the face."""
from __future__ import annotations

import asyncio
import zlib

from core import keys
from core.jobs import JobResult
from core.runner import JobContext
from core.storage import link_to
from media.options import FinishOptions
from personas.manifest import TAKE_FRAME_BOX, TAKE_SECONDS, write_manifest
from stages.contracts import (FACE_RESTORE, FINISHER, LIPSYNC, UPSCALE, FinishRequest,
                              RestoreRequest, TakeRequest, UpscaleRequest)


async def run(ctx: JobContext) -> JobResult:
    req, inputs = ctx.request, ctx.request["inputs"]
    persona_id, specs = req["persona_id"], req["takes_to_generate"]
    n = len(specs)

    # 1. Upscale the primary image once for the whole persona.
    up = await ctx.call(UPSCALE.run, UpscaleRequest(
        job_id=ctx.job_id, image_key=inputs["primary_image"], max_width=TAKE_FRAME_BOX[0],
        max_height=TAKE_FRAME_BOX[1], out_key=keys.persona_primary(persona_id)),
        span=(0.0, 0.1))

    takes, engines = [], {"upscale": up.engine}
    for i, spec in enumerate(specs):
        lo, hi = 0.1 + 0.9 * i / n, 0.1 + 0.9 * (i + 1) / n
        # 2. Render the take (LivePortrait directed by emotion / angle / intensity, or the
        #    reframer); the seed is fixed per persona and take, so a rebuild gives the same take.
        take = await ctx.call(LIPSYNC.render_take, TakeRequest(
            job_id=ctx.job_id, persona_id=persona_id, index=i, image_key=up.image_key,
            face_box=up.scaled_box(req.get("face_box")), emotion=spec["emotion"],
            angle=spec["angle"], intensity=spec["intensity"], archetype=req.get("archetype", ""),
            seed=zlib.crc32(f"{persona_id}/{i}".encode()),
            seconds=spec.get("seconds", TAKE_SECONDS), region_ok=True),
            span=(lo, lo + (hi - lo) * 0.5))
        engines["takes"] = take.engine
        # 3. Restore its faces once, here, so renders on this take never restore the base again
        #    (on the face's region of the frames when the take handed on only that: step 4
        #    lays it over the framed still as it encodes).
        restored = await ctx.call(FACE_RESTORE.run, RestoreRequest(
            job_id=ctx.job_id, frames=take.frames, faces_key=take.track_key,
            weight=req["face_restore_weight"]), span=(lo + (hi - lo) * 0.5, lo + (hi - lo) * 0.7))
        engines["face_restore"] = restored.engine
        # 4. Encode and store it in the bucket and on the personas volume.
        done = await ctx.call(FINISHER.run, FinishRequest(
            job_id=ctx.job_id, kind="take", frames=restored.frames, persona_id=persona_id,
            options=FinishOptions(quality="premium", fps=take.frames.fps,
                                  normalize_loudness=False, write_srt=False),
            video_key=keys.take_video(persona_id, i)), span=(lo + (hi - lo) * 0.7, hi))
        takes.append({"id": f"{persona_id}_take_{i}", "emotion": spec["emotion"],
                      "angle": spec["angle"], "intensity": spec["intensity"],
                      "duration": round(done.duration_s, 3),
                      "key": done.video_key, "track_key": take.track_key,
                      "width": done.width, "height": done.height, "fps": done.fps,
                      "engine": take.engine, "engine_reason": take.engine_reason,
                      "params": take.params})

    # 5. The manifest a later video_render reads (bucket + personas volume).
    #    It holds storage keys only: a link stored there would expire.
    await asyncio.to_thread(write_manifest, ctx.storage, ctx.settings.personas_dir, persona_id, {
        "persona_id": persona_id, "archetype": req.get("archetype", ""),
        "primary_image_key": up.image_key, "engines": engines, "base_takes": takes})
    # Links in the result are keys the status route turns into fresh links on each read.
    public = [{"video_url": link_to(t["key"]),
               **{k: t[k] for k in ("id", "emotion", "angle", "intensity", "duration", "engine",
                                    "engine_reason", "params")}}
              for t in takes]
    return JobResult(success=True, output={}, metadata={
        "job_id": ctx.job_id, "persona_id": persona_id, "archetype": req.get("archetype", ""),
        "base_takes": public, "manifest": link_to(keys.persona_manifest(persona_id)),
        "engines": engines})
