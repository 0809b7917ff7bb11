"""A stage's start-up, timed and reported: loading its engines, then warming them up.

Warm-up runs every shape the stage's engines will meet (graph captures, cuDNN and Triton
autotuning) before the replica answers its health check, so the first client after a start or a
scale-up does not pay for it. It runs where it pays: on a GPU (PF_WARMUP=auto), or always (on)
or never (off). A warm-up that fails is logged and reported, never fatal: the first job then
pays as it did before.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from core.settings import Settings

log = logging.getLogger("personaforge.startup")


@dataclass
class Startup:
    """What `describe()` reports of a stage's start (seconds)."""
    load_s: float
    warmup_s: float | None = None            # None: no warm-up ran
    warmed: list[str] = field(default_factory=list)
    warmup_error: str | None = None

    def describe(self) -> dict:
        out = {"load_s": round(self.load_s, 3)}
        if self.warmup_s is not None:
            out["warmup_s"] = round(self.warmup_s, 3)
            out["warmed"] = list(self.warmed)
        if self.warmup_error:
            out["warmup_error"] = self.warmup_error
        return out


def wants_warmup(settings: Settings, on_gpu: bool) -> bool:
    return settings.warmup == "on" or (settings.warmup == "auto" and on_gpu)


def warm_up(stage: str, startup: Startup, steps: list[Callable[[], list[str]]]) -> None:
    """Run each warm-up step (each returns what it warmed), timing them into `startup`."""
    t0 = time.perf_counter()
    for step in steps:
        try:
            startup.warmed += step()
        except Exception as e:  # noqa: BLE001 - a failed warm-up only costs the first job time
            startup.warmup_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.exception("%s warm-up failed; the first job will pay for it", stage)
            break
    startup.warmup_s = time.perf_counter() - t0
    log.info("%s start-up: %s", stage, startup.describe())
