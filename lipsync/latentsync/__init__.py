"""LatentSync 1.5 / 1.6 reimplementation: UNet, checkpoint loader, DDIM/CFG/DeepCache sampling.

Audio features, mouth mask and face alignment live in their own modules of this package.
"""
from lipsync.latentsync.checkpoint import CheckpointMismatchError, load_unet, read_state_dict
from lipsync.latentsync.config import UNET_V15, UNET_V16, UNetConfig, tiny_unet_config, unet_config
from lipsync.latentsync.engine import (CudaGraphUNet, EngineSettings, LatentSyncEngine, LatentSyncRenderStats,
                                       load_latentsync_engine)
from lipsync.latentsync.pipeline import (SAMPLING_BY_PRESET, LatentSyncPipeline, PipelineOptions, PipelineStats,
                                         SamplingOptions, sampling_for_quality)
from lipsync.latentsync.sampling import (
    LATENTSYNC_DDIM,
    LATENTSYNC_DEEPCACHE,
    DDIMConfig,
    DeepCacheConfig,
    denoise,
    initial_latents,
)
from lipsync.latentsync.unet import LatentSyncUNet, build_unet, compile_unet
from lipsync.latentsync.vae import LatentVAE, build_vae, load_vae, tiny_vae

__all__ = [
    "CheckpointMismatchError",
    "CudaGraphUNet",
    "EngineSettings",
    "LatentSyncEngine",
    "LatentSyncPipeline",
    "LatentSyncRenderStats",
    "LatentVAE",
    "PipelineOptions",
    "PipelineStats",
    "SAMPLING_BY_PRESET",
    "SamplingOptions",
    "build_vae",
    "load_latentsync_engine",
    "load_vae",
    "sampling_for_quality",
    "tiny_vae",
    "DDIMConfig",
    "DeepCacheConfig",
    "LATENTSYNC_DDIM",
    "LATENTSYNC_DEEPCACHE",
    "LatentSyncUNet",
    "UNET_V15",
    "UNET_V16",
    "UNetConfig",
    "build_unet",
    "compile_unet",
    "denoise",
    "initial_latents",
    "load_unet",
    "read_state_dict",
    "tiny_unet_config",
    "unet_config",
]
