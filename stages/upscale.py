"""Upscale stage: a still image is upscaled ONCE to fit the output format (never per frame);
persona takes are built from an image upscaled once per persona. With Real-ESRGAN weights on
the models volume: the model (x2 when the format needs at most 2x, else x4); without: Lanczos
resampling, labelled as such."""
from __future__ import annotations

import logging
import time

from core.errors import StageError
from core.settings import Settings
from core.storage import Storage
from media.frames import load_image, save_image
from stages.contracts import UpscaleRequest, UpscaleResult
from stages.readiness import READY, UPSCALE_WEIGHTS, require_weights, unavailable_engine
from stages.device_thread import DeviceThread
from stages.startup import Startup, wants_warmup, warm_up
from stages.workspace import scratch

log = logging.getLogger("personaforge.upscale")

LANCZOS = "lanczos-resample (no Real-ESRGAN weights on the models volume)"
X4_PREFERENCE = ("RealESRGAN_x4plus", "realesr-general-x4v3")


def fit_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """Largest even size with the image's aspect that fits the box."""
    scale = min(max_width / width, max_height / height)
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return min(w, max_width - max_width % 2), min(h, max_height - max_height % 2)


class UpscaleStage:
    def __init__(self, settings: Settings, storage: Storage, models: dict | None = None):
        t0 = time.perf_counter()
        self.settings = settings
        self.storage = storage
        # {"x2": Upscaler | None, "x4": Upscaler | None, "resample": Upscaler}
        self.models = models if models is not None else self._load()
        best = self.models.get("x4") or self.models.get("x2")
        self.readiness = READY
        if best is not None:
            self.engine = best.engine
        elif settings.production:  # Real-ESRGAN or nothing (stages/readiness.py)
            self.readiness = require_weights("Upscale", settings.models_dir, UPSCALE_WEIGHTS,
                                             "--only upscale")
            self.engine = unavailable_engine(self.readiness)
        else:
            self.engine = LANCZOS
        log.info("Upscale engine: %s", self.engine)
        self.startup = Startup(load_s=time.perf_counter() - t0)
        nets = [m for name, m in self.models.items()
                if name != "resample" and m is not None and m.net is not None]
        warm = bool(nets) and wants_warmup(settings, any(m.device.type == "cuda" for m in nets))
        # warm-up and jobs on one thread: cuDNN's tuning is per thread (stages/device_thread.py)
        self.device_thread = DeviceThread("Upscale", pinned=warm)
        if warm:
            self.device_thread.call(warm_up, "Upscale", self.startup, [m.warm_up for m in nets])

    def _load(self) -> dict:
        from enhance.loaders import load_upscaler, resample_upscaler
        from enhance.upscale import UpscaleOptions

        device = None if self.settings.device == "auto" else self.settings.device
        folder = self.settings.models_dir / "realesrgan"
        opts = UpscaleOptions(memory_fraction=self.settings.gpu_memory_fraction)
        x4 = next((m for name in X4_PREFERENCE
                   if (m := load_upscaler(folder, name, device, opts)) is not None), None)
        x2 = load_upscaler(folder, "RealESRGAN_x2plus", device, opts)
        return {"x4": x4, "x2": x2, "resample": resample_upscaler()}

    def describe(self) -> dict:
        return {"engine": self.engine, "startup": self.startup.describe(),
                "thread": self.device_thread.describe(), **self.readiness.describe()}

    def check_health(self) -> None:
        if not self.readiness.ready:
            raise RuntimeError(self.readiness.reason)

    def pick(self, factor: float):
        """The model for an enlargement by `factor`: none needed when shrinking."""
        if factor <= 1.0:
            return self.models["resample"]
        if factor <= 2.0 and self.models.get("x2") is not None:
            return self.models["x2"]
        return self.models.get("x4") or self.models.get("x2") or self.models["resample"]

    def run(self, req: UpscaleRequest) -> UpscaleResult:
        return self.device_thread.call(self._run, req)

    def _run(self, req: UpscaleRequest) -> UpscaleResult:
        t0 = time.monotonic()
        if not self.readiness.ready:
            raise StageError("ENGINE_UNAVAILABLE", self.readiness.reason)
        with scratch(self.settings, req.job_id, "upscale") as tmp:
            image = load_image(self.storage.get_file(req.image_key, tmp))
            h, w = image.shape[:2]
            tw, th = fit_size(w, h, req.max_width, req.max_height)
            model = self.pick(tw / w)
            out, runs = model.upscale_to(image, tw, th)
            path = tmp / "upscaled.png"
            save_image(path, out)
            self.storage.put_file(req.out_key, path)
        engine = model.engine if model is not self.models["resample"] else (
            LANCZOS if self.engine == LANCZOS else "lanczos-resample (downscale: no model needed)")
        return UpscaleResult(image_key=req.out_key, width=tw, height=th, scale=tw / w, engine=engine,
                             runs=runs, seconds=round(time.monotonic() - t0, 3))
