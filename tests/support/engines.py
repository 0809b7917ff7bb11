"""Tiny random engines for the tests that need a "real" engine in place (never a real model's
output): LatentSync, GFPGAN and Real-ESRGAN at toy sizes, built the way their loaders build them."""
from __future__ import annotations

import torch

from enhance.gfpgan import GFPGANv1Clean
from enhance.loaders import resample_upscaler
from enhance.restore import FaceRestorer
from enhance.rrdbnet import RRDBNet
from enhance.upscale import Upscaler
from faces import load_detector
from lipsync.latentsync.config import tiny_unet_config
from lipsync.latentsync.engine import EngineSettings, LatentSyncEngine
from lipsync.latentsync.pipeline import LatentSyncPipeline, PipelineOptions
from lipsync.latentsync.unet import build_unet
from lipsync.latentsync.vae import tiny_vae
from lipsync.latentsync.whisper import WhisperEncoderDims, load_whisper_encoder

TINY_GFPGAN = dict(out_size=512, num_style_feat=16, channel_multiplier=1, num_mlp=1, narrow=0.0625)


def tiny_engine() -> LatentSyncEngine:
    torch.manual_seed(0)
    whisper = load_whisper_encoder(None, tiny_config=WhisperEncoderDims(
        n_audio_state=64, n_audio_head=2, n_audio_layer=1))
    pipeline = LatentSyncPipeline(build_unet(tiny_unet_config()), tiny_vae(), whisper,
                                  options=PipelineOptions())
    return LatentSyncEngine(pipeline, load_detector(), EngineSettings(),
                            engine="latentsync-tiny-random (float32, cpu)")


def tiny_restorer() -> FaceRestorer:
    return FaceRestorer(GFPGANv1Clean(**TINY_GFPGAN).eval(), "tiny-gfpgan (random)", "cpu")


def tiny_upscalers() -> dict:
    """The upscale stage's model table with a tiny random x4 (no x2)."""
    x4 = Upscaler(RRDBNet(scale=4, num_feat=8, num_block=1, num_grow_ch=4).eval(), "tiny-x4", "cpu")
    return {"x4": x4, "x2": None, "resample": resample_upscaler()}
