"""Finisher deployment (CPU): ffmpeg mix, captions, encode, thumbnail, upload."""
from __future__ import annotations

from ray import serve

from deployments.common import StageMetrics, stage_setup
from stages.contracts import FinishRequest, FinishResult
from stages.finish import FinishStage


@serve.deployment(name="Finisher", ray_actor_options={"num_cpus": 2},
                  max_ongoing_requests=2, max_queued_requests=100,
                  graceful_shutdown_timeout_s=1900, graceful_shutdown_wait_loop_s=5,
                  autoscaling_config=dict(min_replicas=1, max_replicas=10,
                                          target_ongoing_requests=1, upscale_delay_s=15,
                                          downscale_delay_s=600))
class Finisher:
    def __init__(self, settings_overrides: dict | None = None):
        self.stage = FinishStage(*stage_setup(settings_overrides))
        self.metrics = StageMetrics("finisher")

    def run(self, req: FinishRequest) -> FinishResult:
        return self.metrics.timed(self.stage.run, req)

    def describe(self) -> dict:
        return self.stage.describe()

    def check_health(self) -> None:
        self.stage.check_health()
