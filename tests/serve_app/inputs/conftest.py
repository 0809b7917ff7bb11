"""The input tests' own fixtures: every refused input counted for the figures block, and a spy
on TCP connects. The media servers are the suite's (`server`, `tls_server` in tests/conftest.py).
"""
from __future__ import annotations

import socket

import pytest

from serve_app import service
from serve_app.inputs import InputError
from serve_app.netguard import FetchError


@pytest.fixture(autouse=True)
def _count_refused_inputs(request, figures, monkeypatch):
    """Every input these tests get refused counts as a bad input tried (the figures block):
    each call of an input entry point (as the test module or the service calls it) that
    ends in an InputError or FetchError."""
    refused = 0

    def counting(fn):
        def call(*args, **kwargs):
            nonlocal refused
            try:
                return fn(*args, **kwargs)
            except (InputError, FetchError):
                refused += 1
                raise
        return call

    for module in (request.module, service):
        for name in ("acquire", "decode_inline", "fetch_url", "fetch"):
            if callable(getattr(module, name, None)):
                monkeypatch.setattr(module, name, counting(getattr(module, name)))
    yield
    figures.count("bad inputs tried", refused, "media and URL inputs refused")


@pytest.fixture
def connections(monkeypatch):
    """Every TCP connect the client makes, as (host, port). Non-loopback targets are refused
    here so no test can reach the outside network."""
    made: list[tuple[str, int]] = []
    real = socket.create_connection

    def spy(address, *args, **kwargs):
        made.append((address[0], address[1]))
        if address[0] not in ("127.0.0.1", "::1"):
            raise ConnectionRefusedError("tests never leave this machine")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    return made
