"""Loading LivePortrait's five official checkpoint files into our networks, strictly.

Layout under a models dir (as on the Hugging Face repo KwaiVGI/LivePortrait):

    liveportrait/base_models/appearance_feature_extractor.pth   F   flat state dict
    liveportrait/base_models/motion_extractor.pth               M   flat state dict
    liveportrait/base_models/warping_module.pth                 W   flat state dict
    liveportrait/base_models/spade_generator.pth                G   flat state dict
    liveportrait/retargeting_models/stitching_retargeting_module.pth
        S: {retarget_shoulder, retarget_mouth, retarget_eye} -> state dicts whose keys may
        carry a DDP `module.` prefix

Networks are built on the meta device and the file's tensors assigned in place (no random
init, no second copy). Any missing, unexpected or mis-shaped key fails with a `CheckpointError`
naming the file and the keys. The sizes come from `liveportrait/config.json` when present
(models.yaml's layout, see config.py), else from the checkpoint shapes, else full size.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from enhance.weights import state_dict_mismatch

from .appearance import AppearanceFeatureExtractor
from .config import LivePortraitConfig, infer_config
from .keypoints import KpInfo, refine_kp_info
from .motion import MotionExtractor
from .spade import SPADEDecoder
from .stitching import StitchingRetargeting
from .warping import WarpingNetwork

# Relative paths under a models dir, per network (for a weights registry).
LIVEPORTRAIT_FILES: dict[str, str] = {
    "F": "liveportrait/base_models/appearance_feature_extractor.pth",
    "M": "liveportrait/base_models/motion_extractor.pth",
    "W": "liveportrait/base_models/warping_module.pth",
    "G": "liveportrait/base_models/spade_generator.pth",
    "S": "liveportrait/retargeting_models/stitching_retargeting_module.pth",
}
CONFIG_FILE = "liveportrait/config.json"
# The official S checkpoint's keys -> our StitchingRetargeting attributes.
S_CHECKPOINT_KEYS: dict[str, str] = {
    "retarget_shoulder": "stitching",
    "retarget_mouth": "lip",
    "retarget_eye": "eye",
}
# How many offending keys an error message lists per kind (the counts are always given).
_SHOWN_KEYS = 4


class CheckpointError(ValueError):
    """A checkpoint file that does not match the network it is loaded into."""


@dataclass
class LivePortraitModels:
    """The five networks, in eval mode with frozen weights, and their sizes.

    Per source: `feature_3d = models.F(image)` and `kp_info = models.kp_info(image)` once;
    per batch of driving keypoints: `models.warp_decode(feature_3d, x_s, x_d)`.
    """

    F: AppearanceFeatureExtractor
    M: MotionExtractor
    W: WarpingNetwork
    G: SPADEDecoder
    S: StitchingRetargeting
    config: LivePortraitConfig

    def networks(self) -> dict[str, nn.Module]:
        return {"F": self.F, "M": self.M, "W": self.W, "G": self.G, "S": self.S}

    def kp_info(self, image: torch.Tensor) -> KpInfo:
        """M on (B, 3, 256, 256) RGB in 0..1, refined (see keypoints.py)."""
        return refine_kp_info(self.M(image))

    def warp_decode(self, feature_3d: torch.Tensor, x_s: torch.Tensor,
                    x_d: torch.Tensor) -> dict[str, torch.Tensor]:
        """W then G for B driving keypoint sets x_d (B, N, 3) of one source (feature_3d and x_s
        with batch 1 or B). Returns W's dict with `out` replaced by G's image (B, 3, 512, 512)
        in 0..1 and W's 2D map kept as `feature`."""
        b = x_d.shape[0]
        feature_3d = feature_3d.expand(b, *feature_3d.shape[1:])
        warped = self.W(feature_3d, kp_source=x_s.expand(b, -1, -1), kp_driving=x_d)
        return {**warped, "feature": warped["out"], "out": self.G(warped["out"])}


def build_models(config: LivePortraitConfig | None = None,
                 device: torch.device | str = "meta") -> LivePortraitModels:
    """Fresh networks of `config`'s sizes (default full size). On the meta device (default)
    nothing is allocated; load weights with assign=True."""
    config = config or LivePortraitConfig()
    with torch.device(device):
        return LivePortraitModels(
            F=AppearanceFeatureExtractor(config.appearance), M=MotionExtractor(config.motion),
            W=WarpingNetwork(config.warping), G=SPADEDecoder(config.spade),
            S=StitchingRetargeting(config.stitching), config=config)


def export_state_dicts(models: LivePortraitModels) -> dict[str, Any]:
    """Our networks' weights as the official files' payloads, keyed F, M, W, G, S."""
    out: dict[str, Any] = {tag: getattr(models, tag).state_dict() for tag in ("F", "M", "W", "G")}
    out["S"] = {official: getattr(models.S, ours).state_dict()
                for official, ours in S_CHECKPOINT_KEYS.items()}
    return out


def write_official_checkpoints(models_dir: str | Path, state_dicts: Mapping[str, Any],
                               config: LivePortraitConfig | None = None) -> dict[str, Path]:
    """Write the five files in exactly the official layout (torch.save), e.g. from
    `export_state_dicts`. With `config`, also write liveportrait/config.json."""
    root = Path(models_dir)
    written = {}
    for tag, rel in LIVEPORTRAIT_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state_dicts[tag], path)
        written[tag] = path
    if config is not None:
        (root / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=1))
    return written


def missing_liveportrait_files(models_dir: str | Path) -> list[str]:
    """The relative paths of LIVEPORTRAIT_FILES absent under models_dir."""
    root = Path(models_dir)
    return [rel for rel in LIVEPORTRAIT_FILES.values() if not (root / rel).is_file()]


def find_liveportrait(models_dir: str | Path) -> bool:
    """True when all five official files are present under models_dir."""
    return not missing_liveportrait_files(models_dir)


def _strip_ddp(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        # Files in torch's legacy (pre-zip) format cannot be memory-mapped.
        return torch.load(path, map_location="cpu", weights_only=True)


def read_official_checkpoints(models_dir: str | Path) -> dict[str, Any]:
    """The five payloads from disk (CPU, memory-mapped), S's MLPs under our names
    {stitching, lip, eye} with `module.` prefixes removed."""
    root = Path(models_dir)
    missing = missing_liveportrait_files(root)
    if missing:
        raise FileNotFoundError(f"LivePortrait checkpoints missing under {root}: {missing}")
    payloads = {}
    for tag, rel in LIVEPORTRAIT_FILES.items():
        obj = _torch_load(root / rel)
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{rel}: expected a state dict, got {type(obj).__name__}")
        if tag == "S":
            absent = [k for k in S_CHECKPOINT_KEYS if not isinstance(obj.get(k), Mapping)]
            if absent:
                raise CheckpointError(
                    f"{rel}: expected state dicts under {list(S_CHECKPOINT_KEYS)}; missing "
                    f"{absent} (top-level keys: {list(obj)[:_SHOWN_KEYS]}, {len(obj)} in all)")
            obj = {ours: _strip_ddp(obj[off]) for off, ours in S_CHECKPOINT_KEYS.items()}
        payloads[tag] = obj
    return payloads


def check_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise CheckpointError naming `where` and the missing, unexpected and mis-shaped keys
    when state_dict does not fit module exactly (the wording every loader of ours uses:
    enhance.weights.state_dict_mismatch)."""
    problem = state_dict_mismatch(module, dict(state_dict))
    if problem:
        raise CheckpointError(f"{where} does not fit {type(module).__name__}: {problem}")


def _resolve_config(root: Path, payloads: Mapping[str, Any]) -> LivePortraitConfig:
    path = root / CONFIG_FILE
    if path.is_file():
        return LivePortraitConfig.from_dict(json.loads(path.read_text()))
    try:
        return infer_config(payloads)
    except (KeyError, IndexError, ZeroDivisionError):
        # Shapes too unusual to read sizes from: build full size and let the strict check
        # report what does not fit.
        return LivePortraitConfig()


def load_liveportrait(models_dir: str | Path, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32,
                      config: LivePortraitConfig | None = None) -> LivePortraitModels:
    """Load F, M, W, G, S from the official files under models_dir onto device in dtype (BN
    step counters stay int64), strictly; eval mode, no grad, G's spectral norms folded."""
    root = Path(models_dir)
    payloads = read_official_checkpoints(root)
    config = config or _resolve_config(root, payloads)
    models = build_models(config, "meta")
    for tag, rel in LIVEPORTRAIT_FILES.items():
        module = getattr(models, tag)
        if tag == "S":
            for official, ours in S_CHECKPOINT_KEYS.items():
                check_state_dict(getattr(module, ours), payloads["S"][ours], f"{rel} [{official}]")
        else:
            check_state_dict(module, payloads[tag], rel)
    for tag in ("F", "M", "W", "G"):
        getattr(models, tag).load_state_dict(payloads[tag], strict=True, assign=True)
    for ours in S_CHECKPOINT_KEYS.values():
        getattr(models.S, ours).load_state_dict(payloads["S"][ours], strict=True, assign=True)
    for net in models.networks().values():
        net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    models.G.fold_spectral_norm()
    return models
