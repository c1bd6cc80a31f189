"""Torsion-space relaxation (molecules.torsion_relaxation): known minima, what it keeps fixed, its energies, and
relaxed selection with it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdMolTransforms

from energy.mmff import mmff_energies, mmff_optimize
from inference.torsional_sampling import uniform_torsions
from molecules.etkdg import embed
from molecules.selection import RelaxedSelection, select_relaxed
from molecules.smiles import mol_from_smiles
from molecules.structures import with_conformers
from molecules.torsion_relaxation import TorsionRelaxation, torsion_descent, torsion_first_relax


def _butane_at(angles_deg: list[float]) -> tuple[Chem.Mol, np.ndarray]:
    mol = mol_from_smiles("CCCC")
    x = embed(mol, 1, seed=3)[0]
    out = []
    for a in angles_deg:
        m = with_conformers(mol, x[None])
        rdMolTransforms.SetDihedralDeg(m.GetConformer(), 0, 1, 2, 3, a)
        out.append(m.GetConformer().GetPositions())
    return mol, np.stack(out)


def _bonded_lengths(mol: Chem.Mol, x: np.ndarray) -> np.ndarray:
    ij = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()])
    return np.linalg.norm(x[:, ij[:, 0]] - x[:, ij[:, 1]], axis=-1)


def test_eclipsed_butane_descends_to_a_staggered_minimum_with_its_bonds_untouched() -> None:
    mol, x = _butane_at([5.0, 125.0, -110.0])  # near syn, near the eclipsed 120 degrees, and on the other side
    y, energies = torsion_descent(mol, x, max_evals=60)
    final = [
        math.degrees(rdMolTransforms.GetDihedralRad(with_conformers(mol, p[None]).GetConformer(), 0, 1, 2, 3))
        for p in y
    ]
    staggered = np.array([60.0, 180.0, -60.0])
    distance = [np.abs((f - staggered + 180) % 360 - 180).min() for f in final]
    assert max(distance) < 12.0, final  # MMFF94's gauche minimum sits near 65 degrees, anti at 180
    np.testing.assert_allclose(_bonded_lengths(mol, y), _bonded_lengths(mol, x), atol=1e-9)  # torsions only
    np.testing.assert_allclose(mmff_energies(mol, y), energies, atol=1e-6)  # the energies are the returned ones
    assert (energies < mmff_energies(mol, x) - 1.0).all()


def test_descent_never_raises_the_energy_and_ends_where_the_torsion_gradient_is_small() -> None:
    mol = mol_from_smiles("CCCCOc1ccc(CC(=O)OCC)cc1")
    draws = uniform_torsions(mol, 12, seed=5, num_seeds=2)
    y, energies = torsion_descent(mol, draws, max_evals=200, grad_tol=0.05)
    assert (energies <= mmff_energies(mol, draws) + 1e-9).all()
    # finite differences of E over each heavy-atom torsion at the answer: near zero
    m = with_conformers(mol, y)
    heavy = [(3, 4, 5, 6), (0, 1, 2, 3)]
    for conf in list(m.GetConformers())[:4]:
        for a, b, c, d in heavy:
            phi = rdMolTransforms.GetDihedralDeg(conf, a, b, c, d)
            e = []
            for delta in (-0.5, 0.5):
                probe = Chem.Conformer(conf)
                rdMolTransforms.SetDihedralDeg(probe, a, b, c, d, phi + delta)
                e.append(mmff_energies(mol, probe.GetPositions()[None])[0])
            assert abs(e[1] - e[0]) / math.radians(1.0) < 0.5  # kcal/mol/rad, against O(10) at a random draw


def test_torsion_first_relax_ends_near_the_cartesian_minimum_energy() -> None:
    mol = mol_from_smiles("CCCCOc1ccc(CC(=O)OCC)cc1")
    draws = uniform_torsions(mol, 16, seed=9, num_seeds=2)
    x, energies = torsion_first_relax(mol, draws, TorsionRelaxation(polish_iters=60))
    np.testing.assert_allclose(mmff_energies(mol, x), energies, atol=1e-6)
    only_torsions = torsion_descent(mol, draws)[1]
    assert (energies <= only_torsions + 1e-6).all()  # the polish relaxes what rigid torsions cannot
    cartesian = with_conformers(mol, draws)
    e200 = np.array([e for _, e in mmff_optimize(cartesian, max_iters=200)])
    assert np.median(energies) < np.median(e200) + 1.0  # kcal/mol: about as low as 200 Cartesian iterations


def test_rigid_molecules_come_back_unchanged_and_bad_input_is_refused() -> None:
    mol = mol_from_smiles("c1ccccc1")
    x = embed(mol, 2, seed=1)
    y, energies = torsion_descent(mol, x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_allclose(energies, mmff_energies(mol, x), atol=1e-9)
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        torsion_descent(mol, bad)
    with pytest.raises(ValueError, match=r"\[G, 12, 3\]"):
        torsion_descent(mol, x[:, :5])
    with pytest.raises(ValueError, match="max_evals"):
        TorsionRelaxation(max_evals=0)
    with pytest.raises(ValueError, match="give one"):
        RelaxedSelection(screen_iters=20, torsion_first=TorsionRelaxation())


def test_relaxed_selection_can_relax_in_torsion_space_first() -> None:
    mol = mol_from_smiles("CCCCOc1ccc(CC(=O)OCC)cc1")
    draws = uniform_torsions(mol, 24, seed=4, num_seeds=2)
    selection = RelaxedSelection(torsion_first=TorsionRelaxation(polish_iters=40), kt_kcal_mol=0.0)
    x, energies = select_relaxed(mol, draws, 8, selection, np.random.default_rng(0))
    assert x.shape == (8, *draws.shape[1:])
    np.testing.assert_allclose(mmff_energies(mol, x), energies, atol=1e-6)
    everyone = torsion_first_relax(mol, draws, selection.torsion_first)[1]
    assert np.isclose(energies.min(), everyone.min(), atol=1e-6)  # cold: the lowest relaxed draw is kept


def test_relaxation_benchmark_writes_its_table(tmp_path: Path) -> None:
    """``benchmarks.torsion_relaxation``: one row per molecule; 2,000 Cartesian iterations continue the 200-iteration
    path, so the Cartesian-200 energies are never below their end (a known sign)."""
    from benchmarks.torsion_relaxation import main

    out = tmp_path / "relax.md"
    main(["--molecules", "1", "--draws", "4", "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| `")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].split(" | ")]
    cartesian = [float(v) for v in cells[2].split("\\|")]
    assert cartesian[1] >= 0.0 and 0.0 <= cartesian[2] <= 1.0
