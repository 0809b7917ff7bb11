"""The quality presets, in one table: each preset's x264 CRF and speed preset, and the words
clients may use for it (lipsync_only's fast | standard | high are aliases of draft | standard |
premium). The API validates `quality` against it, the finisher encodes with it; a model stage
chooses its own settings per preset name (LatentSync: lipsync/latentsync/pipeline.py)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncodePreset:
    name: str            # draft | standard | premium | cinematic
    crf: int             # x264 constant rate factor: lower is better and bigger
    x264_preset: str     # x264 speed/efficiency preset


PRESETS: dict[str, EncodePreset] = {
    "draft": EncodePreset("draft", 28, "ultrafast"),
    "standard": EncodePreset("standard", 23, "medium"),
    "premium": EncodePreset("premium", 18, "slow"),
    "cinematic": EncodePreset("cinematic", 15, "veryslow"),
}

# lipsync_only's public quality names are aliases of the render presets.
ALIASES = {"fast": "draft", "high": "premium"}


# Every word a client may send as `quality`.
QUALITY_NAMES = (*PRESETS, *ALIASES)


def preset_name(quality: str) -> str:
    """The preset a quality word names (aliases resolved); ValueError naming the choices."""
    return encode_preset(quality).name


def encode_preset(quality: str) -> EncodePreset:
    """The preset for a quality name or alias; ValueError naming the choices otherwise."""
    name = ALIASES.get(quality, quality)
    if name not in PRESETS:
        choices = ", ".join([*PRESETS, *ALIASES])
        raise ValueError(f"unknown quality {quality!r}: expected one of {choices}")
    return PRESETS[name]
