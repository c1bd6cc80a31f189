"""The HTTP service: ``create_app(settings)`` builds the FastAPI application.

Startup (the lifespan) loads the checkpoint, resolves Redis (``redis_url``, or the embedded server), starts
the model watch (``watch_run``: the run's newest published checkpoint is served as it appears,
:mod:`service.model_watch`) and ``inprocess_workers`` sampling-worker threads; shutdown stops them.
Everything lives on the app (:class:`~service.api_state.ServiceState`), nothing in module globals, so two apps
never interfere.

Every error is JSON with a one-sentence ``message`` and the offending fields in ``detail``
(:class:`~service.schemas.ErrorResponse`); user input never causes a 5xx. With ``api_key`` set, every ``/v1``
route and ``/metrics`` answer 401 without it (compared in constant time).

Example::

    >>> app = create_app(ServiceSettings(energy_model="mmff"))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.exceptions import HTTPException as StarletteHTTPException

from buffer.connection import redact_url
from buffer.keys import RedisKeys
from buffer.redis_server import resolve_redis_url
from service import api_conformers, api_jobs, api_system
from service.api_state import ServiceState
from service.engine import SamplingEngine
from service.jobs import AsyncJobStore, JobQueue
from service.metrics import ServiceMetrics
from service.model_watch import ModelWatch
from service.sampling_worker import SamplingWorker, WorkerConfig, default_consumer_name
from service.schemas import MAX_JOB_CONFORMERS, MAX_SYNC_CONFORMERS, ErrorResponse, FieldError
from service.settings import ServiceSettings
from service.validation import ApiError

__all__ = ["create_app", "start_model_watch", "start_workers"]

log = logging.getLogger(__name__)

API_VERSION = "1.0"
MAX_BODY_BYTES = 1 << 20  # 413 above this; the largest valid request (100 SMILES of 500 characters) is ~50 kB
_HINTS = {
    ("num_conformers", "less_than_equal"): (
        f" (up to {MAX_SYNC_CONFORMERS} per synchronous request; POST /v1/jobs takes up to {MAX_JOB_CONFORMERS})"
    ),
}


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """``('body', 'smiles', 3)`` -> ``smiles[3]``; the whole body (or a JSON syntax error) -> ``body``."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    name = ""
    for p in parts:
        if isinstance(p, int):
            name += f"[{p}]" if name else ""
        elif not p.startswith(("function-", "list[", "str", "constrained-")):  # pydantic's validator tags
            name += f".{p}" if name else p
    return name or "body"


def _validation_errors(exc: RequestValidationError) -> list[FieldError]:
    out = []
    for e in exc.errors():
        loc = [p if isinstance(p, int) else str(p) for p in e.get("loc", ())]
        kind = str(e.get("type", "invalid"))
        field = _field_name(loc)
        if kind == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "syntax error")
            msg = f"the request body is not valid JSON: {reason}"
            if len(loc) > 1 and isinstance(loc[1], int):
                msg += f" (at character {loc[1]})"
            field = "body"
        elif kind == "missing":
            msg = "required" if field != "body" else "a JSON request body is required"
        elif kind == "extra_forbidden":
            msg = "unknown field (see the schema at /docs)"
        elif kind == "model_attributes_type":
            msg = "the request body must be a JSON object"
        else:
            msg = str(e.get("msg", "invalid")) + _HINTS.get((field, kind), "")
        out.append(FieldError(field=field, loc=loc, msg=msg, type=kind))
    return out


def _error(status: int, message: str, errors: list[FieldError] | None = None, **headers: str) -> JSONResponse:
    body = ErrorResponse(message=message, detail=errors or [])
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers or None)


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.message, exc.errors, **exc.headers)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _validation_errors(exc)
        return _error(422, "; ".join(f"{e.field}: {e.msg}" for e in errors)[:2000], errors)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):  # e.g. bytes that are not UTF-8
            msg = "the request body is not valid JSON (it must be UTF-8 text)"
            return _error(422, f"body: {msg}", [FieldError(field="body", loc=["body"], msg=msg, type="json_invalid")])
        return _error(exc.status_code, str(exc.detail), None, **dict(exc.headers or {}))

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error answering %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


class _BodyLimitMiddleware:
    """413 for request bodies over ``max_bytes``, declared (answered before reading) or streamed (stopped
    once the limit is passed), with the service's JSON error."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"the request body is larger than {max_bytes // 1024} kB; send fewer SMILES per request"

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _error(413, self.message)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI passes its HTTPException on from the body reader
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)


class _ApiKeyMiddleware:
    """401 for ``/v1/...`` and ``/metrics`` without the key (``X-API-Key: <key>`` or ``Authorization: Bearer
    <key>``); the health checks, the web page and its static files stay open. ``hmac.compare_digest`` compares
    in time independent of where the keys differ."""

    PROTECTED_PREFIXES = ("/v1/", "/metrics")

    def __init__(self, app: Callable[..., Awaitable[None]], key: str) -> None:
        self.app = app
        self.key = key.encode()

    def _protected(self, path: str) -> bool:
        return path == "/v1" or any(path.startswith(p) for p in self.PROTECTED_PREFIXES)

    def _given(self, headers: dict[bytes, bytes]) -> bytes:
        if b"x-api-key" in headers:
            return headers[b"x-api-key"].strip()
        scheme, _, token = headers.get(b"authorization", b"").strip().partition(b" ")
        return token.strip() if scheme.lower() == b"bearer" else b""

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self._protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = self._given(dict(scope.get("headers") or []))
        if hmac.compare_digest(given, self.key):
            await self.app(scope, receive, send)
            return
        message = (
            "this server needs an API key: send it in the X-API-Key header (or Authorization: Bearer <key>)"
            if not given
            else "wrong API key"
        )
        await _error(401, message, None, **{"WWW-Authenticate": "Bearer"})(scope, receive, send)


class _MetricsMiddleware:
    """Counts requests and their latency by route template (``/v1/jobs/{job_id}``, never the raw path)."""

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static/") else "other")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status[0])).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - start)


def start_workers(
    settings: ServiceSettings, engine: SamplingEngine, url: str, metrics: ServiceMetrics, stop: threading.Event
) -> list[threading.Thread]:
    """``settings.inprocess_workers`` sampling-worker threads on the queue at ``url``."""
    threads = []
    for k in range(settings.inprocess_workers):
        client = redis.Redis.from_url(
            url, socket_timeout=30, socket_connect_timeout=settings.redis_timeout_s, retry=Retry(NoBackoff(), 1)
        )
        queue = JobQueue(
            client,
            RedisKeys(settings.redis_prefix),
            max_attempts=settings.max_attempts,
            result_ttl_s=settings.result_ttl_s,
            job_ttl_s=settings.job_ttl_s,
        )

        def on_answer(answer: Any, seconds: float) -> None:
            metrics.sampling_seconds.labels("job").observe(seconds)
            metrics.conformers_served.labels("job").inc(answer.checks.returned)
            metrics.conformers_rejected.labels("job").inc(sum(answer.checks.rejected.values()))

        worker = SamplingWorker(
            queue,
            engine,
            WorkerConfig(
                consumer=default_consumer_name(f"-inprocess-{k}"),
                reclaim_idle_ms=int(1000 * settings.reclaim_idle_s),
            ),
            stop=stop,
            on_answer=on_answer,
            on_finished=lambda state: metrics.jobs_finished.labels(state.value).inc(),
        )
        thread = threading.Thread(target=worker.run, name=f"sampling-worker-{k}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def start_model_watch(
    settings: ServiceSettings, engine: SamplingEngine, client: redis.Redis, metrics: ServiceMetrics | None = None
) -> ModelWatch | None:
    """The watch of ``settings.watch_run`` (``None`` without one), checked once now, so a process started after
    the run published serves its newest checkpoint from the first request."""
    if settings.watch_run is None:
        return None
    watch = ModelWatch(
        engine,
        client,
        run=settings.watch_run,
        interval_s=settings.watch_interval_s,
        keys=RedisKeys(settings.redis_prefix),
        on_result=None if metrics is None else lambda result: metrics.model_loads.labels(result).inc(),
    )
    watch.check()
    return watch


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The application; nothing is loaded until it starts (uvicorn runs the lifespan)."""
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = await anyio.to_thread.run_sync(SamplingEngine.load, settings)
        url = await anyio.to_thread.run_sync(resolve_redis_url, settings.redis_url, settings.redis_dir)
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        jobs = AsyncJobStore(
            client, RedisKeys(settings.redis_prefix), max_queue=settings.max_queue, job_ttl_s=settings.job_ttl_s
        )
        state = ServiceState(settings=settings, metrics=metrics, engine=engine, jobs=jobs, redis_where=redact_url(url))
        metrics.watch_backlog(lambda: engine.backlog)
        metrics.watch_model_round(lambda: float(engine.info.training_rounds or 0))
        watch_client = redis.Redis.from_url(
            url, socket_timeout=settings.redis_timeout_s, socket_connect_timeout=settings.redis_timeout_s
        )
        state.model_watch = await anyio.to_thread.run_sync(start_model_watch, settings, engine, watch_client, metrics)
        watch_thread = state.model_watch.start(state.stop) if state.model_watch is not None else None
        state.workers = start_workers(settings, engine, url, metrics, state.stop)
        app.state.service = state
        log.info(
            "service ready: model %s, energy model %s (of %s), Redis %s, %d in-process sampling worker(s)",
            engine.info.checkpoint,
            settings.energy_model,
            ", ".join(settings.energy_models),
            state.redis_where,
            len(state.workers),
        )
        try:
            yield
        finally:
            state.stop.set()
            for t in state.workers:
                await anyio.to_thread.run_sync(t.join, 10.0)
            if watch_thread is not None:
                await anyio.to_thread.run_sync(watch_thread.join, 10.0)
            watch_client.close()
            engine.close()
            await client.aclose()

    app = FastAPI(
        title="Adjoint Sampling conformers",
        version=API_VERSION,
        description=(
            "Low-energy 3D conformers from SMILES with an Adjoint Sampling diffusion sampler. "
            "Small requests: POST /v1/conformers. Many molecules or conformers: POST /v1/jobs, then poll."
        ),
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.add_middleware(_BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    if settings.api_key is not None:
        app.add_middleware(_ApiKeyMiddleware, key=settings.api_key.get_secret_value())
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    app.include_router(api_conformers.router)
    app.include_router(api_jobs.router)
    app.include_router(api_system.router)
    app.include_router(api_system.web_router)
    app.mount("/static", StaticFiles(directory=settings.web_dir, check_dir=False), name="static")
    return app
