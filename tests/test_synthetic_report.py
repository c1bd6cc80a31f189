"""benchmarks.synthetic's report (:mod:`benchmarks.synthetic_report`, what ``benchmarks.synthetic.run`` writes
through): seeds run as separate processes all land in one results file."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any


def _row(seed: int) -> dict[str, Any]:
    return {
        "system": "dw4",
        "seed": seed,
        "x_w2": 0.5 + seed,
        "x_w2_plain": 1.5,
        "e_w2": 0.1,
        "mean_energy": -22.0,
        "reference_mean_energy": -22.4,
        "rounds": 10,
        "energy_calls": 1000,
        "train_seconds": 1.0,
        "refresh_seconds": 0.5,
        "gradient_seconds": 0.5,
        "sample_seconds": 0.1,
        "command": f"adjoint-sampling bench synthetic --systems dw4 --seeds {seed}",
    }


def _write_one(out_dir: str, seed: int, barrier: Any) -> None:
    from benchmarks.synthetic_report import write_results

    results = {"command": _row(seed)["command"], "versions": {}, "runs": [_row(seed)], "floors": {}}
    barrier.wait()  # all writers merge at the same moment
    for _ in range(20):
        write_results(results, Path(out_dir))


def test_seeds_written_at_the_same_moment_all_land_in_the_results(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    seeds = [0, 1, 2, 3]
    barrier = context.Barrier(len(seeds))
    workers = [context.Process(target=_write_one, args=(str(tmp_path), s, barrier)) for s in seeds]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    results = json.loads((tmp_path / "synthetic.json").read_text())
    assert sorted(r["seed"] for r in results["runs"]) == seeds
    assert sorted(results["commands"]) == sorted(_row(s)["command"] for s in seeds)
    report = (tmp_path / "synthetic.md").read_text()
    assert all(f"| dw4 | {s} | {0.5 + s:.3f} |" in report for s in seeds)
