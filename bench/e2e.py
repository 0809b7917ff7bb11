"""Every job type end to end in one process: what a job costs around its models.

The in-process studio (serve_app/inprocess.py: the real StudioService, job graphs and stage
objects, called in threads; no Ray, no HTTP) runs each job twice, cold (the first run of that job
in the process: CUDA graph captures, cuDNN autotuning, caches; the very first row is also the
first job after start-up) and warm (the same job again):

  lipsync_only    quality fast / standard / high
  video_render    quality standard / premium, output format --width x --height @ --fps
  persona_build   the seed's four takes (happy/front, intense/three_quarter, calm/closeup,
                  sad/front), TAKE_SECONDS each

Per job it prints the wall seconds (submit to final), each stage's seconds (the runner's stage
log, as the job metadata reports it), the model-only seconds inside each stage, the GPU peak
memory and the ratio job / model (wall seconds over all model seconds: what the service adds
around the networks). Model-only seconds are:

  lipsync (LatentSync)    Whisper + VAE encode + UNet + VAE decode, from the engine's own
                          per-stage clock (CUDA events; lipsync/latentsync/pipeline.py)
  lipsync (takes)         LivePortrait F + M per source, W + G per batch (graph replays
                          included), timed here with CUDA synchronised around each call
  face_restore            GFPGAN forwards, timed here the same way
  upscale                 Real-ESRGAN (RRDBNet) forwards, timed here the same way
  finisher                none (ffmpeg)

The timing proxies wrap the loaded engine objects of this process only; product code is not
changed by them. The synchronisations they add cost a little overlap on the GPU.

GPU mode (default): full-size random weights written in the official layouts, at the paths
weights/registry.py names (the files download_models.py would fetch), into a models dir that the
stages then load through their normal loaders (settings.models_dir). Nothing here is a real
model's output: the pictures are noise, the timings are real. The job metadata names the engine
of every stage, printed once, so a reader sees the real engines ran (not embedded fallbacks).

Tiny mode (--tiny, CPU, the CI smoke test): tiny random LatentSync / GFPGAN / Real-ESRGAN
engines injected into the stages (tests/support/engines.py), LivePortrait's small golden config
written to disk in the official layout, a short voice, a small format, fewer and shorter takes.

    python bench/e2e.py                       # GPU: 10 s voice, 1080x1920 @ 30, full-size weights
    python bench/e2e.py --models-dir /data/m  # reuse (or fill once) a models dir of random weights
    python bench/e2e.py --only lipsync_only   # some job types only (repeatable)
    python bench/e2e.py --load-only --device cpu   # write the weights, load them, print engines
    python bench/e2e.py --tiny                # CPU smoke: every job type, tiny engines
    python bench/e2e.py --tiny --json rows.json    # also write every row as JSON

Flags: --tiny, --device (cuda | cpu; default cuda, tiny: cpu), --models-dir DIR, --work-dir DIR
(default: a temp dir, removed), --voice-seconds S, --width W --height H --fps F, --only JOB_TYPE,
--load-only, --json PATH, --warmup auto|on|off. The last line printed is the JSON of all rows.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from core.settings import Settings  # noqa: E402
from core.storage import open_storage  # noqa: E402
from media.frames import write_wav  # noqa: E402
from serve_app.inprocess import build_service, build_stages  # noqa: E402
from serve_app.schemas import RunRequest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "samples" / "portrait.png"
STAGE_NAMES = ("upscale", "lipsync", "face_restore", "finisher")
SHORT = {"upscale": "upscale", "lipsync": "lipsync", "face_restore": "restore",
         "finisher": "finish"}
# The LatentSync engine's clock stages that are network time (the rest is host work around them).
LATENTSYNC_MODEL_STAGES = ("audio", "vae_encode", "unet", "vae_decode")
SEED_TAKES = [
    {"emotion": "happy", "angle": "front", "intensity": 0.7},
    {"emotion": "intense", "angle": "three_quarter", "intensity": 0.8},
    {"emotion": "calm", "angle": "closeup", "intensity": 0.5},
    {"emotion": "sad", "angle": "front", "intensity": 0.4},
]
JOB_TIMEOUT_S = 3600.0
JOB_TYPES = ("lipsync_only", "video_render", "persona_build")


# ---- model-only time ----------------------------------------------------------------------

class ModelClock:
    """Model-only seconds per stage name for the job running now (jobs run one at a time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def take(self) -> dict[str, float]:
        """The seconds since the last take, and start again from zero."""
        with self.lock:
            out, self.seconds = self.seconds, {}
        return out


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class Timed:
    """Calls `target` (a network, a graph replay) with the seconds it took added to the clock;
    CUDA is synchronised before and after, so the seconds are the GPU work of the call. Never
    synchronises while a CUDA graph is being captured (that call only records work). Every
    other attribute is the target's."""

    def __init__(self, target: Any, clock: ModelClock, stage: str, cuda: bool):
        self._target, self._clock, self._stage, self._cuda = target, clock, stage, cuda

    def __call__(self, *args, **kwargs):
        if _capturing():
            return self._target(*args, **kwargs)
        if self._cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            return self._target(*args, **kwargs)
        finally:
            if self._cuda:
                torch.cuda.synchronize()
            self._clock.add(self._stage, time.perf_counter() - t0)

    def __getattr__(self, name: str):
        return getattr(self._target, name)


class LatentSyncClock:
    """The lip-sync stage's renderer with its render stats' network seconds (the engine's own
    per-stage clock) added to the model clock; everything else is the renderer's."""

    def __init__(self, renderer: Any, clock: ModelClock):
        self._renderer, self._clock = renderer, clock

    def render(self, *args, **kwargs):
        stats = self._renderer.render(*args, **kwargs)
        parts = getattr(stats, "stage_seconds", {}) or {}
        self._clock.add("lipsync", sum(parts.get(k, 0.0) for k in LATENTSYNC_MODEL_STAGES))
        return stats

    def __getattr__(self, name: str):
        return getattr(self._renderer, name)


def instrument(stages: dict, clock: ModelClock) -> list[str]:
    """Wrap every network the stages run with the model clock; returns what was wrapped (a
    stage on its fallback has nothing to wrap, and says so in its engine name)."""
    wrapped = []
    # 1. LatentSync: its own clock (the embedded animator has no network).
    lipsync = stages["lipsync"]
    if lipsync.latentsync is not None:
        lipsync.renderer = LatentSyncClock(lipsync.renderer, clock)
        wrapped.append("lipsync: LatentSync whisper+vae+unet (engine clock)")
    # 2. LivePortrait: F and M per source, W+G per batch (eager, or the CUDA graph's replay).
    engine = lipsync.take_engine
    if engine is not None:
        _instrument_liveportrait(engine, clock)
        wrapped.append("lipsync.render_take: LivePortrait F, M, W+G")
    # 3. GFPGAN: the graph replay on CUDA, else the network.
    restorer = stages["face_restore"].restorer
    if restorer is not None:
        cuda = restorer.device.type == "cuda"
        if restorer._graphs is not None:
            restorer._graphs = Timed(restorer._graphs, clock, "face_restore", cuda)
        else:
            restorer.net = Timed(restorer.net, clock, "face_restore", cuda)
        wrapped.append("face_restore: GFPGAN forward")
    # 4. Real-ESRGAN: every network upscaler of the stage's table.
    for key, model in stages["upscale"].models.items():
        if model is not None and model.net is not None:
            model.net = Timed(model.net, clock, "upscale", model.device.type == "cuda")
            wrapped.append(f"upscale: {key} forward")
    return wrapped


def _instrument_liveportrait(engine: Any, clock: ModelClock) -> None:
    cuda = engine.device.type == "cuda"
    models = engine.models
    models.F = Timed(models.F, clock, "lipsync", cuda)
    models.M = Timed(models.M, clock, "lipsync", cuda)
    engine._warp_decode = Timed(engine._warp_decode, clock, "lipsync", cuda)
    capture = engine._capture

    def timed_capture(source, x_d):
        capture(source, x_d)
        if engine._graph is not None and not isinstance(engine._graph, Timed):
            engine._graph = Timed(engine._graph, clock, "lipsync", cuda)
    engine._capture = timed_capture


# ---- full-size random weights in the official layouts --------------------------------------

def write_full_weights(models_dir: Path, version: str) -> list[str]:
    """Random full-size weights at the registry's paths, in the formats the loaders read; a
    group already complete is kept. Returns the groups written."""
    from weights.registry import all_present, latentsync_names, liveportrait_names

    written = []
    groups: list[tuple[str, tuple[str, ...], Callable[[Path], None]]] = [
        ("latentsync", latentsync_names(version), lambda d: _write_latentsync(d, version)),
        ("gfpgan", ("gfpgan-v1.4",), _write_gfpgan),
        ("realesrgan", ("realesrgan-x4plus", "realesrgan-x2plus"), _write_realesrgan),
        ("liveportrait", liveportrait_names(), _write_liveportrait),
    ]
    for name, files, write in groups:
        if all_present(models_dir, files):
            continue
        t0 = time.perf_counter()
        write(models_dir)
        written.append(name)
        print(f"  wrote {name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return written


def _write_latentsync(models_dir: Path, version: str) -> None:
    """UNet ({"global_step", "state_dict"}, the training script's format), OpenAI's Whisper
    tiny format ({"dims", "model_state_dict"}; encoder half, the loader drops the decoder),
    and the VAE as a diffusers folder (config.json + diffusion_pytorch_model.safetensors)."""
    from lipsync.latentsync.config import unet_config
    from lipsync.latentsync.unet import build_unet
    from lipsync.latentsync.vae import SD_VAE_FT_MSE_CONFIG, build_vae
    from lipsync.latentsync.whisper import WHISPER_TINY, WhisperAudioEncoder
    from weights.registry import model_path

    torch.manual_seed(0)
    unet_path = model_path(models_dir, f"latentsync-{version}-unet")
    unet_path.parent.mkdir(parents=True, exist_ok=True)
    unet = build_unet(unet_config(version))
    torch.save({"global_step": 0, "state_dict": unet.state_dict()}, unet_path)
    del unet
    whisper = WhisperAudioEncoder(WHISPER_TINY)
    dims = {**asdict(WHISPER_TINY), "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 384,
            "n_text_head": 6, "n_text_layer": 4}
    state = {f"encoder.{k}": v for k, v in whisper.state_dict().items()}
    whisper_path = model_path(models_dir, "whisper-tiny")
    whisper_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dims, "model_state_dict": state}, whisper_path)
    vae_dir = model_path(models_dir, "sd-vae-ft-mse").parent
    build_vae(SD_VAE_FT_MSE_CONFIG).model.save_pretrained(str(vae_dir), safe_serialization=True)


def _write_gfpgan(models_dir: Path) -> None:
    """GFPGANv1.4.pth: {"params_ema": generator state dict}, as the release stores it."""
    from enhance.loaders import build_model
    from weights.registry import model_path

    path = model_path(models_dir, "gfpgan-v1.4")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": build_model("GFPGANv1.4").state_dict()}, path)


def _write_realesrgan(models_dir: Path) -> None:
    """RealESRGAN_x4plus.pth and _x2plus.pth: {"params_ema": ...}, as the releases store them
    (the stage prefers x4plus over general-x4v3, so that one is not needed)."""
    from enhance.loaders import build_model
    from weights.registry import model_path

    for registry_name, release in (("realesrgan-x4plus", "RealESRGAN_x4plus"),
                                   ("realesrgan-x2plus", "RealESRGAN_x2plus")):
        path = model_path(models_dir, registry_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"params_ema": build_model(release).state_dict()}, path)


def _write_liveportrait(models_dir: Path) -> None:
    """The five official files at full size (no config.json: the loader reads the sizes from
    the files' shapes, as with a real download)."""
    from personas.liveportrait.checkpoint import (build_models, export_state_dicts,
                                                  write_official_checkpoints)
    from personas.liveportrait.config import LivePortraitConfig

    models = build_models(LivePortraitConfig(), "cpu")
    write_official_checkpoints(models_dir, export_state_dicts(models))


# ---- stages ----------------------------------------------------------------------------------

def full_stages(settings: Settings) -> dict:
    """The stages as production builds them: every engine from settings.models_dir."""
    return build_stages(settings, open_storage(settings))


def tiny_stages(settings: Settings) -> dict:
    """The stages with tiny random engines injected (LatentSync through the stage's loader
    hook, GFPGAN and Real-ESRGAN through the constructors) and LivePortrait's small golden
    config loaded from settings.models_dir by the stage's normal take-engine loader."""
    from stages.lipsync import LipSyncStage
    from stages.restore import FaceRestoreStage
    from stages.upscale import UpscaleStage
    from tests.personas.liveportrait.tiny_models import write_tiny_checkpoints
    from tests.support.engines import tiny_engine, tiny_restorer, tiny_upscalers

    class TinyLipSync(LipSyncStage):
        def _load_latentsync(self):
            return tiny_engine()

    write_tiny_checkpoints(settings.models_dir)
    storage = open_storage(settings)
    stages = build_stages(settings, storage)
    stages["lipsync"] = TinyLipSync(settings, storage)
    stages["face_restore"] = FaceRestoreStage(settings, storage, restorer=tiny_restorer())
    stages["upscale"] = UpscaleStage(settings, storage, models=tiny_upscalers())
    return stages


# ---- inputs and jobs ----------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What one bench run sends."""
    voice_s: float
    image_side: int | None        # the portrait resized to a square of this side; None = as is
    width: int
    height: int
    fps: float
    lipsync_qualities: tuple[str, ...]
    render_qualities: tuple[str, ...]
    takes: list[dict]
    warm: tuple[str, ...]         # the job types that run a second (warm) time


def speech_wav(seconds: float, path: Path, rate: int = 16000) -> Path:
    """A voice-like signal: harmonics of 140 Hz under a 4 Hz syllable envelope, with gaps."""
    t = np.arange(int(seconds * rate)) / rate
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 0.7
    write_wav(path, (0.3 * voiced * envelope).astype(np.float32), rate)
    return path


def portrait_png(side: int | None) -> bytes:
    """samples/portrait.png, resized to side x side when asked, as PNG bytes."""
    if side is None:
        return PORTRAIT.read_bytes()
    image = cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR)
    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("could not encode the portrait")
    return data.tobytes()


def portrait_face_box(png: bytes) -> list[float]:
    """The portrait's face, found by the product's detector on the picture the client sends.
    Every job passes it as `face_box`: random upscaler weights turn the upscaled picture into
    noise, where no detector finds a face (a box keeps the jobs on the face path)."""
    from faces import load_detector

    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    faces = load_detector().detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not faces:
        raise RuntimeError(f"no face found in {PORTRAIT}")
    return [round(float(v), 1) for v in faces[0].box]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def job_inputs(plan: Plan, media: dict) -> list[tuple[str, str, dict]]:
    """(job type, quality, input without job_id) of every job of the plan."""
    image, audio, box = media["image"], media["audio"], media["face_box"]
    jobs = [("lipsync_only", q, {"job_type": "lipsync_only", "image": image, "audio": audio,
                                 "face_box": box, "quality": q})
            for q in plan.lipsync_qualities]
    fmt = {"width": plan.width, "height": plan.height, "fps": plan.fps}
    jobs += [("video_render", q, {"job_type": "video_render", "image": image, "audio": audio,
                                  "face_box": box, "quality": q, "format": fmt})
             for q in plan.render_qualities]
    jobs.append(("persona_build", "standard", {
        "job_type": "persona_build", "primary_image": image, "face_box": box,
        "archetype": "calm mentor", "takes_to_generate": plan.takes, "quality": "standard"}))
    return jobs


def with_id(job_type: str, quality: str, body: dict, run: str) -> dict:
    """The input with a job id unique to this job and run (persona_build: its persona too)."""
    name = f"bench-{job_type}-{quality}-{run}".replace("_", "-")
    if job_type == "persona_build":
        return {**body, "job_id": name, "persona_id": f"bench-{run}"}
    return {**body, "job_id": name}


# ---- running and measuring ------------------------------------------------------------------

@dataclass
class Row:
    job: str
    quality: str
    run: str                      # cold | warm
    status: str
    wall_s: float
    stage_s: dict[str, float] = field(default_factory=dict)
    model_s: dict[str, float] = field(default_factory=dict)
    peak_gib: float | None = None
    ratio: float | None = None    # wall_s / sum(model_s)
    engines: dict[str, str] = field(default_factory=dict)
    error: str | None = None


async def run_job(service, body: dict, clock: ModelClock, cuda: bool) -> tuple[Any, float, float]:
    """Submit one job, wait until it is final; (status, wall seconds, GPU peak GiB or nan)."""
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    clock.take()
    t0 = time.perf_counter()
    record = await service.submit(RunRequest.model_validate({"input": body}))
    await service.wait(record.id, JOB_TIMEOUT_S)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return service.status(record.id), wall, peak


def row_of(job_type: str, quality: str, run: str, status, wall: float, peak: float,
           model: dict[str, float]) -> Row:
    """One table row from a final status and the model clock of its run."""
    meta = status.output.metadata if status.output is not None else {}
    stage_s: dict[str, float] = {}
    for entry in meta.get("stages", []):
        stage_s[entry["stage"]] = stage_s.get(entry["stage"], 0.0) + entry["seconds"]
    total_model = sum(model.values())
    return Row(job=job_type, quality=quality, run=run, status=status.status.value,
               wall_s=round(wall, 3), stage_s={k: round(v, 3) for k, v in stage_s.items()},
               model_s={k: round(v, 4) for k, v in model.items()},
               peak_gib=None if peak != peak else round(peak, 3),
               ratio=round(wall / total_model, 2) if total_model > 0 else None,
               engines=_engines_of(meta), error=status.error)


def _engines_of(meta: dict) -> dict[str, str]:
    """The engine of every stage as the job metadata names it (persona_build: its takes')."""
    engines = dict(meta.get("engines", {}))
    for take in meta.get("base_takes", []):
        engines.setdefault("takes", take.get("engine", "?"))
    return engines


async def run_all(service, jobs: list[tuple[str, str, dict]], warm: tuple[str, ...],
                  clock: ModelClock, cuda: bool) -> list[Row]:
    """Each job cold, then warm for the job types in `warm`; a row per run, printed as it
    ends."""
    rows = []
    for job_type, quality, body in jobs:
        for run in ("cold", "warm") if job_type in warm else ("cold",):
            status, wall, peak = await run_job(service, with_id(job_type, quality, body, run),
                                               clock, cuda)
            row = row_of(job_type, quality, run, status, wall, peak, clock.take())
            rows.append(row)
            print(f"  {job_type:<13} {quality:<8} {run:<4} {row.status:<9} {wall:8.2f} s",
                  flush=True)
    return rows


# ---- output -----------------------------------------------------------------------------------

def format_table(rows: list[Row]) -> str:
    """Per job and run: wall s, then per stage `stage s / model s`, peak GiB, job/model."""
    head = (f"{'job':<13} {'quality':<8} {'run':<4} {'status':<9} {'wall s':>8} "
            + " ".join(f"{SHORT[s] + ' s/model':>18}" for s in STAGE_NAMES)
            + f" {'model s':>8} {'peak GiB':>8} {'job/model':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for s in STAGE_NAMES:
            if s not in r.stage_s:
                cells.append(f"{'-':>18}")
                continue
            m = r.model_s.get(s)
            cells.append(f"{r.stage_s[s]:>9.2f}/{'-' if m is None else f'{m:.2f}':<8}")
        peak = "-" if r.peak_gib is None else f"{r.peak_gib:.2f}"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(f"{r.job:<13} {r.quality:<8} {r.run:<4} {r.status:<9} {r.wall_s:>8.2f} "
                     + " ".join(cells)
                     + f" {sum(r.model_s.values()):>8.2f} {peak:>8} {ratio:>9}")
    return "\n".join(lines)


def format_engines(rows: list[Row]) -> str:
    """Every engine the jobs' metadata named, once per stage."""
    seen: dict[str, set[str]] = {}
    for r in rows:
        for stage, engine in r.engines.items():
            seen.setdefault(stage, set()).add(engine)
    return "\n".join(f"  {stage:<13} {' | '.join(sorted(names))}"
                     for stage, names in sorted(seen.items()))


# Issue 20's acceptance, warm wall seconds (10 s voice, 1080x1920 @ 30, H100-class GPU).
TARGETS_S = {("lipsync_only", "standard"): 3.5, ("video_render", "standard"): 8.0,
             ("video_render", "premium"): 12.0, ("persona_build", "standard"): 10.0}
FIRST_JOB_MAX = 1.5  # the first job after start, over the same job warm
PRESET_ORDER = {"lipsync_only": ("fast", "standard", "high"),
                "video_render": ("draft", "standard", "premium", "cinematic")}


def acceptance(rows: list[Row], targets: bool) -> list[tuple[str, str, bool]]:
    """(check, measured, holds) for what the bench can judge: the first job against the same
    job warm, presets in order (warm walls), and (full-size runs) the targets."""
    wall = {(r.job, r.quality, r.run): r.wall_s for r in rows if r.status == "COMPLETED"}
    checks = []
    first = rows[0] if rows else None
    if (first is not None and first.run == "cold" and first.status == "COMPLETED"
            and (first.job, first.quality, "warm") in wall):
        ratio = first.wall_s / wall[(first.job, first.quality, "warm")]
        checks.append((f"first job ({first.job} {first.quality}) / warm", f"{ratio:.2f}",
                       ratio <= FIRST_JOB_MAX))
    for job, order in PRESET_ORDER.items():
        for run in ("warm", "cold"):
            seen = [(q, wall[(job, q, run)]) for q in order if (job, q, run) in wall]
            if len(seen) > 1 and (run == "warm" or not any(r.run == "warm" and r.job == job
                                                            for r in rows)):
                text = " <= ".join(f"{q} {w:.2f}" for q, w in seen)
                checks.append((f"{job} presets in order ({run})", text,
                               all(a[1] <= b[1] for a, b in zip(seen, seen[1:]))))
    if targets:
        for (job, quality), limit in TARGETS_S.items():
            if (job, quality, "warm") in wall:
                got = wall[(job, quality, "warm")]
                checks.append((f"{job} {quality} warm <= {limit:g} s", f"{got:.2f} s", got <= limit))
    return checks


# ---- main -------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU smoke: tiny engines, short jobs")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None)
    p.add_argument("--models-dir", type=Path, default=None,
                   help="models dir of random weights to reuse (written there when missing)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="storage, cache and personas here (default: a temp dir, removed)")
    p.add_argument("--voice-seconds", type=float, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--fps", type=float, default=None)
    p.add_argument("--only", action="append", choices=JOB_TYPES, default=None)
    p.add_argument("--load-only", action="store_true",
                   help="write and load the weights, print the engines, run no job")
    p.add_argument("--json", type=Path, default=None, help="write every row here as JSON")
    p.add_argument("--warmup", choices=("auto", "on", "off"), default="auto",
                   help="the stages' warm-up at start-up (PF_WARMUP): off shows what the first "
                   "job pays without it")
    return p.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    if args.tiny:
        plan = Plan(voice_s=1.0, image_side=128, width=160, height=288, fps=25,
                    lipsync_qualities=("fast", "standard"), render_qualities=("standard",),
                    takes=[{**t, "seconds": 0.5} for t in SEED_TAKES[:2]],
                    warm=("lipsync_only",))
    else:
        plan = Plan(voice_s=10.0, image_side=None, width=1080, height=1920, fps=30,
                    lipsync_qualities=("fast", "standard", "high"),
                    render_qualities=("standard", "premium"), takes=list(SEED_TAKES),
                    warm=JOB_TYPES)
    return Plan(voice_s=args.voice_seconds or plan.voice_s, image_side=plan.image_side,
                width=args.width or plan.width, height=args.height or plan.height,
                fps=args.fps or plan.fps, lipsync_qualities=plan.lipsync_qualities,
                render_qualities=plan.render_qualities, takes=plan.takes, warm=plan.warm)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the bench; returns the rows (as dicts) it printed."""
    args = parse_args(argv)
    device = args.device or ("cpu" if args.tiny else "cuda")
    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --tiny (CPU smoke)")
    if not cuda and not args.tiny and not args.load_only:
        raise SystemExit("full-size models run for hours on a CPU: pass --tiny (CPU smoke) or "
                         "--load-only (write and load the weights only)")
    plan = make_plan(args)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="pf-e2e-"))
    try:
        return _run(args, plan, device, work)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, plan: Plan, device: str, work: Path) -> list[dict]:
    cuda = device == "cuda"
    # 1. Settings: everything under the work dir, models where the weights are.
    models_dir = args.models_dir or work / "models"
    settings = Settings(storage="local", storage_dir=work / "store", cache_dir=work / "cache",
                        models_dir=models_dir, personas_dir=work / "personas", device=device,
                        allow_cpu_takes=args.tiny or not cuda, max_running_jobs=1,
                        job_timeout_s=JOB_TIMEOUT_S, public_base_url="http://127.0.0.1:9",
                        warmup=args.warmup)
    # 2. The weights (GPU mode): full size, official layouts, at the registry's paths.
    if not args.tiny:
        print(f"models dir: {models_dir}", flush=True)
        write_full_weights(models_dir, settings.latentsync_version)
    # 3. The stages, loading their engines (start-up), then the model clock around them.
    t0 = time.perf_counter()
    stages = tiny_stages(settings) if args.tiny else full_stages(settings)
    startup_s = time.perf_counter() - t0
    clock = ModelClock()
    wrapped = instrument(stages, clock)
    resident = torch.cuda.memory_allocated() / 2**30 if cuda else None
    print(f"start-up (stages load and warm up their engines): {startup_s:.1f} s"
          + (f", {resident:.2f} GiB on the GPU" if cuda else ""))
    stage_startup = {}
    for name, stage in stages.items():
        describe = stage.describe()
        takes = f"; takes: {describe['takes']}" if "takes" in describe else ""
        print(f"  {name:<13} {describe['engine']}{takes}")
        if "startup" in describe:  # load_s, and warmup_s with what was warmed (stages/startup.py)
            stage_startup[name] = describe["startup"]
            print(f"  {'':<13} start-up {describe['startup']}")
    print("timed: " + "; ".join(wrapped), flush=True)
    if args.load_only:
        return []
    # 4. The inputs: the voice and the portrait, base64 as a client sends them.
    voice = speech_wav(plan.voice_s, work / "voice.wav")
    png = portrait_png(plan.image_side)
    media = {"image": b64(png), "audio": b64(voice.read_bytes()),
             "face_box": portrait_face_box(png)}
    jobs = [j for j in job_inputs(plan, media) if not args.only or j[0] in args.only]
    # 5. Every job cold then warm (tiny: warm for lipsync_only only), through the service.
    service = build_service(settings, stages=stages)
    print(f"jobs ({device}; voice {plan.voice_s:g} s; format {plan.width}x{plan.height} @ "
          f"{plan.fps:g}):", flush=True)
    rows = asyncio.run(run_all(service, jobs, plan.warm, clock, cuda))
    service.input_pool.shutdown(wait=True)
    # 6. The table, the engines the jobs named, and the JSON line.
    print()
    print(format_table(rows))
    print("\nengines named by the jobs' metadata:")
    print(format_engines(rows))
    for r in rows:
        if r.error:
            print(f"{r.job} {r.quality} {r.run}: {r.status}: {r.error}")
    # the targets hold for their conditions only: a GPU, 10 s of voice, 1080x1920 @ 30
    targets = cuda and (plan.voice_s, plan.width, plan.height, plan.fps) == (10.0, 1080, 1920, 30)
    checks = [{"check": c, "measured": m, "holds": h}
              for c, m, h in acceptance(rows, targets=targets)]
    out = [asdict(r) for r in rows]
    summary = {"device": device, "gpu": torch.cuda.get_device_name() if cuda else None,
               "startup_s": round(startup_s, 2), "stage_startup": stage_startup,
               "resident_gib": None if resident is None else round(resident, 3),
               "voice_s": plan.voice_s,
               "format": [plan.width, plan.height, plan.fps], "rows": out, "checks": checks}
    emit(summary, args.json)
    return out


def emit(summary: dict, json_path: Path | None) -> None:
    """The end of a bench's output: its checks (summary["checks"]: check, measured, holds), the
    JSON file when asked for, and the JSON line last."""
    print("\nchecks (issue 20):")
    for c in summary["checks"]:
        print(f"  {'yes' if c['holds'] else 'NO ':<4} {c['check']}: {c['measured']}")
    if json_path:
        json_path.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
