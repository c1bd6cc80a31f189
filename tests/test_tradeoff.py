"""The recall–precision picture: points come from the same scores as the benchmark's tables, and the bar region
is the control's recall + 3 and ETKDG + MMFF94's precision."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks.tradeoff import BarRegion, Point, bar_region, main, tradeoff_points

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
RUN = RESULTS / "conformers_torsional_stereo_full_drugs.json"


def _table_rows(md: str) -> dict[str, tuple[float, float]]:
    """``{method: (COV-R, COV-P)}`` at 1.0 Å from the report's per-dataset table (the other code path)."""
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| method | COV-R 0.5"))
    columns = [c.strip() for c in lines[header].strip("|").split("|")]
    r, p = columns.index("COV-R 1.0"), columns.index("COV-P 1.0")
    rows = {}
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        mean = re.compile(r"([\d.]+)")
        rows[cells[0]] = (float(mean.match(cells[r])[1]), float(mean.match(cells[p])[1]))  # type: ignore[index]
    return rows


def test_bar_region_from_the_references() -> None:
    pts = [
        Point("rdkit+mmff", "a", 67.0, 77.0),
        Point("torsion-control+mmff", "a", 82.0, 61.0),
        Point("torsional+mmff", "a", 85.5, 77.5),
        Point("torsional+mmff", "b", 84.0, 80.0),
        Point("rdkit+mmff", "b", 10.0, 99.0),  # a later run's reference does not move the bar
    ]
    region = bar_region(pts)
    assert region == BarRegion(85.0, 77.0)
    assert [region.contains(p) for p in pts] == [False, False, True, False, False]
    with pytest.raises(ValueError, match="torsion-control\\+mmff"):
        bar_region([Point("rdkit+mmff", "a", 1.0, 2.0)])


@pytest.mark.skipif(not RUN.exists(), reason="needs the committed benchmark result")
def test_points_agree_with_the_report_and_the_plot_is_written(tmp_path: Path) -> None:
    points = tradeoff_points([json.loads(RUN.read_text())])
    assert list(points) == ["drugs_dev"]
    got = {p.method: (p.recall, p.precision) for p in points["drugs_dev"]}
    table = _table_rows(RUN.with_suffix(".md").read_text())
    assert set(got) == set(table) and len(got) == 7
    for method, (recall, precision) in table.items():
        assert got[method][0] == pytest.approx(recall, abs=0.051)
        assert got[method][1] == pytest.approx(precision, abs=0.051)
    out = tmp_path / "pr.png"
    main([str(RUN), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not on the grid"):
        tradeoff_points([json.loads(RUN.read_text())], delta=0.3)
