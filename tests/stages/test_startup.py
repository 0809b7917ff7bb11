"""Start-up: each stage reports how long its engines took to load and to warm up, and the warm-up
runs every shape a job will meet before the first job (on a GPU by default; PF_WARMUP=on makes
it run here, on tiny random engines). The shapes are recorded by a spy around the real UNet."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from core.storage import open_storage
from faces import load_detector
from lipsync.latentsync.config import tiny_unet_config
from lipsync.latentsync.engine import EngineSettings, LatentSyncEngine
from lipsync.latentsync.pipeline import CHUNK_FRAMES, LatentSyncPipeline, PipelineOptions
from lipsync.latentsync.unet import build_unet
from lipsync.latentsync.vae import tiny_vae
from lipsync.latentsync.whisper import WhisperEncoderDims, load_whisper_encoder
from serve_app.inprocess import build_service
from stages.lipsync import LipSyncStage
from stages.restore import FaceRestoreStage
from stages.upscale import UpscaleStage
from tests.personas.liveportrait.tiny_models import write_tiny_checkpoints
from tests.support.engines import tiny_restorer, tiny_upscalers


class ShapeSpy:
    """The real UNet, with the (chunks, frames) of every batch it is asked for, per forward."""

    def __init__(self, unet):
        self.unet, self.seen = unet, set()

    def __getattr__(self, name):
        return getattr(self.unet, name)

    def _note(self, kind, sample):
        self.seen.add((kind, sample.shape[0], sample.shape[2]))

    def __call__(self, sample, *args, **kwargs):
        self._note("full", sample)
        return self.unet(sample, *args, **kwargs)

    def forward_and_cache(self, sample, *args, **kwargs):
        self._note("cache", sample)
        return self.unet.forward_and_cache(sample, *args, **kwargs)

    def forward_cached(self, sample, *args, **kwargs):
        self._note("cached", sample)
        return self.unet.forward_cached(sample, *args, **kwargs)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def tiny_engine_128() -> LatentSyncEngine:
    """tiny_engine's networks at a 128 px crop (16 x 16 latents) and two chunks per UNet call:
    at 64 px the tiny UNet's innermost level is 1 x 1, where a one-frame chunk leaves its group
    norms one value per group (the full-size UNet never gets there)."""
    torch.manual_seed(0)
    whisper = load_whisper_encoder(None, tiny_config=WhisperEncoderDims(
        n_audio_state=64, n_audio_head=2, n_audio_layer=1))
    unet = build_unet(replace(tiny_unet_config(), resolution=128))
    pipeline = LatentSyncPipeline(unet, tiny_vae(), whisper,
                                  options=PipelineOptions(chunks_per_call=2))
    return LatentSyncEngine(pipeline, load_detector(), EngineSettings(), engine="tiny-128")


def test_lipsync_warms_every_batch_shape_for_every_preset_and_a_take(settings, monkeypatch,
                                                                     no_gpu, one_torch_thread):
    engine = tiny_engine_128()
    spy = ShapeSpy(engine.pipeline.unet)
    engine.pipeline.unet = spy
    monkeypatch.setattr(LipSyncStage, "_load_latentsync", lambda self: engine)
    write_tiny_checkpoints(settings.models_dir)
    s = settings.model_copy(update={"warmup": "on", "allow_cpu_takes": True})
    stage = LipSyncStage(s, open_storage(s))
    report = stage.describe()["startup"]
    assert report["load_s"] > 0 and report["warmup_s"] > 0 and "warmup_error" not in report
    assert any(w.startswith("latentsync") for w in report["warmed"])
    assert any(w.startswith("liveportrait batch 1") for w in report["warmed"])
    # every (chunks, frames) plan_groups can produce, through the forwards of both kinds of
    # sampling (DeepCache presets: cache + cached; the others: full)
    cpc = engine.pipeline.options.chunks_per_call
    shapes = {(b, CHUNK_FRAMES) for b in range(1, cpc + 1)} | {(1, f) for f in range(1, CHUNK_FRAMES)}
    for kind in ("full", "cache", "cached"):
        got = {(b, f) for k, b, f in spy.seen if k == kind}
        # (a CFG pair runs as one batch of twice the chunks)
        missing = [(b, f) for b, f in shapes if (b, f) not in got and (2 * b, f) not in got]
        assert not missing, (kind, missing)
    assert not stage.take_engine._sources, "the blank warm-up still stayed cached"
    assert stage.describe()["thread"] == "pinned"  # jobs run where the warm-up ran


def test_restore_and_upscale_warm_up_and_report_it(settings, no_gpu):
    s = settings.model_copy(update={"warmup": "on"})
    storage = open_storage(s)
    restore = FaceRestoreStage(s, storage, restorer=tiny_restorer())
    report = restore.describe()["startup"]
    assert report["warmup_s"] > 0 and report["warmed"][0].startswith("gfpgan batches")
    assert restore.restorer.faces_restored == 0  # warm-up faces are not counted as restored
    assert restore.describe()["thread"] == "pinned"  # its jobs run where the warm-up ran
    upscale = UpscaleStage(s, storage, models=tiny_upscalers())
    report = upscale.describe()["startup"]
    assert report["warmup_s"] > 0 and report["warmed"][0].startswith("tiny-x4 tile windows")


def test_auto_warms_up_only_on_a_gpu_and_health_reports_every_start(settings, no_gpu):
    stages = {"face_restore": FaceRestoreStage(settings, open_storage(settings),
                                               restorer=tiny_restorer()),
              "upscale": UpscaleStage(settings, open_storage(settings), models=tiny_upscalers())}
    service = build_service(settings, stages=stages)
    startup = service.health().startup
    assert set(startup) == {"face_restore", "upscale"}
    assert all(r["load_s"] >= 0 and "warmup_s" not in r for r in startup.values()), startup


def test_restore_graph_batches_cover_every_batch_with_little_padding():
    restorer = tiny_restorer()
    restorer.batch_size = 12
    assert restorer.graph_batches() == [1, 2, 4, 8, 12]
    assert [restorer.graph_batch(n) for n in (1, 3, 5, 9, 12)] == [1, 4, 8, 12, 12]


@pytest.mark.requires_cuda
def test_padded_graph_batches_restore_each_face_as_alone():
    """On CUDA a short batch is padded up to a captured size: the real faces come out as the
    eager forward makes them."""
    from enhance.restore import FaceRestorer, RestoreOptions

    net = tiny_restorer().net
    graphed = FaceRestorer(net, "t", "cuda", RestoreOptions(batch_size=8, precision="fp32"))
    eager = FaceRestorer(net, "t", "cuda", RestoreOptions(batch_size=8, precision="fp32",
                                                          cuda_graphs=False))
    faces = np.random.default_rng(0).integers(0, 255, (5, 512, 512, 3), dtype=np.uint8)
    a, b = graphed.restore(faces), eager.restore(faces)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
