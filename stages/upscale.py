"""Upscale stage: the still image is upscaled ONCE to fit the output format (never per frame).
With Real-ESRGAN weights: the model; without: Lanczos resampling (labelled as such)."""
from __future__ import annotations

import time

import numpy as np
from PIL import Image

from media.frames import load_image, save_image
from serve_app.settings import Settings
from serve_app.storage import Storage, open_storage
from stages.contracts import UpscaleRequest, UpscaleResult
from stages.workspace import scratch

LANCZOS = "lanczos-resample (no Real-ESRGAN weights on the models volume)"


def fit_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """Largest even size with the image's aspect that fits the box."""
    scale = min(max_width / width, max_height / height)
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return min(w, max_width - max_width % 2), min(h, max_height - max_height % 2)


class UpscaleStage:
    def __init__(self, settings: Settings, storage: Storage | None = None):
        self.settings = settings
        self.storage = storage or open_storage(settings)
        self.engine = LANCZOS

    def describe(self) -> dict:
        return {"engine": self.engine}

    def run(self, req: UpscaleRequest) -> UpscaleResult:
        t0 = time.monotonic()
        with scratch(self.settings, req.job_id, "upscale") as tmp:
            image = load_image(self.storage.get_file(req.image_key, tmp))
            h, w = image.shape[:2]
            tw, th = fit_size(w, h, req.max_width, req.max_height)
            out = self._resize(image, tw, th)
            path = tmp / "upscaled.png"
            save_image(path, out)
            self.storage.put_file(req.out_key, path)
        return UpscaleResult(image_key=req.out_key, width=tw, height=th, engine=self.engine,
                             runs=1, seconds=round(time.monotonic() - t0, 3))

    def _resize(self, image: np.ndarray, width: int, height: int) -> np.ndarray:
        return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))
