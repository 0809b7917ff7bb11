"""Hostile bodies and ids against the real HTTP stack (uvicorn on 127.0.0.1, in-process service):
a chunked body with no Content-Length past max_request_bytes is refused before it is read in
full, and ids built to escape a folder (traversal, absolute paths, NUL, overlong, unicode
look-alikes, RTL override) are 4xx everywhere — with a snapshot proving nothing was written."""
from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from serve_app.api import build_api
from tests.support.servers import AppServer as LocalServer
from tests.support.service import (BASE, make_client, raw_request, tiny_job, wait_final,
                                   watched_service)

LIMIT = 256 * 1024
CHUNK = b"A" * 65536


@pytest.fixture
def server(sandbox):
    app = build_api()
    app.state.service = watched_service(sandbox.settings(max_request_bytes=LIMIT))
    with LocalServer(app) as srv:
        yield srv


def _json_body(data: bytes) -> dict:
    return json.loads(data.partition(b"\r\n\r\n")[2] or b"{}")


def test_chunked_body_past_the_limit_is_413_before_it_is_all_read(server, tiny_media,
                                                                    figures):
    head = (f"POST {BASE}/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            "\r\nTransfer-Encoding: chunked").encode()
    # 1. Four times the limit, and the body never ends: only a server that answers without
    #    reading the whole body can answer at all.
    status, data, sent = raw_request(server.port, head, [CHUNK] * 16, finish=False)
    figures.count("bad inputs tried", 1, "oversized bodies")
    assert status == 413, data[:500]
    err = _json_body(data)["error"]
    assert err["code"] == "PAYLOAD_TOO_LARGE" and str(LIMIT) in err["message"]

    # 2. A client that keeps pushing 64 MiB: it is stopped long before the end.
    total = 1024 * len(CHUNK)
    status, data, sent = raw_request(server.port, head, [CHUNK] * 1024)
    figures.count("bad inputs tried", 1, "oversized bodies")
    assert status == 413 and sent < total // 4
    figures.note("chunked flood", f"413 after accepting {sent} of {total} bytes")

    # 3. A declared Content-Length past the limit is refused from the headers alone.
    status, data, _ = raw_request(server.port, (
        f"POST {BASE}/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10 ** 9}").encode())
    figures.count("bad inputs tried", 1, "oversized bodies")
    assert status == 413, data[:300]

    # 4. A chunked body under the limit still works: the job is accepted.
    body = json.dumps({"input": tiny_job(tiny_media, "chunked-ok")}).encode()
    chunks = [body[i:i + 4096] for i in range(0, len(body), 4096)]
    status, data, sent = raw_request(server.port, head, chunks)
    assert status == 200 and sent == len(body), data[:500]
    assert _json_body(data) == {"id": "chunked-ok", "status": "IN_QUEUE"}


def hostile_ids(canary: str) -> list[str]:
    return [
        "../../../../../../../../tmp/" + canary, "../" + canary, "..", ".", "a/../../" + canary,
        "/tmp/" + canary, "/etc/passwd", "C:\\Windows\\" + canary, "..\\..\\" + canary,
        "a\x00b", canary + "\x00.mp4", "x" * 129, "y" * 5000,
        "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0f" + canary,   # fullwidth ../../
        "a\uff0fb", "a\u2215b", "a\u2044b", "a\u29f8b",      # slash look-alikes
        "\u202e" + canary, canary + "\u202egpj.exe",         # right-to-left override
        "p\u0430ssword",                                     # Cyrillic a
        "a\u200bb", "caf\u00e9", "\uff11\uff12\uff13",       # zero-width space, é, fullwidth digits
        canary + "\n", " " + canary, canary + " ", "", "~root", ".hidden", "_active", "-rf",
        "a%2F..%2F" + canary, "a;b", "a?b", "a#b", "a*b", "a..b", "$(id)", "a\tb",
    ]


def _bodies(bad: str, media: dict) -> list[tuple[dict, str]]:
    """(job input, the field the 4xx must name) for each place an id enters a body."""
    job = tiny_job(media, "fine-id")
    return [
        ({**job, "job_id": bad}, "job_id"),
        ({"job_type": "persona_build", "persona_id": bad, "primary_image": media["image"],
          "takes_to_generate": [{"emotion": "happy"}]}, "persona_id"),
        ({"job_type": "persona_build", "persona_id": "fine", "job_id": bad,
          "primary_image": media["image"], "takes_to_generate": [{"emotion": "happy"}]}, "job_id"),
        ({"job_type": "video_render", "job_id": "fine-2", "audio": media["audio"],
          "persona_id": bad, "take_id": "fine_take_0"}, "persona_id"),
        ({"job_type": "video_render", "job_id": "fine-3", "audio": media["audio"],
          "persona_id": "fine", "take_id": bad}, "take_id"),
    ]


def _ancestor_listing(path: Path) -> set[str]:
    """Names directly inside each folder above `path` (a traversal would land there)."""
    out = set()
    for d in [*path.parents, Path(os.sep)]:
        try:
            out |= {str(d / n) for n in os.listdir(d)}
        except OSError:
            pass
    return out


def test_hostile_ids_are_4xx_and_nothing_is_written(server, sandbox, tiny_media, figures):
    canary = f"pfcanary-{uuid.uuid4().hex[:8]}"
    ids = hostile_ids(canary)
    before = sandbox.snapshot()
    tried = 0
    with httpx.Client(base_url=server.url, timeout=30) as c:
        # 1. ids inside request bodies: 400 naming the field, nothing stored.
        for bad in ids:
            for job, field in _bodies(bad, tiny_media):
                r = c.post(f"{BASE}/run", json={"input": job})
                tried += 1
                assert r.status_code == 400, (repr(bad), field, r.status_code, r.text[:300])
                assert field in r.json()["error"]["message"], (repr(bad), r.text[:300])
        # 1b. Bad media next to good media: refused, and the good file is not kept either.
        text = base64.b64encode(b"just some text, certainly not a sound").decode()
        ok = tiny_job(tiny_media, "media-1")
        render = {"job_type": "video_render", "job_id": "media-2", "image": ok["image"],
                  "audio": ok["audio"], "format": {"width": 96, "height": 96}}
        for job, field in (({**ok, "audio": text}, "input.audio"),
                           ({**render, "music_url": text}, "input.music_url"),
                           ({**render, "sfx_tracks": [{"url": ok["audio"]}, {"url": "ftp://x/y"}]},
                            "input.sfx_tracks[1].url")):
            r = c.post(f"{BASE}/run", json={"input": job})
            tried += 1
            assert 400 <= r.status_code < 500 and field in r.json()["error"]["message"], r.text
    # 2. ids in the path, sent as raw bytes (no client-side normalisation): percent-encoded,
    #    and as-is where the bytes are legal in a request line.
    for bad in ids:
        targets = [quote(bad, safe="")]
        if bad.isascii() and bad.isprintable() and " " not in bad and "#" not in bad \
                and "?" not in bad:
            targets.append(bad)
        for t in targets:
            for method, route in (("GET", "status"), ("POST", "cancel"), ("GET", "files")):
                path = f"/files/{t}" if route == "files" else f"{BASE}/{route}/{t}"
                head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0"
                status, data, _ = raw_request(server.port, head.encode())
                tried += 1
                assert 400 <= status < 500, (method, path, status, data[:300])
                if route != "files" and "/" not in bad and bad and status != 404:
                    assert b"job_id" in data, (path, data[:300])
    figures.count("bad inputs tried", tried, "hostile ids and media over HTTP")
    # 3. Nothing was written anywhere: not in the sandbox (roots, scratch, temp), and nothing
    #    named after the canary next to it or above it, where a traversal would land (other
    #    processes share /tmp, so only the canary's name is looked for there).
    assert sandbox.snapshot() == before
    assert not any(canary in p for p in _ancestor_listing(sandbox.top))
    assert not (Path("/tmp") / canary).exists()

    # 4. The service still works afterwards, and writes only under its roots.
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post(f"{BASE}/run", json={"input": tiny_job(tiny_media, "after-1")}).status_code == 200
        assert wait_final(c, "after-1")["status"] == "COMPLETED"
    after = sandbox.snapshot()
    new = set(after) - set(before)
    roots = ("srv/data/store", "srv/data/cache", "srv/data/personas")
    assert new and all(p.startswith(roots) for p in new), sorted(new)[:20]
    assert not any(sandbox.systmp.iterdir())  # decoded inputs were cleaned up


def test_derived_persona_job_id_stays_within_the_id_rules(sandbox, tiny_media):
    """A persona_build without a job_id gets persona_build_<persona_id>_<digest>, or the
    digest alone when the persona_id is too long for that: every valid persona_id gives a job
    id the status route accepts (a job nobody can follow would be lost)."""
    job = {"job_type": "persona_build", "primary_image": tiny_media["image"],
           "face_box": tiny_media["face_box"], "takes_to_generate": [{"emotion": "happy"}]}
    # no slot to run in: accepted jobs wait, and are cancelled (at once) after the check
    with make_client(sandbox.settings(max_running_jobs=0)) as c:
        for persona_id in ("p", "p" * 128):
            r = c.post(f"{BASE}/run", json={"input": {**job, "persona_id": persona_id}})
            assert r.status_code == 200, r.text
            job_id = r.json()["id"]
            assert job_id.startswith("persona_build_") and len(job_id) <= 128
            assert c.get(f"{BASE}/status/{job_id}").json()["status"] == "IN_QUEUE"
        # an explicit job id is the job's id
        r = c.post(f"{BASE}/run", json={"input": {**job, "persona_id": "q" * 128, "job_id": "pb-1"}})
        assert r.status_code == 200 and r.json()["id"] == "pb-1"
        assert c.post(f"{BASE}/purge-queue").json() == {"removed": 3, "status": "completed"}

