"""Shared fixtures. Tests never reach the network except servers they start on 127.0.0.1."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# CPU-only everywhere in tests; no hub downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def ray_env(monkeypatch):
    """An isolated local Ray for one test: auth off, its own RAY_TMPDIR (a short /tmp path:
    Ray's unix socket paths must stay under 108 bytes). PF_KEEP_RAY_LOGS=1 keeps the logs."""
    d = tempfile.mkdtemp(prefix="pfray-", dir="/tmp")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_TMPDIR", d)
    yield d
    if not os.environ.get("PF_KEEP_RAY_LOGS"):
        shutil.rmtree(d, ignore_errors=True)
