"""Render options the finisher or the take renderer would reject are refused at submit: a 400
naming the field, nothing stored, instead of a FAILED job after minutes of lip-sync. And what
the schema accepts, they accept."""
from __future__ import annotations

import typing

import numpy as np
import pytest
from fastapi.testclient import TestClient

from media import options
from media.finish import finish_video
from media.options import Caption, CaptionStyle, FinishOptions
from serve_app.api import build_api
from serve_app.inprocess import build_service
from serve_app.schemas import PersonaBuildInput, TakeAngle, VideoRenderInput
from stages.contracts import FinishRequest, RestoreRequest
from tests.support.finishing import solid_frames, write_audio, write_frames
from tests.support.media import b64, small_portrait, speechlike

BASE = "/v2/local"


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    voice = speechlike(0.5, tmp_path_factory.mktemp("media") / "voice.wav")
    return {"image": b64(small_portrait(96)), "audio": b64(voice.read_bytes())}


def render(media, **fields) -> dict:
    return {"job_type": "video_render", "job_id": "bad-render", **media, **fields}


def persona(media, **fields) -> dict:
    return {"job_type": "persona_build", "persona_id": "bad-persona",
            "primary_image": media["image"], **fields}


def bad_requests(media) -> list[tuple[dict, str]]:
    take = {"emotion": "happy", "intensity": 0.5}
    return [
        (render(media, caption_style={"position_y": 0}), "input.caption_style.position_y"),
        (render(media, caption_style={"position_y": -0.1}), "input.caption_style.position_y"),
        (render(media, caption_style={"color": "blurple"}), "input.caption_style.color"),
        (render(media, caption_style={"stroke_color": "#12345"}),
         "input.caption_style.stroke_color"),
        (render(media, caption_style={"color": "rgb(300,0,0"}), "input.caption_style.color"),
        (render(media, ducking_config={"hold_ms": -1}), "input.ducking_config.hold_ms"),
        (render(media, face_restore_weight=1.5), "input.face_restore_weight"),
        (persona(media, takes_to_generate=[{**take, "angle": "profile"}]),
         "input.takes_to_generate[0].angle"),
        (persona(media, takes_to_generate=[{**take, "angle": "front"}, {**take, "angle": ""}]),
         "input.takes_to_generate[1].angle"),
        (persona(media, takes_to_generate=[take], face_restore_weight=-0.1),
         "input.face_restore_weight"),
    ]


def test_bad_render_options_are_400_naming_the_field(settings, media):
    app = build_api()
    app.state.service = build_service(settings)
    with TestClient(app) as c:
        for job, field in bad_requests(media):
            r = c.post(f"{BASE}/run", json={"input": job})
            assert r.status_code == 400, (field, r.status_code, r.text)
            err = r.json()["error"]
            assert err["code"] == "INVALID_INPUT" and field in err["message"], (field, err)
        # rejected at the door: no job exists for either id
        assert c.get(f"{BASE}/status/bad-render").status_code == 404
        assert c.get(f"{BASE}/status/persona_build_bad-persona").status_code == 404


@pytest.mark.parametrize("style", [
    {"position_y": 1.0, "color": "#FFCC00", "stroke_color": "navy"},
    {"position_y": 0.01, "color": "#ffcc0080", "stroke_color": "#000"},
])
def test_styles_the_schema_accepts_the_finisher_renders(style, tmp_path):
    """Same rules on both sides: a style that passes the schema also passes the finisher."""
    res = finish_video(write_frames(tmp_path / "f.mp4", solid_frames(5, 64, 64)),
                       write_audio(tmp_path / "v.wav", np.zeros(9600, np.float32)),
                       str(tmp_path / "out"),
                       FinishOptions(quality="draft", normalize_loudness=False,
                                     captions=(Caption("ok", 0, 0.2),),
                                     caption_style=CaptionStyle(**style)))
    assert res.srt_path is not None


def test_schema_defaults_match_the_stages():
    from personas.takes import ANGLES  # imports torch: kept out of the ingress, checked here

    assert set(typing.get_args(TakeAngle)) == set(ANGLES)
    # one definition of each finishing type: the API's fields are the finisher's own classes
    render = VideoRenderInput.model_fields
    assert render["caption_style"].annotation is options.CaptionStyle
    assert render["ducking_config"].annotation is options.Ducking
    assert typing.get_args(render["captions"].annotation) == (options.Caption,)
    assert typing.get_args(render["sfx_tracks"].annotation) == (options.SfxTrack,)
    assert FinishRequest.model_fields["options"].annotation is options.FinishOptions
    for model in (VideoRenderInput, PersonaBuildInput):       # today's restore strength
        assert (model.model_fields["face_restore_weight"].default
                == RestoreRequest.model_fields["weight"].default == 0.5)
