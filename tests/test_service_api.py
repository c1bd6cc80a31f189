"""The HTTP service through real uvicorn servers (threads, free ports), a real Redis and the tiny checkpoint:
every endpoint, every error class (422 with the field, 429/503 with Retry-After, 504, Redis down), the job
lifecycle with progress and expiry, and the three output formats read back with RDKit."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rdkit import Chem

from inference.torsional_sampling import TorsionalSampler
from molecules.smiles import mol_from_smiles
from service.schemas import MAX_SYNC_CONFORMERS
from service.settings import ServiceSettings
from tests.helpers import live_server

pytestmark = pytest.mark.redis

DRUG = "CC(=O)Nc1ccc(O)cc1"  # paracetamol, 20 atoms
LARGE = "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)NCCc1ccc(O)c(O)c1"  # 52 atoms: slow enough to keep a thread busy
OFTEN_VALID = "N#N"  # the tiny model gets about a third of these right (distinct energies)
ALL = {"dedup_rmsd": 0}  # every N#N is a heavy-atom duplicate of every other: keep them all (default: removed)


def _settings(checkpoint: Path, redis_url: str, prefix: str, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "checkpoint": checkpoint,
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "energy_model": "mmff",
        "energy_models": ("mmff", "xtb"),
        "sampling_threads": 1,
        "torch_threads": 1,
        "result_ttl_s": 60,
        "retry_after_s": 7,
        "redis_timeout_s": 1.0,
        **overrides,
    }
    return ServiceSettings(**values)


@pytest.fixture(scope="module")
def start(tiny_conformer_checkpoint: Path, redis_url: str) -> Iterator[Callable[..., str]]:
    """Start a server with settings overrides (each its own key prefix); all stop at the end of the module."""
    with contextlib.ExitStack() as stack:

        def _start(prefix: str, **overrides: Any) -> str:
            url = overrides.pop("redis_url", redis_url)
            checkpoint = overrides.pop("checkpoint", tiny_conformer_checkpoint)
            settings = _settings(checkpoint, url, prefix, **overrides)
            return stack.enter_context(live_server(settings))

        yield _start


@pytest.fixture(scope="module")
def api(start: Callable[..., str]) -> Iterator[httpx.Client]:
    """The embedded shape: one in-process sampling worker."""
    with httpx.Client(base_url=start("main", inprocess_workers=1), timeout=60) as client:
        yield client


def _wait_for(client: httpx.Client, job_id: str, states: set[str], timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if status["status"] in states:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_torsional_answers_count_relaxations_and_turned_acyl_isomers(start: Callable[..., str]) -> None:
    """With the shipped torsional model the answer says how many samples were relaxed and how many amide bonds
    were turned to their room-temperature isomer: the same count as the sampler's own for that seed."""
    shipped = Path(__file__).resolve().parent.parent / "checkpoints" / "torsional.pt"
    request = {"smiles": DRUG, "num_conformers": 16, "seed": 5, "energy_model": "mmff", **ALL}
    with httpx.Client(base_url=start("torsional", checkpoint=shipped, inprocess_workers=1), timeout=120) as client:
        checks = client.post("/v1/conformers", json={**request, "select": False}).json()["checks"]
        selected = client.post("/v1/conformers", json=request).json()
    # relaxed selection, this model's default: 32 draws, each relaxed, 16 distinct basins returned, and the answer
    # says it was done
    assert selected["provenance"]["post_processing"]["select"] is True
    assert selected["checks"]["returned"] == selected["checks"]["mmff_relaxed"] == 16
    counts: dict[str, int] = {}
    TorsionalSampler(shipped).sample_positions(mol_from_smiles(DRUG), 16, seed=5, counts=counts)
    assert checks["acyl_isomers_turned"] == counts["acyl_isomers_turned"] > 0
    assert checks["rejected"] == {} and checks["mmff_relaxed"] == 16 == checks["returned"]


# -- operations -----------------------------------------------------------------------------------------
def test_health_ready_model_and_openapi(api: httpx.Client, tiny_conformer_checkpoint: Path) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert set(ready.json()["checks"]) == {"model", "redis", "workers"}
    info = api.get("/v1/model").json()
    assert info["model"]["checkpoint"] == "tiny.pt" and len(info["model"]["sha256"]) == 64
    assert info["model"]["training_energy_model"] == "mmff" and info["model"]["integration_steps"] == 10
    assert info["default_energy_model"] == "mmff" and info["energy_models"] == ["mmff", "xtb"]
    assert info["max_atoms"] == 200 and "Xe" not in info["supported_elements"]
    assert info["limits"]["max_sync_conformers"] == MAX_SYNC_CONFORMERS
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/v1/conformers", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/readyz"} <= set(paths)


def test_web_page_and_static_files(api: httpx.Client) -> None:
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower()
    web = Path(__file__).resolve().parents[1] / "service" / "web"
    other = sorted(p.name for p in web.iterdir() if p.is_file() and p.name != "index.html")
    for name in other[:2]:
        assert api.get(f"/static/{name}").status_code == 200
    missing = api.get("/static/no-such-file.js")
    assert missing.status_code == 404 and "message" in missing.json()


def test_metrics_count_requests_and_conformers(api: httpx.Client) -> None:
    assert api.post("/v1/conformers", json={"smiles": OFTEN_VALID, "num_conformers": 8}).status_code == 200
    api.get("/v1/jobs/" + "0" * 32)
    text = api.get("/metrics").text
    assert 'adjoint_sampling_http_requests_total{method="POST",route="/v1/conformers",status="200"}' in text
    assert 'route="/v1/jobs/{job_id}",status="404"' in text  # the route template, never the raw path
    assert "adjoint_sampling_http_request_duration_seconds_bucket" in text
    assert 'adjoint_sampling_conformers_served_total{mode="sync"}' in text
    assert "adjoint_sampling_queue_depth " in text and "adjoint_sampling_sampling_backlog " in text


# -- synchronous sampling ---------------------------------------------------------------------------------
def test_sync_json_sorted_with_checks_and_provenance(api: httpx.Client) -> None:
    r = api.post("/v1/conformers", json={"smiles": OFTEN_VALID, "num_conformers": 32, "seed": 3, **ALL})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["num_atoms"] == 2 and body["elements"] == ["N", "N"]
    checks = body["checks"]
    assert checks["requested"] == 32 and checks["returned"] == len(body["conformers"]) >= 2
    assert checks["returned"] + sum(checks["rejected"].values()) == 32  # nothing unaccounted for
    assert "connectivity" in checks["passed"] and "stereochemistry" in checks["passed"]
    energies = [c["energy_ev"] for c in body["conformers"]]
    assert energies == sorted(energies)
    assert body["conformers"][0]["relative_energy_kcal_mol"] == 0.0
    rel = [c["relative_energy_kcal_mol"] for c in body["conformers"]]
    assert rel[-1] == pytest.approx((energies[-1] - energies[0]) * 23.0605, rel=1e-4)
    assert all(len(c["positions"]) == 2 for c in body["conformers"])
    prov = body["provenance"]
    assert prov["energy_model"] == "mmff" and prov["seed"] == 3 and prov["relaxed"] is False
    assert prov["model"]["sha256"] == api.get("/v1/model").json()["model"]["sha256"]
    assert "sample" in prov["timings_s"]
    again = api.post("/v1/conformers", json={"smiles": OFTEN_VALID, "num_conformers": 32, "seed": 3, **ALL}).json()
    assert [c["energy_ev"] for c in again["conformers"]] == energies  # a seed reproduces the answer


def test_sync_mostly_rejected_still_answers_with_reasons(api: httpx.Client) -> None:
    request = {"smiles": DRUG, "num_conformers": 6, "relax": True, "prune_rms": 0.5, "repair": False}
    r = api.post("/v1/conformers", json=request)
    assert r.status_code == 200
    checks = r.json()["checks"]
    assert checks["returned"] + sum(checks["rejected"].values()) + checks["pruned"] == 6
    assert checks["repaired"] == 0 and r.json()["provenance"]["repaired"] is False
    if checks["returned"] + checks["pruned"] < 6:
        assert checks["rejected"]  # the tiny model's failures are reported, not hidden
    repaired = api.post("/v1/conformers", json={**request, "repair": True}).json()["checks"]
    assert repaired["repaired"] == 6 and 0 <= repaired["stereo_repaired"] <= 6
    assert checks["stereo_repaired"] == 0
    assert repaired["returned"] + sum(repaired["rejected"].values()) + repaired["pruned"] == 6


def test_sync_sdf_and_xyz_read_back(api: httpx.Client) -> None:
    request = {"smiles": OFTEN_VALID, "num_conformers": 32, "seed": 3, **ALL}
    as_json = api.post("/v1/conformers", json=request).json()
    sdf = api.post("/v1/conformers", json={**request, "format": "sdf"})
    assert sdf.status_code == 200 and sdf.headers["content-type"].startswith("chemical/x-mdl-sdfile")
    mols = [m for m in Chem.ForwardSDMolSupplier(io.BytesIO(sdf.content), removeHs=False)]
    assert len(mols) == as_json["checks"]["returned"] == int(sdf.headers["x-conformers-returned"]) >= 2
    assert all(m is not None and m.GetNumAtoms() == 2 for m in mols)
    energies = [m.GetDoubleProp("energy_eV") for m in mols]
    assert energies == sorted(energies)
    assert energies == pytest.approx([c["energy_ev"] for c in as_json["conformers"]])
    assert mols[0].GetProp("energy_model") == "mmff"
    xyz = api.post("/v1/conformers", json={**request, "format": "xyz"})
    assert xyz.headers["content-type"].startswith("chemical/x-xyz")
    lines = xyz.text.splitlines()  # CREST's layout: the bare energy in Hartree on each comment line
    assert len(lines) == 4 * len(mols) and lines[0].strip() == "2"
    assert float(lines[1]) * 27.211386245988 == pytest.approx(energies[0], abs=1e-5)


# -- errors: 4xx with the field ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"smiles": "C1CC(", "num_conformers": 2}, "smiles", "cannot parse SMILES"),
        ({"smiles": "CC[Xe]CC"}, "smiles", "unsupported element Xe"),
        ({"smiles": "O=[U]=O"}, "smiles", "unsupported element U"),
        ({"smiles": "C" * 82}, "smiles", "248 atoms with hydrogens; the limit is 200"),
        ({"smiles": "[Na+].[Cl-]"}, "smiles", "disconnected fragments"),
        ({"smiles": "[H+]"}, "smiles", "single atom"),
        ({"smiles": "CCO", "num_conformers": MAX_SYNC_CONFORMERS + 1}, "num_conformers", "POST /v1/jobs"),
        ({"smiles": "CCO", "num_conformers": 0}, "num_conformers", "greater than or equal to 1"),
        ({"smiles": "CCO", "energy_model": "dft"}, "energy_model", "choose one of mmff, xtb"),
        ({"smiles": "CCO", "format": "pdb"}, "format", "'json', 'sdf' or 'xyz'"),
        ({"smiles": "CCO", "prune_rms": -1}, "prune_rms", "greater than 0"),
        ({"smiles": "CCO", "num_conformer": 3}, "num_conformer", "unknown field"),
        ({"num_conformers": 3}, "smiles", "required"),
        ({"smiles": "x" * 501}, "smiles", "at most 500 characters"),
        ({"smiles": "CCO", "select": True, "repair": True}, "select", "cannot be combined with repair"),
    ],
)
def test_sync_bad_input_is_422_naming_the_field(
    api: httpx.Client, body: dict[str, Any], field: str, words: str
) -> None:
    r = api.post("/v1/conformers", json=body)
    assert r.status_code == 422, r.text
    error = r.json()
    assert field in [d["field"] for d in error["detail"]]
    assert words in error["message"], error["message"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"smiles": "CCO",', "not valid JSON"),
        (b'{"smiles": "CCO" "seed": 1}', "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"", "request body is required"),
    ],
)
def test_malformed_json_is_422(api: httpx.Client, content: bytes, words: str) -> None:
    r = api.post("/v1/conformers", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422 and words in r.json()["message"], r.text
    assert r.json()["detail"][0]["field"] == "body"


def test_oversized_body_is_413_whether_declared_or_streamed(api: httpx.Client) -> None:
    huge = b'{"smiles": "' + b"C" * 1_100_000 + b'"}'
    declared = api.post("/v1/jobs", content=huge, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "larger than 1024 kB" in declared.json()["message"]
    streamed = api.post("/v1/jobs", content=iter([huge[:600_000], huge[600_000:]]))
    assert streamed.status_code == 413 and "larger than 1024 kB" in streamed.json()["message"]


def test_jobs_name_the_offending_list_item(api: httpx.Client) -> None:
    r = api.post("/v1/jobs", json={"smiles": ["CCO", "c1ccccc1", "C1CC(", "CC[Xe]"]})
    assert r.status_code == 422
    fields = {d["field"]: d["msg"] for d in r.json()["detail"]}
    assert set(fields) == {"smiles[2]", "smiles[3]"} and "Xe" in fields["smiles[3]"]
    r = api.post("/v1/jobs", json={"smiles": ["CCO", 5]})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "smiles[1]"
    assert api.post("/v1/jobs", json={"smiles": []}).status_code == 422
    assert api.post("/v1/jobs", json={"smiles": ["C"] * 101}).json()["detail"][0]["field"] == "smiles"


def test_unknown_routes_and_ids(api: httpx.Client) -> None:
    assert api.get("/v1/nothing").status_code == 404
    assert api.get("/v1/jobs/not-an-id").status_code == 422
    missing = api.get("/v1/jobs/" + "a" * 32)
    assert missing.status_code == 404 and "unknown, or expired" in missing.json()["message"]
    assert api.get("/v1/jobs/" + "a" * 32 + "/result").status_code == 404
    assert api.delete("/v1/conformers").status_code == 405


# -- jobs -------------------------------------------------------------------------------------------------
def test_job_lifecycle_single_smiles_string_and_formats(api: httpx.Client) -> None:
    r = api.post("/v1/jobs", json={"smiles": OFTEN_VALID, "num_conformers": 40, "seed": 3, **ALL})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" == job["status_url"]
    assert job["status"] == "queued" and job["progress"] == {"total": 1, "finished": 0, "failed": 0, "fraction": 0.0}
    done = _wait_for(api, job["id"], {"done", "failed"})
    assert done["status"] == "done" and done["progress"]["fraction"] == 1.0 and done["attempts"] == 1
    assert done["started_at"] >= done["created_at"] and done["finished_at"] >= done["started_at"]
    assert done["expires_at"] == pytest.approx(done["finished_at"] + 60)
    result = api.get(done["result_url"]).json()
    (entry,) = result["results"]
    assert entry["index"] == 0 and entry["error"] is None and entry["result"]["checks"]["requested"] == 40
    energies = [c["energy_ev"] for c in entry["result"]["conformers"]]
    assert energies == sorted(energies) and len(energies) >= 2
    sdf = api.get(done["result_url"], params={"format": "sdf"})
    mols = list(Chem.ForwardSDMolSupplier(io.BytesIO(sdf.content), removeHs=False))
    assert [m.GetDoubleProp("energy_eV") for m in mols] == pytest.approx(energies)
    xyz = api.get(done["result_url"], params={"format": "xyz"}).text.splitlines()
    assert xyz.count("  2") == len(energies)  # CREST layout: one frame per conformer
    assert api.get(done["result_url"], params={"format": "mol2"}).status_code == 422


def test_job_with_many_molecules_reports_progress(api: httpx.Client) -> None:
    smiles = [OFTEN_VALID, "CCO", DRUG, "S"]
    job = api.post("/v1/jobs", json={"smiles": smiles, "num_conformers": 8}).json()
    seen = []
    deadline = time.monotonic() + 60
    while (status := api.get(f"/v1/jobs/{job['id']}").json())["status"] != "done":
        seen.append(status["progress"]["finished"])
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert seen == sorted(seen)  # progress never goes back
    results = api.get(f"/v1/jobs/{job['id']}/result").json()["results"]
    assert [r["smiles"] for r in results] == smiles and [r["index"] for r in results] == [0, 1, 2, 3]


def test_job_lifecycle_step_by_step_and_expiry(
    start: Callable[..., str], tiny_conformer_checkpoint: Path, redis_url: str
) -> None:
    """No worker in the server: the test plays the worker, holding it after the first molecule."""
    from buffer.connection import RedisSettings, connect
    from buffer.keys import RedisKeys
    from service.engine import SamplingEngine
    from service.jobs import JobQueue
    from service.sampling_worker import SamplingWorker, WorkerConfig

    settings = _settings(tiny_conformer_checkpoint, redis_url, "steps", inprocess_workers=0, result_ttl_s=2)
    api = httpx.Client(base_url=start("steps", inprocess_workers=0, result_ttl_s=2), timeout=30)
    job = api.post("/v1/jobs", json={"smiles": ["CCO", "CCN", "CCC"], "num_conformers": 2}).json()
    assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    early = api.get(f"/v1/jobs/{job['id']}/result")
    assert early.status_code == 409 and "queued" in early.json()["message"] and early.headers["retry-after"] == "7"

    engine = SamplingEngine.load(settings)
    gate, answers = threading.Event(), []

    def hold_after_first(answer: Any, _seconds: float) -> None:
        answers.append(answer)
        if len(answers) == 2:
            assert gate.wait(30)

    queue = JobQueue(
        connect(RedisSettings(url=redis_url)), RedisKeys("steps"), max_attempts=3, result_ttl_s=2, job_ttl_s=60
    )
    worker = SamplingWorker(
        queue, engine, WorkerConfig(consumer="test-worker", block_ms=100), on_answer=hold_after_first
    )
    thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 1}, daemon=True)
    thread.start()
    try:
        running = _wait_for(api, job["id"], {"running"})
        deadline = time.monotonic() + 30
        while running["progress"]["finished"] < 1:
            assert time.monotonic() < deadline
            running = api.get(f"/v1/jobs/{job['id']}").json()
        assert running["status"] == "running" and running["progress"]["fraction"] == pytest.approx(1 / 3, abs=1e-3)
        assert api.get(f"/v1/jobs/{job['id']}/result").status_code == 409
    finally:
        gate.set()
        thread.join(30)
        engine.close()
    done = api.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "done" and done["progress"]["finished"] == 3
    assert len(api.get(f"/v1/jobs/{job['id']}/result").json()["results"]) == 3
    time.sleep(max(0.0, done["expires_at"] - time.time()) + 0.6)
    gone = api.get(f"/v1/jobs/{job['id']}")
    assert gone.status_code == 404 and "expired" in gone.json()["message"]
    assert api.get(f"/v1/jobs/{job['id']}/result").status_code == 404


# -- load and time limits ---------------------------------------------------------------------------------
def test_full_queue_is_429_with_retry_after(start: Callable[..., str]) -> None:
    api = httpx.Client(base_url=start("full", inprocess_workers=0, max_queue=2), timeout=30)
    for _ in range(2):
        assert api.post("/v1/jobs", json={"smiles": "CCO"}).status_code == 202
    full = api.post("/v1/jobs", json={"smiles": ["CCO", "CCN"]})
    assert full.status_code == 429 and full.headers["retry-after"] == "7"
    assert "queue is full (2 unfinished jobs)" in full.json()["message"]
    assert "adjoint_sampling_queue_depth 2.0" in api.get("/metrics").text
    assert api.post("/v1/conformers", json={"smiles": "CCO", "num_conformers": 2}).status_code == 200


def test_sync_timeout_is_504_and_busy_is_503(start: Callable[..., str]) -> None:
    api = httpx.Client(
        base_url=start("slow", inprocess_workers=0, sync_timeout_s=0.001, max_sync_waiting=0), timeout=30
    )
    slow = api.post("/v1/conformers", json={"smiles": LARGE, "num_conformers": 64})
    assert slow.status_code == 504, slow.text
    assert "did not finish within 0.001 s" in slow.json()["message"] and "POST /v1/jobs" in slow.json()["message"]
    busy = api.post("/v1/conformers", json={"smiles": "CCO", "num_conformers": 2})  # the 64 are still sampling
    assert busy.status_code == 503 and busy.headers["retry-after"] == "7"
    assert "busy" in busy.json()["message"]


# -- Redis down ---------------------------------------------------------------------------------------------
def test_redis_down_is_503_with_the_reason_and_recovers(
    start: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from buffer.redis_server import EmbeddedRedis, EmbeddedRedisConfig

    redis_server = EmbeddedRedis(EmbeddedRedisConfig(data_dir=tmp_path_factory.mktemp("redis-kill")))
    url = redis_server.start()
    api = httpx.Client(base_url=start("down", redis_url=url, inprocess_workers=1), timeout=30)
    try:
        job = api.post("/v1/jobs", json={"smiles": "CCO", "num_conformers": 2}).json()
        _wait_for(api, job["id"], {"done"})
        redis_server.stop()
        t0 = time.monotonic()
        ready = api.get("/readyz")
        assert ready.status_code == 503 and "unreachable" in ready.json()["checks"]["redis"]
        submit = api.post("/v1/jobs", json={"smiles": "CCO"})
        assert submit.status_code == 503 and submit.headers["retry-after"] == "7"
        assert "job queue is unavailable" in submit.json()["message"]
        assert api.get(f"/v1/jobs/{job['id']}").status_code == 503
        assert time.monotonic() - t0 < 10  # answered, not hung
        assert api.get("/healthz").status_code == 200 and api.get("/metrics").status_code == 200
        assert api.post("/v1/conformers", json={"smiles": "CCO", "num_conformers": 2}).status_code == 200
    finally:
        redis_server.start()
    deadline = time.monotonic() + 20
    while api.get("/readyz").status_code != 200:  # the worker thread survived and the API reconnects
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "done"  # persisted across the restart
    redis_server.stop()
