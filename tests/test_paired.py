"""benchmarks.paired: per-molecule differences with known answers, merging runs, the CLI table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.coverage import THRESHOLDS, EnsembleScore, failed_score, score_matrix
from benchmarks.paired import compare, default_pairs, load_scores, paired_lines, split_pair


def _score(nearest: list[float]) -> EnsembleScore:
    """An ensemble whose references have these nearest-generated RMSDs (one generated conformer per ref)."""
    d = np.full((len(nearest), len(nearest)), 9.0)
    np.fill_diagonal(d, nearest)
    return score_matrix(d)


def test_known_differences_counts_and_interval() -> None:
    # COV-R(1.0) per molecule: method 1, 0.5, 0, 1 ; baseline 0.5, 0.5, 0.5, (failed -> 0)
    method = {"a": _score([0.2, 0.4]), "b": _score([0.3, 1.5]), "c": _score([1.2, 1.4]), "d": _score([0.1, 0.1])}
    baseline = {"a": _score([0.6, 1.1]), "b": _score([0.9, 1.9]), "c": _score([0.5, 2.0]), "d": failed_score(2)}
    cov, amr = compare(method, baseline, dataset="x", method_name="m", baseline_name="b")
    assert cov.metric == "COV-R(1.0 Å)" and cov.molecules == 4
    assert cov.mean == pytest.approx((0.5 + 0.0 - 0.5 + 1.0) / 4)
    assert (cov.better, cov.equal, cov.worse) == (2, 1, 1)
    assert cov.low <= cov.mean <= cov.high
    # AMR-R over the three molecules where both produced conformers; lower is better
    expected = [(0.3 - 0.85), (0.9 - 1.4), (1.3 - 1.25)]
    assert amr.molecules == 3 and amr.mean == pytest.approx(np.mean(expected))
    assert (amr.better, amr.equal, amr.worse) == (2, 0, 1)


def test_a_constant_difference_has_a_zero_width_interval_and_no_shared_molecule_is_an_error() -> None:
    method = {n: _score([0.2]) for n in "abcdef"}
    baseline = {n: _score([0.7]) for n in "abcdef"}
    _, amr = compare(method, baseline, dataset="x", method_name="m", baseline_name="b")
    assert amr.low == pytest.approx(-0.5) and amr.high == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="share no molecules"):
        compare(method, {"z": _score([0.1])}, dataset="x", method_name="m", baseline_name="b")


def test_default_pairs_match_relaxation() -> None:
    methods = ["rdkit", "rdkit+relax", "rdkit+mmff+relax", "adjoint+repair", "adjoint+repair+relax"]
    assert default_pairs(methods) == [
        ("adjoint+repair", "rdkit"),
        ("adjoint+repair+relax", "rdkit+relax"),
        ("adjoint+repair+relax", "rdkit+mmff+relax"),
    ]


def _run(methods: dict[str, list[float]], num_refs: int = 2) -> dict[str, object]:
    """A minimal benchmark-results dict: one dataset, molecules m0.., per method the nearest RMSDs."""
    molecules = []
    for k in range(3):
        recs = {}
        for name, nearest in methods.items():
            s = _score([nearest[k]] * num_refs)
            recs[name] = {
                "cov_r": s.cov_r.tolist(),
                "cov_p": s.cov_p.tolist(),
                "amr_r": s.amr_r,
                "amr_p": s.amr_p,
                "scored": num_refs,
            }
        molecules.append({"name": f"m{k}", "num_refs": num_refs, "methods": recs})
    return {
        "thresholds": list(THRESHOLDS),
        "methods": {n: n for n in methods},
        "datasets": [{"dataset": "drugs_dev", "molecules": molecules}],
    }


def test_runs_merge_and_the_cli_prints_the_table(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_run({"rdkit": [0.5, 1.5, 0.9], "adjoint+repair": [0.3, 0.8, 1.1]})))
    b.write_text(json.dumps(_run({"rdkit": [0.5, 1.5, 0.9], "rdkit+mmff": [0.4, 0.9, 0.7]})))
    scores = load_scores([a, b])
    assert sorted(scores["drugs_dev"]) == ["adjoint+repair", "rdkit", "rdkit+mmff"]
    lines = paired_lines(scores, [("adjoint+repair", "rdkit+mmff")])
    cov_row = next(line for line in lines if "COV-R" in line)
    assert "| 3 |" in cov_row and "-33.33 points" in cov_row and "0 / 2 / 1" in cov_row  # covered: 1,1,0 vs 1,1,1
    amr_row = next(line for line in lines if "AMR-R" in line)
    assert f"{(0.3 - 0.4 + 0.8 - 0.9 + 1.1 - 0.7) / 3:+.2f} Å" in amr_row

    c = tmp_path / "c.json"
    c.write_text(json.dumps(_run({"rdkit": [0.5, 1.5, 0.9]}, num_refs=4)))
    with pytest.raises(ValueError, match="same --max-refs"):
        load_scores([a, c])

    out = tmp_path / "table.md"
    cli = [sys.executable, "-m", "cli.main", "bench", "compare", str(a), str(b), "--out", str(out)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "adjoint+repair − rdkit " in done.stdout and "adjoint+repair − rdkit+mmff" in done.stdout
    assert out.read_text().startswith("Reproduce: `adjoint-sampling bench compare")
    bad = subprocess.run([*cli[:-2], "--pairs", "adjoint+repair"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "METHOD:BASELINE" in bad.stderr
    off_grid = subprocess.run([*cli[:-2], "--delta", "0.3"], capture_output=True, text=True, timeout=120)
    assert off_grid.returncode != 0 and "not on the grid" in off_grid.stderr and "Traceback" not in off_grid.stderr


def test_pairs_of_method_names_that_hold_colons() -> None:
    known = {"knob:mmff200+planar", "knob:isostarts8", "rdkit+mmff"}
    assert split_pair("rdkit+mmff:knob:isostarts8", known) == ("rdkit+mmff", "knob:isostarts8")
    assert split_pair("knob:mmff200+planar:knob:isostarts8", known) == ("knob:mmff200+planar", "knob:isostarts8")
    assert split_pair("a:b", known) == ("a", "b")  # one colon: split as written (unknown names fail later)
    for bad in ("knob:mmff200+planar:knob:nothing", "rdkit+mmff"):
        with pytest.raises(ValueError, match="METHOD:BASELINE"):
            split_pair(bad, known)
