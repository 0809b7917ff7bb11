"""Sizes of LivePortrait's five networks (F, M, W, G, S) and how to obtain them.

Defaults are the official full-size release (`src/config/models.yaml`). A `config.json` beside
the checkpoints uses the same layout as models.yaml's `model_params` (see `to_dict`), with two
additions for M: `depths` and `dims` of its ConvNeXt-V2 backbone (the official file only names
`backbone: convnextv2_tiny`, which fixes them).

`infer_config` reads the sizes back from checkpoint state dicts. Where shapes only fix a product
or a cap, it picks the official convention and says so (see its docstring); every inferred config
builds networks whose state dicts have exactly the shapes given.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

# The official backbone names and their (depths, dims).
CONVNEXT_BACKBONES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "convnextv2_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
}


@dataclass
class AppearanceConfig:
    """F: 2D encoder to a (reshape_channel x reshape_depth x H/4 x W/4) feature volume."""

    image_channel: int = 3
    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6


@dataclass
class MotionConfig:
    """M: ConvNeXt-V2 backbone with keypoint, pose-bin, translation, expression, scale heads."""

    num_kp: int = 21
    backbone: str = "convnextv2_tiny"
    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)
    num_bins: int = 66
    in_chans: int = 3


@dataclass
class DenseMotionConfig:
    """W's dense-motion 3D hourglass (deformation field and occlusion map)."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4


@dataclass
class WarpingConfig:
    """W: warps F's volume by the keypoint motion and flattens it to a 2D feature map."""

    num_kp: int = 21
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    estimate_occlusion_map: bool = True
    dense_motion_params: DenseMotionConfig = field(default_factory=DenseMotionConfig)


@dataclass
class SpadeConfig:
    """G: SPADE decoder. `out_channels` is fixed at 64 by the official code (not in models.yaml)."""

    upscale: int = 2
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    out_channels: int = 64

    @property
    def input_channels(self) -> int:
        return min(self.max_features, self.block_expansion * 2 ** self.num_down_blocks)


@dataclass
class MLPConfig:
    """One of S's plain ReLU MLPs."""

    input_size: int
    hidden_sizes: tuple[int, ...]
    output_size: int


def _stitching_default() -> MLPConfig:
    return MLPConfig(126, (128, 128, 64), 65)  # (x_s, x_d) -> 63 exp deltas + (tx, ty)


def _lip_default() -> MLPConfig:
    return MLPConfig(65, (128, 128, 64), 63)  # (x_s, 2 lip ratios) -> 63 deltas


def _eye_default() -> MLPConfig:
    return MLPConfig(66, (256, 256, 128, 128, 64), 63)  # (x_s, 3 eye ratios) -> 63 deltas


@dataclass
class StitchingConfig:
    """S: the stitching MLP and the lip and eye retargeting MLPs."""

    stitching: MLPConfig = field(default_factory=_stitching_default)
    lip: MLPConfig = field(default_factory=_lip_default)
    eye: MLPConfig = field(default_factory=_eye_default)


# Our field name -> the models.yaml key, per network.
_SECTIONS = {
    "appearance": "appearance_feature_extractor_params",
    "motion": "motion_extractor_params",
    "warping": "warping_module_params",
    "spade": "spade_generator_params",
    "stitching": "stitching_retargeting_module_params",
}


def _build(cls, data: Mapping[str, Any]):
    """A flat dataclass from a dict: unknown keys rejected (a typo must not pass silently)."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    values = {}
    for k, v in data.items():
        values[k] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


@dataclass
class LivePortraitConfig:
    """The sizes of all five networks."""

    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    warping: WarpingConfig = field(default_factory=WarpingConfig)
    spade: SpadeConfig = field(default_factory=SpadeConfig)
    stitching: StitchingConfig = field(default_factory=StitchingConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LivePortraitConfig:
        """From models.yaml's `model_params` layout (or a dict wrapping it as `model_params`).
        Missing sections and keys keep the full-size defaults."""
        data = data.get("model_params", data)
        out = cls()
        if (d := data.get(_SECTIONS["appearance"])) is not None:
            out.appearance = _build(AppearanceConfig, d)
        if (d := data.get(_SECTIONS["motion"])) is not None:
            d = dict(d)
            backbone = d.get("backbone", "convnextv2_tiny")
            if "depths" not in d or "dims" not in d:
                if backbone not in CONVNEXT_BACKBONES:
                    raise ValueError(
                        f"motion extractor backbone {backbone!r} needs explicit depths and dims")
                depths, dims = CONVNEXT_BACKBONES[backbone]
                d.setdefault("depths", depths)
                d.setdefault("dims", dims)
            out.motion = _build(MotionConfig, d)
        if (d := data.get(_SECTIONS["warping"])) is not None:
            d = dict(d)
            dense = _build(DenseMotionConfig, d.pop("dense_motion_params", {}))
            out.warping = _build(WarpingConfig, {**d, "dense_motion_params": dense})
        if (d := data.get(_SECTIONS["spade"])) is not None:
            out.spade = _build(SpadeConfig, d)
        if (d := data.get(_SECTIONS["stitching"])) is not None:
            default = StitchingConfig()
            out.stitching = StitchingConfig(**{
                name: _build(MLPConfig, d[name]) if name in d else getattr(default, name)
                for name in ("stitching", "lip", "eye")
            })
        return out

    def to_dict(self) -> dict[str, Any]:
        """models.yaml's `model_params` layout (lists for sequences), JSON-ready."""
        def plain(obj):
            return {k: list(v) if isinstance(v, tuple) else (plain(v) if isinstance(v, dict) else v)
                    for k, v in obj.items()}
        return {section: plain(asdict(getattr(self, ours))) for ours, section in _SECTIONS.items()}


# ---- inference from checkpoint shapes ---------------------------------------------------------

def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    """How many distinct indices N match `pattern` (a regex with one group for N)."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.fullmatch(k))})


def _infer_appearance(sd: Mapping[str, torch.Tensor]) -> AppearanceConfig:
    first = sd["first.conv.weight"]
    max_features = sd["second.weight"].shape[0]
    num_res = _count(sd, r"resblocks_3d\.3dr(\d+)\.conv1\.weight")
    cfg = AppearanceConfig(
        image_channel=first.shape[1], block_expansion=first.shape[0],
        num_down_blocks=_count(sd, r"down_blocks\.(\d+)\.conv\.weight"),
        max_features=max_features, num_resblocks=num_res)
    if num_res:
        # The volume is `second`'s output viewed as channel x depth, so the depth follows.
        cfg.reshape_channel = sd["resblocks_3d.3dr0.conv1.weight"].shape[0]
        cfg.reshape_depth = max_features // cfg.reshape_channel
    return cfg


def _infer_motion(sd: Mapping[str, torch.Tensor]) -> MotionConfig:
    p = "detector."
    num_stages = _count(sd, r"detector\.stages\.(\d+)\.0\.dwconv\.weight")
    depths = tuple(_count(sd, rf"detector\.stages\.{i}\.(\d+)\.dwconv\.weight")
                   for i in range(num_stages))
    dims = tuple(sd[f"{p}stages.{i}.0.dwconv.weight"].shape[0] for i in range(num_stages))
    backbone = next((name for name, (d, w) in CONVNEXT_BACKBONES.items()
                     if (d, w) == (depths, dims)), "custom")
    return MotionConfig(
        num_kp=sd[f"{p}fc_kp.weight"].shape[0] // 3, backbone=backbone, depths=depths, dims=dims,
        num_bins=sd[f"{p}fc_pitch.weight"].shape[0],
        in_chans=sd[f"{p}downsample_layers.0.0.weight"].shape[1])


def _infer_warping(sd: Mapping[str, torch.Tensor]) -> WarpingConfig:
    p = "dense_motion_network."
    enc = p + "hourglass.encoder.down_blocks.{}.conv.weight"
    num_blocks = _count(sd, re.escape(p) + r"hourglass\.encoder\.down_blocks\.(\d+)\.conv\.weight")
    in_features = sd[enc.format(0)].shape[1]
    decoder_out = sd[p + "hourglass.decoder.conv.weight"].shape[0]
    occlusion = sd.get(p + "occlusion.weight")
    dense = DenseMotionConfig(
        # The decoder's last conv sees the first up-block's output and the hourglass input.
        block_expansion=decoder_out - in_features,
        # The deepest encoder width is the cap actually reached; any larger cap is equivalent.
        max_features=max(sd[enc.format(i)].shape[0] for i in range(num_blocks)),
        num_blocks=num_blocks,
        compress=sd[p + "compress.weight"].shape[0],
        reshape_depth=(occlusion.shape[1] // decoder_out if occlusion is not None
                       else DenseMotionConfig.reshape_depth))
    third = sd["third.conv.weight"]
    width = third.shape[0]
    # Only block_expansion * 2**num_down_blocks is visible; keep the official 2 down blocks.
    num_down = WarpingConfig.num_down_blocks
    return WarpingConfig(
        num_kp=sd[p + "mask.weight"].shape[0] - 1, block_expansion=width // 2 ** num_down,
        max_features=third.shape[1], num_down_blocks=num_down,
        reshape_channel=sd[p + "compress.weight"].shape[1],
        estimate_occlusion_map=occlusion is not None, dense_motion_params=dense)


def _infer_spade(sd: Mapping[str, torch.Tensor]) -> SpadeConfig:
    input_channels = sd["fc.weight"].shape[1]
    img_key = "conv_img.0.weight" if "conv_img.0.weight" in sd else "conv_img.weight"
    num_down = SpadeConfig.num_down_blocks
    # Only min(max_features, block_expansion * 2**n) is visible: keep n = 2 and the official
    # cap of twice the input width (any cap >= the width builds the same network).
    return SpadeConfig(
        upscale=2 if sd[img_key].shape[0] == 12 else 1,
        block_expansion=input_channels // 2 ** num_down, max_features=2 * input_channels,
        num_down_blocks=num_down, out_channels=sd[img_key].shape[1])


def _infer_mlp(sd: Mapping[str, torch.Tensor]) -> MLPConfig:
    n = _count(sd, r"mlp\.(\d+)\.weight")
    shapes = [sd[f"mlp.{2 * i}.weight"].shape for i in range(n)]
    return MLPConfig(input_size=shapes[0][1], hidden_sizes=tuple(s[0] for s in shapes[:-1]),
                     output_size=shapes[-1][0])


def infer_config(state_dicts: Mapping[str, Any]) -> LivePortraitConfig:
    """The config whose networks have the shapes of `state_dicts`, keyed F, M, W, G, S (S: our
    {stitching, lip, eye} or the official {retarget_shoulder, retarget_mouth, retarget_eye},
    prefixes already stripped). Absent networks keep the defaults.

    Determined exactly by shapes: F (all fields; reshape_depth = max_features / reshape_channel),
    M (depths, dims, num_kp, num_bins), W's dense motion (block_expansion, num_blocks, compress,
    reshape_depth from the occlusion conv, occlusion on/off), W's widths, G's widths, S's MLPs.
    Not visible, so set by convention: W's and G's split of width into block_expansion x
    2**num_down_blocks (num_down_blocks kept at 2), G's max_features (2 x its input width) and
    dense motion's max_features (the widest encoder block) - equivalent networks either way.
    """
    cfg = LivePortraitConfig()
    if "F" in state_dicts:
        cfg.appearance = _infer_appearance(state_dicts["F"])
    if "M" in state_dicts:
        cfg.motion = _infer_motion(state_dicts["M"])
    if "W" in state_dicts:
        cfg.warping = _infer_warping(state_dicts["W"])
    if "G" in state_dicts:
        cfg.spade = _infer_spade(state_dicts["G"])
    if "S" in state_dicts:
        s = state_dicts["S"]
        names = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}
        cfg.stitching = StitchingConfig(**{
            ours: _infer_mlp(s[ours] if ours in s else s[official])
            for ours, official in names.items()})
    return cfg
