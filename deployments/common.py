"""What every stage deployment shares: settings from the environment plus bound overrides."""
from __future__ import annotations

import logging
import time

import ray

from core.settings import Settings
from core.storage import Storage, open_storage

log = logging.getLogger("ray.serve")

# Production defaults (serve_config.yaml repeats them explicitly for `serve deploy`).
GPU_STAGE_OPTIONS = dict(
    max_ongoing_requests=1,            # one job per model replica: GPU memory is not isolated
    max_queued_requests=50,            # beyond this the caller gets backpressure, not a hang
    graceful_shutdown_timeout_s=1900,  # longer than the longest job (job_timeout_s = 1800)
    graceful_shutdown_wait_loop_s=5,
    health_check_period_s=10,
    health_check_timeout_s=30,
    autoscaling_config=dict(min_replicas=1, max_replicas=10, target_ongoing_requests=1,
                            upscale_delay_s=15, downscale_delay_s=900),
)


def replica_gpu_fraction(configured: float | None) -> float | None:
    """The GPU memory share this process may use, or None for no cap.

    In a Ray actor (a Serve replica): its fractional GPU reservation (num_gpus 0.25 -> 0.25);
    a whole GPU or more, or none, is no cap. Fractional GPUs share memory without isolation, so
    each GPU stage caps its CUDA allocator at this share. Elsewhere (a driver, a task, no Ray):
    `configured`, i.e. Settings.gpu_memory_fraction."""
    if not ray.is_initialized():
        return configured
    context = ray.get_runtime_context()
    if context.get_actor_id() is None:
        return configured
    share = float(context.get_assigned_resources().get("GPU", 0.0))
    return share if 0.0 < share < 1.0 else None


def stage_setup(overrides: dict | None) -> tuple[Settings, Storage]:
    """The stage's settings (environment + bound overrides, with the replica's GPU share as its
    memory cap) and its storage, opened exactly as the ingress opens it: with PF_API_KEY set,
    the links a stage returns are signed."""
    settings = Settings.from_env(**(overrides or {}))
    fraction = replica_gpu_fraction(settings.gpu_memory_fraction)
    settings = settings.model_copy(update={"gpu_memory_fraction": fraction})
    return settings, open_storage(settings)


class StageMetrics:
    """Per-deployment counters and latency (Ray's metrics when available)."""

    def __init__(self, stage: str):
        self.stage = stage
        try:
            from ray.serve.metrics import Counter, Histogram

            self.calls = Counter("pf_stage_calls", description="stage calls",
                                 tag_keys=("stage", "outcome"))
            self.latency = Histogram("pf_stage_seconds", description="stage call seconds",
                                     boundaries=[1, 5, 15, 30, 60, 120, 300, 600, 1200],
                                     tag_keys=("stage",))
        except Exception:  # noqa: BLE001 - metrics are optional (local testing mode)
            self.calls = self.latency = None

    def timed(self, fn, *args):
        t0 = time.monotonic()
        outcome = "error"
        try:
            out = fn(*args)
            outcome = "ok"
            return out
        finally:
            if self.calls is not None:
                self.calls.inc(tags={"stage": self.stage, "outcome": outcome})
                self.latency.observe(time.monotonic() - t0, tags={"stage": self.stage})
