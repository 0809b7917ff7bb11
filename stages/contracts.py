"""What the stages send each other: small typed messages holding storage keys, never frames,
and the stage methods a job graph may call (`LIPSYNC.run`, `FINISHER.run`, ...), each declared
once with its request and result types so a graph's call is checked and an editor can follow it
to the implementation named in the declaration."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from core.runner import StageMethod
from media.options import FinishOptions


class FramesRef(BaseModel):
    """A silent intermediate video (x264 qp 0, yuv444p) in storage, of frames `width` x
    `height`. With `region`, `key` holds only that part (x0, y0, x1, y1) of every frame and the
    rest of every frame is the still `background_key` (a lip-synced still changes only its
    face: the hand-off between stages is that region, not the whole frame)."""
    key: str
    width: int
    height: int
    fps: float
    n_frames: int
    region: tuple[int, int, int, int] | None = None
    background_key: str | None = None

    @model_validator(mode="after")
    def _region_has_its_background(self) -> "FramesRef":
        if (self.region is None) != (self.background_key is None):
            raise ValueError("a region needs its background_key, and only a region has one")
        return self


class LipSyncRequest(BaseModel):
    job_id: str
    source_key: str                        # still image, or a persona take video
    source_kind: Literal["image", "video"] = "image"
    track_key: str | None = None           # take's per-frame face boxes (.npy), when known
    audio_key: str
    face_box: list[float] | None = None
    fps: float = 25.0
    quality: str = "standard"
    # the caller takes frames as a region over the still (FramesRef.region): the finisher
    # composes them; a stage that needs whole frames (face restore) leaves this off
    region_ok: bool = False
    # face restore runs on these frames next: a region must also hold its aligned face crop
    restore_follows: bool = False


class LipSyncResult(BaseModel):
    frames: FramesRef
    faces_key: str | None = None           # per-frame face geometry for restore (no re-detection)
    engine: str
    model: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    seconds: float


class RestoreRequest(BaseModel):
    job_id: str
    frames: FramesRef
    faces_key: str | None = None
    weight: float = 0.5


class RestoreResult(BaseModel):
    frames: FramesRef
    engine: str
    restored_faces: int = 0
    seconds: float


class UpscaleRequest(BaseModel):
    job_id: str
    image_key: str
    max_width: int                         # fit inside this box, aspect kept
    max_height: int
    out_key: str


class UpscaleResult(BaseModel):
    image_key: str
    width: int
    height: int
    scale: float = 1.0                     # output width / input width (face_box follows it)
    engine: str
    # Upscale-model passes over the picture (all the tiles of one picture are one pass);
    # 0 when Lanczos alone resampled it.
    runs: int
    seconds: float

    def scaled_box(self, box: list[float] | None) -> list[float] | None:
        """A box in the input image's pixels (a client face_box), in the output's pixels."""
        return None if box is None else [v * self.scale for v in box]


class TakeRequest(BaseModel):
    job_id: str
    persona_id: str
    index: int
    image_key: str
    face_box: list[float] | None = None
    emotion: str
    angle: str
    intensity: float
    archetype: str = ""                    # the persona's archetype: its idle-motion energy
    seed: int = 0                          # the director's random streams (blinks, idle phases)
    seconds: float = 5.0
    fps: float = 25.0
    # True: the caller composes (the finisher lays frames over a background) and face restore
    # may follow, so a take that changes only part of the framed still hands on that region
    # (FramesRef.region) instead of whole frames
    region_ok: bool = False


class TakeResult(BaseModel):
    frames: FramesRef
    track_key: str                         # per-frame face boxes (+ landmarks) of the take
    engine: str                            # as job metadata names it
    engine_reason: str = ""                # why this engine rendered the take
    # What the take was rendered with: LivePortrait - the director's pose / expression / blink
    # parameters and any emotion fallback; the reframer - its framing and colour grade.
    params: dict[str, Any] = Field(default_factory=dict)
    seconds: float


class FinishRequest(BaseModel):
    job_id: str
    kind: Literal["lipsync", "render", "take"]
    frames: FramesRef
    voice_key: str | None = None
    # the finish options; their media locations (music, ambience, SFX) are storage keys
    options: FinishOptions = Field(default_factory=FinishOptions)
    video_key: str                          # where the finished video goes
    thumbnail_key: str | None = None
    audio_key: str | None = None            # where the final mix alone goes (.m4a), if wanted
    persona_id: str | None = None           # a take: whose personas-volume folder keeps a copy


class FinishResult(BaseModel):
    video_key: str
    video_url: str
    thumbnail_key: str | None = None
    thumbnail_url: str | None = None
    srt_url: str | None = None
    srt_key: str | None = None
    audio_key: str | None = None
    audio_url: str | None = None
    duration_s: float
    width: int
    height: int
    fps: float
    details: dict[str, Any] = Field(default_factory=dict)
    seconds: float


class _LipSync:
    run = StageMethod("lipsync", "run", LipSyncRequest, LipSyncResult,
                      "stages.lipsync.LipSyncStage.run")
    render_take = StageMethod("lipsync", "render_take", TakeRequest, TakeResult,
                              "stages.lipsync.LipSyncStage.render_take")


class _FaceRestore:
    run = StageMethod("face_restore", "run", RestoreRequest, RestoreResult,
                      "stages.restore.FaceRestoreStage.run")


class _Upscale:
    run = StageMethod("upscale", "run", UpscaleRequest, UpscaleResult,
                      "stages.upscale.UpscaleStage.run")


class _Finisher:
    run = StageMethod("finisher", "run", FinishRequest, FinishResult,
                      "stages.finish.FinishStage.run")


LIPSYNC, FACE_RESTORE, UPSCALE, FINISHER = _LipSync, _FaceRestore, _Upscale, _Finisher
STAGE_METHODS: tuple[StageMethod, ...] = (LIPSYNC.run, LIPSYNC.render_take, FACE_RESTORE.run,
                                          UPSCALE.run, FINISHER.run)
