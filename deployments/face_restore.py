"""FaceRestore deployment: GFPGAN v1.4 on a GPU share, or an honest pass-through."""
from __future__ import annotations

from ray import serve

from deployments.common import GPU_STAGE_OPTIONS, StageMetrics, stage_setup
from stages.contracts import RestoreRequest, RestoreResult
from stages.restore import FaceRestoreStage


@serve.deployment(name="FaceRestore", ray_actor_options={"num_gpus": 0.25, "num_cpus": 1},
                  **GPU_STAGE_OPTIONS)
class FaceRestore:
    def __init__(self, settings_overrides: dict | None = None):
        self.stage = FaceRestoreStage(*stage_setup(settings_overrides))
        self.metrics = StageMetrics("face_restore")

    def run(self, req: RestoreRequest) -> RestoreResult:
        return self.metrics.timed(self.stage.run, req)

    def describe(self) -> dict:
        return self.stage.describe()

    def check_health(self) -> None:
        self.stage.check_health()
