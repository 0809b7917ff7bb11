"""Face restoration (GFPGAN v1.4) and upscaling (Real-ESRGAN, Lanczos) for the finishing stages.

Load once, run many:
    restorer = load_face_restorer(models_dir, device)        # None if GFPGANv1.4.pth is absent
    upscaler = load_upscaler(models_dir, "RealESRGAN_x4plus", device) or embedded_upscaler(device)
    big, runs = upscaler.upscale_to(still, 2160, 3840)        # the still, once per job
    faces = restorer.restore(crops, weight=0.7, stabilizer=ResidualStabilizer())
    frames = paste_back(frames, faces, affines, feather_px=16)
Every object has `.engine`, a string for job metadata naming what ran.
"""
from enhance.loaders import (build_model, embedded_upscaler, load_face_restorer, load_upscaler,
                              resample_upscaler)
from enhance.restore import FaceRestorer, RestoreOptions, paste_back
from enhance.temporal import ResidualStabilizer, StabilizerOptions
from enhance.upscale import UpscaleOptions, Upscaler

__all__ = [
    "FaceRestorer", "ResidualStabilizer", "RestoreOptions", "StabilizerOptions", "UpscaleOptions", "Upscaler",
    "build_model", "embedded_upscaler", "load_face_restorer", "load_upscaler", "paste_back", "resample_upscaler",
]
