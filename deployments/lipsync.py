"""LipSync deployment: LatentSync on a GPU share, or the embedded CPU mouth animator; persona takes
(LivePortrait, or the embedded reframer)."""
from __future__ import annotations

from ray import serve

from deployments.common import GPU_STAGE_OPTIONS, StageMetrics, stage_setup
from stages.contracts import LipSyncRequest, LipSyncResult, TakeRequest, TakeResult
from stages.lipsync import LipSyncStage


@serve.deployment(name="LipSync", ray_actor_options={"num_gpus": 0.5, "num_cpus": 2},
                  **GPU_STAGE_OPTIONS)
class LipSync:
    def __init__(self, settings_overrides: dict | None = None):
        self.stage = LipSyncStage(*stage_setup(settings_overrides))
        self.metrics = StageMetrics("lipsync")

    def run(self, req: LipSyncRequest) -> LipSyncResult:
        return self.metrics.timed(self.stage.run, req)

    def render_take(self, req: TakeRequest) -> TakeResult:
        return self.metrics.timed(self.stage.render_take, req)

    def describe(self) -> dict:
        return self.stage.describe()

    def check_health(self) -> None:
        self.stage.check_health()
