"""A small HTTP file server on 127.0.0.1 for the downloader tests.

Serves in-memory files with byte ranges (`Range: bytes=N-` / `N-M`, 206 + Content-Range, 416 past
the end), ETags with If-Range, and scripted faults: drop the connection after N bytes, answer
with a status code, stall, or redirect. Every request is logged (path + headers) so tests can
assert what the client sent.
"""
from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    drop_after: int | None = None   # send full headers, then only this many body bytes, then close
    status: int | None = None       # answer with this status and no body
    stall_s: float = 0.0            # sleep after the headers, before the body
    redirect_to: str | None = None  # answer 302 Location: this
    ignore_range: bool = False      # always send the whole file with 200


@dataclass
class Request:
    path: str
    headers: dict[str, str]


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)  # consumed one per request
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                owner.requests.append(Request(self.path, dict(self.headers.items())))
                queue = owner.faults.get(self.path) or []
                fault = queue.pop(0) if queue else Fault()
                if fault.redirect_to:
                    return self._empty(302, {"Location": fault.redirect_to})
                if fault.status:
                    return self._empty(fault.status)
                if self.path not in owner.files:
                    return self._empty(404)
                self._send_file(owner.files[self.path], fault)

            def _empty(self, code, headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _send_file(self, data: bytes, fault: Fault):
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                start, code, full_len = 0, 200, len(data)
                rng = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if rng and not fault.ignore_range and (if_range is None or if_range == etag):
                    first, _, last = rng.removeprefix("bytes=").partition("-")
                    start = int(first)
                    if start >= len(data):
                        return self._empty(416, {"Content-Range": f"bytes */{full_len}"})
                    end = int(last) if last else len(data) - 1
                    data = data[start:end + 1]
                    code = 206
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{start + len(data) - 1}/{full_len}")
                self.end_headers()
                if fault.stall_s:
                    time.sleep(fault.stall_s)
                body = data if fault.drop_after is None else data[:fault.drop_after]
                try:
                    self.wfile.write(body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                if fault.drop_after is not None:
                    self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def count(self, path: str) -> int:
        return sum(r.path == path for r in self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def payload(n: int, seed: int = 0) -> bytes:
    """Deterministic incompressible-looking bytes (a stand-in for a weights file)."""
    out = bytearray()
    block = seed.to_bytes(4, "little")
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
