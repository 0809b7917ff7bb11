"""Upscale deployment: Real-ESRGAN on a GPU share, or high-quality resampling on CPU."""
from __future__ import annotations

from ray import serve

from deployments.common import GPU_STAGE_OPTIONS, StageMetrics, stage_setup
from stages.contracts import UpscaleRequest, UpscaleResult
from stages.upscale import UpscaleStage


@serve.deployment(name="Upscale", ray_actor_options={"num_gpus": 0.25, "num_cpus": 1},
                  **GPU_STAGE_OPTIONS)
class Upscale:
    def __init__(self, settings_overrides: dict | None = None):
        self.stage = UpscaleStage(*stage_setup(settings_overrides))
        self.metrics = StageMetrics("upscale")

    def run(self, req: UpscaleRequest) -> UpscaleResult:
        return self.metrics.timed(self.stage.run, req)

    def describe(self) -> dict:
        return self.stage.describe()

    def check_health(self) -> None:
        self.stage.check_health()
