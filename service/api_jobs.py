"""``/v1/jobs``: queued sampling for lists of molecules or many conformers.

Every SMILES is checked before the job is queued (422 naming ``smiles[i]``); a full queue is a 429 with
``Retry-After``; Redis out of reach is a 503 within ``redis_timeout_s`` (never a hang).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
import redis
from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response

from service.api_conformers import ERROR_RESPONSES, validate_request
from service.api_state import ServiceState, StateDep
from service.formats import MEDIA_TYPES, render
from service.jobs import QueueFull
from service.schemas import ErrorResponse, JobAccepted, JobRequest, JobResult, JobStatus, OutputFormat
from service.validation import ApiError

__all__ = ["router"]

router = APIRouter(tags=["jobs"])

JobId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="the id POST /v1/jobs returned")]
_NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "unknown job, or expired after the retention time"}
}


@asynccontextmanager
async def redis_errors(state: ServiceState) -> AsyncIterator[None]:
    """Redis unreachable or too slow: 503 with the reason, within the configured bound."""
    s = state.settings
    try:
        async with asyncio.timeout(2 * s.redis_timeout_s + 1):
            yield
    except (redis.ConnectionError, redis.TimeoutError, OSError, TimeoutError) as exc:
        state.metrics.rejected.labels("redis").inc()
        reason = str(exc) or type(exc).__name__
        raise ApiError(
            503,
            f"the job queue is unavailable (Redis at {state.redis_where}: {reason}); retry in {s.retry_after_s} s",
            headers={"Retry-After": str(s.retry_after_s)},
        ) from None


def _not_found(state: ServiceState, job_id: str) -> ApiError:
    return ApiError(
        404,
        f"no job {job_id}: unknown, or expired ({state.settings.result_ttl_s} s after it finished)",
    )


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobAccepted,
    responses={**ERROR_RESPONSES, 429: {"model": ErrorResponse, "description": "queue full; see Retry-After"}},
    summary="Queue a sampling job (one SMILES or a list)",
)
async def submit_job(body: JobRequest, state: StateDep) -> JSONResponse:
    s = state.settings
    await validate_request(state, body.smiles, body.energy_model, indexed=True, stereo=body.stereo)
    async with redis_errors(state):
        try:
            status = await state.jobs.submit(body)
        except QueueFull as exc:
            state.metrics.rejected.labels("queue_full").inc()
            raise ApiError(
                429,
                f"{exc}; retry in {s.retry_after_s} s",
                headers={"Retry-After": str(s.retry_after_s)},
            ) from None
    state.metrics.jobs_submitted.inc()
    accepted = JobAccepted(**status.model_dump(), status_url=f"/v1/jobs/{status.id}")
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202, headers={"Location": accepted.status_url})


@router.get("/v1/jobs/{job_id}", response_model=JobStatus, responses={**_NOT_FOUND, **ERROR_RESPONSES})
async def job_status(job_id: JobId, state: StateDep) -> JobStatus:
    async with redis_errors(state):
        status = await state.jobs.status(job_id)
    if status is None:
        raise _not_found(state, job_id)
    return status


@router.get(
    "/v1/jobs/{job_id}/result",
    response_model=JobResult,
    responses={
        200: {
            "description": "one entry per SMILES (`format`: json, or the SDF/XYZ of every conformer)",
            "content": {
                MEDIA_TYPES["sdf"]: {"schema": {"type": "string"}},
                MEDIA_TYPES["xyz"]: {"schema": {"type": "string"}},
            },
        },
        **_NOT_FOUND,
        409: {"model": ErrorResponse, "description": "not finished yet; see Retry-After"},
        **ERROR_RESPONSES,
    },
)
async def job_result(
    job_id: JobId, state: StateDep, format: Annotated[OutputFormat, Query(description="json, sdf or xyz")] = "json"
) -> Response:
    async with redis_errors(state):
        status = await state.jobs.status(job_id)
        if status is None:
            raise _not_found(state, job_id)
        if not status.status.finished:
            p = status.progress
            raise ApiError(
                409,
                f"job {job_id} is {status.status.value} ({p.finished} of {p.total} molecules done); "
                f"poll GET /v1/jobs/{job_id}",
                headers={"Retry-After": str(state.settings.retry_after_s)},
            )
        results = await state.jobs.results(job_id)
    if format == "json":
        body = JobResult(id=job_id, status=status.status, results=results)
        return Response(body.model_dump_json(), media_type="application/json")
    answers = [a for r in results for a in ([r.result] if r.result is not None else []) + (r.stereoisomers or [])]
    text = await anyio.to_thread.run_sync(render, format, answers)
    return Response(text, media_type=MEDIA_TYPES[format])
