"""The whole studio in one process, without Ray: the same StudioService and graphs, with the
stage objects called directly in threads. For tests, CLIs and debugging a job step by step."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from core.settings import Settings
from core.storage import Storage, open_storage
from serve_app.service import StudioService


def build_stages(settings: Settings, storage: Storage) -> dict:
    from stages.finish import FinishStage
    from stages.lipsync import LipSyncStage
    from stages.restore import FaceRestoreStage
    from stages.upscale import UpscaleStage

    return {"lipsync": LipSyncStage(settings, storage),
            "face_restore": FaceRestoreStage(settings, storage),
            "upscale": UpscaleStage(settings, storage),
            "finisher": FinishStage(settings, storage)}


def build_service(settings: Settings, stages: dict | None = None,
                  link_clock: Callable[[], float] = time.time) -> StudioService:
    storage = open_storage(settings, clock=link_clock)
    stages = stages if stages is not None else build_stages(settings, storage)

    async def call(stage: str, method: str, request):
        return await asyncio.to_thread(getattr(stages[stage], method), request)

    service = StudioService(settings, call, storage=storage, link_clock=link_clock)
    for name, stage in stages.items():
        if hasattr(stage, "describe"):
            service.record_stage(name, stage.describe())
    return service
