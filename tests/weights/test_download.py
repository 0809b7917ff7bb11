"""weights/download.py: filling a models dir from registry-shaped entries served on 127.0.0.1,
skip-present, the lock file (TOFU + --verify), mirrors, and safe zip extraction."""
from __future__ import annotations

import io
import json
import stat
import zipfile
from dataclasses import replace

import pytest

from tests.support.fileserver import Fault, payload, sha
from weights.download import LOCK_NAME, UnsafeArchiveError, ensure_weights, extract_members
from weights.fetch import DownloadError
from weights.registry import Source, WeightFile

QUIET = dict(log=lambda s: None)


def entry(name, path, *sources, **kw) -> WeightFile:
    return WeightFile(name=name, path=path, engine="test", group="upscale", licence="test",
                      commercial_ok=True, sources=tuple(sources), **kw)


def zip_bytes(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def test_download_records_lock_with_published_and_tofu_hashes(server, options, tmp_path):
    a, b = payload(70_000, 1), payload(30_000, 2)
    server.files.update({"/a.pth": a, "/b.pth": b})
    entries = [entry("a", "x/a.pth", Source(server.url("/a.pth"), sha256=sha(a))),
               entry("b", "y/b.pth", Source(server.url("/b.pth")))]
    results = ensure_weights(tmp_path, entries, options, **QUIET)
    assert [r.action for r in results] == ["downloaded", "downloaded"]
    assert (tmp_path / "x/a.pth").read_bytes() == a and (tmp_path / "y/b.pth").read_bytes() == b
    lock = json.loads((tmp_path / LOCK_NAME).read_text())["files"]
    assert lock["x/a.pth"]["sha256"] == sha(a) and lock["x/a.pth"]["checked_against"] == "published"
    assert lock["y/b.pth"]["sha256"] == sha(b) and lock["y/b.pth"]["checked_against"] == "first-use"
    assert lock["y/b.pth"]["size"] == len(b)


def test_skip_present_does_not_download_again(server, options, tmp_path):
    a, b = payload(40_000, 3), payload(20_000, 4)
    server.files.update({"/a.pth": a, "/b.pth": b})
    entries = [entry("a", "a.pth", Source(server.url("/a.pth"), sha256=sha(a))),
               entry("b", "b.pth", Source(server.url("/b.pth")))]
    ensure_weights(tmp_path, entries, options, **QUIET)
    assert len(server.requests) == 2
    again = ensure_weights(tmp_path, entries, options, **QUIET)
    assert [r.action for r in again] == ["skipped", "skipped"]
    assert len(server.requests) == 2
    # --no-skip-present fetches everything again.
    forced = ensure_weights(tmp_path, entries, replace(options, skip_present=False), **QUIET)
    assert [r.action for r in forced] == ["downloaded", "downloaded"]
    assert len(server.requests) == 4


def test_present_file_with_wrong_published_hash_is_replaced(server, options, tmp_path):
    a = payload(25_000, 5)
    server.files["/a.pth"] = a
    (tmp_path / "a.pth").write_bytes(b"corrupt" * 100)
    [r] = ensure_weights(tmp_path, [entry("a", "a.pth", Source(server.url("/a.pth"), sha256=sha(a)))],
                         options, **QUIET)
    assert r.action == "downloaded" and (tmp_path / "a.pth").read_bytes() == a
    assert server.count("/a.pth") == 1


def test_verify_catches_a_tofu_file_that_changed(server, options, tmp_path):
    b = payload(12_000, 6)
    server.files["/b.pth"] = b
    e = [entry("b", "b.pth", Source(server.url("/b.pth")))]
    ensure_weights(tmp_path, e, options, **QUIET)
    tampered = bytearray(b)
    tampered[5000] ^= 0xFF  # same size: only a hash can tell
    (tmp_path / "b.pth").write_bytes(bytes(tampered))
    [plain] = ensure_weights(tmp_path, e, options, **QUIET)
    assert plain.action == "skipped"  # no --verify: size check only
    [checked] = ensure_weights(tmp_path, e, replace(options, verify=True), **QUIET)
    assert checked.action == "failed" and sha(b) in checked.message and sha(bytes(tampered)) in checked.message
    assert (tmp_path / "b.pth").read_bytes() == bytes(tampered)  # never silently overwritten
    assert server.count("/b.pth") == 1


def test_mirror_used_when_primary_fails(server, options, tmp_path):
    data = payload(15_000, 7)
    server.files["/mirror/tiny.pt"] = data
    server.faults["/primary/tiny.pt"] = [Fault(status=503)] * 10
    e = entry("whisper", "whisper/tiny.pt", Source(server.url("/primary/tiny.pt"), sha256=sha(data)),
              Source(server.url("/mirror/tiny.pt")))
    [r] = ensure_weights(tmp_path, [e], options, **QUIET)
    assert r.action == "downloaded" and r.source.endswith("/mirror/tiny.pt")
    assert "same bytes as the primary" in r.message
    lock = json.loads((tmp_path / LOCK_NAME).read_text())["files"]["whisper/tiny.pt"]
    assert lock["checked_against"] == "first-use" and lock["sha256"] == sha(data)


def test_hash_mismatch_fails_without_trying_the_mirror(server, options, tmp_path):
    server.files["/primary.pt"] = payload(9_000, 8)
    server.files["/mirror.pt"] = payload(9_000, 9)
    e = entry("w", "w.pt", Source(server.url("/primary.pt"), sha256="f" * 64), Source(server.url("/mirror.pt")))
    [r] = ensure_weights(tmp_path, [e], options, **QUIET)
    assert r.action == "failed" and "f" * 64 in r.message
    assert server.count("/mirror.pt") == 0
    assert not (tmp_path / "w.pt").exists() and not (tmp_path / "w.pt.part").exists()


def test_archive_members_extracted_once_and_archive_removed(server, options, tmp_path):
    det, lmk = payload(33_000, 10), payload(11_000, 11)
    server.files["/v0.7/buffalo_l.zip"] = zip_bytes({"det_10g.onnx": det, "2d106det.onnx": lmk,
                                                     "w600k_r50.onnx": b"unused"})
    url = server.url("/v0.7/buffalo_l.zip")
    entries = [entry("det", "insightface/buffalo_l/det_10g.onnx", Source(url, member="det_10g.onnx")),
               entry("lmk", "insightface/buffalo_l/2d106det.onnx", Source(url, member="2d106det.onnx"))]
    results = ensure_weights(tmp_path, entries, options, **QUIET)
    assert [r.action for r in results] == ["downloaded", "downloaded"]
    assert server.count("/v0.7/buffalo_l.zip") == 1
    assert (tmp_path / "insightface/buffalo_l/det_10g.onnx").read_bytes() == det
    assert (tmp_path / "insightface/buffalo_l/2d106det.onnx").read_bytes() == lmk
    assert not (tmp_path / "insightface/buffalo_l/w600k_r50.onnx").exists()
    assert list((tmp_path / ".downloads").iterdir()) == []
    lock = json.loads((tmp_path / LOCK_NAME).read_text())["files"]
    assert lock["insightface/buffalo_l/det_10g.onnx"]["sha256"] == sha(det)
    ensure_weights(tmp_path, entries, options, **QUIET)
    assert server.count("/v0.7/buffalo_l.zip") == 1  # both present: no second download


def test_archive_member_under_a_folder_is_found(tmp_path):
    arc = tmp_path / "a.zip"
    arc.write_bytes(zip_bytes({"buffalo_l/det_10g.onnx": b"det"}))
    out = extract_members(arc, {"det_10g.onnx": tmp_path / "out/det_10g.onnx"})
    assert (tmp_path / "out/det_10g.onnx").read_bytes() == b"det" and out["det_10g.onnx"] == sha(b"det")


@pytest.mark.parametrize("bad", ["../evil.onnx", "buffalo_l/../../evil.onnx", "/tmp/evil.onnx",
                                 "..\\evil.onnx", "C:/evil.onnx"])
def test_zip_extraction_refuses_escaping_entries(tmp_path, bad):
    work = tmp_path / "work"
    work.mkdir()
    arc = work / "a.zip"
    arc.write_bytes(zip_bytes({"det_10g.onnx": b"det", bad: b"evil"}))
    with pytest.raises(UnsafeArchiveError, match="refusing archive entry"):
        extract_members(arc, {"det_10g.onnx": work / "models/det_10g.onnx"})
    assert not (work / "models").exists()  # refused whole: not even the good member
    assert not (tmp_path / "evil.onnx").exists()


def test_zip_extraction_refuses_symlinks(tmp_path):
    arc = tmp_path / "a.zip"
    arc.write_bytes(zip_bytes({"det_10g.onnx": b"det"}, links=("buffalo_l/link.onnx",)))
    with pytest.raises(UnsafeArchiveError):
        extract_members(arc, {"det_10g.onnx": tmp_path / "m/det_10g.onnx"})


def test_unsafe_archive_reported_as_failed_result(server, options, tmp_path):
    server.files["/x.zip"] = zip_bytes({"det_10g.onnx": b"d", "../../escape.onnx": b"e"})
    e = entry("det", "insightface/det_10g.onnx", Source(server.url("/x.zip"), member="det_10g.onnx"))
    [r] = ensure_weights(tmp_path / "models", [e], options, **QUIET)
    assert r.action == "failed" and "refusing archive entry" in r.message
    assert not (tmp_path / "escape.onnx").exists() and not (tmp_path / "models/insightface").exists()


def test_dry_run_writes_and_fetches_nothing(server, options, tmp_path):
    server.files["/a.pth"] = b"a"
    [r] = ensure_weights(tmp_path / "models", [entry("a", "a.pth", Source(server.url("/a.pth")))],
                         replace(options, dry_run=True), **QUIET)
    assert r.action == "planned" and server.requests == [] and not (tmp_path / "models").exists()


def test_resumed_download_through_ensure_weights(server, options, tmp_path):
    data = payload(80_000, 12)
    server.files["/u.pt"] = data
    server.faults["/u.pt"] = [Fault(drop_after=20_000)]
    [r] = ensure_weights(tmp_path, [entry("u", "u.pt", Source(server.url("/u.pt")))], options, **QUIET)
    assert r.action == "downloaded" and r.sha256 == sha(data)
    assert [q.headers.get("Range") for q in server.requests] == [None, "bytes=20000-"]


def test_redownload_must_match_the_hash_recorded_on_first_use(server, options, tmp_path):
    first, changed = payload(14_000, 13), payload(14_000, 14)
    server.files["/t.pth"] = first
    e = [entry("t", "t.pth", Source(server.url("/t.pth")))]
    ensure_weights(tmp_path, e, options, **QUIET)
    (tmp_path / "t.pth").unlink()
    server.files["/t.pth"] = changed  # upstream swapped the file under the same URL
    [r] = ensure_weights(tmp_path, e, options, **QUIET)
    assert r.action == "failed" and sha(first) in r.message and sha(changed) in r.message
    assert "remove the 't.pth' entry" in r.message
    assert not (tmp_path / "t.pth").exists() and not (tmp_path / "t.pth.part").exists()


def test_archive_member_must_match_the_hash_recorded_on_first_use(server, options, tmp_path):
    server.files["/b.zip"] = zip_bytes({"det_10g.onnx": b"first"})
    e = [entry("det", "det_10g.onnx", Source(server.url("/b.zip"), member="det_10g.onnx"))]
    ensure_weights(tmp_path, e, options, **QUIET)
    (tmp_path / "det_10g.onnx").unlink()
    server.files["/b.zip"] = zip_bytes({"det_10g.onnx": b"second"})
    [r] = ensure_weights(tmp_path, e, options, **QUIET)
    assert r.action == "failed" and sha(b"first") in r.message and sha(b"second") in r.message
    assert not (tmp_path / "det_10g.onnx").exists()


def test_corrupt_lock_file_is_a_clear_error(options, tmp_path):
    (tmp_path / LOCK_NAME).write_text("{not json")
    with pytest.raises(DownloadError, match="unreadable"):
        ensure_weights(tmp_path, [], options, **QUIET)


def test_second_concurrent_run_is_refused(options, tmp_path):
    import fcntl
    import os
    fd = os.open(tmp_path / ".download.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(DownloadError, match="another download_models run"):
            ensure_weights(tmp_path, [], options, **QUIET)
    finally:
        os.close(fd)
