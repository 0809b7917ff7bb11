"""Fetch one URL into one file: https only (redirects included), streamed to `<name>.part`,
resumed with HTTP Range (+ If-Range, so a file that changed upstream restarts instead of being
spliced), bounded retries with exponential backoff, sha256 computed on the way and checked before
the file is renamed into place.

Plain http is allowed only to 127.0.0.1 / localhost and only with `allow_http_localhost` (tests).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

USER_AGENT = "personaforge-weights/1"
RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

Log = Callable[[str], None]


class DownloadError(RuntimeError):
    """A file could not be fetched (after retries) or failed a check."""


class InsecureURLError(DownloadError, ValueError):
    """Not an https URL (or a redirect away from https)."""


class HashMismatchError(DownloadError):
    """The bytes do not hash to the published / recorded sha256."""


class _Transient(Exception):
    """A failure worth retrying (connection lost, timeout, 5xx)."""


@dataclass(frozen=True)
class FetchOptions:
    timeout_s: float = 60.0           # connect and per-read socket timeout
    retries: int = 4                  # extra attempts per URL after the first
    backoff_s: float = 2.0            # first wait; doubles per attempt
    max_backoff_s: float = 60.0
    chunk_bytes: int = 1 << 20
    progress_every_s: float = 5.0
    allow_http_localhost: bool = False  # tests: plain http to 127.0.0.1 / localhost

def sha256_file(path: Path, _digest=None) -> str:
    digest = _digest or hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_url(url: str, allow_http_localhost: bool = False) -> None:
    """InsecureURLError unless `url` is https (or http to this machine when allowed)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if allow_http_localhost and parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS:
        return
    raise InsecureURLError(f"refusing to fetch {url!r}: only https:// URLs are allowed")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (HF and GitHub both redirect to CDNs) but never to a non-https URL."""

    def __init__(self, allow_http_localhost: bool):
        self.allow_http_localhost = allow_http_localhost

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl, self.allow_http_localhost)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def unlink(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def fetch(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None,
          options: FetchOptions = FetchOptions(), log: Log = print) -> str:
    """Download `url` to `dest` (resuming a `.part` left by an earlier attempt) and return the
    sha256 of the bytes. HashMismatchError (the `.part` deleted) when `sha256` is given and differs."""
    check_url(url, options.allow_http_localhost)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    meta = dest.with_name(dest.name + ".part.json")  # validator + total, to resume safely
    opener = urllib.request.build_opener(_CheckedRedirects(options.allow_http_localhost))
    attempts = options.retries + 1
    for attempt in range(attempts):
        try:
            digest = _fetch_once(opener, url, part, meta, options, log)
            break
        except _Transient as exc:
            if attempt + 1 >= attempts:
                raise DownloadError(f"{url}: gave up after {attempts} attempts; last error: {exc}") from None
            wait = min(options.backoff_s * 2 ** attempt, options.max_backoff_s)
            log(f"  retry {attempt + 1}/{options.retries} in {wait:.1f}s ({exc})")
            time.sleep(wait)
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        unlink(part, meta)
        raise DownloadError(f"{url}: expected {size} bytes, got {got_size}; the partial file was deleted")
    if sha256 is not None and digest != sha256:
        unlink(part, meta)
        raise HashMismatchError(f"sha256 mismatch for {url}\n  expected {sha256}\n  got      {digest}\n"
                                f"The partial file was deleted; nothing was written to {dest}.")
    os.replace(part, dest)
    unlink(meta)
    return digest


def _fetch_once(opener, url: str, part: Path, meta_path: Path, options: FetchOptions, log: Log) -> str:
    # 1. Resume only what this URL started, and only if the server's copy did not change (If-Range).
    have = part.stat().st_size if part.is_file() else 0
    meta = _read_meta(meta_path) if have else {}
    if have and meta.get("url") != url:
        have = 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if have:
        req.add_header("Range", f"bytes={have}-")
        etag = meta.get("etag") or ""
        # Weak ETags are not allowed in If-Range (RFC 9110 13.1.5): fall back to the date.
        validator = etag if etag and not etag.startswith("W/") else meta.get("last_modified")
        if validator:
            req.add_header("If-Range", validator)
    # 2. Open; sort failures into retryable and final.
    try:
        resp = opener.open(req, timeout=options.timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            if meta.get("total") == have:  # an earlier attempt got every byte
                return sha256_file(part)
            unlink(part, meta_path)
            raise _Transient("server refused the resume range; starting over") from None
        if exc.code in RETRY_HTTP:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except InsecureURLError as exc:  # a redirect to a non-https URL
        raise InsecureURLError(f"{url}: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
        raise _Transient(f"{type(exc).__name__}: {exc}") from None
    # 3. 206 continues the .part; 200 means the whole file (Range ignored, or the file changed).
    with resp:
        digest = hashlib.sha256()
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:
                unlink(part, meta_path)
                raise _Transient(f"server resumed at byte {start}, not {have}; starting over")
            sha256_file(part, digest)
            mode = "ab"
        else:
            if have:
                log("  server sent the whole file; starting over")
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        write_json(meta_path, {"url": url, "etag": resp.headers.get("ETag"),
                                "last_modified": resp.headers.get("Last-Modified"), "total": total})
        done = _stream(resp, part, mode, digest, have, total, options, log)
    if total is not None and done != total:
        raise _Transient(f"transfer stopped at {done} of {total} bytes")
    return digest.hexdigest()


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):  # missing or torn: do not trust the .part
        return {}
    return meta if isinstance(meta, dict) else {}


def _stream(resp, part: Path, mode: str, digest, done: int, total: int | None,
            options: FetchOptions, log: Log) -> int:
    start, last = time.monotonic(), time.monotonic()
    first = done
    with open(part, mode) as out:
        try:
            while chunk := resp.read(options.chunk_bytes):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                now = time.monotonic()
                if now - last >= options.progress_every_s:
                    last = now
                    log("  " + _progress(done, total, (done - first) / max(now - start, 1e-6)))
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
            raise _Transient(f"connection lost after {done} bytes ({type(exc).__name__}: {exc})") from None
        finally:
            out.flush()
            os.fsync(out.fileno())
    log("  " + _progress(done, total, None))
    return done


def human_size(n_bytes: float | None) -> str:
    if n_bytes is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes:.0f} B"


def _progress(done: int, total: int | None, rate: float | None) -> str:
    text = human_size(done)
    if total:
        text += f" / {human_size(total)} ({100 * done / total:.0f}%)"
    return text + (f" {human_size(rate)}/s" if rate is not None else "")


def _content_range(value: str | None) -> tuple[int, int | None]:
    """'bytes START-END/TOTAL' -> (START, TOTAL or None)."""
    try:
        unit, _, spec = (value or "").partition(" ")
        span, _, total = spec.partition("/")
        if unit != "bytes":
            raise ValueError
        return int(span.split("-")[0]), (int(total) if total.isdigit() else None)
    except ValueError:
        raise _Transient(f"unreadable Content-Range {value!r}") from None
