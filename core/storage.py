"""One storage interface, two backends: a local directory and any S3 API (Cloudflare R2).

Keys are slash-separated and built only from validated ids (core.ids), e.g.
`videos/<job_id>/final.mp4`. Stages pass keys to each other, never frames.

Scratch (a job's inputs and intermediates, `scratch/` keys) lives beside the outputs under its
own prefix by default, where every replica on every node finds it, and is deleted when the job
ends. With PF_SCRATCH_DIR it lives on that directory instead (`ScratchRouted`): node-local disk,
for deployments whose replicas all share one node (one GPU host, RunPod), or a shared mount.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import mimetypes
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

from core import keys
from core.settings import Settings

log = logging.getLogger("personaforge.storage")

UPLOAD_ATTEMPTS = 5
UPLOAD_BACKOFF_S = 0.5  # doubled per attempt: 0.5, 1, 2, 4 s


class StorageError(RuntimeError):
    pass


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in key:
        raise StorageError(f"invalid storage key {key!r}")
    return key


def content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


class Storage(ABC):
    """put/get files and bytes by key; `url()` gives a link a client can open."""

    kind: str

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike) -> None: ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when the key does not exist."""

    @abstractmethod
    def get_file(self, key: str, dest_dir: str | os.PathLike) -> Path:
        """A local path holding the object (may be the stored file itself: treat as read-only)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def list_modified(self, prefix: str) -> dict[str, float]:
        """Every key under `prefix` -> when it was last written (epoch seconds)."""

    @abstractmethod
    def url(self, key: str) -> str: ...

    def local_path(self, key: str) -> Path | None:
        """The file holding `key` when this storage is a local folder, else None."""
        return None

    def delete_folder(self, folder: str) -> int:
        """Delete every key under `folder` (a folder key of core.keys); returns how many."""
        found = self.list(folder + "/")
        for key in found:
            self.delete(key)
        return len(found)

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` only if it does not exist; True if we created it."""
        if self.exists(key):
            return False
        self.put_bytes(key, data)
        return True


class LocalStorage(Storage):
    kind = "local"

    def __init__(self, root: str | os.PathLike, base_url: str, signer=None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url.rstrip("/")
        self.signer = signer  # callable(key) -> query string, when links must be signed

    def path(self, key: str) -> Path:
        p = (self.root / _check_key(key)).resolve()
        if self.root not in p.parents:
            raise StorageError(f"key {key!r} escapes the storage root")
        return p

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        dest = self.path(key)
        if Path(path).resolve() == dest:
            return

        def write():
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)  # readers never see half a file
        self._in_folder(dest, write)

    def put_bytes(self, key: str, data: bytes) -> None:
        dest = self.path(key)

        def write():
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, dest)
        self._in_folder(dest, write)

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        dest = self.path(key)

        def create() -> bool:
            try:
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        return self._in_folder(dest, create)

    @staticmethod
    def _in_folder(dest: Path, write):
        """Run `write` with dest's folder in place; once more if a delete pruned the folder
        between its creation and the write (delete() removes folders it leaves empty)."""
        for attempt in (1, 2):
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                return write()
            except FileNotFoundError:
                if attempt == 2:
                    raise

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def get_file(self, key: str, dest_dir: str | os.PathLike) -> Path:
        p = self.path(key)
        if not p.is_file():
            raise StorageError(f"missing object {key}")
        return p

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        """Delete the file, and the folders above it that this leaves empty (a bucket has no
        folders: neither should the local store keep empty ones of finished jobs)."""
        path = self.path(key)
        path.unlink(missing_ok=True)
        folder = path.parent
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone with a concurrent delete): stop
                return
            folder = folder.parent

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))

    def list_modified(self, prefix: str) -> dict[str, float]:
        out = {}
        for key in self.list(prefix):
            try:
                out[key] = (self.root / key).stat().st_mtime
            except FileNotFoundError:  # deleted between the listing and the stat
                pass
        return out

    def url(self, key: str) -> str:
        query = f"?{self.signer(key)}" if self.signer else ""
        return f"{self.base_url}/files/{_check_key(key)}{query}"

    def local_path(self, key: str) -> Path | None:
        return self.path(key)


class S3Storage(Storage):
    """Any S3 API through boto3. Uploads are retried with backoff; a failed upload never loses
    the local file (the caller still holds it and the job can be retried)."""

    kind = "s3"

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str,
                 public_url: str | None = None, link_ttl_s: int = 7 * 24 * 3600):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.public_url = public_url.rstrip("/") if public_url else None
        self.link_ttl_s = link_ttl_s  # S3 caps presigned URLs at 7 days
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
            aws_secret_access_key=secret_key, region_name="auto",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=5, read_timeout=60))

    def _retry(self, what: str, fn):
        from botocore.exceptions import BotoCoreError, ClientError

        delay = UPLOAD_BACKOFF_S
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                return fn()
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                            "NoSuchBucket") or attempt == UPLOAD_ATTEMPTS:
                    raise StorageError(f"{what} failed: {code or e}") from None
            except (BotoCoreError, AttributeError) as e:
                # AttributeError: botocore chokes parsing some 5xx bodies of a restarting server
                if attempt == UPLOAD_ATTEMPTS:
                    raise StorageError(f"{what} failed after {attempt} attempts: "
                                       f"{type(e).__name__}") from None
            log.warning("%s: attempt %d failed, retrying in %.1fs", what, attempt, delay)
            time.sleep(delay)
            delay *= 2

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        _check_key(key)
        self._retry(f"upload {key}", lambda: self.client.upload_file(
            str(path), self.bucket, key, ExtraArgs={"ContentType": content_type(key)}))

    def put_bytes(self, key: str, data: bytes) -> None:
        _check_key(key)
        self._retry(f"upload {key}", lambda: self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type(key)))

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        if self.exists(key):
            return False
        try:  # conditional create (R2 and AWS honour If-None-Match; the exists() check covers the rest)
            self.client.put_object(Bucket=self.bucket, Key=_check_key(key), Body=data,
                                   ContentType=content_type(key), IfNoneMatch="*")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                return False
            raise StorageError(f"create {key} failed: {e.response.get('Error', {}).get('Code')}") from None
        return True

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        _check_key(key)
        try:
            obj = self._retry_get(lambda: self.client.get_object(Bucket=self.bucket, Key=key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise StorageError(f"read {key} failed: {e.response.get('Error', {}).get('Code')}") from None
        return obj["Body"].read()

    def _retry_get(self, fn):
        from botocore.exceptions import BotoCoreError, ClientError

        delay = UPLOAD_BACKOFF_S
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                return fn()
            except ClientError:
                raise
            except (BotoCoreError, AttributeError) as e:
                if attempt == UPLOAD_ATTEMPTS:
                    raise StorageError(f"storage unreachable: {type(e).__name__}") from None
                time.sleep(delay)
                delay *= 2

    def get_file(self, key: str, dest_dir: str | os.PathLike) -> Path:
        _check_key(key)
        dest = Path(dest_dir) / key.replace("/", "__")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.is_file():
            tmp = dest.with_name(f".{dest.name}.tmp")
            self._retry(f"download {key}",
                        lambda: self.client.download_file(self.bucket, key, str(tmp)))
            os.replace(tmp, dest)
        return dest

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._retry_get(lambda: self.client.head_object(Bucket=self.bucket, Key=_check_key(key)))
            return True
        except ClientError:
            return False

    def delete(self, key: str) -> None:
        self._retry(f"delete {key}",
                    lambda: self.client.delete_object(Bucket=self.bucket, Key=_check_key(key)))

    def list(self, prefix: str) -> list[str]:
        return sorted(self.list_modified(prefix))

    def list_modified(self, prefix: str) -> dict[str, float]:
        found: dict[str, float] = {}

        def scan():
            found.clear()
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix):
                found.update((o["Key"], o["LastModified"].timestamp())
                             for o in page.get("Contents", []))
        self._retry(f"list {prefix}", scan)
        return found

    def url(self, key: str) -> str:
        _check_key(key)
        if self.public_url:
            return f"{self.public_url}/{key}"
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=self.link_ttl_s)


class ScratchRouted(Storage):
    """The outputs' storage, with `scratch/` keys kept in a second storage (PF_SCRATCH_DIR).
    Callers see one storage: the route is the key's prefix."""

    def __init__(self, outputs: Storage, scratch: Storage):
        self.outputs, self.scratch = outputs, scratch
        self.kind = outputs.kind

    def _for(self, key: str) -> Storage:
        return self.scratch if key.startswith(keys.SCRATCH_PREFIX) else self.outputs

    def put_file(self, key, path):
        return self._for(key).put_file(key, path)

    def put_bytes(self, key, data):
        return self._for(key).put_bytes(key, data)

    def put_bytes_if_absent(self, key, data):
        return self._for(key).put_bytes_if_absent(key, data)

    def get_bytes(self, key):
        return self._for(key).get_bytes(key)

    def get_file(self, key, dest_dir):
        return self._for(key).get_file(key, dest_dir)

    def exists(self, key):
        return self._for(key).exists(key)

    def delete(self, key):
        return self._for(key).delete(key)

    def _listers(self, prefix: str) -> list[Storage]:
        if prefix.startswith(keys.SCRATCH_PREFIX):
            return [self.scratch]
        return [self.outputs] + ([self.scratch] if keys.SCRATCH_PREFIX.startswith(prefix) else [])

    def list(self, prefix):
        return sorted(k for s in self._listers(prefix) for k in s.list(prefix))

    def list_modified(self, prefix):
        out: dict[str, float] = {}
        for s in self._listers(prefix):
            out.update(s.list_modified(prefix))
        return out

    def url(self, key):
        return self._for(key).url(key)

    def local_path(self, key):
        return self._for(key).local_path(key)


class LinkSigner:
    """HMAC-signed, expiring links for local files, so output URLs work without the API key.
    `clock` (wall-clock seconds) stamps and checks the expiry; tests step it."""

    def __init__(self, secret: str, ttl_s: int = 7 * 24 * 3600,
                 clock: Callable[[], float] = time.time):
        self._secret = hashlib.sha256(b"personaforge-files:" + secret.encode()).digest()
        self.ttl_s, self.clock = ttl_s, clock

    def __call__(self, key: str) -> str:
        exp = int(self.clock()) + self.ttl_s
        return f"exp={exp}&sig={self._sig(key, exp)}"

    def _sig(self, key: str, exp: int) -> str:
        return hmac.new(self._secret, f"{key}\n{exp}".encode(), hashlib.sha256).hexdigest()

    def check(self, key: str, exp: int, sig: str) -> bool:
        return exp >= self.clock() and hmac.compare_digest(self._sig(key, exp), sig or "")


def link_signer(settings: Settings, clock: Callable[[], float] = time.time) -> LinkSigner | None:
    """The file-link signer for these settings: None without an API key. Every replica (the
    ingress and each stage) builds it from the same PF_API_KEY, so a link any stage makes is
    one the ingress's /files route accepts."""
    if not settings.api_key:
        return None
    return LinkSigner(settings.api_key.get_secret_value(), settings.link_ttl_s, clock)


# A storage key where a client will see a link: results and manifests keep the key (a link
# made when the job ended would expire in the record); `render_links` makes the link when the
# client reads it.
LINK_PREFIX = "storage-key:"


def link_to(key: str) -> str:
    return LINK_PREFIX + key


def render_links(value, storage: "Storage"):
    """`value` (JSON-like) with every `link_to(key)` replaced by a fresh link to the key."""
    if isinstance(value, str):
        return storage.url(value[len(LINK_PREFIX):]) if value.startswith(LINK_PREFIX) else value
    if isinstance(value, dict):
        return {k: render_links(v, storage) for k, v in value.items()}
    if isinstance(value, list):
        return [render_links(v, storage) for v in value]
    return value


def open_storage(settings: Settings, clock: Callable[[], float] = time.time) -> Storage:
    """The storage every replica opens: S3 from the R2_* settings, else the local folder, whose
    links are signed when an API key is set; scratch on PF_SCRATCH_DIR when that is set."""
    outputs = _open_outputs(settings, clock)
    if settings.scratch_dir is None:
        return outputs
    return ScratchRouted(outputs, LocalStorage(settings.scratch_dir, settings.public_base_url))


def _open_outputs(settings: Settings, clock: Callable[[], float]) -> Storage:
    if settings.storage == "s3":
        missing = [n for n, v in (("R2_ENDPOINT", settings.r2_endpoint),
                                  ("R2_ACCESS_KEY", settings.r2_access_key),
                                  ("R2_SECRET_KEY", settings.r2_secret_key),
                                  ("R2_BUCKET", settings.r2_bucket)) if not v]
        if missing:
            raise StorageError(f"s3 storage needs {', '.join(missing)}")
        return S3Storage(settings.r2_endpoint, settings.r2_access_key.get_secret_value(),
                         settings.r2_secret_key.get_secret_value(), settings.r2_bucket,
                         settings.r2_public_url, settings.link_ttl_s)
    return LocalStorage(settings.storage_dir, settings.public_base_url,
                        signer=link_signer(settings, clock))
