"""The service as the tests drive it: a sandboxed settings tree (so a test can prove nothing was
written outside the configured roots), an in-process client over the real stages, the one
`wait_final`, a raw HTTP helper that sends exactly the bytes we choose, and stage wrappers that
watch the real stages (they delegate every call and only note what happened)."""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi.testclient import TestClient

from core.keys import REPLICAS_PREFIX
from core.settings import Settings
from core.storage import open_storage
from serve_app.api import build_api
from serve_app.inprocess import build_service, build_stages
from stages.progress import StageProgress

BASE = "/v2/local"
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
TINY_FACE_BOX = [20, 10, 76, 80]  # the astronaut's face in the 96x96 portrait


@dataclass
class Sandbox:
    """A folder tree with the service's roots two levels down, so `../../x` from any root
    still lands inside the tree we snapshot."""
    top: Path
    systmp: Path  # the process's tempfile dir during the test (inputs are decoded there)

    @property
    def roots(self) -> Path:
        return self.top / "srv" / "data"

    def settings(self, **overrides) -> Settings:
        r = self.roots
        base = dict(storage="local", storage_dir=r / "store", cache_dir=r / "cache",
                    models_dir=r / "models", personas_dir=r / "personas",
                    public_base_url="http://127.0.0.1:9")
        base.update(overrides)
        return Settings(**base)

    def snapshot(self) -> dict[str, int]:
        """Every path under the sandbox -> size (-1 for folders), less the service replicas'
        liveness beats (written whatever clients send, never named after their input)."""
        beats = self.roots / "store" / REPLICAS_PREFIX.rstrip("/")

        def kept(p: Path) -> bool:
            return not p.is_relative_to(beats) and not (
                p == beats.parent and [c.name for c in p.iterdir()] == [beats.name])
        return {str(p.relative_to(self.top)): (p.stat().st_size if p.is_file() else -1)
                for p in sorted(self.top.rglob("*")) if kept(p)}


def tiny_job(media: dict, job_id: str) -> dict:
    return {"job_type": "lipsync_only", "job_id": job_id, "image": media["image"],
            "audio": media["audio"], "face_box": media["face_box"], "quality": "fast"}


def long_job(media: dict, job_id: str) -> dict:
    return {"job_type": "lipsync_only", "job_id": job_id, "image": media["image"],
            "audio": media["audio"], "quality": "fast"}


# ---- the real stages, watched ------------------------------------------------------------

@dataclass
class StageCallLog:
    stage: str
    method: str
    job_id: str
    started: float
    ended: float | None = None
    error: BaseException | None = None


@dataclass
class Recorder:
    calls: list[StageCallLog] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, job_id: str, stage: str | None = None) -> list[StageCallLog]:
        with self.lock:
            return [c for c in self.calls if c.job_id == job_id and stage in (None, c.stage)]

    def wait_ended(self, job_id: str, stage: str, timeout: float = 60) -> StageCallLog:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            done = [c for c in self.of(job_id, stage) if c.ended is not None]
            if done:
                return done[-1]
            time.sleep(0.05)
        raise AssertionError(f"{stage} call of {job_id} did not end within {timeout}s")


class Watched:
    """Delegates to a real stage object; records each call's job, timing and exception."""

    def __init__(self, name: str, stage, recorder: Recorder):
        self._name, self._stage, self._rec = name, stage, recorder

    def describe(self) -> dict:
        return self._stage.describe()

    def __getattr__(self, method: str):
        target = getattr(self._stage, method)

        def call(req):
            entry = StageCallLog(self._name, method, getattr(req, "job_id", "?"), time.monotonic())
            with self._rec.lock:
                self._rec.calls.append(entry)
            try:
                return target(req)
            except BaseException as e:
                entry.error = e
                raise
            finally:
                entry.ended = time.monotonic()
        return call


def watched_service(settings: Settings, recorder: Recorder | None = None,
                    wrap: dict | None = None):
    """The in-process service over the real stages; `wrap` maps a stage name to a callable
    that wraps that stage (e.g. a blocking stand-in), `recorder` watches them all."""
    stages = build_stages(settings, open_storage(settings))
    for name, wrapper in (wrap or {}).items():
        stages[name] = wrapper(stages[name])
    if recorder is not None:
        stages = {name: Watched(name, s, recorder) for name, s in stages.items()}
    return build_service(settings, stages=stages)


def make_client(settings: Settings, recorder: Recorder | None = None,
                wrap: dict | None = None) -> TestClient:
    app = build_api()
    app.state.service = watched_service(settings, recorder, wrap)
    return TestClient(app)


def wait_final(client, job_id: str, headers=None, timeout: float = 120) -> dict:
    """Poll GET status until the job is final (a hang guard: jobs are measured, never timed)."""
    t0 = time.monotonic()
    st: dict = {}
    while time.monotonic() - t0 < timeout:
        st = client.get(f"{BASE}/status/{job_id}", headers=headers).json()
        if st.get("status") in FINAL:
            return st
        time.sleep(0.1)
    raise AssertionError(f"{job_id} not final after {timeout}s: {st}")


# ---- raw HTTP ------------------------------------------------------------------------------

def raw_request(port: int, head: bytes, body_chunks=(), timeout: float = 20.0,
                finish: bool = True) -> tuple[int, bytes, int]:
    """Send `head` (request line + headers, no blank line) and a chunked body, then read the
    response. Returns (status, response bytes, body bytes the server let us send).

    Chunks go out while the server has not answered and keeps reading (a send that stalls for
    2 s means it stopped reading); `finish=False` never sends the last chunk, so only a server
    that answers without the whole body can answer at all."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head + b"\r\n\r\n")
        s.settimeout(2.0)
        stopped = False
        for chunk in body_chunks:
            if _readable(s):
                stopped = True
                break
            try:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (socket.timeout, BrokenPipeError, ConnectionResetError):
                stopped = True
                break
            sent += len(chunk)
        if finish and not stopped and body_chunks != ():
            try:
                s.sendall(b"0\r\n\r\n")
            except OSError:
                pass
        s.settimeout(timeout)
        data = b""
        while True:
            try:
                part = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not part:
                break
            data += part
            if b"\r\n\r\n" in data and _complete(data):
                break
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data, sent


def _readable(s: socket.socket) -> bool:
    import select

    r, _, _ = select.select([s], [], [], 0)
    return bool(r)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


class RecordingStage:
    """The real stage, with every request it is handed kept for the test to read."""

    def __init__(self, stage):
        self.stage, self.requests = stage, []

    def describe(self) -> dict:
        return self.stage.describe()

    def run(self, req):
        self.requests.append(req)
        return self.stage.run(req)


class BlockingStage:
    """A stage that never finishes the jobs whose id starts with `prefix` on its own: it reports
    progress (which is also the cancel check, stages.progress) until the job is cancelled, the
    way a long render would. Other jobs go to the real stage."""

    def __init__(self, stage, prefix: str = "slow", guard_s: float = 120.0):
        self.stage, self.prefix, self.guard_s = stage, prefix, guard_s
        self.reported: list[float] = []
        self.store = stage.store

    def describe(self) -> dict:
        return self.stage.describe()

    def run(self, req):
        if not req.job_id.startswith(self.prefix):
            return self.stage.run(req)
        progress = StageProgress(self.store, req.job_id, "lipsync")
        deadline = time.monotonic() + self.guard_s   # a hang guard for a broken runner
        k = 0
        while time.monotonic() < deadline:
            k += 1
            fraction = min(0.9, k / 1000)
            progress(fraction, force=True)   # raises JobCancelled once the job is cancelled
            self.reported.append(fraction)
            time.sleep(0.02)
        raise AssertionError(f"job {req.job_id} was never cancelled")
