"""LatentSync denoising loop: DDIM (eta 0), audio classifier-free guidance, optional DeepCache.

Matches the official `LipsyncPipeline` loop for one chunk:
* scheduler = diffusers DDIMScheduler from `configs/scheduler_config.json` (scaled-linear betas
  0.00085 -> 0.012, 1000 train steps, "leading" spacing, steps_offset 1, final alpha = alphas_cumprod[0]);
  the update math is written out here, so no scheduler object is kept between calls;
* CFG: the unconditional branch is the same input with all-zero audio; both branches run in ONE UNet call
  (unconditional half first, `cfg_pair=True`), eps = eps_u + g * (eps_a - eps_u); CFG is on iff g > 1;
* DeepCache (official DeepCacheSDHelper, cache_interval 3, branch 0): steps 0, 3, 6, ... run the full UNet
  and refresh the deep feature; the others only run conv_in, the last up layer and the head.

* A still image's first step: every chunk starts from the same noise with the same masked and
  reference latents, so the unconditional branch of step 0 is the same for every chunk of a clip.
  With a `SharedStart` (one per clip) it is computed once, by the first chunk's CFG pair, and later
  chunks run step 0's audio branch alone (no approximation: the same values, computed once).

Latents stay float32 through the loop whatever the UNet dtype; only the UNet inputs are cast.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lipsync.latentsync.unet import LatentSyncUNet

LATENT_CHANNELS = 4


@dataclass(frozen=True)
class DDIMConfig:
    """The scheduler settings LatentSync ships (configs/scheduler_config.json)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    steps_offset: int = 1
    set_alpha_to_one: bool = False  # final step lands on alphas_cumprod[0] = 0.99915, not 1

    @classmethod
    def from_official(cls, scheduler: Mapping[str, Any]) -> DDIMConfig:
        """Build from a diffusers DDIMScheduler config dict; refuses options the loop does not implement."""
        fixed = {
            "beta_schedule": "scaled_linear",
            "prediction_type": "epsilon",
            "clip_sample": False,
            "thresholding": False,
            "timestep_spacing": "leading",
            "rescale_betas_zero_snr": False,
            "trained_betas": None,
        }
        bad = [f"{k}={scheduler[k]!r} (need {v!r})" for k, v in fixed.items() if k in scheduler and scheduler[k] != v]
        if bad:
            raise ValueError("unsupported DDIM scheduler options: " + "; ".join(bad))
        defaults = cls()
        return cls(
            num_train_timesteps=int(scheduler.get("num_train_timesteps", defaults.num_train_timesteps)),
            beta_start=float(scheduler.get("beta_start", defaults.beta_start)),
            beta_end=float(scheduler.get("beta_end", defaults.beta_end)),
            steps_offset=int(scheduler.get("steps_offset", defaults.steps_offset)),
            set_alpha_to_one=bool(scheduler.get("set_alpha_to_one", defaults.set_alpha_to_one)),
        )

    def alphas_cumprod(self) -> torch.Tensor:
        """float32 (num_train_timesteps,), computed like diffusers (float32 linspace of sqrt(beta), squared)."""
        betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, self.num_train_timesteps, dtype=torch.float32) ** 2
        return torch.cumprod(1.0 - betas, dim=0)

    def timesteps(self, steps: int) -> list[int]:
        """"leading" spacing: 20 steps -> [951, 901, ..., 51, 1]."""
        if not 1 <= steps <= self.num_train_timesteps:
            raise ValueError(f"steps must be in [1, {self.num_train_timesteps}]; got {steps}")
        ratio = self.num_train_timesteps // steps
        return [i * ratio + self.steps_offset for i in reversed(range(steps))]


@dataclass(frozen=True)
class DeepCacheConfig:
    """Reuse the deep UNet features for `cache_interval - 1` of every `cache_interval` steps."""

    cache_interval: int = 3

    def __post_init__(self) -> None:
        if self.cache_interval < 1:
            raise ValueError(f"cache_interval must be >= 1; got {self.cache_interval}")


class SharedStart:
    """The unconditional branch of step 0, kept for the other chunks of one clip.

    Valid only while every chunk denoised with it starts from the same latents with the same mask,
    masked and reference latents (a still image: `initial_latents` + one alignment); chunks of
    another frame count or size get their own entry. Create one per clip; never share across clips
    or models.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.hits = 0  # chunks whose unconditional step 0 came from here

    @staticmethod
    def key(latents: torch.Tensor, first_timestep: int, deepcache: bool) -> tuple:
        return (tuple(latents.shape[1:]), latents.device, first_timestep, deepcache)

    def get(self, key: tuple) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        return self._entries.get(key)

    def put(self, key: tuple, eps: torch.Tensor, feature: torch.Tensor | None) -> None:
        """eps (1, 4, F, h, w) and the DeepCache feature (F rows) of one chunk's unconditional branch."""
        self._entries[key] = (eps.clone(), None if feature is None else feature.clone())


LATENTSYNC_DDIM = DDIMConfig()
LATENTSYNC_DEEPCACHE = DeepCacheConfig(cache_interval=3)


def initial_latents(
    num_frames: int,
    latent_size: int | tuple[int, int],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(1, 4, F, h, w): ONE frame of standard-normal noise repeated over all frames, as the official
    pipeline does for the whole video (slice it per chunk). Seed the generator for reproducibility."""
    h, w = (latent_size, latent_size) if isinstance(latent_size, int) else latent_size
    noise = torch.randn((1, LATENT_CHANNELS, 1, h, w), generator=generator, device=device, dtype=dtype)
    return noise.repeat(1, 1, num_frames, 1, 1)


def _check_inputs(
    latents: torch.Tensor,
    mask: torch.Tensor,
    masked_image_latents: torch.Tensor,
    ref_latents: torch.Tensor,
    audio_embeds: torch.Tensor,
) -> torch.Tensor:
    """Validate shapes; returns audio as (B*F, S, D)."""
    if latents.dim() != 5 or latents.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"latents must be (B, 4, F, h, w); got {tuple(latents.shape)}")
    b, _, frames, h, w = latents.shape
    for name, tensor, channels in (
        ("mask", mask, 1),
        ("masked_image_latents", masked_image_latents, LATENT_CHANNELS),
        ("ref_latents", ref_latents, LATENT_CHANNELS),
    ):
        if tuple(tensor.shape) != (b, channels, frames, h, w):
            raise ValueError(f"{name} must be {(b, channels, frames, h, w)}; got {tuple(tensor.shape)}")
    audio = audio_embeds.flatten(0, 1) if audio_embeds.dim() == 4 else audio_embeds
    if audio.dim() != 3 or audio.shape[0] != b * frames:
        raise ValueError(
            f"audio_embeds must be (B*F={b * frames}, S, D) or (B, F, S, D); got {tuple(audio_embeds.shape)}"
        )
    return audio


@torch.no_grad()
def denoise(
    unet: LatentSyncUNet,
    latents: torch.Tensor,
    mask: torch.Tensor,
    masked_image_latents: torch.Tensor,
    ref_latents: torch.Tensor,
    audio_embeds: torch.Tensor,
    *,
    steps: int = 20,
    guidance_scale: float = 1.5,
    deepcache: DeepCacheConfig | None = None,
    scheduler: DDIMConfig = LATENTSYNC_DDIM,
    shared_start: SharedStart | None = None,
) -> torch.Tensor:
    """Run the DDIM loop for one chunk and return the final latents (same shape and dtype as `latents`).

    Args:
        unet: the loaded model (eval mode; may have been through `compile_unet`).
        latents: (B, 4, F, h, w) initial noise (see `initial_latents`), scaled latent space.
        mask: (B, 1, F, h, w), 1 = keep, 0 = regenerate (mouth), at latent resolution.
        masked_image_latents: (B, 4, F, h, w) VAE latents (x 0.18215) of the masked faces.
        ref_latents: (B, 4, F, h, w) VAE latents (x 0.18215) of the reference faces.
        audio_embeds: (B*F, S, D) per-frame audio tokens, rows ordered (batch, frame); or (B, F, S, D).
        steps: DDIM steps (official default 20).
        guidance_scale: audio CFG weight; > 1 batches the zero-audio branch into the same UNet call.
        deepcache: None for full UNet calls every step, else the cache schedule.
        scheduler: DDIM settings (defaults to LatentSync's).
        shared_start: with CFG, the clip's `SharedStart` when every chunk of the clip has the same
            latents, mask, masked and reference latents (a still image); None otherwise.
    """
    # 1. Check inputs and precompute everything constant over the steps.
    audio = _check_inputs(latents, mask, masked_image_latents, ref_latents, audio_embeds)
    device, model_dtype = latents.device, unet.dtype
    do_cfg = guidance_scale > 1.0
    cond = torch.cat([mask, masked_image_latents, ref_latents], dim=1).to(model_dtype)
    audio = audio.to(model_dtype)
    pair = {}
    if do_cfg:
        cond = torch.cat([cond, cond])
        audio = torch.cat([torch.zeros_like(audio), audio])  # unconditional half first, as official
        pair = {"cfg_pair": True}  # lets the fused path share the halves' common work (see unet.py)

    alphas = scheduler.alphas_cumprod().to(device)
    final_alpha = torch.ones((), device=device) if scheduler.set_alpha_to_one else alphas[0]
    timesteps = scheduler.timesteps(steps)
    # Device tensors, not ints: a compiled UNet would otherwise specialise (recompile) per time step.
    t_device = torch.tensor(timesteps, device=device, dtype=torch.long)
    ratio = scheduler.num_train_timesteps // steps
    x = latents.float()
    feature: torch.Tensor | None = None

    b, frames = latents.shape[0], latents.shape[2]
    start_key = (SharedStart.key(latents, timesteps[0], deepcache is not None)
                 if do_cfg and shared_start is not None else None)
    for i, t in enumerate(timesteps):
        # 2. One UNet call (CFG branches batched), full or from the DeepCache feature; at step 0 of a
        #    still image's later chunks, the audio branch alone beside the shared unconditional one.
        shared = shared_start.get(start_key) if i == 0 and start_key is not None else None
        if shared is not None:
            eps_u, feature_u = shared
            sample = torch.cat([x.to(model_dtype), cond[b:]], dim=1)
            if deepcache is None:
                eps = unet(sample, t_device[i], audio[b * frames:])
            else:
                eps, feature = unet.forward_and_cache(sample, t_device[i], audio[b * frames:])
                feature = torch.cat([feature_u.repeat(b, *([1] * (feature_u.dim() - 1))), feature])
            eps = torch.cat([eps_u.expand(b, *eps_u.shape[1:]), eps.float()])
            shared_start.hits += b
        else:
            x_in = torch.cat([x, x]) if do_cfg else x
            sample = torch.cat([x_in.to(model_dtype), cond], dim=1)
            if deepcache is None:
                eps = unet(sample, t_device[i], audio, **pair)
            elif i % deepcache.cache_interval == 0 or feature is None:
                eps, feature = unet.forward_and_cache(sample, t_device[i], audio, **pair)
            else:
                eps = unet.forward_cached(sample, t_device[i], audio, feature, **pair)
            eps = eps.float()
            if i == 0 and start_key is not None:
                shared_start.put(start_key, eps[:1], None if deepcache is None else feature[:frames])

        # 3. Guidance.
        if do_cfg:
            eps_uncond, eps_audio = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_audio - eps_uncond)

        # 4. DDIM update (eta 0): predict x0, step to the previous time with the same epsilon.
        prev_t = t - ratio
        alpha_t = alphas[t]
        alpha_prev = alphas[prev_t] if prev_t >= 0 else final_alpha
        x0 = (x - (1 - alpha_t) ** 0.5 * eps) / alpha_t**0.5
        x = alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * eps

    return x.to(latents.dtype)
