"""``POST /v1/conformers``: small requests answered at once.

The molecule is checked first (422 naming the field); the sampling runs on the engine's threads while the
event loop serves others; more waiting work than the engine takes is a 503 with ``Retry-After``, and an
answer later than ``sync_timeout_s`` a 504 (the work is cancelled if it has not started).
"""

from __future__ import annotations

import asyncio
import time

import anyio
from fastapi import APIRouter
from fastapi.responses import Response

from service.api_state import ServiceState, StateDep
from service.formats import MEDIA_TYPES, render
from service.schemas import (
    MAX_JOB_CONFORMERS,
    ConformerRequest,
    ConformerResponse,
    ErrorResponse,
    StereoisomersResponse,
)
from service.validation import ApiError, energy_model_error, smiles_errors

__all__ = ["ERROR_RESPONSES", "router"]

router = APIRouter(tags=["conformers"])

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "the server needs an API key (X-API-Key or Authorization: Bearer)"},
    413: {"model": ErrorResponse, "description": "request body over 1 MB"},
    422: {"model": ErrorResponse, "description": "invalid request: the message names the field"},
    503: {"model": ErrorResponse, "description": "overloaded or Redis unreachable; retry after Retry-After seconds"},
}

_SYNC_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "conformers, lowest energy first (`format`: json, or the SDF/XYZ file itself); with "
        "`stereo: enumerate` the JSON lists one answer per stereoisomer",
        "content": {
            MEDIA_TYPES["sdf"]: {"schema": {"type": "string"}},
            MEDIA_TYPES["xyz"]: {"schema": {"type": "string"}},
        },
    },
    **ERROR_RESPONSES,
    504: {"model": ErrorResponse, "description": "not finished within the server's sync timeout"},
}


async def validate_request(
    state: ServiceState, smiles: list[str], energy_model: str | None, *, indexed: bool, stereo: str
) -> None:
    """422 with every problem (energy model, each SMILES) at once."""
    errors = []
    model_error = energy_model_error(energy_model, state.settings.energy_models)
    if model_error is not None:
        errors.append(model_error)
    errors += await anyio.to_thread.run_sync(lambda: smiles_errors(smiles, indexed=indexed, stereo=stereo))
    if errors:
        raise ApiError(422, "; ".join(f"{e.field}: {e.msg}" for e in errors), errors=errors)


def overloaded(state: ServiceState) -> ApiError:
    s = state.settings
    state.metrics.rejected.labels("overloaded").inc()
    return ApiError(
        503,
        f"the server is busy ({state.engine.backlog} molecules waiting for {s.sampling_threads} sampling thread(s)); "
        f"retry in {s.retry_after_s} s or submit a job (POST /v1/jobs)",
        headers={"Retry-After": str(s.retry_after_s)},
    )


@router.post(
    "/v1/conformers",
    response_model=ConformerResponse | StereoisomersResponse,
    responses=_SYNC_RESPONSES,
    summary="Sample conformers of one molecule (synchronous)",
)
async def sample_conformers(body: ConformerRequest, state: StateDep) -> Response:
    s = state.settings
    await validate_request(state, [body.smiles], body.energy_model, indexed=False, stereo=body.stereo)
    engine = state.engine
    if engine.backlog >= s.sampling_threads + s.max_sync_waiting:
        raise overloaded(state)
    start = time.perf_counter()
    future = engine.submit(engine.sample, body.smiles, body.num_conformers, body)
    try:
        answers = await asyncio.wait_for(asyncio.wrap_future(future), timeout=s.sync_timeout_s)
    except TimeoutError:
        state.metrics.rejected.labels("timeout").inc()
        raise ApiError(
            504,
            f"sampling {body.num_conformers} conformers of {body.smiles!r} did not finish within "
            f"{s.sync_timeout_s:g} s; ask for fewer conformers, or submit a job (POST /v1/jobs, up to "
            f"{MAX_JOB_CONFORMERS} per molecule)",
        ) from None
    except ValueError as exc:  # the sampler refused the molecule after all (validation should have caught it)
        raise ApiError(422, f"smiles: {exc}") from exc
    state.metrics.sampling_seconds.labels("sync").observe(time.perf_counter() - start)
    state.metrics.conformers_served.labels("sync").inc(sum(a.checks.returned for a in answers))
    state.metrics.conformers_rejected.labels("sync").inc(sum(sum(a.checks.rejected.values()) for a in answers))
    if body.format == "json":
        doc: ConformerResponse | StereoisomersResponse = answers[0]
        if body.stereo == "enumerate":
            doc = StereoisomersResponse(smiles=body.smiles, stereoisomers=answers)
        return Response(doc.model_dump_json(), media_type="application/json")
    text = await anyio.to_thread.run_sync(render, body.format, answers)
    headers = {
        "X-Conformers-Requested": str(sum(a.checks.requested for a in answers)),
        "X-Conformers-Returned": str(sum(a.checks.returned for a in answers)),
        "X-Energy-Model": answers[0].provenance.energy_model,
        "X-Model-SHA256": answers[0].provenance.model.sha256,
    }
    return Response(text, media_type=MEDIA_TYPES[body.format], headers=headers)
