"""The optional API key, through a real uvicorn server: with ``api_key`` set every ``/v1`` route and ``/metrics``
answer 401 without it (or with a wrong one) and 200 with it (``X-API-Key`` or ``Authorization: Bearer``);
``/healthz``, ``/readyz``, the web page and its static files stay open. The setting comes from
``ADJOINT_SAMPLING_API_KEY`` (empty: no key), which docker compose passes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from service.settings import ServiceSettings
from tests.helpers import live_server

pytestmark = pytest.mark.redis

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def url(tiny_conformer_checkpoint: Path, redis_url: str) -> Iterator[str]:
    settings = ServiceSettings(
        checkpoint=tiny_conformer_checkpoint,
        redis_url=redis_url,
        redis_prefix="api-key",
        energy_model="mmff",
        energy_models=("mmff",),
        sampling_threads=1,
        torch_threads=1,
        inprocess_workers=0,
        api_key=KEY,
    )
    with live_server(settings) as base:
        yield base


def test_v1_and_metrics_need_the_key(url: str) -> None:
    request = {"smiles": "CCO", "num_conformers": 2, "energy_model": "mmff"}
    with httpx.Client(base_url=url, timeout=60) as anonymous:
        for method, path, body in [
            ("GET", "/v1/model", None),
            ("POST", "/v1/conformers", request),
            ("POST", "/v1/jobs", {"smiles": 5}),  # refused before the body is looked at
            ("GET", "/v1/jobs/" + "a" * 32, None),
            ("GET", "/metrics", None),
            ("GET", "/v1/no-such-route", None),
        ]:
            r = anonymous.request(method, path, json=body)
            assert r.status_code == 401, (path, r.text)
            assert "API key" in r.json()["message"] and r.headers["www-authenticate"] == "Bearer"
        wrong = anonymous.get("/v1/model", headers={"X-API-Key": KEY + "x"})
        assert wrong.status_code == 401 and wrong.json()["message"] == "wrong API key"
        assert anonymous.get("/v1/model", headers={"Authorization": "Basic " + KEY}).status_code == 401

    with httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": KEY}) as keyed:
        assert keyed.get("/v1/model").status_code == 200
        answer = keyed.post("/v1/conformers", json=request)
        assert answer.status_code == 200 and answer.json()["checks"]["requested"] == 2
        assert keyed.get("/metrics").status_code == 200
        assert keyed.get("/v1/jobs/" + "a" * 32).status_code == 404  # through the door, then the usual answers
    bearer = httpx.get(url + "/v1/model", headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert bearer.status_code == 200


def test_health_readiness_and_the_web_page_stay_open(url: str) -> None:
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(url + "/readyz", timeout=30).status_code == 200
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    script = httpx.get(url + "/static/app.js")
    assert script.status_code == 200 and "X-API-Key" in script.text and "sessionStorage" in script.text
    assert httpx.get(url + "/docs").status_code == 200


def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADJOINT_SAMPLING_API_KEY", KEY)
    settings = ServiceSettings()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == KEY
    assert KEY not in repr(settings)  # a secret: never printed in logs
    monkeypatch.setenv("ADJOINT_SAMPLING_API_KEY", "")  # what docker compose passes when it is unset
    assert ServiceSettings().api_key is None
    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text())
    api = compose["services"]["api"]["environment"]
    assert api["ADJOINT_SAMPLING_API_KEY"] == "${ADJOINT_SAMPLING_API_KEY:-}"
