"""Both storage backends; S3 against a real S3 server started on 127.0.0.1 (rclone)."""
from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from core.storage import LocalStorage, S3Storage, StorageError, open_storage
from tests.support.s3server import BUCKET, KEY, SECRET, S3Server


def make_s3(server, **kw) -> S3Storage:
    return S3Storage(server.endpoint, KEY, SECRET, BUCKET, **kw)


def roundtrip(storage, tmp_path):
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"\x00\x01video" * 1000)
    storage.put_file("videos/j1/lipsync.mp4", src)
    storage.put_bytes("jobs/j1/record.json", b'{"a": 1}')
    assert storage.exists("videos/j1/lipsync.mp4")
    assert not storage.exists("videos/j1/nope.mp4")
    assert storage.get_bytes("jobs/j1/record.json") == b'{"a": 1}'
    assert storage.get_bytes("jobs/j1/missing.json") is None
    got = storage.get_file("videos/j1/lipsync.mp4", tmp_path / "dl")
    assert got.read_bytes() == src.read_bytes()
    assert storage.list("videos/") == ["videos/j1/lipsync.mp4"]
    assert storage.put_bytes_if_absent("jobs/j2/record.json", b"first") is True
    assert storage.put_bytes_if_absent("jobs/j2/record.json", b"second") is False
    assert storage.get_bytes("jobs/j2/record.json") == b"first"
    storage.delete("jobs/j2/record.json")
    assert not storage.exists("jobs/j2/record.json")


def test_local_roundtrip_and_key_checks(tmp_path):
    storage = LocalStorage(tmp_path / "store", "http://127.0.0.1:8000")
    roundtrip(storage, tmp_path)
    assert storage.url("videos/j1/lipsync.mp4") == "http://127.0.0.1:8000/files/videos/j1/lipsync.mp4"
    for bad in ("../etc/passwd", "/abs", "a//b", "a/../../b", "a/./b", "x\x00y"):
        with pytest.raises(StorageError):
            storage.put_bytes(bad, b"x")
    assert not any(p.name == "passwd" for p in tmp_path.rglob("*"))


def test_s3_roundtrip_and_presigned_url(s3, tmp_path):
    storage = make_s3(s3)
    roundtrip(storage, tmp_path)
    # the object really is in the server's bucket directory
    assert (s3.root / BUCKET / "videos" / "j1" / "lipsync.mp4").is_file()
    url = storage.url("videos/j1/lipsync.mp4")
    assert "X-Amz-Signature" in url
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.read() == b"\x00\x01video" * 1000
    tampered = url.replace("lipsync.mp4", "other.mp4")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(tampered, timeout=5)
    assert e.value.code == 403


def test_s3_public_url_and_wrong_secret(s3, tmp_path):
    storage = make_s3(s3, public_url="https://cdn.example.test/media/")
    assert storage.url("videos/j/final.mp4") == "https://cdn.example.test/media/videos/j/final.mp4"
    bad = S3Storage(s3.endpoint, KEY, "wrong-secret", BUCKET)
    with pytest.raises(StorageError) as e:
        bad.put_bytes("x/y.json", b"1")
    assert "wrong-secret" not in str(e.value) and SECRET not in str(e.value)


def test_s3_upload_survives_server_restart(s3, tmp_path, monkeypatch):
    """Server down during an upload -> retried with backoff; succeeds once it is back."""
    monkeypatch.setattr("core.storage.UPLOAD_BACKOFF_S", 0.3)
    storage = make_s3(s3)
    storage.put_bytes("probe.json", b"1")
    s3.stop()
    again = S3Server(s3.root, s3.port)
    restarted = threading.Timer(0.8, again.start)
    restarted.start()
    t0 = time.monotonic()
    src = tmp_path / "f.bin"
    src.write_bytes(b"z" * 50_000)
    try:
        storage.put_file("videos/j9/final.mp4", src)
    finally:
        restarted.join()
        again.stop()
    assert time.monotonic() - t0 >= 0.5  # it really waited for the server
    assert (s3.root / BUCKET / "videos" / "j9" / "final.mp4").read_bytes() == b"z" * 50_000


def test_open_storage_needs_all_r2_vars(settings):
    s = settings.model_copy(update={"storage": "s3", "r2_endpoint": "http://127.0.0.1:1"})
    with pytest.raises(StorageError, match="R2_ACCESS_KEY, R2_SECRET_KEY, R2_BUCKET"):
        open_storage(s)
