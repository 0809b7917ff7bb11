"""What every lip-sync engine shares (the embedded animator and LatentSync alike)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenderStats:
    engine: str
    frames: int
    fps: float
    seconds: float                       # frames / fps
    mouth_source: str                    # "landmarks" | "face_box"
    mean_openness: float
    peak_openness: float
    render_s: float                      # wall time of the render loop (encode included)
