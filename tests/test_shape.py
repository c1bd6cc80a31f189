"""molecules.shape: radius of gyration (known answers, invariances, hydrogens ignored) and terciles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from molecules.etkdg import embed
from molecules.shape import radius_of_gyration, rg_terciles
from molecules.smiles import mol_from_smiles


def test_known_answer_and_hydrogens_do_not_count() -> None:
    mol = mol_from_smiles("OCO")  # 3 heavy atoms, 4 hydrogens
    x = np.zeros((mol.GetNumAtoms(), 3))
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    x[heavy] = np.array([[-1.0, 0, 0], [0, 0, 0], [1.0, 0, 0]])  # Rg^2 = (1 + 0 + 1) / 3
    x[[a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() == 1]] = 50.0  # far away, ignored
    assert radius_of_gyration(mol, x) == pytest.approx([np.sqrt(2 / 3)])


def test_invariant_to_rotation_and_translation_and_batched() -> None:
    mol = mol_from_smiles("CCCCCCOc1ccccc1")
    x = embed(mol, 4, 3)
    moved = np.stack([Rotation.random(random_state=k).apply(c) + np.array([3.0, -1.0, 7.0]) for k, c in enumerate(x)])
    rg = radius_of_gyration(mol, x)
    assert rg.shape == (len(x),) and (rg > 1.5).all()
    assert np.allclose(radius_of_gyration(mol, moved), rg)
    assert radius_of_gyration(mol, x[0]) == pytest.approx(rg[:1])
    with pytest.raises(ValueError, match="positions"):
        radius_of_gyration(mol, x[:, :3])


def test_terciles_by_rank() -> None:
    assert rg_terciles(np.array([5.0, 1.0, 3.0, 2.0, 4.0, 6.0])).tolist() == [2, 0, 1, 0, 1, 2]
    assert rg_terciles(np.array([1.0, 1.0, 1.0])).tolist() == [0, 1, 2]
    assert rg_terciles(np.array([])).tolist() == []
