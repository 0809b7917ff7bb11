"""RunPod serverless worker: the same image as the Ray Serve deployment, started as
`python -m serve_app.runpod_worker` (the endpoint's container start command).

RunPod hands the worker one `{"id", "input"}` job at a time; the handler runs it through the same
StudioService, graphs and stages as the Serve app (all in this process, no Ray: one GPU per
worker), reports the job's progress with the SDK's progress updates, and returns the seed's
output shape `{"success", "output", "metadata", "duration_ms"}`. Inputs are validated exactly as
the HTTP API validates them; a refused input or a failed job comes back as RunPod's `error`.

Local test mode, as the SDK gives it (no RunPod account, nothing leaves the machine):

    python -m serve_app.runpod_worker --test_input '{"input": {"job_type": "lipsync_only", ...}}'
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from typing import Any, Callable

from pydantic import ValidationError

from core.settings import Settings
from serve_app.inputs import InputError
from serve_app.schemas import RunRequest
from serve_app.service import NotReady, StudioService

log = logging.getLogger("personaforge.runpod")

PROGRESS_EVERY_S = 1.0   # how often the handler looks at the job (and reports a change)
_service: StudioService | None = None


def service() -> StudioService:
    """The worker's one service, built on the first job (load once, run many)."""
    global _service
    if _service is None:
        from serve_app.inprocess import build_service

        _service = build_service(Settings.from_env())
    return _service


def on_runpod() -> bool:
    """True inside a RunPod worker; False in the SDK's local test mode (no job queue to report
    progress to: progress is logged instead)."""
    return os.environ.get("RUNPOD_WEBHOOK_GET_JOB") is not None


def sdk_progress(job: dict, update: dict) -> None:
    if on_runpod():
        import runpod

        runpod.serverless.progress_update(job, update)
    else:
        log.info("job %s progress: %s", job.get("id"), json.dumps(update))


async def handle(job: dict, studio: StudioService | None = None,
                 report: Callable[[dict, dict], None] = sdk_progress) -> dict[str, Any]:
    """Run one RunPod job to its end. Returns the seed's output shape, or `{"error": ...}`
    (RunPod marks the job failed) with our error code and reason."""
    studio = studio or service()
    # 1. Validate as the HTTP API does. A job without its own job_id gets RunPod's id (RunPod
    #    retries a job under the same id, so a retry finds the same run: idempotent).
    payload = dict(job.get("input") or {})
    if payload.get("job_type") in ("lipsync_only", "video_render") and "job_id" not in payload:
        payload["job_id"] = _safe_id(job.get("id"))
    try:
        request = RunRequest.model_validate({"input": payload})
        record = await studio.submit(request)
    except ValidationError as e:
        return _error("INVALID_INPUT", "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()))
    except InputError as e:
        return _error(e.code, f"{e.field}: {e.message}")
    except NotReady as e:
        return _error("NOT_READY", str(e))
    # 2. Wait for the end, reporting each change of stage or progress.
    last = None
    while True:
        status = await asyncio.to_thread(studio.status, record.id)
        if status.status.final:
            break
        update = {"status": status.status.value, "stage": status.stage,
                  "progress": round(status.progress, 2)}
        if update != last:
            report(job, update)
            last = update
        await studio.wait(record.id, PROGRESS_EVERY_S)
    # 3. The seed's shape on success; RunPod's `error` otherwise.
    result = status.output
    if result is None or not result.success:
        error = (result.error if result is not None else None) or status.error
        code = getattr(error, "code", status.status.value)
        message = getattr(error, "message", None) or str(error or status.status.value)
        return _error(code, message, metadata=result.metadata if result else {})
    return result.model_dump(mode="json", exclude={"error"})


async def handler(job: dict) -> dict[str, Any]:
    """The function RunPod calls (async: the SDK awaits it on its one event loop, where the
    service's job runner lives between jobs)."""
    return await handle(job)


def _error(code: str, message: str, metadata: dict | None = None) -> dict:
    return {"success": False, "error": f"{code}: {message}", "metadata": metadata or {}}


def _safe_id(runpod_id: Any) -> str:
    """RunPod's job id as one of our ids (letters, digits, _-.; see core.ids)."""
    text = "".join(c if c.isalnum() or c in "_-." else "-" for c in str(runpod_id or ""))
    text = text.lstrip("_-.")[:100]
    return text or f"runpod-{uuid.uuid4().hex[:12]}"


def main() -> None:
    import runpod

    logging.basicConfig(level=logging.INFO)
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
