"""The API contract (the seed RunPod worker's job JSON, kept) as pydantic v2 models: they validate requests and are the
OpenAPI schema served at /docs.

Inputs forbid unknown fields, so a typo ("captons") is a 400 naming it instead of a silent no-op.
Every number is finite (JSON's 1e309 and Python's Infinity/NaN are refused) and bounded on both
sides (tests/hardening/test_numeric_bounds.py walks the schema to hold that); the captions of a
render are also bounded by their total text, which sets how long their layout may take.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.ids import check_id
from core.jobs import ErrorInfo, JobResult, JobStatus
from media.options import Caption, CaptionStyle, Ducking, SfxTrack
from media.presets import QUALITY_NAMES, preset_name

MAX_FRAME_SIDE = 3840
MAX_CAPTIONS = 500
# The captions of one render together: their layout is the finisher's CPU cost that grows with
# text. Measured worst case (tests/media/test_caption_cancel.py, 2-core box, 2026-12-07): about
# 0.3 ms per character, 0.4-0.8 s per 2000-character caption in the costliest style; 20000
# characters is then ~6 s of layout at most (500 captions of 40 characters fit), where the
# count and per-caption limits alone allowed 500 x 2000 characters: minutes.
MAX_CAPTION_TEXT_TOTAL = 20000
MAX_SFX = 64
MAX_IMAGE_SIDE = 16384  # serve_app.inputs.Limits.max_image_side: a face box lies inside it
# The framings the take renderer knows (personas.takes.ANGLES, which imports torch: too heavy
# for the ingress; tests/serve_app/test_schemas.py keeps the two equal).
TakeAngle = Literal["front", "three_quarter", "closeup"]
FaceRestoreWeight = Annotated[float, Field(
    ge=0, le=1, allow_inf_nan=False, description="face-restore strength: 0 keeps the lip-synced "
    "face, 1 is the fully restored face (GFPGAN `weight`)")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Media = Annotated[str, Field(min_length=1, description="https URL, base64, or data: URI")]
BoxCoordinate = Annotated[float, Field(ge=0, le=MAX_IMAGE_SIDE, allow_inf_nan=False)]
FaceBox = Annotated[list[BoxCoordinate], Field(min_length=4, max_length=4,
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
        if v not in QUALITY_NAMES:
            raise ValueError(f"unknown quality {v!r}; use one of {sorted(QUALITY_NAMES)}")
        return v

    @property
    def preset(self) -> str:
        return preset_name(self.quality)


class LipsyncOnlyInput(_Quality):
    job_type: Literal["lipsync_only"]
    job_id: str
    image: Media
    audio: Media
    face_box: FaceBox | None = Field(None, description="fallback when no face is detected "
                                     "(stylised characters)")

    _id = field_validator("job_id")(lambda v: check_id(v, "job_id"))
    _box = field_validator("face_box")(_check_face_box)


class OutputFormat(_Strict):
    width: int = Field(1080, ge=64, le=MAX_FRAME_SIDE)
    height: int = Field(1920, ge=64, le=MAX_FRAME_SIDE)
    fps: float = Field(30, ge=1, le=60, allow_inf_nan=False)

    @model_validator(mode="after")
    def _even(self):
        if self.width % 2 or self.height % 2:
            raise ValueError("format width and height must be even (yuv420p)")
        return self


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
    ducking_config: Ducking = Field(default_factory=Ducking)
    face_restore_weight: FaceRestoreWeight = 0.5

    _id = field_validator("job_id")(lambda v: check_id(v, "job_id"))
    _pid = field_validator("persona_id")(lambda v: v if v is None else check_id(v, "persona_id"))
    _tid = field_validator("take_id")(lambda v: v if v is None else check_id(v, "take_id"))
    _box = field_validator("face_box")(_check_face_box)

    @field_validator("captions")
    @classmethod
    def _caption_text_total(cls, v: list[Caption]) -> list[Caption]:
        total = sum(len(c.text) for c in v)
        if total > MAX_CAPTION_TEXT_TOTAL:
            raise ValueError(f"captions hold {total} characters of text together; the limit is "
                             f"{MAX_CAPTION_TEXT_TOTAL}")
        return v

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
    intensity: float = Field(0.5, ge=0, le=1, allow_inf_nan=False)
    seconds: float = Field(5.0, ge=0.5, le=20, allow_inf_nan=False,
                           description="take length; takes loop seamlessly")


class PersonaBuildInput(_Strict):
    job_type: Literal["persona_build"]
    persona_id: str
    job_id: str | None = Field(None, description="defaults to persona_build_<persona_id>_<digest "
                               "of the body>: the same body is the same job; after a failed "
                               "build the same body runs again (README, API)")
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
        return preset_name(self.quality)


JobInput = Annotated[Union[LipsyncOnlyInput, VideoRenderInput, PersonaBuildInput],
                     Field(discriminator="job_type")]


def job_id_of(inp: LipsyncOnlyInput | VideoRenderInput | PersonaBuildInput) -> str:
    """The client's job id (a persona_build without one gets its id from the service, by its
    body: serve_app/service.py persona_build_stem)."""
    if inp.job_id is None:
        raise ValueError("job_id is derived by the service for a persona_build without one")
    return inp.job_id


MAX_POLICY_MS = 7 * 24 * 3600 * 1000


class Policy(_Strict):
    """RunPod's execution policy (milliseconds, as RunPod spells them)."""
    executionTimeout: int | None = Field(None, ge=1, le=MAX_POLICY_MS, description="longest the "
                                         "job may run once started, ms (within our own job "
                                         "limit); past it the job ends TIMED_OUT")
    ttl: int | None = Field(None, ge=1, le=MAX_POLICY_MS, description="longest the job may wait "
                            "in the queue, ms; a job that waited longer ends TIMED_OUT unrun")
    lowPriority: bool | None = Field(None, description="accepted for RunPod compatibility; every "
                                     "job here is queued first come, first served")


class RunRequest(BaseModel):
    """RunPod request envelope: `{"input": {...}}` (+ RunPod's optional webhook/policy)."""
    model_config = ConfigDict(extra="forbid")
    input: JobInput
    webhook: str | None = Field(None, max_length=8192, description="called with the final status "
                                "JSON when the job ends (https, public address; retried; signed "
                                "with X-PersonaForge-Signature when the service has a secret)")
    policy: Policy | None = Field(None, description="RunPod's executionTimeout and ttl (ms)")


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
    webhook: dict[str, Any] | None = Field(None, description="the webhook delivery's outcome: "
                                           "state (delivered | failed), attempts, http_status, "
                                           "error")


class HealthResponse(BaseModel):
    jobs: dict[str, int]
    workers: dict[str, int]
    engines: dict[str, str] = Field(default_factory=dict)
    startup: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per stage: seconds to load its engines (load_s) and "
        "to warm them up before its first job (warmup_s, with what was warmed)")
    ready: bool = Field(True, description="false when jobs would be refused (production mode "
                        "without a stage's model weights, or a stage not answering)")
    reasons: list[str] = Field(default_factory=list, description="why not ready")


class ApiError(BaseModel):
    error: ErrorInfo
