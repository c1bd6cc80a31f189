"""Property-based fuzzing of the live HTTP API from its own OpenAPI schema (schemathesis): generated valid
and invalid requests for every operation must never get a 5xx, and answers must match the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.formats import unregister_string_format

from service.settings import ServiceSettings
from tests.helpers import live_server

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def live_url(tiny_conformer_checkpoint: Path, redis_url: str) -> Iterator[str]:
    service = ServiceSettings(
        checkpoint=tiny_conformer_checkpoint,
        redis_url=redis_url,
        redis_prefix="fuzz",
        energy_model="mmff",
        energy_models=("mmff",),
        sampling_threads=1,
        torch_threads=1,
        inprocess_workers=0,  # queued jobs stay queued: no background sampling while fuzzing
        max_queue=5,
        sync_timeout_s=120.0,
    )
    with live_server(service) as url:
        yield url


# SMILES fields carry `format: smiles`: real molecules (small and drug-sized, charged, stereo, exotic) as
# well as random text, so the fuzzer reaches the sampler, not only the parser's 422.
SMILES = [
    "CCO",
    "N#N",
    "ClCl",
    "c1ccccc1O",
    "CC(=O)Nc1ccc(O)cc1",
    "C[C@H](N)C(=O)O",
    "F/C=C/F",
    "[NH4+]",
    "C1CC1",
    "B(O)O",
    "C[Si](C)(C)C",
    "c1ccncc1",
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "O=C([O-])CC[N+](C)(C)C",
    "[Xe]",
    "CC[U]",
    "C1CC(",
    "C" * 70,
    "[Na+].[Cl-]",
    "[H]",
    "c1cccc1",
    "C(C)(C)(C)(C)C",
]


@pytest.fixture(scope="module")
def api_schema(live_url: str) -> Iterator[Any]:
    schemathesis.openapi.format("smiles", st.one_of(st.sampled_from(SMILES), st.text(min_size=1, max_size=40)))
    yield schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    unregister_string_format("smiles")


OPERATIONS = [
    ("POST", "/v1/conformers"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"),
    ("GET", "/v1/jobs/{job_id}/result"),
    ("GET", "/v1/model"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    listed = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert listed == set(OPERATIONS)


WITH_INPUT = OPERATIONS[:4]  # invalid input can only be made where there is input
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in WITH_INPUT
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_server_errors_and_answers_match_the_schema(
    api_schema: Any, live_url: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    def check(case: Any) -> None:
        response = case.call_and_validate(base_url=live_url, timeout=120, checks=CHECKS)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    statuses: dict[int, int] = {}
    check()
    print(f"{method} {path} {mode.value}: {dict(sorted(statuses.items()))}")
    assert not [code for code in statuses if code >= 500]
