"""Torsion fingerprints and thinning (molecules.diversity): known dihedrals, symmetric flips, duplicates first."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolTransforms

from molecules.diversity import dihedrals, symmetry_orders, thin_crowded, torsion_fingerprints
from molecules.torsions import RotorKind, find_torsions


def _embedded(smiles: str, count: int = 1) -> tuple[Chem.Mol, np.ndarray]:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMultipleConfs(mol, count, randomSeed=3)
    return mol, np.array([c.GetPositions() for c in mol.GetConformers()])


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


@pytest.mark.parametrize("angle", [-2.5, -np.pi / 2, 0.3, np.pi / 3, 3.0])
def test_dihedral_of_a_built_chain_is_the_angle_it_was_built_with(angle: float) -> None:
    d = np.array([1.0, 0.0, 0.0]) @ _rotation(np.array([0.0, 0.0, 1.0]), angle).T
    x = np.array([[[1.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 0.0], d]])
    assert dihedrals(x, np.array([[0, 1, 2, 3]]))[0, 0] == pytest.approx(angle, abs=1e-12)
    mol, conformers = _embedded("CCCCO", 2)
    atoms = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
    expected = [[rdMolTransforms.GetDihedralRad(c, *map(int, t)) for t in atoms] for c in mol.GetConformers()]
    assert np.allclose(dihedrals(conformers, atoms), expected, atol=1e-10)  # RDKit's sign convention
    with pytest.raises(ValueError, match="finite"):
        dihedrals(np.full_like(x, np.nan), np.array([[0, 1, 2, 3]]))


def test_symmetry_orders_see_ring_flips_and_tert_butyl_only() -> None:
    for smiles, expected in [("c1ccccc1Cc1ccccc1", [2, 2]), ("CC(C)(C)CCO", [3, 1]), ("CCOC(=O)c1ccccc1N", [1, 1, 1])]:
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        atoms = np.array([t.atoms for t in find_torsions(mol) if t.rotor is RotorKind.HEAVY])
        assert symmetry_orders(mol, atoms).tolist() == expected, smiles


def test_fingerprints_ignore_rigid_motion_and_a_phenyl_flip_but_see_a_real_rotation() -> None:
    mol, x = _embedded("c1ccccc1CCOC")
    base = torsion_fingerprints(mol, x)
    assert base.shape == (1, 2 * 3)
    moved = x[0] @ _rotation(np.array([0.3, -1.0, 2.0]), 1.1).T + np.array([4.0, -2.0, 1.0])
    assert np.allclose(torsion_fingerprints(mol, moved[None]), base, atol=1e-10)
    ring_bond = next(t for t in find_torsions(mol) if t.rotor is RotorKind.HEAVY and len(t.moving) > 6)
    b, c = ring_bond.atoms[1], ring_bond.atoms[2]
    # turn the side of the bond that holds the phenyl by pi (its flip) or by pi/2 (a new conformer)
    moving = np.array(ring_bond.moving)
    for angle, same in [(np.pi, True), (np.pi / 2, False)]:
        turned = x[0].copy()
        rot = _rotation(x[0, c] - x[0, b], angle)
        turned[moving] = (x[0, moving] - x[0, c]) @ rot.T + x[0, c]
        close = np.allclose(torsion_fingerprints(mol, turned[None]), base, atol=1e-8)
        assert close is same, angle


def test_thinning_drops_near_duplicates_before_anything_else() -> None:
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(12, 6))
    doubled = np.concatenate([distinct, distinct + 1e-4 * rng.normal(size=distinct.shape)])
    kept = thin_crowded(doubled, 12)
    assert sorted(k % 12 for k in kept) == list(range(12))  # exactly one of each pair
    assert thin_crowded(doubled, 30).tolist() == list(range(24))
    # a tight cluster of 5 among spread points: thinning to 16 of 24 removes only cluster members first
    cluster = np.concatenate([rng.normal(size=(19, 6)) * 3, 0.01 * rng.normal(size=(5, 6))])
    kept = thin_crowded(cluster, 20)
    assert set(range(19)) - set(kept.tolist()) == set() and len(kept) == 20
    with pytest.raises(ValueError, match="keep"):
        thin_crowded(doubled, 0)


def test_thinning_spreads_torsions_of_real_draws() -> None:
    """Of 40 conformers with 3 torsions clustered in two tight groups plus spread ones, thinning to 20 keeps
    every spread one: the nearest-neighbour distance of the kept set rises."""
    rng = np.random.default_rng(1)
    spread = rng.uniform(-np.pi, np.pi, size=(15, 3))
    tight = np.concatenate([0.05 * rng.normal(size=(12, 3)) + 1.0, 0.05 * rng.normal(size=(13, 3)) - 2.0])
    angles = np.concatenate([spread, tight])
    f = np.concatenate([np.cos(angles), np.sin(angles)], axis=1)
    kept = thin_crowded(f, 20)
    assert set(range(15)) <= set(kept.tolist())

    def min_gap(rows: np.ndarray) -> float:
        d = np.linalg.norm(rows[:, None] - rows[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        return float(d.min())

    assert min_gap(f[kept]) > min_gap(f)


def test_min_gap_stops_thinning_once_only_distinct_conformers_remain() -> None:
    rng = np.random.default_rng(2)
    distinct = rng.normal(size=(10, 4)) * 3
    doubled = np.concatenate([distinct, distinct + 1e-3])
    kept = thin_crowded(doubled, 5, min_gap=0.1)
    assert sorted(k % 10 for k in kept) == list(range(10))  # the duplicates went, nothing else
    assert len(thin_crowded(doubled, 15, min_gap=0.1)) == 15  # never below keep... nor more removed than asked
    assert len(thin_crowded(doubled, 5)) == 5


def test_priority_decides_which_member_of_a_close_pair_goes() -> None:
    f = np.array([[0.0, 0.0], [0.01, 0.0], [5.0, 5.0]])
    assert thin_crowded(f, 2, priority=np.array([3.0, 1.0, 9.0])).tolist() == [1, 2]
    assert thin_crowded(f, 2, priority=np.array([1.0, 3.0, 9.0])).tolist() == [0, 2]
    with pytest.raises(ValueError, match="priority"):
        thin_crowded(f, 2, priority=np.array([1.0, 2.0]))
