"""HTTP routes in the RunPod serverless REST shape (the RunPod serverless worker API), over `StudioService`.

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

import asyncio
import hmac
import time
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import keys
from core.ids import check_id
from core.runner import QueueFull
from core.storage import StorageError, link_signer
from serve_app import jsonguard
from serve_app.inputs import InputError
from serve_app.service import NotReady
from serve_app.schemas import ApiError, HealthResponse, RunRequest, RunResponse, StatusResponse

# Every route can answer these (the guard runs before any route; storage may be down), all
# with the ApiError body. 422 is an input that decodes but cannot be used (InputError).
ERROR_RESPONSES = {status: {"model": ApiError, "description": why} for status, why in (
    (400, "bad input, naming the field"), (401, "missing or wrong Bearer API key"),
    (404, "no such job or endpoint"), (413, "request body too large"),
    (415, "media of an unsupported type"), (422, "media that cannot be used"),
    (429, "queue full; see Retry-After"),
    (503, "storage unavailable, or (production mode) a stage without its model; see Retry-After"))}


class PurgeResponse(BaseModel):
    removed: int = Field(description="jobs that were waiting and are now cancelled")
    status: str = "completed"


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


_DEFAULT_SERVICE = None  # the service of this process (set by the Serve ingress replica)


def bind_service(app: FastAPI | None, service) -> None:
    """Attach the StudioService the routes use. Serve hands its replica a copy of the FastAPI
    app, so the ingress also sets the process-wide default that the copy falls back to."""
    global _DEFAULT_SERVICE
    _DEFAULT_SERVICE = service
    if app is not None:
        app.state.service = service


def _svc(request: Request):
    service = _service_of(request.app)
    if service is None:
        raise RuntimeError("no StudioService bound to this app")
    return service


class BodyTooLarge(HTTPException):
    """413, raised from the guarded `receive` once a streamed body passes the limit."""

    def __init__(self, limit: int, size: int | None = None):
        what = f"request body is {size} bytes" if size is not None else \
            f"request body is over {limit} bytes"
        super().__init__(413, f"{what}; the limit is {limit} bytes (send large media as URLs)")




class Guard:
    """Pure ASGI middleware in front of every route (pure ASGI, not @app.middleware: that
    wraps `receive` in a task group, which turns our 413 into a 400):

    1. body size: past `max_request_bytes` is a 413 — from Content-Length when there is one,
       else while the body streams in (chunked uploads carry no length), never reading on;
    2. the Bearer key on everything but health and signed file links;
    3. the endpoint id, when this deployment is pinned to one.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        service = _service_of(scope.get("app")) if scope["type"] == "http" else None
        if service is None:
            return await self.app(scope, receive, send)
        settings = service.settings
        headers = dict(scope.get("headers") or [])
        # 1. Body size, declared.
        limit = settings.max_request_bytes
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await _send_error(scope, receive, send, 413, "PAYLOAD_TOO_LARGE",
                                     BodyTooLarge(limit, int(length)).detail)
        # 2. Bearer key. Health is exactly /v2/<endpoint>/health (a job called "health" is not).
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted under a prefix (Serve route_prefix)
            path = path[len(root):]
        parts = path.split("/")
        is_health = len(parts) == 4 and parts[1] == "v2" and parts[3] == "health"
        # the docs too: with a key set, only health and signed file links are open
        open_route = is_health or path.startswith("/files/")
        if settings.api_key is not None and not open_route:
            given = headers.get(b"authorization", b"")
            token = given[7:] if given[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, settings.api_key.get_secret_value().encode()):
                return await _send_error(scope, receive, send, 401, "UNAUTHORIZED",
                                         "missing or wrong Bearer API key")
        # 3. Endpoint id, when this deployment is pinned to one.
        if settings.endpoint_id and len(parts) > 2 and parts[1] == "v2" \
                and parts[2] != settings.endpoint_id:
            return await _send_error(scope, receive, send, 404, "UNKNOWN_ENDPOINT",
                                     f"no endpoint {parts[2]!r} here")
        # 1b. Body size, streamed: count while the route reads.
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # FastAPI re-raises an HTTPException from here as is
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception as e:  # noqa: BLE001 - re-raised unless it is our 413
            if started or not _is_body_too_large(e):
                raise
            await _send_error(scope, receive, send, 413, "PAYLOAD_TOO_LARGE",
                              BodyTooLarge(limit).detail)


async def _send_error(scope, receive, send, status: int, code: str, message: str) -> None:
    await _error(status, code, message)(scope, receive, send)


def _is_body_too_large(e: BaseException) -> bool:
    if isinstance(e, BaseExceptionGroup):
        return any(_is_body_too_large(x) for x in e.exceptions)
    return isinstance(e, BodyTooLarge)


def _checked_job_id(job_id: str) -> str:
    """A path's job id is checked like a submitted one before it becomes a storage key."""
    try:
        return check_id(job_id, "job_id")
    except ValueError as e:
        raise InputError("job_id", str(e).removeprefix("job_id "), code="INVALID_ID") from None


def _service_of(app):
    return getattr(getattr(app, "state", None), "service", None) or _DEFAULT_SERVICE


class GuardedJsonRoute(APIRoute):
    """A route whose JSON body is measured and parsed in a worker thread (serve_app/jsonguard.py)
    before FastAPI reads it: FastAPI then finds the parsed body in Starlette's request cache
    (`Request._json`, which `Request.json()` fills and reads) instead of parsing it on the
    event loop. A body that is not JSON (or not UTF-8) is left to FastAPI, whose 400 says so."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def guarded(request: Request):
            if request.method in ("POST", "PUT", "PATCH"):
                body = await request.body()
                if body:
                    try:
                        request._json = await asyncio.to_thread(jsonguard.parse, body)
                    except jsonguard.JsonTooComplex as e:
                        return _error(400, e.code, f"body: {e}")
                    except ValueError:   # not JSON, or not UTF-8: FastAPI's own 400 says so
                        pass
            return await handler(request)

        return guarded


def build_api() -> FastAPI:
    """The FastAPI app. The hosting code binds a StudioService with `bind_service`."""
    app = FastAPI(title="PersonaForge Studio", version="0.1.0",
                  description="Portrait + voice -> finished talking video. RunPod-compatible.")
    app.router.route_class = GuardedJsonRoute

    app.add_middleware(Guard)

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

    @app.exception_handler(NotReady)
    async def _not_ready(request: Request, exc: NotReady):
        return _error(503, "NOT_READY", str(exc), headers={"Retry-After": "30"})

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
        started = time.monotonic()
        service = _svc(request)
        rec = await service.submit(body)
        # the answer (the status, final or not) goes out before the proxy's request limit
        await service.wait(rec.id, service.runsync_wait(wait / 1000 if wait else None, started))
        return await asyncio.to_thread(service.status, rec.id)

    @app.get("/v2/{endpoint_id}/status/{job_id}", response_model=StatusResponse,
             responses=ERROR_RESPONSES, response_model_exclude_none=True)
    async def status(endpoint_id: str, job_id: str, request: Request):
        # a read-only storage round trip: off the event loop, so a slow bucket cannot stall
        # the other requests this replica is serving
        st = await asyncio.to_thread(_svc(request).status, _checked_job_id(job_id))
        if st is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return st

    @app.post("/v2/{endpoint_id}/cancel/{job_id}", response_model=RunResponse,
              responses=ERROR_RESPONSES)
    async def cancel(endpoint_id: str, job_id: str, request: Request):
        rec = await _svc(request).cancel(_checked_job_id(job_id))
        if rec is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return RunResponse(id=rec.id, status=(await asyncio.to_thread(_svc(request).status, rec.id)).status)

    @app.post("/v2/{endpoint_id}/purge-queue", response_model=PurgeResponse,
              responses=ERROR_RESPONSES)
    async def purge_queue(endpoint_id: str, request: Request):
        return PurgeResponse(removed=await _svc(request).purge_queue())

    @app.get("/v2/{endpoint_id}/health", response_model=HealthResponse, responses={
        **ERROR_RESPONSES, 503: {"model": HealthResponse, "description": "not ready (production "
                                 "mode: a stage without its model); the reasons are in the body"}})
    async def health(endpoint_id: str, request: Request):
        health = _svc(request).health()
        # 503 while not ready, so a load balancer or a probe routes around this replica
        return JSONResponse(health.model_dump(mode="json"), status_code=200 if health.ready else 503)

    @app.get("/files/{key:path}", include_in_schema=False)
    async def files(key: str, request: Request, exp: int = 0, sig: str = ""):
        service = _svc(request)
        storage = service.storage
        try:
            path: Path | None = storage.local_path(key)
        except StorageError:
            raise HTTPException(404, "no such file") from None
        if path is None:
            raise HTTPException(404, "files are served by the bucket, not by this service")
        # checked against the settings' key, not the storage's signer: with a key set, a file
        # is never served unsigned, however the storage was opened
        signer = link_signer(service.settings, clock=service.link_clock)
        if signer is not None and not signer.check(key, exp, sig):
            raise HTTPException(403, "link expired or not signed")
        if not keys.is_public(key) or not path.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(path)

    @app.exception_handler(StarletteHTTPException)  # also the router's own 404/405
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}.get(exc.status_code,
                                                                         "HTTP_ERROR")
        return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)

    return app
