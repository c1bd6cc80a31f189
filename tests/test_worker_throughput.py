"""benchmarks.worker_throughput: the summary's arithmetic, and one Redis round with a real energy-worker process
(plumbing only; the benchmark's numbers are never asserted)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from benchmarks.worker_throughput import PHASES, bench_config, markdown, measure_redis, summarize
from training.paths import DEFAULT_DATA


def _round(round_s: float, samples: int = 128) -> dict[str, float]:
    return {"sample_s": round_s / 2, "energy_s": round_s / 4, "gradient_s": round_s / 4, "checkpoint_s": 0.0,
            "round_s": round_s, "samples": float(samples)}  # fmt: skip


def test_summary_takes_medians_and_rates_from_them() -> None:
    s = summarize([_round(2.0), _round(4.0), _round(3.0)])
    assert s["round_s"] == 3.0 and (s["round_s_min"], s["round_s_max"]) == (2.0, 4.0)
    assert s["rounds_per_hour"] == pytest.approx(1200.0)
    assert s["evals_per_s_round"] == pytest.approx(128 / 3.0)
    assert s["evals_per_s_energy"] == pytest.approx(128 / 0.75)
    modes = {label: s for label in ("in process", "Redis, 1 energy worker", "Redis, 2 energy workers")}
    result = {
        "command": "python -m benchmarks.worker_throughput",
        "rounds_measured": 3,
        "artificial_cost_ms": 0.0,
        "wall_s": 60.0,
        "models": {"mmff": {"config": {"molecules_per_round": 16, "copies": 8, "network": {"num_layers": 2,
                   "hidden": 32}, "sde_steps": 20, "gradient_steps": 40, "batch_size": 32}, "molecules": 7,
                   "atoms": [12, 29], "torsions": [1, 4], "modes": modes}},
        "machine": {"cpus": 2, "load_1min": [1.0, 2.0], "torch": "x"},
    }  # fmt: skip
    text = markdown(result)
    assert text.splitlines()[2:5] == ["```bash", "python -m benchmarks.worker_throughput", "```"]  # command on top
    assert "| MMFF94 | Redis, 2 energy workers | 1200 |" in text and "Two cores limit" in text


@pytest.mark.redis
@pytest.mark.skipif(not (DEFAULT_DATA / "spice").is_dir(), reason="needs ../shared/data")
def test_one_redis_round_with_a_worker_process(redis_url: str, tmp_path: Path) -> None:
    import torch

    from training.torsional_training import build_molecules

    torch.set_num_threads(1)
    config = dataclasses.replace(
        bench_config(molecules=3), molecules_per_round=2, copies=2, gradient_steps=1, batch_size=4, sde_steps=4
    )
    molecules, _ = build_molecules(config, DEFAULT_DATA, seed=0, show_progress=False)
    rounds = measure_redis(
        config, molecules, rounds=1, workers=1, url=redis_url, out=tmp_path / "bench.pt", cost_ms=0.0
    )
    assert len(rounds) == 1 and rounds[0]["samples"] == 4
    assert rounds[0]["round_s"] == pytest.approx(sum(rounds[0][k] for k in PHASES))
    assert all(rounds[0][k] >= 0 for k in PHASES) and (tmp_path / "bench.pt").is_file()
