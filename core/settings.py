"""Service settings: environment variables (seed names kept) with local-friendly defaults.

Every deployment builds the same `Settings` from the same environment, so the ingress and the
stages agree on where storage, models and personas live. Secrets are `SecretStr`: they never
print in reprs, logs or job records.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_VAR = REPO_ROOT / "var"  # default home for local runs (git-ignored)


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_float(name: str, default: float) -> float:
    return float(_env(name, str(default)))


def _env_bool(name: str, default: bool) -> bool:
    return (_env(name, "1" if default else "0") or "").lower() in ("1", "true", "yes", "on")


class Settings(BaseModel):
    # Storage: "local" keeps everything under storage_dir and the ingress serves it over HTTP;
    # "s3" uses any S3 API (Cloudflare R2 in production) through boto3.
    storage: Literal["local", "s3"] = "local"
    storage_dir: Path = LOCAL_VAR / "store"
    public_base_url: str = "http://127.0.0.1:8000"  # links to local files; R2 public URL for s3
    r2_endpoint: str | None = None
    r2_access_key: SecretStr | None = None
    r2_secret_key: SecretStr | None = None
    r2_bucket: str | None = None
    r2_public_url: str | None = None        # when set, links are public URLs, else presigned
    # How long a link handed to a client opens (local signed links and S3 presigned URLs). Links
    # are made when a client reads them (status), never stored, so they do not rot.
    link_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600)

    # Where jobs' inputs and intermediates live (deleted when each job ends): None = beside the
    # outputs under `scratch/` (every node sees them); a directory = there (node-local disk when
    # every replica shares one node, or a shared mount). core/storage.py.
    scratch_dir: Path | None = None
    # A job's record (what `status` answers) is deleted this long after its last write;
    # replicas' liveness beats after `lease_s` x BEAT_EXPIRY_LEASES (core/housekeeping.py).
    record_ttl_s: float = Field(default=7 * 24 * 3600, ge=60)

    models_dir: Path = Path("/workspace/models")
    personas_dir: Path = Path("/workspace/personas")
    cache_dir: Path = Path("/workspace/cache")

    # Production mode: every GPU stage serves its real model or refuses (stages/readiness.py);
    # never an embedded fallback. On in serve_config.yaml and the image, off locally.
    production: bool = False
    api_key: SecretStr | None = None        # Bearer key; None = open (only sensible on 127.0.0.1)
    endpoint_id: str | None = None          # if set, /v2/<other id>/... answers 404
    webhook_secret: SecretStr | None = None  # signs webhook deliveries (HMAC-SHA256 of the body)

    # Jobs
    max_running_jobs: int = 2               # per ingress replica; the rest wait IN_QUEUE
    max_queued_jobs: int = 100              # beyond this: 429 with Retry-After
    runsync_wait_s: float = 60.0            # /runsync holds the request at most this long
    # The HTTP proxy's limit on one request (Serve's http_options.request_timeout_s, which
    # serve_config.yaml sets to the same value). Everything a request waits for is ordered
    # inside it with RESPONSE_MARGIN_S to spare, so the client gets our answer, not a 408:
    # the input-fetch budget, then runsync's wait (serve_app/service.py, api.py).
    request_timeout_s: float = Field(default=120.0, gt=30.0)
    job_timeout_s: float = 1800.0           # a job past this ends TIMED_OUT
    lease_s: float = 60.0                   # a running job's heartbeat older than this = worker lost
    max_attempts: int = 2                   # runs of one job before FAILED("worker lost")

    # Inputs
    allow_http_inputs: bool = False
    allow_private_inputs: bool = False      # tests/dev only: lets URLs reach 127.0.0.1 etc.
    max_request_bytes: int = 150 * 1024 * 1024

    # Lip-sync
    latentsync_version: Literal["1.5", "1.6"] = "1.5"
    device: str = Field(default="auto")     # "auto" | "cpu" | "cuda"
    # GPU memory share of one process outside Ray (in-process service, CLIs): it caps every model
    # of the process together. None = no cap. Ray replicas cap at their own num_gpus instead.
    gpu_memory_fraction: float | None = Field(default=None, gt=0.0, le=1.0)

    # Persona takes: LivePortrait runs on CPU only when allowed (a full-size frame takes about
    # a minute on 2 CPU cores); without a GPU and this flag, the embedded reframer renders them.
    allow_cpu_takes: bool = False
    # Warm-up at replica start (stages/startup.py): every shape the engines will meet, before
    # the health check passes. auto: on a GPU only; on: also on CPU; off: never.
    warmup: Literal["auto", "on", "off"] = "auto"

    @property
    def work_dir(self) -> Path:
        return self.cache_dir / "work"

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        local_root = Path(_env("PF_HOME", str(LOCAL_VAR)))
        has_r2 = bool(_env("R2_ENDPOINT"))
        values = dict(
            storage=_env("PF_STORAGE", "s3" if has_r2 else "local"),
            storage_dir=Path(_env("PF_STORAGE_DIR", str(local_root / "store"))),
            public_base_url=_env("PF_PUBLIC_BASE_URL", "http://127.0.0.1:8000"),
            r2_endpoint=_env("R2_ENDPOINT"),
            r2_access_key=_env("R2_ACCESS_KEY"),
            r2_secret_key=_env("R2_SECRET_KEY"),
            r2_bucket=_env("R2_BUCKET"),
            r2_public_url=_env("R2_PUBLIC_URL"),
            link_ttl_s=int(_env_float("PF_LINK_TTL_S", 7 * 24 * 3600)),
            scratch_dir=_env("PF_SCRATCH_DIR"),
            record_ttl_s=_env_float("PF_RECORD_TTL_S", 7 * 24 * 3600),
            models_dir=Path(_env("PF_MODELS_DIR", _default_dir("/workspace/models", local_root / "models"))),
            personas_dir=Path(_env("PF_PERSONAS_DIR", _default_dir("/workspace/personas", local_root / "personas"))),
            cache_dir=Path(_env("PF_CACHE_DIR", _default_dir("/workspace/cache", local_root / "cache"))),
            production=_env_bool("PF_PRODUCTION", False),
            api_key=_env("PF_API_KEY"),
            endpoint_id=_env("PF_ENDPOINT_ID"),
            webhook_secret=_env("PF_WEBHOOK_SECRET"),
            max_running_jobs=int(_env_float("PF_MAX_RUNNING_JOBS", 2)),
            max_queued_jobs=int(_env_float("PF_MAX_QUEUED_JOBS", 100)),
            runsync_wait_s=_env_float("PF_RUNSYNC_WAIT_S", 60.0),
            request_timeout_s=_env_float("PF_REQUEST_TIMEOUT_S", 120.0),
            job_timeout_s=_env_float("PF_JOB_TIMEOUT_S", 1800.0),
            lease_s=_env_float("PF_LEASE_S", 60.0),
            allow_http_inputs=_env_bool("PF_ALLOW_HTTP_INPUTS", False),
            allow_private_inputs=_env_bool("PF_ALLOW_PRIVATE_INPUTS", False),
            latentsync_version=_env("PF_LATENTSYNC_VERSION", "1.5"),
            device=_env("PF_DEVICE", "auto"),
            gpu_memory_fraction=_env("PF_GPU_MEMORY_FRACTION"),
            allow_cpu_takes=_env_bool("PF_ALLOW_CPU_TAKES", False),
            warmup=_env("PF_WARMUP", "auto"),
        )
        values.update(overrides)
        return cls(**values)

    def public_view(self) -> dict:
        """Settings safe to log or show: secrets reduced to whether they are set."""
        out = self.model_dump(mode="json")
        for k in ("r2_access_key", "r2_secret_key", "api_key", "webhook_secret"):
            out[k] = "set" if getattr(self, k) is not None else None
        return out


def _default_dir(production: str, local: Path) -> str:
    """The /workspace volume when the host has one (production pods), else a folder under var/."""
    return production if Path("/workspace").is_dir() else str(local)
