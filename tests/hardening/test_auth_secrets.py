"""Auth by behaviour (wrong key, key prefix, empty bearer, other schemes, every route) and
secrets that never leak: a full job runs with an API key and an S3 backend (a real S3 server on
127.0.0.1) while every log line is captured at DEBUG; then every log line, every stored object,
every file under the service's roots and every HTTP response is searched for the secrets."""
from __future__ import annotations

import base64
import logging
import re
import traceback
import uuid
from urllib.parse import quote

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.storage import LinkSigner
from serve_app.api import build_api
from tests.support.s3server import KEY, S3Server
from tests.support.service import BASE, Recorder, make_client, tiny_job, wait_final, watched_service


def _routes(app) -> list[tuple[str, str]]:
    """(method, concrete path) of every API route, path params filled in."""
    out = []
    for r in app.routes:
        if not isinstance(r, APIRoute):
            continue
        path = re.sub(r"\{[^}:]+(:path)?\}", "x1", r.path)
        for m in sorted(r.methods):
            out.append((m, path))
    return out


def test_every_route_but_health_needs_the_key(sandbox, tiny_media, figures):
    key = "pfk-" + uuid.uuid4().hex
    settings = sandbox.settings(api_key=SecretStr(key))
    good = {"Authorization": f"Bearer {key}"}
    near_misses = {
        "none": {},
        "wrong": {"Authorization": "Bearer " + "0" * len(key)},
        "prefix": {"Authorization": f"Bearer {key[:-1]}"},
        "longer": {"Authorization": f"Bearer {key}0"},
        "first byte": {"Authorization": f"Bearer {key[0]}"},
        "empty bearer": {"Authorization": "Bearer "},
        "bearer only": {"Authorization": "Bearer"},
        "two spaces": {"Authorization": f"Bearer  {key}"},
        "no scheme": {"Authorization": key},
        "basic": {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()},
        "basic user": {"Authorization": "Basic " + base64.b64encode(f"x:{key}".encode()).decode()},
        "token": {"Authorization": f"Token {key}"},
        "bearer in other header": {"X-Api-Key": key, "Api-Key": f"Bearer {key}"},
        "cookie": {"Cookie": f"Authorization=Bearer {key}; api_key={key}"},
        "case of key": {"Authorization": f"Bearer {key.upper()}"},
    }
    with make_client(settings) as c:
        routes = _routes(c.app)
        assert len(routes) >= 7, routes
        refused = sent = 0
        for method, path in routes:
            for name, headers in near_misses.items():
                url = path + (f"?api_key={quote(key)}&key={quote(key)}" if name == "none" else "")
                r = c.request(method, url, headers=headers, json={} if method == "POST" else None)
                sent += 1
                if path.endswith("/health") or path.startswith("/files/"):
                    assert r.status_code != 401, (method, path, name)
                    continue
                assert r.status_code == 401, (method, path, name, r.status_code, r.text[:200])
                assert r.json()["error"]["code"] == "UNAUTHORIZED"
                refused += 1
            # the right key passes the guard (whatever the route then says)
            if not path.endswith("/health"):
                r = c.request(method, path, headers=good, json={} if method == "POST" else None)
                assert r.status_code != 401, (method, path)
        # RFC 7235: the scheme name is case-insensitive
        assert c.get(f"{BASE}/status/x1", headers={"Authorization": f"bearer {key}"}).status_code == 404
        # 1. A job named "health" is not the health route.
        assert c.post(f"{BASE}/run", json={"input": tiny_job(tiny_media, "health")},
                      headers=good).status_code == 200
        assert c.get(f"{BASE}/status/health").status_code == 401
        assert c.post(f"{BASE}/cancel/health").status_code == 401
        assert c.get(f"{BASE}/health").status_code == 200
        st = wait_final(c, "health", headers=good)
        assert st["status"] == "COMPLETED"  # the unauthenticated cancel did nothing
        # 2. File links: the signature is the key; unsigned, tampered or foreign links fail.
        url = st["output"]["output"]["video"].replace("http://127.0.0.1:9", "")
        assert c.get(url).status_code == 200
        foreign = LinkSigner("another-key")("videos/health/lipsync.mp4")
        assert c.get(f"/files/videos/health/lipsync.mp4?{foreign}").status_code == 403
        assert c.get(url.split("?")[0], headers=good).status_code == 403
        # 3. The docs need the key too, and hold no job data and no secret.
        assert c.get("/openapi.json").status_code == 401
        assert c.get("/docs").status_code == 401
        spec = c.get("/openapi.json", headers=good)
        assert spec.status_code == 200 and key not in spec.text
    figures.count("bad inputs tried", sent, "near-miss credentials")
    figures.note("auth", f"{len(routes)} routes x {len(near_misses)} near-miss credentials -> "
                 f"{refused} refusals, 0 let in")


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.loggers: set[str] = set()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record):
        self.loggers.add(record.name)
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a broken record must still be searchable
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        self.lines.append(text)


@pytest.fixture
def debug_logs():
    root = logging.getLogger()
    handler, level = LogCapture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, quote(secret, safe="").encode(), base64.b64encode(raw),
            base64.urlsafe_b64encode(raw).rstrip(b"="), raw.hex().encode()]


def test_secrets_never_leak(tmp_path, sandbox, tiny_media, debug_logs, capfd, monkeypatch,
                            figures):
    api_key = "pfk-" + uuid.uuid4().hex
    secret = "r2sec-" + uuid.uuid4().hex
    wrong_secret = "r2bad-" + uuid.uuid4().hex
    monkeypatch.setattr("tests.support.s3server.SECRET", secret)
    (tmp_path / "s3" / "media").mkdir(parents=True)
    s3 = S3Server(tmp_path / "s3").start()
    responses: list[bytes] = []

    def keep(r):
        responses.append(f"{r.status_code} {dict(r.headers)}".encode() + r.content)
        return r

    try:
        s3_settings = dict(storage="s3", r2_endpoint=s3.endpoint, r2_access_key=SecretStr(KEY),
                           r2_secret_key=SecretStr(secret), r2_bucket="media",
                           api_key=SecretStr(api_key))
        settings = sandbox.settings(**s3_settings)
        for shown in (repr(settings), str(settings), settings.model_dump_json(),
                      str(settings.public_view())):
            assert secret not in shown and api_key not in shown
        logging.getLogger("personaforge.test").info("settings: %r %s", settings,
                                                    settings.public_view())
        auth = {"Authorization": f"Bearer {api_key}"}
        app = build_api()
        app.state.service = watched_service(settings, Recorder())
        with TestClient(app) as c:
            keep(c.get(f"{BASE}/health"))
            keep(c.get(f"{BASE}/status/x"))
            keep(c.get(f"{BASE}/status/x", headers={"Authorization": f"Bearer {api_key[:-1]}"}))
            keep(c.get(f"{BASE}/status/x", headers={"Authorization": "Basic " + base64.b64encode(
                f"{api_key}:".encode()).decode()}))
            # 1. A full job, a job that fails, and bad input, all through S3.
            job = tiny_job(tiny_media, "secret-ok")
            keep(c.post(f"{BASE}/run", json={"input": job}, headers=auth))
            noface = {**job, "job_id": "secret-fail", "face_box": None,
                      "image": base64.b64encode(_flat_png()).decode()}
            keep(c.post(f"{BASE}/run", json={"input": noface}, headers=auth))
            keep(c.post(f"{BASE}/run", json={"input": {**job, "job_id": "../x"}}, headers=auth))
            for job_id, want in (("secret-ok", "COMPLETED"), ("secret-fail", "FAILED")):
                st = wait_final(c, job_id, headers=auth)
                assert st["status"] == want, st
                keep(c.get(f"{BASE}/status/{job_id}", headers=auth))
            keep(c.post(f"{BASE}/runsync?wait=1000", json={"input": job}, headers=auth))
            keep(c.post(f"{BASE}/cancel/secret-ok", headers=auth))
            keep(c.get(f"{BASE}/health"))
            keep(c.get("/openapi.json", headers=auth))
        # 2. The same service with a wrong S3 secret: storage errors reach the client.
        bad = sandbox.settings(**{**s3_settings, "r2_secret_key": SecretStr(wrong_secret)})
        app = build_api()
        app.state.service = watched_service(bad)
        with TestClient(app, raise_server_exceptions=False) as c:
            r = keep(c.post(f"{BASE}/run", json={"input": tiny_job(tiny_media, "wrong-s")},
                            headers=auth))
            assert r.status_code == 503 and r.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
            keep(c.get(f"{BASE}/status/secret-ok", headers=auth))
    finally:
        s3.stop()
    out, err = capfd.readouterr()

    # The capture really saw the S3 client and the service at DEBUG.
    assert any(n.startswith("botocore") for n in debug_logs.loggers), debug_logs.loggers
    assert any(n.startswith("personaforge") for n in debug_logs.loggers)
    stored = [p for p in (tmp_path / "s3").rglob("*") if p.is_file()]
    records = [p for p in stored if p.name == "record.json"]
    assert len(records) == 2 and any(p.name == "lipsync.mp4" for p in stored)
    local = [p for p in sandbox.top.rglob("*") if p.is_file()]
    haystacks = {"log lines": "\n".join(debug_logs.lines).encode(),
                 "stdout/stderr": (out + err).encode(),
                 "HTTP responses": b"\n".join(responses)}
    haystacks |= {f"stored object {p.relative_to(tmp_path)}": p.read_bytes() for p in stored}
    haystacks |= {f"local file {p.relative_to(sandbox.top)}": p.read_bytes() for p in local}
    for name, secret_value in (("API key", api_key), ("R2 secret", secret),
                               ("wrong R2 secret", wrong_secret)):
        for form in _forms(secret_value):
            for where, data in haystacks.items():
                assert form not in data, f"{name} found in {where}"
    figures.note("secrets", f"searched {len(debug_logs.lines)} log lines, {len(responses)} "
                 f"responses, {len(stored)} stored objects, {len(local)} local files: none found")


def _flat_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (120, 160, 200)).save(buf, format="PNG")
    return buf.getvalue()
