"""The Ray Serve application: the `Studio` ingress (FastAPI) composed with the four stage
deployments. `build_app(args)` is the import path `serve deploy serve_config.yaml` uses.

    Studio ──► Upscale ──► LipSync ──► FaceRestore ──► Finisher      (video_render)
           └─► LipSync ──► Finisher                                   (lipsync_only)
           └─► Upscale ──► LipSync.render_take ──► FaceRestore ──► Finisher  (persona_build)

Stages exchange storage keys, never frames (docs/serving.md §1.2).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Literal

from pydantic import BaseModel, Field
from ray import serve

from core.settings import Settings
from core.storage import open_storage
from deployments.face_restore import FaceRestore
from deployments.finisher import Finisher
from deployments.lipsync import LipSync
from deployments.upscale import Upscale
from serve_app.api import bind_service, build_api
from serve_app.service import StudioService

log = logging.getLogger("ray.serve")

# Resource profiles. "production" = the decorators' values (0.5 / 0.25 / 0.25 GPU);
# "local" = CPU-only laptops: no GPU requests (a GPU request on a GPU-less node would pend
# forever) and fractional CPUs so five replicas fit on two cores; "declared-gpu" = tests that
# declare a logical GPU to check the production GPU fractions schedule.
_LOCAL_CPUS = {"Studio": 0.25, "LipSync": 0.5, "FaceRestore": 0.25, "Upscale": 0.25,
               "Finisher": 0.5}
_GPUS = {"LipSync": 0.5, "FaceRestore": 0.25, "Upscale": 0.25}


class AppArgs(BaseModel):
    profile: Literal["production", "local", "declared-gpu"] = "production"
    settings: dict = Field(default_factory=dict, description="Settings overrides (else env)")


class StudioIngress:
    """The ingress replica: hosts a StudioService behind the FastAPI routes (serve_app/api.py)."""

    def __init__(self, lipsync, face_restore, upscale, finisher, settings_overrides: dict):
        settings = Settings.from_env(**settings_overrides)
        handles = {"lipsync": lipsync, "face_restore": face_restore, "upscale": upscale,
                   "finisher": finisher}

        async def call(stage: str, method: str, request):
            return await getattr(handles[stage], method).remote(request)

        self.service = StudioService(settings, call, storage=open_storage(settings))
        self._handles = handles
        # process-wide, not on the app object: Serve pickles that object for every replica
        bind_service(None, self.service)
        log.info("Studio up: %s", settings.public_view())

    # Handle methods (for other Serve apps and local-testing-mode composition tests): the same
    # contract as the HTTP routes, without HTTP.
    async def submit(self, payload: dict) -> dict:
        from serve_app.schemas import RunRequest

        rec = await self.service.submit(RunRequest.model_validate(payload))
        return {"id": rec.id, "status": rec.status.value}

    async def status(self, job_id: str) -> dict | None:
        st = await asyncio.to_thread(self.service.status, job_id)
        return None if st is None else st.model_dump(mode="json", exclude_none=True)

    async def __del__(self) -> None:
        """Graceful shutdown (Serve awaits this once the replica's requests have drained). Jobs
        are tasks of this replica, not requests, so it drains them itself: waiting jobs go back
        to the other replicas at once, running ones finish within the job limit (the
        deployment's graceful_shutdown_timeout_s is longer)."""
        report = await self.service.runner.drain(self.service.settings.job_timeout_s)
        log.info("Studio drained: %s", report)

    async def check_health(self) -> None:
        # Runs on the replica's loop every health_check_period_s: the place to make sure the
        # reaper (which adopts jobs of dead replicas) runs even before the first request, and
        # to ask each stage what it serves and whether it can (production mode: /health and
        # submissions follow the answers). The ingress itself stays healthy either way: it is
        # what tells clients why jobs are refused.
        self.service.runner.start_reaper()
        for name, handle in self._handles.items():
            try:
                report = await asyncio.wait_for(handle.describe.remote(), 5)
            except Exception:  # noqa: BLE001 - a stage starting or failing its health check
                report = None
            self.service.record_stage(name, report)


def studio_deployment():
    """The Studio deployment over a FRESH FastAPI app: an app object that has served requests
    holds running tasks and cannot be pickled for a new deployment."""
    api = build_api()

    @serve.deployment(name="Studio", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=200,
                      graceful_shutdown_timeout_s=1900, graceful_shutdown_wait_loop_s=2,
                      autoscaling_config=dict(min_replicas=1, max_replicas=10,
                                              target_ongoing_requests=50))
    @serve.ingress(api)
    class Studio(StudioIngress):
        pass

    return Studio


def build_app(args: dict | AppArgs | None = None):
    """Application builder: `serve_app.app:build_app` in serve_config.yaml."""
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    overrides = args.settings
    stages = {"LipSync": LipSync, "FaceRestore": FaceRestore, "Upscale": Upscale,
              "Finisher": Finisher}
    bound = {}
    for name, dep in stages.items():
        dep = _profiled(dep, name, args.profile)
        bound[name] = dep.bind(overrides)
    studio = _profiled(studio_deployment(), "Studio", args.profile)
    return studio.bind(bound["LipSync"], bound["FaceRestore"], bound["Upscale"],
                       bound["Finisher"], overrides)


def _profiled(dep, name: str, profile: str):
    if profile == "production":
        return dep
    opts = {"num_cpus": _LOCAL_CPUS[name]}
    if profile == "declared-gpu" and name in _GPUS:
        opts["num_gpus"] = _GPUS[name]
    # one replica each on a laptop: autoscaling to 10 on two cores only thrashes; Ctrl-C stops
    # within seconds (a job cut short keeps its record and is re-run at the next start)
    return dep.options(ray_actor_options=opts, num_replicas=1, autoscaling_config=None,
                       graceful_shutdown_timeout_s=10)
