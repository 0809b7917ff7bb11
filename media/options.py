"""What a finished video is made of, typed once: captions, their style, ducking, SFX placements and
the finish options that hold them. The API schema (serve_app/schemas.py), the finisher's stage
request (stages/contracts.py) and finish_video all use these same classes, so a value the API
accepts is one the finisher renders, and nothing is re-spelt as a dict on the way.

They are pydantic dataclasses: positional and frozen like plain dataclasses, validated on
construction, and published in the OpenAPI schema. Unknown fields are refused. Every number is
finite (no inf/NaN: JSON's 1e309 parses as inf) and bounded on both sides; the bounds are the
constants below, and tests/hardening/test_numeric_bounds.py walks the schema to hold that.

Media locations (`FinishOptions.music`, `.ambience`, `SfxTrack.url`) are strings whose meaning
follows the layer that holds them: the client's URL or base64 in an API request, a storage key
once the ingress stored the input, a local file for finish_video (`FinishOptions.with_media`
maps one to the next).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from pydantic import ConfigDict, Field, TypeAdapter, field_validator, model_validator
from pydantic.dataclasses import dataclass

from media.captions import ass_colour

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
MAX_CAPTION_CHARS = 2000
MAX_MEDIA_TIME_S = 3600       # caption and SFX times (the voice is at most 600 s: serve_app.inputs)
MAX_SFX_START_S = MAX_MEDIA_TIME_S
MAX_SFX_VOLUME = 4
MAX_BED_VOLUME = 4
MAX_OUTPUT_SIDE = 8192        # the API's own format limit is lower (serve_app.schemas)
MAX_FPS = 240                 # media.picture.fps_fraction's range
MAX_THREADS = 256


@dataclass(frozen=True, config=_STRICT)
class Caption:
    text: str = Field(max_length=MAX_CAPTION_CHARS)
    start: float = Field(ge=0, le=MAX_MEDIA_TIME_S, allow_inf_nan=False,
                         description="seconds from the start")
    end: float = Field(gt=0, le=MAX_MEDIA_TIME_S, allow_inf_nan=False,
                       description="seconds; after start")

    @model_validator(mode="after")
    def _ordered(self):
        if self.end <= self.start:
            raise ValueError(f"caption {self.text[:30]!r} needs 0 <= start < end, got "
                             f"[{self.start}, {self.end}]")
        return self


@dataclass(frozen=True, config=_STRICT)
class CaptionStyle:
    font_size: int = Field(48, ge=8, le=300, description="pixels at a 1080-wide frame; "
                           "scaled with the output width")
    color: str = Field("white", max_length=32, description="CSS name, #RGB, #RRGGBB or #RRGGBBAA")
    stroke_color: str = Field("black", max_length=32, description="same forms as `color`")
    stroke_width: float = Field(2, ge=0, le=20, description="outline px on a 1080-wide frame")
    position_y: float = Field(0.75, gt=0, le=1, description="bottom of the caption block, as a "
                              "fraction of frame height (kept inside the safe area)")

    @field_validator("color", "stroke_color")
    @classmethod
    def _known_colour(cls, v: str) -> str:
        ass_colour(v)       # the renderer's own parser: what passes here renders there
        return v


@dataclass(frozen=True, config=_STRICT)
class Ducking:
    base_volume: float = Field(0.15, ge=0, le=1, description="music/ambience gain under speech "
                               "(linear; 0.15 = -16.5 dB)")
    attack_ms: float = Field(50, ge=1, le=5000, description="ramp down once speech starts")
    release_ms: float = Field(300, ge=1, le=10000, description="ramp back up once the hold ends")
    hold_ms: float = Field(100, ge=0, le=5000, description="stay down this long after speech "
                           "stops before the release starts (bridges the gaps between words; "
                           "0 = release as soon as the voice stops)")


@dataclass(frozen=True, config=_STRICT)
class SfxTrack:
    url: str = Field(min_length=1, description="where the sound is: https URL, base64 or data: "
                     "URI from a client; a storage key or a local file inside the service")
    start_time: float = Field(0.0, ge=0, le=MAX_SFX_START_S, allow_inf_nan=False,
                              description="seconds from the start of the voice")
    volume: float = Field(1.0, ge=0, le=MAX_SFX_VOLUME, allow_inf_nan=False)


@dataclass(frozen=True, config=_STRICT)
class FinishOptions:
    width: int | None = Field(None, ge=2, le=MAX_OUTPUT_SIDE)   # None = keep the source size
    height: int | None = Field(None, ge=2, le=MAX_OUTPUT_SIDE)
    fps: float = Field(30, gt=0, le=MAX_FPS, allow_inf_nan=False)
    quality: str = "standard"          # a preset name or alias (media.presets)
    music: str | None = None           # media location (see the module docstring)
    music_volume: float = Field(1.0, ge=0, le=MAX_BED_VOLUME, allow_inf_nan=False)
    ambience: str | None = None
    ambience_volume: float = Field(1.0, ge=0, le=MAX_BED_VOLUME, allow_inf_nan=False)
    sfx: tuple[SfxTrack, ...] = ()
    captions: tuple[Caption, ...] = ()
    caption_style: CaptionStyle = CaptionStyle()
    ducking: Ducking = Ducking()
    normalize_loudness: bool = True    # -14 LUFS integrated, true peak <= -1 dBTP, two-pass
    write_srt: bool = True
    write_audio: bool = False          # also the final mix alone, as AAC in final.m4a
    threads: int = Field(0, ge=0, le=MAX_THREADS)   # x264/ffmpeg threads; 0 = ffmpeg decides

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FinishOptions":
        """From plain JSON-like data (a CLI, a config file); unknown keys raise ValueError."""
        return _ADAPTER.validate_python(data)

    def media(self) -> list[str]:
        """Every media location these options refer to (beds, then SFX in order)."""
        return [m for m in (self.music, self.ambience) if m] + [s.url for s in self.sfx]

    def with_media(self, resolve: Callable[[str], str]) -> "FinishOptions":
        """A copy whose media locations went through `resolve` (e.g. storage key -> local file)."""
        return dataclasses.replace(
            self, music=resolve(self.music) if self.music else None,
            ambience=resolve(self.ambience) if self.ambience else None,
            sfx=tuple(dataclasses.replace(s, url=resolve(s.url)) for s in self.sfx))


_ADAPTER = TypeAdapter(FinishOptions)
