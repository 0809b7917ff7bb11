"""The API contract (SPEC.md §1) as pydantic v2 models: they validate requests and are the
OpenAPI schema served at /docs.

Inputs forbid unknown fields, so a typo ("captons") is a 400 naming it instead of a silent no-op.
"""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from media.captions import ass_colour
from serve_app.ids import check_id

# quality (client word) -> render preset (SPEC.md quality table)
QUALITY_PRESETS = {
    "draft": "draft", "standard": "standard", "premium": "premium", "cinematic": "cinematic",
    "fast": "draft", "high": "premium",
}
PRESET_X264 = {  # preset -> (CRF, x264 preset)
    "draft": (28, "ultrafast"), "standard": (23, "medium"),
    "premium": (18, "slow"), "cinematic": (15, "veryslow"),
}
MAX_FRAME_SIDE = 3840
MAX_CAPTIONS = 500
MAX_SFX = 64
# The framings the take renderer knows (personas.takes.ANGLES, which imports torch: too heavy
# for the ingress; tests/app/test_render_schema.py keeps the two equal).
TakeAngle = Literal["front", "three_quarter", "closeup"]
FaceRestoreWeight = Annotated[float, Field(
    ge=0, le=1, description="face-restore strength: 0 keeps the lip-synced face, 1 is the fully "
    "restored face (GFPGAN `weight`)")]


class JobType(str, Enum):
    lipsync_only = "lipsync_only"
    video_render = "video_render"
    persona_build = "persona_build"


class JobStatus(str, Enum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED,
                        JobStatus.TIMED_OUT)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Media = Annotated[str, Field(min_length=1, description="https URL, base64, or data: URI")]
FaceBox = Annotated[list[float], Field(min_length=4, max_length=4,
                                       description="[x0, y0, x1, y1] in image pixels")]


def _check_face_box(box: list[float] | None) -> list[float] | None:
    if box is not None and not (box[2] > box[0] and box[3] > box[1] and min(box) >= 0):
        raise ValueError("face_box must be [x0, y0, x1, y1] with x1 > x0, y1 > y0, all >= 0")
    return box


class _Quality(_Strict):
    quality: str = Field("standard", description="draft | standard | premium | cinematic "
                         "(lipsync aliases: fast | standard | high)")

    @field_validator("quality")
    @classmethod
    def _known_quality(cls, v: str) -> str:
        if v not in QUALITY_PRESETS:
            raise ValueError(f"unknown quality {v!r}; use one of {sorted(QUALITY_PRESETS)}")
        return v

    @property
    def preset(self) -> str:
        return QUALITY_PRESETS[self.quality]


class LipsyncOnlyInput(_Quality):
    job_type: Literal["lipsync_only"]
    job_id: str
    image: Media
    audio: Media
    face_box: FaceBox | None = Field(None, description="fallback when no face is detected "
                                     "(stylised characters)")

    _id = field_validator("job_id")(lambda v: check_id(v, "job_id"))
    _box = field_validator("face_box")(_check_face_box)


class SfxTrack(_Strict):
    url: Media
    start_time: float = Field(0.0, ge=0, le=3600)
    volume: float = Field(1.0, ge=0, le=4)


class Caption(_Strict):
    text: str = Field(max_length=2000)
    start: float = Field(ge=0)
    end: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.end <= self.start:
            raise ValueError(f"caption end ({self.end}) must be after start ({self.start})")
        return self


class CaptionStyle(_Strict):
    font_size: int = Field(48, ge=8, le=300, description="pixels at a 1080-wide frame")
    color: str = Field("white", max_length=32, description="CSS name, #RGB, #RRGGBB or #RRGGBBAA")
    stroke_color: str = Field("black", max_length=32, description="same forms as `color`")
    stroke_width: float = Field(2, ge=0, le=20)
    position_y: float = Field(0.75, gt=0, le=1, description="bottom of the caption block, as a "
                              "fraction of frame height (kept inside the safe area)")

    @field_validator("color", "stroke_color")
    @classmethod
    def _known_colour(cls, v: str) -> str:
        ass_colour(v)       # the finisher's own parser: what passes here renders there
        return v


class OutputFormat(_Strict):
    width: int = Field(1080, ge=64, le=MAX_FRAME_SIDE)
    height: int = Field(1920, ge=64, le=MAX_FRAME_SIDE)
    fps: float = Field(30, ge=1, le=60)

    @model_validator(mode="after")
    def _even(self):
        if self.width % 2 or self.height % 2:
            raise ValueError("format width and height must be even (yuv420p)")
        return self


class DuckingConfig(_Strict):
    base_volume: float = Field(0.15, ge=0, le=1, description="music/ambience gain under speech")
    attack_ms: float = Field(50, ge=1, le=5000, description="ramp down once speech starts")
    release_ms: float = Field(300, ge=1, le=10000, description="ramp back up once the hold ends")
    hold_ms: float = Field(100, ge=0, le=5000, description="stay down this long after speech "
                           "stops before the release starts (bridges the gaps between words; "
                           "0 = release as soon as the voice stops)")


class VideoRenderInput(_Quality):
    job_type: Literal["video_render"]
    job_id: str
    image: Media | None = None
    audio: Media
    persona_id: str | None = None
    take_id: str | None = None
    face_box: FaceBox | None = None
    music_url: Media | None = None
    ambience_url: Media | None = None
    sfx_tracks: list[SfxTrack] = Field(default_factory=list, max_length=MAX_SFX)
    captions: list[Caption] = Field(default_factory=list, max_length=MAX_CAPTIONS)
    caption_style: CaptionStyle = Field(default_factory=CaptionStyle)
    format: OutputFormat = Field(default_factory=OutputFormat)
    ducking_config: DuckingConfig = Field(default_factory=DuckingConfig)
    face_restore_weight: FaceRestoreWeight = 0.5

    _id = field_validator("job_id")(lambda v: check_id(v, "job_id"))
    _pid = field_validator("persona_id")(lambda v: v if v is None else check_id(v, "persona_id"))
    _tid = field_validator("take_id")(lambda v: v if v is None else check_id(v, "take_id"))
    _box = field_validator("face_box")(_check_face_box)

    @model_validator(mode="after")
    def _source(self):
        if self.image is None and not (self.persona_id and self.take_id):
            raise ValueError("video_render needs `image`, or `persona_id` + `take_id`")
        if self.image is not None and (self.persona_id or self.take_id):
            raise ValueError("give either `image` or `persona_id` + `take_id`, not both")
        return self


class TakeSpec(_Strict):
    emotion: str = Field("neutral", max_length=32, pattern=r"^[A-Za-z0-9_\- ]+$")
    angle: TakeAngle = "front"
    intensity: float = Field(0.5, ge=0, le=1)


class PersonaBuildInput(_Strict):
    job_type: Literal["persona_build"]
    persona_id: str
    job_id: str | None = Field(None, description="defaults to persona_build_<persona_id>")
    primary_image: Media
    archetype: str = Field("", max_length=200)
    face_box: FaceBox | None = None
    takes_to_generate: list[TakeSpec] = Field(min_length=1, max_length=24)
    quality: str = "standard"
    face_restore_weight: FaceRestoreWeight = 0.5

    _pid = field_validator("persona_id")(lambda v: check_id(v, "persona_id"))
    _id = field_validator("job_id")(lambda v: v if v is None else check_id(v, "job_id"))
    _box = field_validator("face_box")(_check_face_box)

    @field_validator("quality")
    @classmethod
    def _known_quality(cls, v: str) -> str:
        return _Quality._known_quality(v)

    @property
    def preset(self) -> str:
        return QUALITY_PRESETS[self.quality]


JobInput = Annotated[Union[LipsyncOnlyInput, VideoRenderInput, PersonaBuildInput],
                     Field(discriminator="job_type")]


def job_id_of(inp: LipsyncOnlyInput | VideoRenderInput | PersonaBuildInput) -> str:
    if isinstance(inp, PersonaBuildInput):
        return inp.job_id or f"persona_build_{inp.persona_id}"
    return inp.job_id


class RunRequest(BaseModel):
    """RunPod request envelope: `{"input": {...}}` (+ RunPod's optional webhook/policy)."""
    model_config = ConfigDict(extra="forbid")
    input: JobInput
    webhook: str | None = Field(None, description="accepted for RunPod compatibility; not called")
    policy: dict[str, Any] | None = Field(None, description="accepted for RunPod compatibility")


class ErrorInfo(BaseModel):
    code: str
    message: str


class JobResult(BaseModel):
    """The seed worker's response object: the `output` of a finished job."""
    success: bool
    output: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    duration_ms: int = 0
    error: ErrorInfo | None = None


class RunResponse(BaseModel):
    id: str
    status: JobStatus


class StatusResponse(BaseModel):
    id: str
    status: JobStatus
    stage: str | None = None
    progress: float = Field(0.0, ge=0, le=1)
    delayTime: int | None = Field(None, description="ms from submit to start (RunPod field)")
    executionTime: int | None = Field(None, description="ms of execution (RunPod field)")
    output: JobResult | None = None
    error: str | None = None


class HealthResponse(BaseModel):
    jobs: dict[str, int]
    workers: dict[str, int]
    engines: dict[str, str] = Field(default_factory=dict)


class ApiError(BaseModel):
    error: ErrorInfo
