"""Which engine renders persona takes, and why (picked once at start-up).

LivePortrait (personas/liveportrait) when its five official files are on the models volume and
either a GPU is there or CPU takes are allowed (PF_ALLOW_CPU_TAKES: a full-size 512 frame takes
about a minute on 2 CPU cores, so a CPU-only host must opt in). Otherwise the embedded reframer
(personas/takes.py), whose label says why LivePortrait did not run. Weights that are present
but do not load are a start-up error raised by the loader, never a silent fallback.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from personas.liveportrait.checkpoint import missing_liveportrait_files
from personas.liveportrait.engine import ENGINE as LIVEPORTRAIT
from personas.takes import ENGINE as REFRAMER

NO_WEIGHTS = "no LivePortrait weights on the models volume"
NO_GPU = "LivePortrait weights present but no GPU, and PF_ALLOW_CPU_TAKES is off"


@dataclass(frozen=True)
class TakeEngineChoice:
    engine: str                 # LIVEPORTRAIT or REFRAMER
    device: str                 # "cuda" | "cpu"
    reason: str                 # why this engine (shown in the take metadata)

    @property
    def liveportrait(self) -> bool:
        return self.engine == LIVEPORTRAIT

    @property
    def label(self) -> str:
        """The engine as job metadata names it."""
        if self.liveportrait:
            return LIVEPORTRAIT
        return f"{REFRAMER} (CPU; {self.reason})"


def choose_take_engine(models_dir: str | Path, device_setting: str, cuda_available: bool,
                       allow_cpu_takes: bool) -> TakeEngineChoice:
    """The rules: no weights -> reframer; weights + a GPU -> LivePortrait on it; weights and no
    GPU (or PF_DEVICE=cpu) -> LivePortrait on CPU only when allowed, else the reframer."""
    missing = missing_liveportrait_files(models_dir)
    if missing:
        return TakeEngineChoice(REFRAMER, "cpu", f"{NO_WEIGHTS} (missing {len(missing)} of 5 files)")
    gpu = cuda_available and device_setting != "cpu"
    if gpu:
        return TakeEngineChoice(LIVEPORTRAIT, "cuda", "weights on the models volume, GPU present")
    if allow_cpu_takes:
        return TakeEngineChoice(LIVEPORTRAIT, "cpu",
                                "weights on the models volume, no GPU; PF_ALLOW_CPU_TAKES is on")
    return TakeEngineChoice(REFRAMER, "cpu", NO_GPU)
