"""benchmarks.isomer_energies: acyl isomer gaps by several energies (known answer: N-methylacetamide)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.isomer_energies import isomer_gaps, write
from energy.ani2xt import Ani2xtEnergy
from molecules.etkdg import embed
from molecules.smiles import mol_from_smiles


def test_trans_n_methylacetamide_is_the_lower_isomer_by_every_energy() -> None:
    # CC(=O)NC: the isomer with the two methyls trans across C(=O)-N lies ~2-3 kcal/mol below the cis one
    # (gas-phase experiment ~2.3; MMFF94 and ANI-2xt agree on the sign)
    mol = mol_from_smiles("CC(=O)NC")
    rows = isomer_gaps(mol, embed(mol, 2, 3), {"ani2xt": Ani2xtEnergy(dtype="float64")}, per_isomer=2)
    assert len(rows) == 1
    row = rows[0]
    a, _, _, d = row["atoms"]
    methyls = {0, 4}
    syn_is_cis_methyls = (a in methyls) == (d in methyls)
    assert set(row["gaps"]) == {"mmff94", "ani2xt at MMFF94", "ani2xt relaxed"}
    for name, gap in row["gaps"].items():
        cis_minus_trans = gap if syn_is_cis_methyls else -gap
        assert 0.5 < cis_minus_trans < 6.0, (name, gap)
    assert row["seconds"]["ani2xt"] > 0


def test_a_bond_with_one_reachable_isomer_and_the_table_marks_contradicted_gaps(tmp_path: Path) -> None:
    rows = [
        {"molecule": "m", "atoms": [0, 1, 2, 3], "num_references": 5, "references": 0.0,
         "gaps": {"mmff94": -2.0, "x relaxed": 3.0}, "seconds": {"x": 1.0}},
        {"molecule": "m", "atoms": [4, 5, 6, 7], "num_references": 5, "references": 1.0,
         "gaps": {"mmff94": -math.inf, "x relaxed": math.nan}, "seconds": {"x": 3.0}},
    ]  # fmt: skip
    text = write(rows, tmp_path, "cmd").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| m |")]
    # the references never take syn for the first bond: a negative gap (syn lower) contradicts them
    assert "**-2.0 (0.97)**" in lines[0] and "+3.0 (0.01)" in lines[0] and "**+3.0" not in lines[0]
    assert "-inf (1.00)" in lines[1] and "**" not in lines[1]
    assert "x 2.0" in text
    assert np.isclose(float(text.split("x ")[-1].strip()), 2.0)
