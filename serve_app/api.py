"""HTTP routes in the RunPod serverless REST shape (SPEC.md §2), over `StudioService`.

    POST /v2/{endpoint_id}/run             -> {id, status}
    POST /v2/{endpoint_id}/runsync         -> waits up to runsync_wait_s, then the status
    GET  /v2/{endpoint_id}/status/{id}     -> status, stage, progress, output when final
    POST /v2/{endpoint_id}/cancel/{id}
    POST /v2/{endpoint_id}/purge-queue
    GET  /v2/{endpoint_id}/health          (no auth)
    GET  /files/{key}                      local storage downloads (signed when a key is set)

Every client mistake is a 4xx with {"error": {"code", "message"}} naming the field.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse

from serve_app.inputs import InputError
from serve_app.runner import QueueFull
from serve_app.schemas import (ApiError, HealthResponse, RunRequest, RunResponse,
                               StatusResponse)
from serve_app.storage import LocalStorage, StorageError

ERROR_RESPONSES = {400: {"model": ApiError}, 401: {"model": ApiError}, 404: {"model": ApiError},
                   413: {"model": ApiError}, 429: {"model": ApiError}}
LINK_TTL_S = 7 * 24 * 3600


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def _loc(loc: tuple) -> str:
    # ('body', 'input', 'lipsync_only', 'job_id') -> input.job_id
    parts = [str(p) for p in loc if p not in ("body",)]
    parts = [p for p in parts if p not in ("lipsync_only", "video_render", "persona_build")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


class LinkSigner:
    """HMAC-signed, expiring links for local files, so output URLs work without the API key."""

    def __init__(self, secret: str):
        self._secret = hashlib.sha256(b"personaforge-files:" + secret.encode()).digest()

    def __call__(self, key: str) -> str:
        exp = int(time.time()) + LINK_TTL_S
        return f"exp={exp}&sig={self._sig(key, exp)}"

    def _sig(self, key: str, exp: int) -> str:
        return hmac.new(self._secret, f"{key}\n{exp}".encode(), hashlib.sha256).hexdigest()

    def check(self, key: str, exp: int, sig: str) -> bool:
        return exp >= time.time() and hmac.compare_digest(self._sig(key, exp), sig or "")


_DEFAULT_SERVICE = None  # the service of this process (set by the Serve ingress replica)


def bind_service(app: FastAPI | None, service) -> None:
    """Attach the StudioService the routes use. Serve hands its replica a copy of the FastAPI
    app, so the ingress also sets the process-wide default that the copy falls back to."""
    global _DEFAULT_SERVICE
    _DEFAULT_SERVICE = service
    if app is not None:
        app.state.service = service


def _svc(request: Request):
    service = getattr(request.app.state, "service", None) or _DEFAULT_SERVICE
    if service is None:
        raise RuntimeError("no StudioService bound to this app")
    return service


def build_api() -> FastAPI:
    """The FastAPI app. The hosting code binds a StudioService with `bind_service`."""
    app = FastAPI(title="PersonaForge Studio", version="0.1.0",
                  description="Portrait + voice -> finished talking video. RunPod-compatible.")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        service = _svc(request)
        path = request.url.path
        # 1. Body size, before anything reads it.
        limit = service.settings.max_request_bytes
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            return _error(413, "PAYLOAD_TOO_LARGE", f"request body is {int(length)} bytes; the "
                          f"limit is {limit} bytes (send large media as URLs)")
        # 2. Bearer key on everything but health, docs and signed file links.
        key = service.settings.api_key
        open_route = path.endswith("/health") or path.startswith(("/files/", "/docs", "/openapi"))
        if key is not None and not open_route:
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), key.get_secret_value().encode()):
                return _error(401, "UNAUTHORIZED", "missing or wrong Bearer API key")
        # 3. Endpoint id, when this deployment is pinned to one.
        parts = path.split("/")
        if service.settings.endpoint_id and len(parts) > 2 and parts[1] == "v2" \
                and parts[2] != service.settings.endpoint_id:
            return _error(404, "UNKNOWN_ENDPOINT", f"no endpoint {parts[2]!r} here")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        msgs = []
        for err in exc.errors()[:10]:
            msg = err.get("msg", "invalid").removeprefix("Value error, ")
            msgs.append(f"{_loc(tuple(err.get('loc', ())))}: {msg}")
        return _error(400, "INVALID_INPUT", "; ".join(msgs))

    @app.exception_handler(InputError)
    async def _bad_input(request: Request, exc: InputError):
        return _error(exc.status, exc.code, f"{exc.field}: {exc.message}")

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull):
        return _error(429, "QUEUE_FULL", str(exc), headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(StorageError)
    async def _storage(request: Request, exc: StorageError):
        return _error(503, "STORAGE_UNAVAILABLE", str(exc), headers={"Retry-After": "10"})

    @app.post("/v2/{endpoint_id}/run", response_model=RunResponse, responses=ERROR_RESPONSES)
    async def run(endpoint_id: str, body: RunRequest, request: Request) -> RunResponse:
        rec = await _svc(request).submit(body)
        return RunResponse(id=rec.id, status=rec.status)

    @app.post("/v2/{endpoint_id}/runsync", response_model=StatusResponse,
              responses=ERROR_RESPONSES, response_model_exclude_none=True)
    async def runsync(endpoint_id: str, body: RunRequest, request: Request,
                      wait: int | None = Query(None, ge=1000, le=300000,
                                               description="ms to wait (RunPod's parameter)")):
        service = _svc(request)
        rec = await service.submit(body)
        wait_s = min(service.settings.runsync_wait_s, wait / 1000) if wait else \
            service.settings.runsync_wait_s
        await service.wait(rec.id, wait_s)
        return service.status(rec.id)

    @app.get("/v2/{endpoint_id}/status/{job_id}", response_model=StatusResponse,
             responses=ERROR_RESPONSES, response_model_exclude_none=True)
    async def status(endpoint_id: str, job_id: str, request: Request):
        st = _svc(request).status(job_id)
        if st is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return st

    @app.post("/v2/{endpoint_id}/cancel/{job_id}", response_model=RunResponse,
              responses=ERROR_RESPONSES)
    async def cancel(endpoint_id: str, job_id: str, request: Request):
        rec = _svc(request).cancel(job_id)
        if rec is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return RunResponse(id=rec.id, status=_svc(request).status(job_id).status)

    @app.post("/v2/{endpoint_id}/purge-queue")
    async def purge_queue(endpoint_id: str, request: Request):
        return {"removed": _svc(request).purge_queue(), "status": "completed"}

    @app.get("/v2/{endpoint_id}/health", response_model=HealthResponse)
    async def health(endpoint_id: str, request: Request):
        return _svc(request).health()

    @app.get("/files/{key:path}", include_in_schema=False)
    async def files(key: str, request: Request, exp: int = 0, sig: str = ""):
        service = _svc(request)
        storage = service.storage
        if not isinstance(storage, LocalStorage):
            raise HTTPException(404, "files are served by the bucket, not by this service")
        if storage.signer is not None and not storage.signer.check(key, exp, sig):
            raise HTTPException(403, "link expired or not signed")
        try:
            path: Path = storage.path(key)
        except StorageError:
            raise HTTPException(404, "no such file") from None
        if not key.startswith(("videos/", "personas/")) or not path.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(path)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        code = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND"}.get(exc.status_code,
                                                                            "HTTP_ERROR")
        return _error(exc.status_code, code, str(exc.detail))

    return app
