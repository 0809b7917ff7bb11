"""Warm-up on CUDA: after `LatentSyncEngine.warm_up()`, renders of any length and any preset
capture no new CUDA graph (every batch shape was captured at start-up). Tiny random networks at
a 128 px crop (never a real model's output); GPU only."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from faces import load_detector
from lipsync.latentsync.config import tiny_unet_config
from lipsync.latentsync.engine import CudaGraphUNet, EngineSettings, LatentSyncEngine
from lipsync.latentsync.pipeline import LatentSyncPipeline, PipelineOptions
from lipsync.latentsync.unet import build_unet
from lipsync.latentsync.vae import tiny_vae
from lipsync.latentsync.whisper import WhisperEncoderDims, load_whisper_encoder
from lipsync.source import still_frames

pytestmark = pytest.mark.requires_cuda
CUDA = torch.device("cuda")


@torch.no_grad()
def test_after_warm_up_no_render_captures_a_graph():
    torch.manual_seed(0)
    whisper = load_whisper_encoder(None, CUDA, tiny_config=WhisperEncoderDims(
        n_audio_state=64, n_audio_head=2, n_audio_layer=1))
    unet = build_unet(replace(tiny_unet_config(), resolution=128), CUDA, torch.float32)
    runner = CudaGraphUNet(unet)
    pipeline = LatentSyncPipeline(runner, tiny_vae(device=CUDA), whisper,
                                  options=PipelineOptions(chunks_per_call=3))
    engine = LatentSyncEngine(pipeline, load_detector(), EngineSettings())
    engine.warm_up()
    captured = len(runner._graphs)
    assert captured > 0 and runner.failed is None
    image = np.full((256, 256, 3), 120, np.uint8)
    track = engine.prepare(image, [64, 48, 192, 208])
    rng = np.random.default_rng(0)
    for frames, quality in ((53, "draft"), (16, "premium"), (97, "standard"), (7, "cinematic")):
        voice = rng.normal(0, 0.1, int(frames / 25 * 16000)).astype(np.float32)
        out = []
        engine.render(still_frames(image, frames + 1), track, voice, 25.0, out.append,
                      quality=quality)
        assert len(out) >= frames
        assert len(runner._graphs) == captured, (frames, quality)
