from __future__ import annotations

import os

import pytest

from tests.support.fileserver import FileServer
from weights.download import DownloadOptions
from weights.fetch import FetchOptions


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # urllib honours *_proxy variables: a proxy must not sit between the client and 127.0.0.1.
    for key in list(os.environ):
        if key.lower().endswith("_proxy"):
            monkeypatch.delenv(key)


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture
def fast() -> FetchOptions:
    """Local-test network options: http to 127.0.0.1, short waits, few retries."""
    return FetchOptions(timeout_s=5.0, retries=2, backoff_s=0.01, chunk_bytes=4096,
                        progress_every_s=3600.0, allow_http_localhost=True)


@pytest.fixture
def options(fast) -> DownloadOptions:
    return DownloadOptions(fetch=fast)
