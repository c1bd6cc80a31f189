"""benchmarks.energy_throughput: the generic worker pool gives the same energies as in-process evaluation and
reports how long its tasks took inside the workers, and the report splits a speedup into workers and overhead."""

from __future__ import annotations

import torch

from benchmarks.energy_throughput import PooledModel, _inside_workers, _timed, conformer_batch
from energy.registry import build_energy_model


def test_pooled_mmff_matches_in_process_and_times_its_tasks() -> None:
    batch, described = conformer_batch([("CCOC(=O)c1ccccc1", 3), ("CC(=O)Nc1ccc(O)cc1", 2)], per_molecule=3, seed=1)
    assert [d["conformers"] for d in described] == [3, 3]
    reference = build_energy_model("mmff").evaluate(batch)
    pooled = PooledModel("mmff", {}, workers=2, chunk=None)
    try:
        pooled.evaluate(batch)  # starts the workers
        wall, cpu, inside, result = _timed(pooled, batch, calls=3)
    finally:
        pooled.close()
    torch.testing.assert_close(result.energies, reference.energies)
    torch.testing.assert_close(result.forces, reference.forces)
    assert bool(result.valid.all())
    assert inside is not None and 0 < inside < wall  # the slowest task is part of the call, never all of it
    assert cpu > 0


def test_no_worker_time_without_one_task_per_worker() -> None:
    batch, _ = conformer_batch([("CCO", 0)], per_molecule=4, seed=1)
    _, _, inside, _ = _timed(build_energy_model("mmff"), batch)
    assert inside is None  # in-process: no workers
    chunked = PooledModel("mmff", {}, workers=1, chunk=2)  # two tasks in a row in one worker
    try:
        _, _, inside, result = _timed(chunked, batch)
    finally:
        chunked.close()
    assert inside is None and bool(result.valid.all())


def test_the_report_splits_the_speedup_into_workers_and_overhead() -> None:
    entry = {
        "variants": {
            "1 worker": {"median_s": 0.012, "median_slowest_task_s": 0.010},
            "2 workers": {"median_s": 0.008, "median_slowest_task_s": 0.0065},
        }
    }
    line = _inside_workers(entry)
    assert line is not None
    assert "77% of one worker's rate" in line  # 10 / (2 * 6.5)
    assert "1.54×" in line  # 10 / 6.5: the speedup with no pool overhead
    assert "2.0 ms with 1 worker, 1.5 ms with 2" in line
    del entry["variants"]["2 workers"]["median_slowest_task_s"]
    assert _inside_workers(entry) is None


def test_conformer_batch_counts_atoms() -> None:
    batch, described = conformer_batch([("C1CC1", 0)], per_molecule=2, seed=3)
    assert batch.num_structures == 2
    assert described[0]["atoms"] == 9 and int(batch.num_atoms[0]) == 9
