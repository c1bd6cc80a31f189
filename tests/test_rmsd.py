"""The heavy-atom RMSD engine: QCP against SVD-Kabsch, invariances, mirror images, automorphism counts,
and agreement with RDKit's GetBestRMS on thousands of pairs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdMolAlign

from molecules.rmsd import (
    HeavyAtomRmsd,
    RmsdConfig,
    best_rmsd_matrix,
    conformer_coordinates,
    heavy_atom_mappings,
    kabsch_rmsd,
    qcp_rmsd,
)
from molecules.smiles import mol_from_smiles

HAS_NUMBA = importlib.util.find_spec("numba") is not None
BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed"))]


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _embedded(smiles: str, n: int, seed: int = 7) -> Chem.Mol:
    mol = mol_from_smiles(smiles)
    params = rdDistGeom.ETKDGv3()
    setattr(params, "randomSeed", seed)  # noqa: B010 (RDKit's stubs mistype the attribute)
    rdDistGeom.EmbedMultipleConfs(mol, numConfs=n, params=params)
    assert mol.GetNumConformers() == n
    return mol


def test_qcp_equals_svd_kabsch_on_random_and_degenerate_pairs() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 15, 3)) * 2.0
    noise = rng.uniform(0, 1.5, size=(400, 1, 1))
    y = x @ _random_rotation(rng).T + rng.normal(size=(400, 15, 3)) * noise
    y[:50] = x[:50] @ _random_rotation(rng).T  # identical up to rotation: RMSD 0
    x[50:100, :, 2] *= 1e-3  # nearly planar
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    s = np.einsum("pia,pib->pab", yc, xc)
    got = qcp_rmsd(s, (xc**2).sum((1, 2)), (yc**2).sum((1, 2)), 15)
    want = kabsch_rmsd(x, y)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[:50].max() < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_matrix_invariant_to_rigid_motion_and_rejects_mirror_images(backend: str) -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(4, 12, 3))
    gen = rng.normal(size=(6, 12, 3))
    identity = np.arange(12)[None]
    d = best_rmsd_matrix(ref, gen, identity, backend=backend)
    moved = gen @ _random_rotation(rng).T + np.array([3.0, -1.0, 2.0])
    np.testing.assert_allclose(best_rmsd_matrix(ref, moved, identity, backend=backend), d, atol=1e-9)
    np.testing.assert_allclose(d, kabsch_rmsd(ref[:, None], gen[None]), atol=1e-9)
    mirror = ref * np.array([1.0, 1.0, -1.0])
    d_mirror = best_rmsd_matrix(ref, mirror, identity, backend=backend)
    assert np.diag(d_mirror).min() > 0.1  # a chiral point cloud does not match its mirror image
    assert np.abs(np.diag(best_rmsd_matrix(ref, ref @ _random_rotation(rng).T, identity, backend=backend))).max() < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunking_and_backends_give_the_same_matrix(backend: str) -> None:
    mol = _embedded("CC(C)(C)c1ccc(C(F)(F)F)cc1", 12)
    heavy, maps = heavy_atom_mappings(mol)
    xyz = conformer_coordinates(mol)[:, heavy]
    full = best_rmsd_matrix(xyz[:5], xyz[5:], maps, backend="numpy")
    for chunk in (5, 64, 1 << 20):
        got = best_rmsd_matrix(xyz[:5], xyz[5:], maps, chunk_elements=chunk, backend=backend)
        np.testing.assert_allclose(got, full, atol=1e-10)


@pytest.mark.parametrize(
    ("smiles", "count", "symmetrized"),
    [
        ("c1ccccc1", 12, 12),  # D6h ring graph
        ("CC(C)(C)C", 24, 24),  # neopentane: S4 on the methyls
        ("CC(=O)[O-]", 1, 2),  # carboxylate: the two O only with the terminal-group symmetrization
        ("C[N+](=O)[O-]", 1, 2),
        ("CC(F)(F)F", 6, 6),
        ("OCC(N)=O", 1, 1),  # amide O/N are different elements
    ],
)
def test_heavy_atom_automorphism_counts(smiles: str, count: int, symmetrized: int) -> None:
    mol = mol_from_smiles(smiles)
    _, maps = heavy_atom_mappings(mol, RmsdConfig(symmetrize_terminal_groups=False))
    assert len(maps) == count
    heavy, maps = heavy_atom_mappings(mol)
    assert len(maps) == symmetrized
    assert len(heavy) == mol.GetNumHeavyAtoms()
    assert len({tuple(m) for m in maps}) == len(maps)  # distinct permutations
    assert all(sorted(m) == list(range(len(heavy))) for m in maps.tolist())


def test_mapping_cap_is_respected() -> None:
    _, maps = heavy_atom_mappings(mol_from_smiles("c1ccccc1"), RmsdConfig(max_mappings=5))
    assert len(maps) <= 6  # the cap, plus the identity if the cap cut it off


# symmetric groups: tBu, CF3, carboxylate, nitro, phenyl flips, a carboxylic acid, an amidine
AGREEMENT = [
    "CC(C)(C)c1ccc(C(=O)[O-])cc1",
    "O=[N+]([O-])c1ccc(CC(F)(F)F)cc1",
    "OC(=O)CCc1ccccc1",
    "NC(=N)c1ccc(-c2ccccc2)cc1",
    "Cc1ccc2c(n1)nc(-c1ccccc1)n2Cc1ccccc1",
    "CC(C)(C)C(C)(C)C",
]


@pytest.mark.slow
def test_equals_rdkit_getbestrms_on_thousands_of_pairs() -> None:
    """GetBestRMS on hydrogen-free copies is the reference implementation (BENCHMARKS.md)."""
    rng = np.random.default_rng(2)
    total = 0
    for smiles in AGREEMENT:
        mol = _embedded(smiles, 30)
        engine = HeavyAtomRmsd(mol)
        xyz = conformer_coordinates(mol)
        d = engine.matrix(xyz[:12], xyz[12:])  # 12 x 18 with all-atom input
        ref_h = Chem.RemoveHs(mol)
        prb_h = Chem.Mol(ref_h)
        pairs = [(r, k) for r in range(12) for k in range(18)]
        want = np.array([rdMolAlign.GetBestRMS(prb_h, ref_h, 12 + k, r) for r, k in pairs])
        got = np.array([d[r, k] for r, k in pairs])
        np.testing.assert_allclose(got, want, atol=1e-3, err_msg=smiles)
        assert np.abs(got - want).max() < 1e-6  # in fact far tighter than the required 1e-3 Å
        total += len(pairs)
    # also random pairs of perturbed geometries (not only ETKDG minima)
    mol = _embedded("CC(C)(C)c1ccc(C(F)(F)F)cc1", 1)
    base = conformer_coordinates(mol)[0]
    xyz = base[None] + rng.normal(size=(60, len(base), 3)) * 0.3
    noisy = Chem.Mol(mol)
    noisy.RemoveAllConformers()
    for pos in xyz:
        conf = Chem.Conformer(mol.GetNumAtoms())
        conf.SetPositions(pos)
        noisy.AddConformer(conf, assignId=True)
    d = HeavyAtomRmsd(noisy).matrix(xyz[:30], xyz[30:])
    ref_h = Chem.RemoveHs(noisy)
    prb_h = Chem.Mol(ref_h)
    want = np.array([[rdMolAlign.GetBestRMS(prb_h, ref_h, 30 + k, r) for k in range(30)] for r in range(30)])
    np.testing.assert_allclose(d, want, atol=1e-6)
    total += want.size
    assert total >= 2000


def test_engine_accepts_heavy_or_all_atoms_and_checks_shapes() -> None:
    mol = _embedded("CCOC(=O)c1ccccc1", 4)
    engine = HeavyAtomRmsd(mol)
    xyz = conformer_coordinates(mol)
    full = engine.matrix(xyz, xyz)
    np.testing.assert_allclose(engine.matrix(xyz[:, engine.heavy], xyz[:, engine.heavy]), full)
    assert np.abs(np.diag(full)).max() < 1e-5
    np.testing.assert_allclose(full, full.T, atol=1e-8)  # symmetric: the mappings form a group
    with pytest.raises(ValueError, match="atoms"):
        engine.matrix(xyz[:, :5], xyz)
    assert engine.matrix(xyz, xyz[:0]).shape == (4, 0)
    with pytest.raises(ValueError, match="backend"):
        RmsdConfig(backend="cuda")
