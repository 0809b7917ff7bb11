"""LatentSync 1.5 / 1.6 reimplementation: UNet, checkpoint loader, DDIM/CFG/DeepCache sampling.

Audio features, mouth mask and face alignment live in their own modules of this package.
"""
from lipsync.latentsync.checkpoint import CheckpointMismatchError, load_unet, read_state_dict
from lipsync.latentsync.config import UNET_V15, UNET_V16, UNetConfig, tiny_unet_config, unet_config
from lipsync.latentsync.sampling import (
    LATENTSYNC_DDIM,
    LATENTSYNC_DEEPCACHE,
    DDIMConfig,
    DeepCacheConfig,
    denoise,
    initial_latents,
)
from lipsync.latentsync.unet import LatentSyncUNet, build_unet, compile_unet

__all__ = [
    "CheckpointMismatchError",
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
