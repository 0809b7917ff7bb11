"""The hardening suite's fixtures: a sandbox tree, and tiny / long media for its jobs."""
from __future__ import annotations

import tempfile

import pytest

from tests.support.media import b64, small_portrait, speechlike
from tests.support.service import TINY_FACE_BOX, Sandbox


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Sandbox:
    top = tmp_path / "sandbox"
    systmp = top / "systmp"
    systmp.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    return Sandbox(top, systmp)


@pytest.fixture(scope="session")
def tiny_media(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("tiny-media")
    voice = speechlike(0.3, d / "voice.wav")
    return {"image": b64(small_portrait(96)), "audio": b64(voice.read_bytes()),
            "face_box": TINY_FACE_BOX}


@pytest.fixture(scope="session")
def long_media(tmp_path_factory) -> dict:
    """A job that keeps the lip-sync stage busy for several seconds on this CPU."""
    d = tmp_path_factory.mktemp("long-media")
    voice = speechlike(30.0, d / "voice30.wav")
    return {"image": b64(small_portrait(1024)), "audio": b64(voice.read_bytes()),
            "voice_path": voice}


@pytest.fixture(scope="session")
def longer_media(tmp_path_factory) -> dict:
    """A lip-sync stage busy for longer still: a still hands on only its face region, so 30 s
    of voice renders in about a second or two on this CPU; 120 s keeps a cancel mid-stage."""
    d = tmp_path_factory.mktemp("longer-media")
    voice = speechlike(120.0, d / "voice120.wav")
    return {"image": b64(small_portrait(1024)), "audio": b64(voice.read_bytes()),
            "voice_path": voice}
