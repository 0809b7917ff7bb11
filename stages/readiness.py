"""Production mode (Settings.production, PF_PRODUCTION=1): a stage serves its real model or
nothing. A replica whose weights are missing still starts, so it can say why: its health check
fails with the missing files and the command that fetches them, the ingress's /health reports
it, and jobs are refused with 503 instead of running on an embedded fallback engine.

Outside production mode (laptops, the demo, CI) the embedded engines stand in, labelled as such.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from weights.registry import get, present

# What each stage needs to serve its real engine in production, and the download group of it.
UPSCALE_WEIGHTS = ("realesrgan-x4plus",)
RESTORE_WEIGHTS = ("gfpgan-v1.4",)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str | None = None      # why not, for the health check, /health and a 503

    def describe(self) -> dict:
        return {"ready": self.ready, "reason": self.reason}


READY = Readiness(True)


def require_weights(stage: str, models_dir: Path, names: tuple[str, ...], fetch_args: str) -> Readiness:
    """Ready when every file in `names` is on the models volume; else the reason, naming the
    missing files and the download command (`fetch_args`: its --only/--version flags)."""
    missing = [get(n).path for n in names if not present(models_dir, n)]
    if not missing:
        return READY
    return Readiness(False, (
        f"{stage}: production mode needs its model weights, missing from {models_dir}: "
        f"{', '.join(missing)}; fetch them with: python download_models.py "
        f"--models-dir {models_dir} {fetch_args}"))


def unavailable_engine(readiness: Readiness) -> str:
    """The engine name a stage reports while it cannot serve."""
    return f"unavailable ({readiness.reason})"
