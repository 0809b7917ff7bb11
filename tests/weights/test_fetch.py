"""weights/fetch.py against a real HTTP server on 127.0.0.1: full download, resume, hash
mismatch, retries, timeouts, If-Range, and the https-only rule (redirects included)."""
from __future__ import annotations

import pytest

from tests.support.fileserver import Fault, payload, sha
from weights.fetch import (DownloadError, FetchOptions, HashMismatchError, InsecureURLError,
                           check_url, fetch)


def test_full_download_hash_checked(server, fast, tmp_path):
    data = payload(200_000)
    server.files["/w.bin"] = data
    dest = tmp_path / "sub" / "w.bin"
    got = fetch(server.url("/w.bin"), dest, sha256=sha(data), size=len(data), options=fast, log=lambda s: None)
    assert got == sha(data)
    assert dest.read_bytes() == data
    assert not (tmp_path / "sub" / "w.bin.part").exists()
    assert not (tmp_path / "sub" / "w.bin.part.json").exists()
    assert server.count("/w.bin") == 1


def test_resume_after_dropped_connection_sends_range(server, fast, tmp_path):
    data = payload(300_000, seed=1)
    cut = 123_457
    server.files["/big.bin"] = data
    server.faults["/big.bin"] = [Fault(drop_after=cut)]
    dest = tmp_path / "big.bin"
    lines: list[str] = []
    got = fetch(server.url("/big.bin"), dest, sha256=sha(data), options=fast, log=lines.append)
    assert got == sha(data)
    assert dest.read_bytes() == data
    first, second = [r for r in server.requests if r.path == "/big.bin"]
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={cut}-"
    assert second.headers["If-Range"].startswith('"')  # the ETag of the first answer
    assert any("retry 1/" in line for line in lines)


def test_resume_restarts_when_file_changed_upstream(server, fast, tmp_path):
    old, new = payload(100_000, seed=2), payload(120_000, seed=3)
    server.files["/m.bin"] = old
    server.faults["/m.bin"] = [Fault(drop_after=40_000)]
    dest = tmp_path / "m.bin"
    # Change the file between the dropped first attempt and the resume: If-Range must stop a splice.
    orig_retry_log = []

    def log(line):
        orig_retry_log.append(line)
        if line.startswith("  retry"):
            server.files["/m.bin"] = new

    got = fetch(server.url("/m.bin"), dest, options=fast, log=log)
    assert dest.read_bytes() == new
    assert got == sha(new)
    assert any("whole file" in line for line in orig_retry_log)


def test_server_ignoring_range_gets_a_clean_restart(server, fast, tmp_path):
    data = payload(90_000, seed=4)
    server.files["/r.bin"] = data
    server.faults["/r.bin"] = [Fault(drop_after=30_000), Fault(ignore_range=True)]
    dest = tmp_path / "r.bin"
    assert fetch(server.url("/r.bin"), dest, sha256=sha(data), options=fast, log=lambda s: None) == sha(data)
    assert dest.read_bytes() == data


def test_hash_mismatch_fails_loudly_and_leaves_nothing(server, fast, tmp_path):
    data = payload(50_000, seed=5)
    server.files["/bad.bin"] = data
    wrong = "0" * 64
    dest = tmp_path / "bad.bin"
    with pytest.raises(HashMismatchError) as err:
        fetch(server.url("/bad.bin"), dest, sha256=wrong, options=fast, log=lambda s: None)
    assert wrong in str(err.value) and sha(data) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_retries_are_bounded(server, tmp_path):
    server.faults["/down.bin"] = [Fault(status=503)] * 10
    opts = FetchOptions(retries=2, backoff_s=0.01, allow_http_localhost=True)
    with pytest.raises(DownloadError, match="gave up after 3 attempts"):
        fetch(server.url("/down.bin"), tmp_path / "down.bin", options=opts, log=lambda s: None)
    assert server.count("/down.bin") == 3


def test_transient_errors_then_success(server, fast, tmp_path):
    data = payload(10_000, seed=6)
    server.files["/flaky.bin"] = data
    server.faults["/flaky.bin"] = [Fault(status=502), Fault(status=429)]
    assert fetch(server.url("/flaky.bin"), tmp_path / "f.bin", sha256=sha(data), options=fast,
                 log=lambda s: None) == sha(data)
    assert server.count("/flaky.bin") == 3


def test_not_found_is_final_without_retries(server, fast, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.url("/missing.bin"), tmp_path / "x.bin", options=fast, log=lambda s: None)
    assert server.count("/missing.bin") == 1


def test_read_timeout_is_retried_and_resumed(server, tmp_path):
    data = payload(20_000, seed=7)
    server.files["/slow.bin"] = data
    server.faults["/slow.bin"] = [Fault(stall_s=1.0)]
    opts = FetchOptions(timeout_s=0.3, retries=2, backoff_s=0.01, allow_http_localhost=True)
    assert fetch(server.url("/slow.bin"), tmp_path / "s.bin", sha256=sha(data), options=opts,
                 log=lambda s: None) == sha(data)
    assert server.count("/slow.bin") == 2


def test_size_mismatch_is_an_error(server, fast, tmp_path):
    server.files["/s.bin"] = payload(1000)
    with pytest.raises(DownloadError, match="expected 999 bytes, got 1000"):
        fetch(server.url("/s.bin"), tmp_path / "s.bin", size=999, options=fast, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_https_only_unless_test_flag_and_localhost():
    check_url("https://huggingface.co/x")
    with pytest.raises(InsecureURLError):
        check_url("http://127.0.0.1:8000/x")
    check_url("http://127.0.0.1:8000/x", allow_http_localhost=True)
    for bad in ("http://example.com/x", "ftp://127.0.0.1/x", "file:///etc/passwd"):
        with pytest.raises(InsecureURLError):
            check_url(bad, allow_http_localhost=True)


def test_http_download_refused_without_flag(server, tmp_path):
    server.files["/w.bin"] = b"abc"
    with pytest.raises(InsecureURLError):
        fetch(server.url("/w.bin"), tmp_path / "w.bin", options=FetchOptions(), log=lambda s: None)
    assert server.requests == []


def test_redirect_to_plain_http_elsewhere_is_refused(server, fast, tmp_path):
    server.files["/real.bin"] = payload(5000)
    server.faults["/hop.bin"] = [Fault(redirect_to=server.url("/real.bin"))]
    # A redirect on the same allowed host is followed...
    fetch(server.url("/hop.bin"), tmp_path / "a.bin", options=fast, log=lambda s: None)
    assert (tmp_path / "a.bin").read_bytes() == server.files["/real.bin"]
    # ...one to a plain-http foreign host is refused before any connection is made to it.
    server.faults["/hop.bin"] = [Fault(redirect_to="http://example.invalid/real.bin")]
    with pytest.raises(InsecureURLError, match="only https"):
        fetch(server.url("/hop.bin"), tmp_path / "b.bin", options=fast, log=lambda s: None)
    assert not (tmp_path / "b.bin").exists()
