"""Hot model swap: the service follows a training run's published checkpoints (real uvicorn server, real Redis,
tiny torsional checkpoints). A request finishes on the model it started with; a stream of requests sees every
new model and no failure; a missing, corrupt, foreign or mis-hashed checkpoint leaves the old model serving and
is counted in /metrics and described in /readyz."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from training.paths import DEFAULT_DATA

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not (DEFAULT_DATA / "spice").is_dir(), reason="needs ../shared/data"),
]

SMILES = "CCO"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny torsional checkpoint (seconds to train)."""
    from tests.test_torsional_training import tiny_config
    from training.torsional_training import train_torsional

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("hot-swap") / "torsional.pt"
    train_torsional(tiny_config(), data_dir=DEFAULT_DATA, seed=1, out=out, show_progress=False)  # type: ignore[arg-type]
    return out


def variant(base: Path, out: Path, *, round: int, scale: float = 1.0, kind: str | None = None) -> Path:
    """``base`` with its weights scaled and its round (and kind) changed: another file, another SHA-256."""
    payload = torch.load(base, weights_only=True)
    payload["control"] = {k: v * scale if v.is_floating_point() else v for k, v in payload["control"].items()}
    payload["round"] = round
    if kind is not None:
        payload["kind"] = kind
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out)
    return out


def _settings(checkpoint: Path, **overrides: Any) -> Any:
    from service.settings import ServiceSettings

    values: dict[str, Any] = {
        "checkpoint": checkpoint,
        "energy_model": "mmff",
        "energy_models": ("mmff",),
        "sampling_threads": 2,
        "torch_threads": 1,
        **overrides,
    }
    return ServiceSettings(**values)


def test_running_request_finishes_on_its_model_and_bad_files_are_refused(base: Path, tmp_path: Path) -> None:
    from service.engine import ModelLoadError, SamplingEngine
    from service.schemas import SamplingOptions
    from training.checkpoint import file_sha256

    engine = SamplingEngine(_settings(base))
    try:
        old = engine.current
        started, go = threading.Event(), threading.Event()
        generate = old.generator.generate

        def held(*args: Any, **kwargs: Any) -> Any:
            started.set()
            assert go.wait(30)
            return generate(*args, **kwargs)

        old.generator.generate = held  # type: ignore[method-assign]
        running = engine.submit(engine.sample, SMILES, 2, SamplingOptions.model_validate({}))
        assert started.wait(30)
        new = variant(base, tmp_path / "published" / "torsional.pt", round=7, scale=1.01)
        info = engine.swap(new, expected_sha256=file_sha256(new))
        assert info.sha256 == file_sha256(new) and info.training_rounds == 7 and info.checkpoint == "torsional.pt"
        (later,) = engine.submit(engine.sample, SMILES, 2, SamplingOptions.model_validate({})).result(60)
        assert later.provenance.model.sha256 == info.sha256  # started after the swap: the new model
        go.set()
        (first,) = running.result(60)
        assert first.provenance.model.sha256 == old.info.sha256 != info.sha256  # finished on the model it started on

        foreign = variant(base, tmp_path / "foreign.pt", round=8, kind="synthetic")
        corrupt = tmp_path / "corrupt.pt"
        corrupt.write_bytes(b"not a checkpoint" * 100)
        refused: list[tuple[Path, str | None, str]] = [
            (tmp_path / "missing.pt", None, "no such file"),
            (corrupt, file_sha256(corrupt), "cannot read checkpoint"),
            (foreign, file_sha256(foreign), "not a conformer model"),
            (new, "0" * 64, "SHA-256"),
        ]
        for path, sha, reason in refused:
            with pytest.raises(ModelLoadError, match=reason):
                engine.swap(path, expected_sha256=sha)
            assert engine.info == info  # still serving the last good model
        store = engine._store
        assert store is not None and len(list(store.iterdir())) == 1  # refused copies and the replaced one are gone
    finally:
        engine.close()
    assert not store.exists()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_live_server_swaps_published_checkpoints_without_failing_a_request(
    base: Path, redis_url: str, tmp_path: Path
) -> None:
    from buffer.connection import RedisSettings, connect
    from buffer.keys import RedisKeys
    from buffer.published import publish_checkpoint
    from tests.helpers import live_server
    from training.checkpoint import file_sha256

    prefix, run = "hot-swap", "conformers-run"
    client = connect(RedisSettings(url=redis_url))
    published = tmp_path / "run" / "torsional.pt"  # the trainer overwrites one file and announces each version

    def publish(source: Path, round: int) -> str:
        published.parent.mkdir(exist_ok=True)
        shutil.copyfile(source, published)
        sha = file_sha256(published)
        publish_checkpoint(client, run=run, path=str(published), round=round, sha256=sha, keys=RedisKeys(prefix))
        return sha

    settings = _settings(
        base,
        redis_url=redis_url,
        redis_prefix=prefix,
        inprocess_workers=0,
        watch_run=run,
        watch_interval_s=0.1,
    )
    answers: list[tuple[int, str | None, int | None]] = []
    stop = threading.Event()
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=60) as api:
        start_sha = api.get("/v1/model").json()["model"]["sha256"]

        def stream() -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                while not stop.is_set():
                    r = c.post("/v1/conformers", json={"smiles": SMILES, "num_conformers": 2})
                    model = r.json()["provenance"]["model"] if r.status_code == 200 else {}
                    answers.append((r.status_code, model.get("sha256"), model.get("training_rounds")))

        threads = [threading.Thread(target=stream, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()

        def served(sha: str) -> Callable[[], bool]:
            return lambda: bool(api.get("/v1/model").json()["model"]["sha256"] == sha) and answers[-1][1] == sha

        _until(lambda: len(answers) >= 3, "the first answers")
        sha1 = publish(variant(base, tmp_path / "v1.pt", round=10, scale=1.01), 10)
        _until(served(sha1), "round 10 served")
        sha2 = publish(variant(base, tmp_path / "v2.pt", round=20, scale=0.99), 20)
        _until(served(sha2), "round 20 served")
        assert api.get("/v1/model").json()["model"]["training_rounds"] == 20

        published.write_bytes(b"\x00torn" * 1000)  # a corrupt file, announced with its own (correct) hash
        publish_checkpoint(
            client, run=run, path=str(published), round=30, sha256=file_sha256(published), keys=RedisKeys(prefix)
        )
        failed = 'adjoint_sampling_model_loads_total{result="failed"}'
        _until(lambda: _metric(api.get("/metrics").text, failed) == 1.0, "the refusal counted")
        count = len(answers)
        _until(lambda: len(answers) >= count + 3, "answers after the refusal")
        stop.set()
        for t in threads:
            t.join(60)
        metrics = api.get("/metrics").text
        ready = api.get("/readyz")
        model = api.get("/v1/model").json()["model"]

    assert _metric(metrics, 'adjoint_sampling_model_loads_total{result="loaded"}') == 2.0
    assert _metric(metrics, "adjoint_sampling_model_training_round") == 20.0
    assert ready.status_code == 200 and ready.json()["ready"] is True  # the previous model still serves
    detail = ready.json()["checks"]["model_watch"]
    assert "1 refused" in detail and "round 30" in detail and "cannot read checkpoint" in detail
    assert model["sha256"] == sha2 and "round 20" in ready.json()["checks"]["model"]
    assert [status for status, _, _ in answers] == [200] * len(answers)  # zero failed requests
    shas = [sha for _, sha, _ in answers]
    changes = [sha for k, sha in enumerate(shas) if k == 0 or sha != shas[k - 1]]
    # two streams may interleave one old answer after a new one; the models served are the three, in order
    assert list(dict.fromkeys(changes)) == [start_sha, sha1, sha2]
    rounds = {sha: r for _, sha, r in answers}
    assert rounds[sha1] == 10 and rounds[sha2] == 20 and shas[-1] == sha2


def test_watch_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from service.settings import ServiceSettings

    monkeypatch.setenv("ADJOINT_SAMPLING_WATCH_RUN", "conformers")
    monkeypatch.setenv("ADJOINT_SAMPLING_WATCH_INTERVAL_S", "2.5")
    settings = ServiceSettings()
    assert settings.watch_run == "conformers" and settings.watch_interval_s == 2.5
    monkeypatch.setenv("ADJOINT_SAMPLING_WATCH_RUN", "")  # docker compose passes unset variables empty
    assert ServiceSettings().watch_run is None
    monkeypatch.setenv("ADJOINT_SAMPLING_WATCH_RUN", "no spaces allowed")
    with pytest.raises(ValidationError, match="invalid run name"):
        ServiceSettings()
