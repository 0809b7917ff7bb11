"""Architecture configs of the LatentSync 1.5 / 1.6 UNet (and the tiny test variant).

The official `configs/unet/stage2.yaml` (1.5) and `stage2_512.yaml` (1.6) have identical `model:`
sections; only the training resolution differs (256 vs 512 px). `UNetConfig.from_official` reads such
a `model:` mapping (or the tiny golden's `tiny_config`) and refuses options this implementation does
not cover, so a config drift surfaces as a readable error instead of silently different weights.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

CROSS_ATTN_DOWN = "CrossAttnDownBlock3D"
PLAIN_DOWN = "DownBlock3D"
CROSS_ATTN_UP = "CrossAttnUpBlock3D"
PLAIN_UP = "UpBlock3D"
MID_BLOCK = "UNetMidBlock3DCrossAttn"


@dataclass(frozen=True)
class UNetConfig:
    """Shape-defining options of the LatentSync UNet3DConditionModel."""

    in_channels: int = 13  # 4 noisy latents + 1 mask + 4 masked-image latents + 4 reference latents
    out_channels: int = 4  # epsilon prediction
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2  # up blocks get one more
    down_block_types: tuple[str, ...] = (CROSS_ATTN_DOWN,) * 3 + (PLAIN_DOWN,)
    up_block_types: tuple[str, ...] = (PLAIN_UP,) + (CROSS_ATTN_UP,) * 3
    num_heads: int = 8  # official name "attention_head_dim", but it is the head COUNT
    cross_attention_dim: int = 384  # Whisper-tiny width of the audio tokens
    norm_num_groups: int = 32
    norm_eps: float = 1e-5  # resnets and conv_norm_out (pooled over frames)
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    use_motion_module: bool = True
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_num_heads: int = 8
    motion_pe_max_len: int = 24  # chunks longer than this many frames cannot be run
    resolution: int = 256  # training pixel resolution; latents are resolution/8 (not a weight property)

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"down_block_types ({len(self.down_block_types)}) and up_block_types "
                f"({len(self.up_block_types)}) must both have one entry per block_out_channels ({n})"
            )
        for kind in self.down_block_types:
            if kind not in (CROSS_ATTN_DOWN, PLAIN_DOWN):
                raise ValueError(f"unsupported down block type {kind!r}")
        for kind in self.up_block_types:
            if kind not in (CROSS_ATTN_UP, PLAIN_UP):
                raise ValueError(f"unsupported up block type {kind!r}")
        for ch in self.block_out_channels:
            if ch % self.norm_num_groups or ch % self.num_heads or ch % self.motion_num_heads:
                raise ValueError(
                    f"channel count {ch} must be divisible by norm_num_groups={self.norm_num_groups}, "
                    f"num_heads={self.num_heads} and motion_num_heads={self.motion_num_heads}"
                )

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    @property
    def latent_size(self) -> int:
        return self.resolution // 8

    def down_has_motion(self, index: int) -> bool:
        return self.use_motion_module and 2**index in self.motion_module_resolutions

    def up_has_motion(self, index: int) -> bool:
        return self.use_motion_module and 2 ** (len(self.block_out_channels) - 1 - index) in self.motion_module_resolutions

    @classmethod
    def from_official(cls, model: Mapping[str, Any], resolution: int = 256) -> UNetConfig:
        """Build from an official yaml `model:` section (or the golden's `tiny_config`).

        Args:
            model: the mapping of UNet3DConditionModel config keys.
            resolution: the yaml's `data.resolution` (256 for 1.5, 512 for 1.6).
        """
        # Values this implementation hard-wires; anything else would change the weights or the math.
        fixed = {
            "act_fn": "silu",
            "add_audio_layer": True,
            "center_input_sample": False,
            "downsample_padding": 1,
            "mid_block_scale_factor": 1,
            "mid_block_type": MID_BLOCK,
            "resnet_time_scale_shift": "default",
            "motion_module_mid_block": False,
            "motion_module_decoder_only": False,
            "motion_module_type": "Vanilla",
            "use_linear_projection": False,
            "use_inflated_groupnorm": False,
            "dual_cross_attention": False,
            "only_cross_attention": False,
            "upcast_attention": False,
            "unet_use_cross_frame_attention": False,
            "unet_use_temporal_attention": False,
        }
        bad = [f"{k}={model[k]!r} (need {v!r})" for k, v in fixed.items() if k in model and model[k] != v]
        mm = dict(model.get("motion_module_kwargs") or {})
        mm_fixed = {
            "num_transformer_block": 1,
            "attention_block_types": ["Temporal_Self", "Temporal_Self"],
            "temporal_position_encoding": True,
            "temporal_attention_dim_div": 1,
        }
        for k, v in mm_fixed.items():
            got = mm.get(k, v)
            if (list(got) if isinstance(v, list) else got) != v:
                bad.append(f"motion_module_kwargs.{k}={got!r} (need {v!r})")
        if bad:
            raise ValueError("unsupported LatentSync UNet options: " + "; ".join(bad))
        defaults = cls()
        return cls(
            in_channels=int(model.get("in_channels", defaults.in_channels)),
            out_channels=int(model.get("out_channels", defaults.out_channels)),
            block_out_channels=tuple(int(c) for c in model.get("block_out_channels", defaults.block_out_channels)),
            layers_per_block=int(model.get("layers_per_block", defaults.layers_per_block)),
            down_block_types=tuple(model.get("down_block_types", defaults.down_block_types)),
            up_block_types=tuple(model.get("up_block_types", defaults.up_block_types)),
            num_heads=int(model.get("attention_head_dim", defaults.num_heads)),
            cross_attention_dim=int(model.get("cross_attention_dim", defaults.cross_attention_dim)),
            norm_num_groups=int(model.get("norm_num_groups", defaults.norm_num_groups)),
            norm_eps=float(model.get("norm_eps", defaults.norm_eps)),
            flip_sin_to_cos=bool(model.get("flip_sin_to_cos", defaults.flip_sin_to_cos)),
            freq_shift=int(model.get("freq_shift", defaults.freq_shift)),
            use_motion_module=bool(model.get("use_motion_module", defaults.use_motion_module)),
            motion_module_resolutions=tuple(
                int(r) for r in model.get("motion_module_resolutions", defaults.motion_module_resolutions)
            ),
            motion_num_heads=int(mm.get("num_attention_heads", defaults.motion_num_heads)),
            motion_pe_max_len=int(mm.get("temporal_position_encoding_max_len", defaults.motion_pe_max_len)),
            resolution=resolution,
        )


# LatentSync 1.5: configs/unet/stage2.yaml, 256 px faces, latents 32x32.
UNET_V15 = UNetConfig(resolution=256)
# LatentSync 1.6: configs/unet/stage2_512.yaml, same network, 512 px faces, latents 64x64.
UNET_V16 = UNetConfig(resolution=512)


def unet_config(version: str) -> UNetConfig:
    """The full-size config of a released checkpoint: version "1.5" or "1.6"."""
    configs = {"1.5": UNET_V15, "1.6": UNET_V16}
    if version not in configs:
        raise ValueError(f"unknown LatentSync version {version!r}; expected one of {sorted(configs)}")
    return configs[version]


def tiny_unet_config() -> UNetConfig:
    """The tiny random variant the parity goldens were generated with (all block types, 8 heads, PE 24)."""
    return replace(UNET_V15, block_out_channels=(32, 32, 32, 32), layers_per_block=1, cross_attention_dim=64, resolution=64)
