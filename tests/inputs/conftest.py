"""A real HTTP(S) server on 127.0.0.1 for the input-fetch tests, plus real media builders.

The server answers from a route table the test fills in; every request is recorded (path and
Host header) so a test can prove a request did or did not reach it. Slow handlers wait on a
stop event, so teardown never waits for them.
"""
from __future__ import annotations

import io
import socket
import ssl
import threading
import wave
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from media.ffmpeg import run
from serve_app import service
from serve_app.inputs import InputError
from serve_app.netguard import FetchError

Route = Callable[["_Handler"], None]


@dataclass
class LocalServer:
    port: int
    scheme: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    # --- route builders ---
    def serve(self, path: str, body: bytes, content_type: str = "application/octet-stream",
              chunked: bool = False) -> str:
        def route(h: _Handler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", content_type)
            if chunked:
                h.send_header("Transfer-Encoding", "chunked")
                h.end_headers()
                for i in range(0, len(body), 1000):
                    part = body[i:i + 1000]
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                h.wfile.write(b"0\r\n\r\n")
            else:
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body)
        self.routes[path] = route
        return self.url(path)

    def drip(self, path: str, body: bytes, piece: int, every_s: float) -> str:
        """Send `body` `piece` bytes at a time, `every_s` apart: never silent long enough
        for a read timeout, so only a total time limit ends a fetch of a long drip."""
        def route(h: _Handler) -> None:
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            for i in range(0, len(body), piece):
                h.wfile.write(body[i:i + piece])
                h.wfile.flush()
                if h.server.local.stop.wait(every_s):
                    return
        self.routes[path] = route
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        def route(h: _Handler) -> None:
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()
        self.routes[path] = route
        return self.url(path)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        srv = self.server.local  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        srv.hits.append((path, self.headers.get("Host", "")))
        route = srv.routes.get(path)
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client hung up (that is what several tests want)

    def log_message(self, *args) -> None:
        pass


def _start(scheme: str, ssl_context: ssl.SSLContext | None = None):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    if ssl_context is not None:
        httpd.socket = ssl_context.wrap_socket(httpd.socket, server_side=True)
    local = LocalServer(port=httpd.server_address[1], scheme=scheme)
    httpd.local = local  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return httpd, local


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
def server():
    httpd, local = _start("http")
    yield local
    local.stop.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tls_server(tmp_path):
    """HTTPS on 127.0.0.1 with a self-signed certificate for `media.example.test` only."""
    from tests.inputs.certs import self_signed
    cert, key = self_signed("media.example.test", tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd, local = _start("https", ctx)
    local.ca_file = str(cert)  # type: ignore[attr-defined]
    yield local
    local.stop.set()
    httpd.shutdown()
    httpd.server_close()


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


# --- Real media ----------------------------------------------------------------------------

def png_bytes(w: int = 96, h: int = 80, seed: int = 0, fmt: str = "PNG") -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


def wav_bytes(seconds: float = 1.0, rate: int = 16000, freq: float = 440.0) -> bytes:
    t = np.arange(int(round(seconds * rate))) / rate
    pcm = (0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def ffmpeg_media(tmp_path, name: str, args: list[str]) -> bytes:
    """Encode real media with ffmpeg's lavfi sources (`args` between the inputs and the file)."""
    out = tmp_path / name
    run([*args, str(out)], what=f"test media {name}")
    return out.read_bytes()
