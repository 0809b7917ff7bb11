"""Servers the tests start on 127.0.0.1, never anything else: a uvicorn runner for our ASGI app,
an HTTP(S) media server whose routes a test fills in (every request recorded, so a test can prove
a request did or did not reach it; slow handlers wait on a stop event, so teardown never waits),
and the free-port helper. The S3 server is support.s3server, the weights file server
support.fileserver.
"""
from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a thread."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


Route = Callable[["_Handler"], None]


@dataclass
class MediaServer:
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
    local = MediaServer(port=httpd.server_address[1], scheme=scheme)
    httpd.local = local  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return httpd, local


def start_media_server(scheme: str = "http", ssl_context: ssl.SSLContext | None = None):
    """(the HTTP server, its MediaServer) on a free 127.0.0.1 port; stop with stop_media_server."""
    return _start(scheme, ssl_context)


def stop_media_server(httpd, local: MediaServer) -> None:
    local.stop.set()
    httpd.shutdown()
    httpd.server_close()


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that takes POSTs: answers each with the next scripted
    status (the last one repeats), or holds it until `release` is set when the script says
    "hang"; keeps every (headers, body) it was sent."""

    def __init__(self, script=(200,)):
        self.script, self.received = list(script), []
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.received.append((dict(self.headers.items()), body))
                step = owner.script[min(len(owner.received), len(owner.script)) - 1]
                if step == "hang":
                    owner.release.wait(60)
                    step = 200
                self.send_response(step)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
