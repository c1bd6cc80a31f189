"""The MMFF94 ceiling and the compactness measure of ``benchmarks.ensemble_limits`` on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from benchmarks.ensemble_limits import heavy_radius_of_gyration, mmff_ceiling, write
from molecules.structures import with_conformers


def _embedded(smiles: str, count: int, seed: int = 7) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMultipleConfs(mol, numConfs=count, randomSeed=seed)
    return mol


def test_radius_of_gyration_counts_heavy_atoms_only() -> None:
    mol = Chem.AddHs(Chem.MolFromSmiles("CC"))
    x = np.zeros((2, mol.GetNumAtoms(), 3))
    x[:, 2:] = 50.0  # hydrogens far away change nothing
    x[0, 1] = [1.5, 0.0, 0.0]
    x[1, 1] = [0.0, 3.0, 4.0]
    np.testing.assert_allclose(heavy_radius_of_gyration(mol, x), [0.75, 2.5])
    with pytest.raises(ValueError, match="coordinates must be"):
        heavy_radius_of_gyration(mol, x[:, :3])


def test_references_at_mmff_minima_reach_the_ceiling() -> None:
    mol = _embedded("CCCCCCO", 4)
    AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=5000)
    c = mmff_ceiling(mol)
    assert c.cov_r == 1.0 and c.cov_p == 1.0 and c.own_within == 1.0
    assert c.median_own_rmsd < 0.05


def test_references_far_from_mmff_minima_fall_short() -> None:
    mol = _embedded("CCCCCCCCCCCCCC", 3)
    AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=5000)
    x = np.stack([c.GetPositions() for c in mol.GetConformers()])
    stretched = with_conformers(mol, 1.6 * x)  # every bond 60 % too long: relaxation pulls it back
    c = mmff_ceiling(stretched)
    assert c.own_within == 0.0 and c.cov_r == 0.0
    assert c.median_own_rmsd > 1.0


def test_ceiling_needs_conformers() -> None:
    with pytest.raises(ValueError, match="needs reference conformers"):
        mmff_ceiling(Chem.AddHs(Chem.MolFromSmiles("CCO")))


def test_report_without_compactness_has_no_figure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = [
        {"molecule": "a", "num_references": 3, "cov_r": 1.0, "cov_p": 0.5, "own_within": 1.0, "median_own_rmsd": 0.2},
        {"molecule": "b", "num_references": 5, "cov_r": 0.5, "cov_p": 1.0, "own_within": 0.0, "median_own_rmsd": 1.4},
    ]
    results = {"command": "cmd", "max_iters": 200, "max_gen": 8, "seed": 1, "ceiling": {"set": rows}, "compactness": {}}
    paths = write(results, tmp_path, "t")
    assert [p.name for p in paths] == ["ensemble_limits_t.json", "ensemble_limits_t.md"]
    md = paths[1].read_text()
    assert "| set | 2 | 75.0 | 75.0 | 50.0 % | 0.80 Å |" in md
