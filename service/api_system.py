"""Operations endpoints: liveness, readiness, Prometheus metrics, the model's description, the web page."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response

from service.api_state import StateDep
from service.metrics import CONTENT_TYPE
from service.schemas import ServiceInfo
from service.validation import ApiError

__all__ = ["router", "web_router"]

router = APIRouter(tags=["operations"])
web_router = APIRouter(include_in_schema=False)


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Model loaded, Redis reachable, workers running",
    responses={503: {"description": "not ready; `checks` says what is wrong"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    info = state.engine.info
    checks: dict[str, Any] = {
        "model": f"loaded {info.checkpoint} (round {info.training_rounds}, sha256 {info.sha256[:12]})"
    }
    if state.model_watch is not None:  # a refused checkpoint is reported, not fatal: the previous model serves
        checks["model_watch"] = state.model_watch.status.describe()
    ready = True
    try:
        async with asyncio.timeout(state.settings.redis_timeout_s + 0.5):
            await state.jobs.ping()
        checks["redis"] = f"reachable at {state.redis_where}"
    except Exception as exc:  # any failure to answer PING means not ready, with the reason
        ready = False
        checks["redis"] = f"unreachable at {state.redis_where}: {exc or type(exc).__name__}"
    if state.settings.inprocess_workers:
        alive = sum(t.is_alive() for t in state.workers)
        checks["workers"] = f"{alive} of {state.settings.inprocess_workers} in-process sampling workers running"
        ready = ready and alive == state.settings.inprocess_workers
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    try:
        async with asyncio.timeout(state.settings.redis_timeout_s):
            state.metrics.queue_depth.set(await state.jobs.depth())
    except Exception:  # metrics must answer while Redis is down; the gauge keeps its last value
        pass
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/v1/model", response_model=ServiceInfo, summary="The model, energy models and limits")
async def model_info(state: StateDep) -> ServiceInfo:
    return state.engine.service_info()


@web_router.get("/", response_model=None)
async def index(state: StateDep) -> FileResponse:
    page = state.settings.web_dir / "index.html"
    if not page.is_file():
        raise ApiError(404, f"no web page installed ({page} is missing); the API is at /docs")
    return FileResponse(page, media_type="text/html")
