"""Fill the models dir from the registry: download what is missing (weights/fetch.py), extract the
InsightFace archive safely, and keep `models.lock.json` beside the files: the sha256 of every file,
checked against the published hash where upstream publishes one and trusted on first use
otherwise; later runs with `verify=True` check present files against it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from weights.fetch import (DownloadError, FetchOptions, HashMismatchError, Log, fetch, human_size,
                           sha256_file, unlink, write_json)
from weights.registry import REPO_ROOT, WeightFile

LOCK_NAME = "models.lock.json"
STAGING_DIR = ".downloads"        # archives wait here until extracted
MAX_MEMBER_BYTES = 4 << 30        # no archive member we use is near this: larger means a zip bomb


def expected_bytes(entry: WeightFile) -> float | None:
    """Exact size where known, else the approximate one (for plans and warnings)."""
    return entry.size_bytes or (entry.approx_mb * 1e6 if entry.approx_mb else None)


class UnsafeArchiveError(DownloadError):
    """A zip entry would escape the target folder (absolute, '..', drive, link) or is oversized."""


@dataclass(frozen=True)
class DownloadOptions:
    fetch: FetchOptions = field(default_factory=FetchOptions)
    skip_present: bool = True         # keep files already in place (and valid where a hash is known)
    verify: bool = False              # hash present files against models.lock.json
    dry_run: bool = False


@dataclass(frozen=True)
class FileResult:
    name: str
    path: str
    action: str                       # downloaded | skipped | planned | bundled | failed
    sha256: str | None = None
    source: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.action != "failed"


def read_lock(models_dir: Path) -> dict:
    path = Path(models_dir) / LOCK_NAME
    if not path.is_file():
        return {"version": 1, "files": {}}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise DownloadError(f"{path}: unreadable ({exc}); fix or remove it") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise DownloadError(f"{path}: not a models lock file (no 'files' table)")
    return data


def _record(lock: dict, rel_path: str, sha: str, size: int, source: str, published: bool) -> None:
    lock["files"][rel_path] = {
        "sha256": sha, "size": size, "source": source,
        "checked_against": "published" if published else "first-use",
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------- zip archives

def _check_entry(info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = PurePosixPath(name).parts
    is_link = stat.S_ISLNK(info.external_attr >> 16)
    if (name.startswith("/") or "\\" in name or ".." in parts or is_link
            or (parts and ":" in parts[0])):
        raise UnsafeArchiveError(f"refusing archive entry {name!r}: absolute, '..', drive or link path")
    if info.file_size > MAX_MEMBER_BYTES:
        raise UnsafeArchiveError(f"refusing archive entry {name!r}: {info.file_size} bytes declared")


def extract_members(archive: Path, wanted: dict[str, Path]) -> dict[str, str]:
    """Extract the members whose base names are the keys of `wanted` to the paths given, and
    return their sha256s. Every entry is checked first: an archive with any unsafe entry is
    refused whole. Targets come from the registry, never from entry names."""
    out: dict[str, str] = {}
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_entry(info)
        for member, target in wanted.items():
            found = [i for i in infos if not i.is_dir() and PurePosixPath(i.filename).name == member]
            if len(found) != 1:
                raise DownloadError(f"{archive.name}: expected one {member!r}, found {len(found)}")
            info = found[0]
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            digest, written = hashlib.sha256(), 0
            with zf.open(info) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > info.file_size:  # lying header: stop before filling the disk
                        unlink(tmp)
                        raise UnsafeArchiveError(f"{member}: more bytes than the {info.file_size} declared")
                    dst.write(chunk)
                    digest.update(chunk)
            os.replace(tmp, target)
            out[member] = digest.hexdigest()
    return out


# ---------------------------------------------------------------- the models dir

@dataclass(frozen=True)
class _Check:
    ok: bool
    reason: str
    sha: str | None = None
    fatal: bool = False               # a recorded (TOFU) file changed: stop, do not overwrite


def _check_present(entry: WeightFile, target: Path, lock: dict, verify: bool) -> _Check:
    size = target.stat().st_size
    if entry.size_bytes is not None and size != entry.size_bytes:
        return _Check(False, f"size {size} is not the expected {entry.size_bytes}")
    rec = lock["files"].get(entry.path)
    published = {s.sha256 for s in entry.sources if s.sha256 and s.member is None}
    if published:  # cheap enough to always check (whisper 76 MB, VAE 335 MB)
        sha = sha256_file(target)
        if sha in published:
            return _Check(True, "present, matches the published sha256", sha)
        if rec and rec["sha256"] == sha and rec["checked_against"] == "first-use":
            return _Check(True, "present, matches models.lock.json (mirror copy)", sha)
        return _Check(False, f"present but sha256 {sha} is not the published one", sha)
    if rec is None:
        return _Check(True, "present, recorded on first use", sha256_file(target))
    if rec["size"] != size:
        return _Check(False, f"size {size} differs from models.lock.json ({rec['size']})", fatal=True)
    if verify:
        sha = sha256_file(target)
        if sha != rec["sha256"]:
            return _Check(False, f"sha256 {sha} differs from models.lock.json ({rec['sha256']})", sha, True)
        return _Check(True, "present, verified against models.lock.json", sha)
    return _Check(True, "present (size matches models.lock.json)", rec["sha256"])


_REPIN = ("It differs from the sha256 recorded in {lock} on first use: if the upstream change is "
          "expected, remove the '{path}' entry from {lock} and run again.")


def _pinned(lock: dict, entry: WeightFile) -> str | None:
    """The hash a re-download must match when upstream publishes none: the one recorded first."""
    rec = lock["files"].get(entry.path)
    return rec["sha256"] if rec else None


def _download_file(models_dir: Path, entry: WeightFile, lock: dict, options: DownloadOptions,
                   log: Log) -> FileResult:
    target = models_dir / entry.path
    pinned = _pinned(lock, entry)
    errors = []
    for src in entry.sources:
        log(f"  GET {src.url}")
        try:
            sha = fetch(src.url, target, sha256=src.sha256 or pinned, size=entry.size_bytes,
                        options=options.fetch, log=log)
        except HashMismatchError as exc:  # never fall back to a mirror after a wrong hash
            extra = "" if src.sha256 else "\n" + _REPIN.format(lock=LOCK_NAME, path=entry.path)
            return FileResult(entry.name, entry.path, "failed", source=src.url, message=str(exc) + extra)
        except (DownloadError, OSError) as exc:  # OSError: disk full, permissions
            errors.append(str(exc))
            log(f"  failed: {exc}")
            continue
        note = "sha256 matches the published hash" if src.sha256 else "no published hash: recorded (TOFU)"
        if not src.sha256 and entry.sha256:
            note += "; same bytes as the primary" if sha == entry.sha256 else "; differs from the primary's hash"
        _record(lock, entry.path, sha, target.stat().st_size, src.url, src.sha256 is not None)
        return FileResult(entry.name, entry.path, "downloaded", sha, src.url, note)
    return FileResult(entry.name, entry.path, "failed", message=" | ".join(errors))


def _download_archive(models_dir: Path, members: list[WeightFile], lock: dict,
                      options: DownloadOptions, log: Log) -> list[FileResult]:
    src = members[0].sources[0]
    archive = models_dir / STAGING_DIR / PurePosixPath(urllib.parse.urlsplit(src.url).path).name
    log(f"  GET {src.url} (archive for {', '.join(m.name for m in members)})")
    try:
        fetch(src.url, archive, sha256=src.sha256, options=options.fetch, log=log)
        hashes = extract_members(archive, {m.sources[0].member: models_dir / m.path for m in members})
    except (DownloadError, zipfile.BadZipFile, OSError) as exc:
        return [FileResult(m.name, m.path, "failed", source=src.url, message=str(exc)) for m in members]
    finally:
        unlink(archive)  # the .part stays for a resume when the download itself failed
    results = []
    for m in members:
        sha, pinned = hashes[m.sources[0].member], _pinned(lock, m)
        if pinned is not None and sha != pinned:
            unlink(models_dir / m.path)
            results.append(FileResult(m.name, m.path, "failed", sha, src.url, (
                f"sha256 mismatch for {m.sources[0].member} from {src.url}\n  expected {pinned}\n"
                f"  got      {sha}\n" + _REPIN.format(lock=LOCK_NAME, path=m.path))))
            continue
        _record(lock, m.path, sha, (models_dir / m.path).stat().st_size, src.url, False)
        results.append(FileResult(m.name, m.path, "downloaded", sha, src.url, "from archive; recorded (TOFU)"))
    return results


def _check_bundled(entry: WeightFile) -> FileResult:
    path = REPO_ROOT / entry.path
    sha = sha256_file(path) if path.is_file() else None
    if sha is not None and sha == entry.sha256:
        return FileResult(entry.name, entry.path, "bundled", sha, message="in the repo, sha256 matches")
    return FileResult(entry.name, entry.path, "failed", sha,
                      message=f"bundled file missing or altered (sha256 {sha}, expected {entry.sha256})")


def ensure_weights(models_dir: str | Path, entries: list[WeightFile],
                   options: DownloadOptions = DownloadOptions(), log: Log = print) -> list[FileResult]:
    """Make every entry present and checked under `models_dir`; one result per entry, in order.

    Never raises for a single file's failure (it is reported as `failed`); raises DownloadError
    only when another run holds the models dir."""
    models_dir = Path(models_dir)
    results: dict[str, FileResult] = {}
    archives: dict[str, list[WeightFile]] = {}
    lock_fd = None
    if not options.dry_run:
        models_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = _hold_dir(models_dir)
    try:
        lock = read_lock(models_dir)
        # 1. Plain files one by one; archive members are only collected here.
        for i, entry in enumerate(entries, 1):
            log(f"[{i}/{len(entries)}] {entry.name} -> {entry.path}")
            if entry.bundled:
                results[entry.name] = _check_bundled(entry)
                continue
            target = models_dir / entry.path
            # 1a. Keep what is present and valid; a changed TOFU file stops here (never overwritten).
            if target.is_file() and options.skip_present:
                check = _check_present(entry, target, lock, options.verify)
                if check.ok:
                    if entry.path not in lock["files"] and not options.dry_run:
                        _record(lock, entry.path, check.sha, target.stat().st_size, "present", False)
                    results[entry.name] = FileResult(entry.name, entry.path, "skipped", check.sha,
                                                     message=check.reason)
                    log(f"  {check.reason}")
                    continue
                if check.fatal:
                    results[entry.name] = FileResult(entry.name, entry.path, "failed", check.sha, message=(
                        f"{check.reason}; the file changed since it was recorded. Delete it to download again."))
                    log(f"  FAILED: {results[entry.name].message}")
                    continue
                log(f"  {check.reason}: downloading again")
            # 1b. Fetch (or only plan) what is missing or invalid.
            if options.dry_run:
                results[entry.name] = FileResult(entry.name, entry.path, "planned", source=entry.sources[0].url,
                                                 message=f"would download ~{human_size(expected_bytes(entry))}")
                continue
            _warn_disk(target, entry, log)
            if entry.sources[0].member is not None:  # fetched together once all entries are seen
                archives.setdefault(entry.sources[0].url, []).append(entry)
                continue
            results[entry.name] = _download_file(models_dir, entry, lock, options, log)
            write_json(models_dir / LOCK_NAME, lock)
        # 2. One download per archive for all of its missing members.
        for members in archives.values():
            for r in _download_archive(models_dir, members, lock, options, log):
                results[r.name] = r
            write_json(models_dir / LOCK_NAME, lock)
        if not options.dry_run:
            write_json(models_dir / LOCK_NAME, lock)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
    return [results[e.name] for e in entries]


def _hold_dir(models_dir: Path) -> int:
    """One download run per models dir: two would fight over the same .part files."""
    fd = os.open(models_dir / ".download.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DownloadError(f"another download_models run is using {models_dir}") from None
    return fd


def _warn_disk(target: Path, entry: WeightFile, log: Log) -> None:
    existing = next(p for p in target.parents if p.is_dir())  # do not create folders just to look
    free, need = shutil.disk_usage(existing).free, expected_bytes(entry)
    if need and free < need * 1.1:
        log(f"  warning: ~{human_size(need)} needed, {human_size(free)} free on {existing}")
