"""Torsional geometry: the map phi -> x(phi), its gradient, and the torsions of molecules (ALGORITHM.md 6b)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rdkit import Chem

from energy.mmff import MmffEnergy
from molecules.smiles import mol_from_smiles
from molecules.stereo import find_unassigned_stereo
from molecules.structures import conformer_structures, with_conformers
from molecules.torsions import (
    BOND_FEATURES,
    AmideKind,
    AmideRotors,
    HydrogenRotors,
    RotorKind,
    TorsionRules,
    configurations,
    embed_seeds,
    find_torsions,
    invertible_nitrogens,
    nitrogen_invertomers,
    torsion_system,
)
from molecules.validity import check_conformer, stereo_mismatch, stereo_spec
from sampler.torsion_geometry import (
    TorsionBatch,
    TorsionSystem,
    collate_torsion_systems,
    dihedral,
    random_seed_index,
    torsion_gradient,
    torsion_positions,
    torsion_torque,
)

DRUG_LIKE = (
    "CC(C)(C)c1ccc(C/N=C2\\N[C@H](CO)[C@H](O)[C@H](O)[C@H]2O)cc1",  # SPICE test: 5 stereocentres, C=N
    "C/C=C/C(=O)N[C@@H](Cc1ccccc1)C(=O)OC",  # E double bond, stereocentre, secondary amide, ester
    "CCC#CCN(C)C(=O)c1ccc(O)cc1",  # linear chain, tertiary amide, phenol OH
    "O=C(O)[C@@H](O)c1ccccc1",  # DRUGS dev
)
EVERYTHING = TorsionRules(hydrogen_rotors=HydrogenRotors.ALL, amides=AmideRotors.ALL)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _system(smiles: str, num_seeds: int = 1, rules: TorsionRules = EVERYTHING, seed: int = 11) -> TorsionSystem:
    mol = mol_from_smiles(smiles)
    seeds = embed_seeds(mol, num_seeds, seed=seed, ring_rmsd_threshold=0.0)
    return torsion_system(mol, seeds, rules=rules)


def _random_phi(n: int, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi


def _wrapped(d: torch.Tensor) -> torch.Tensor:
    return torch.remainder(d + math.pi, 2 * math.pi) - math.pi


def _distances(x: torch.Tensor) -> torch.Tensor:
    return (x[:, None] - x[None, :]).norm(dim=-1)


def _bonds_and_angles(mol: Chem.Mol, x: torch.Tensor) -> torch.Tensor:
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    lengths = [float((x[i] - x[j]).norm()) for i, j in bonds]
    angles = []
    for atom in mol.GetAtoms():
        nbs = [n.GetIdx() for n in atom.GetNeighbors()]
        j = atom.GetIdx()
        for p in range(len(nbs)):
            for q in range(p + 1, len(nbs)):
                u, v = x[nbs[p]] - x[j], x[nbs[q]] - x[j]
                angles.append(float(torch.arccos((u @ v) / (u.norm() * v.norm()))))
    return torch.tensor(lengths + angles, dtype=torch.float64)


# --- the map -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("smiles", DRUG_LIKE)
def test_map_sets_exactly_the_requested_dihedrals_and_keeps_bonds_and_angles(smiles: str) -> None:
    mol = mol_from_smiles(smiles)
    system = _system(smiles)
    batch = collate_torsion_systems([system], samples_per_system=3)
    phi = _random_phi(batch.num_torsions, torch.Generator().manual_seed(0))
    x = torsion_positions(batch, phi)
    assert _wrapped(dihedral(x, batch.torsion_atoms) - phi).abs().max() < 1e-8
    seed = system.seed_positions[0]
    n = system.num_atoms
    for k in range(3):
        torch.testing.assert_close(
            _bonds_and_angles(mol, x[k * n : (k + 1) * n]), _bonds_and_angles(mol, seed), atol=1e-10, rtol=0
        )
    torch.testing.assert_close(x.reshape(3, n, 3).mean(1), torch.zeros(3, 3, dtype=torch.float64), atol=1e-12, rtol=0)


def test_dihedral_matches_rdkit_and_lies_in_half_open_interval() -> None:
    from rdkit.Chem import rdMolTransforms

    mol = mol_from_smiles(DRUG_LIKE[1])
    seeds = embed_seeds(mol, 1, seed=5)
    conf = with_conformers(mol, seeds).GetConformer(0)
    quads = torch.tensor([t.atoms for t in find_torsions(mol)])
    ours = dihedral(torch.as_tensor(seeds[0]), quads)
    theirs = torch.tensor([rdMolTransforms.GetDihedralRad(conf, *map(int, q)) for q in quads], dtype=torch.float64)
    assert _wrapped(ours - theirs).abs().max() < 1e-10
    x = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 1], [-1, 0, 1]], dtype=torch.float64)  # exactly trans
    assert float(dihedral(x, torch.tensor([[0, 1, 2, 3]]))[0]) == -math.pi


def test_the_seeds_own_dihedrals_give_back_the_seed() -> None:
    system = _system(DRUG_LIKE[0], num_seeds=2)
    batch = collate_torsion_systems([system], torch.tensor([0, 1]), samples_per_system=2)
    x = torsion_positions(batch, dihedral(batch.positions, batch.torsion_atoms))
    centred = torch.cat([s - s.mean(0) for s in system.seed_positions])
    torch.testing.assert_close(x, centred, atol=1e-10, rtol=0)


def test_rotation_order_changes_only_the_frame() -> None:
    system = _system(DRUG_LIKE[2])
    order = torch.randperm(system.num_torsions, generator=torch.Generator().manual_seed(3))
    shuffled = _reorder_torsions(system, order)
    phi = _random_phi(system.num_torsions, torch.Generator().manual_seed(1))
    x = torsion_positions(collate_torsion_systems([system]), phi)
    y = torsion_positions(collate_torsion_systems([shuffled]), phi[order])
    torch.testing.assert_close(_distances(x), _distances(y), atol=1e-10, rtol=0)


def test_batching_equals_one_sample_at_a_time() -> None:
    systems = [_system(s, num_seeds=2, seed=7 + i) for i, s in enumerate(DRUG_LIKE[:3])]
    gen = torch.Generator().manual_seed(4)
    seed_index = random_seed_index(systems, 4, gen)
    batch = collate_torsion_systems(systems, seed_index, samples_per_system=4)
    phi = _random_phi(batch.num_torsions, gen)
    grad_x = torch.randn(batch.positions.shape, generator=gen, dtype=torch.float64)
    x = torsion_positions(batch, phi)
    g = torsion_gradient(batch, phi, grad_x)
    atoms, tors = batch.ptr.tolist(), [0, *torch.cumsum(batch.torsions_per_graph, 0).tolist()]
    for k in range(batch.num_graphs):
        one = collate_torsion_systems([systems[k // 4]], seed_index[k : k + 1])
        a, t = slice(atoms[k], atoms[k + 1]), slice(tors[k], tors[k + 1])
        torch.testing.assert_close(torsion_positions(one, phi[t]), x[a], atol=1e-12, rtol=0)
        torch.testing.assert_close(torsion_gradient(one, phi[t], grad_x[a]), g[t], atol=1e-10, rtol=0)


def test_float32_map_is_accurate() -> None:
    batch = collate_torsion_systems([_system(DRUG_LIKE[0])], samples_per_system=4).to(dtype=torch.float32)
    phi = _random_phi(batch.num_torsions, torch.Generator().manual_seed(2)).float()
    x = torsion_positions(batch, phi)
    assert x.dtype == torch.float32
    assert _wrapped(dihedral(x.double(), batch.torsion_atoms) - phi.double()).abs().max() < 1e-4


# --- gradients -----------------------------------------------------------------------------------------


def _pair_energy(x: torch.Tensor, batch: TorsionBatch, weights: torch.Tensor) -> torch.Tensor:
    """A rigid-motion-invariant test energy: sum over pairs in a sample of ``w_ij / r_ij + 0.01 r_ij^2``."""
    i, j = torch.triu_indices(x.shape[0], x.shape[0], 1)
    keep = batch.node_batch[i] == batch.node_batch[j]
    i, j = i[keep], j[keep]
    r = (x[i] - x[j]).norm(dim=-1)
    return (weights[i, j] / r + 0.01 * r**2).sum()


def test_torsion_gradient_matches_finite_differences_of_a_pair_energy() -> None:
    batch = collate_torsion_systems([_system(DRUG_LIKE[0]), _system(DRUG_LIKE[2])], samples_per_system=2)
    gen = torch.Generator().manual_seed(5)
    weights = torch.rand(batch.positions.shape[0], batch.positions.shape[0], generator=gen, dtype=torch.float64)
    phi = _random_phi(batch.num_torsions, gen)
    x = torsion_positions(batch, phi).requires_grad_(True)
    (grad_x,) = torch.autograd.grad(_pair_energy(x, batch, weights), x)
    grad = torsion_gradient(batch, phi, grad_x)
    h = 1e-5
    eye = torch.eye(batch.num_torsions, dtype=torch.float64)
    fd = torch.stack(
        [
            _pair_energy(torsion_positions(batch, phi + h * e), batch, weights)
            - _pair_energy(torsion_positions(batch, phi - h * e), batch, weights)
            for e in eye
        ]
    ) / (2 * h)
    torch.testing.assert_close(grad, fd, atol=1e-6, rtol=1e-7)
    torch.testing.assert_close(torsion_torque(batch, x.detach(), grad_x), grad, atol=1e-10, rtol=1e-10)


def test_torsion_gradient_matches_finite_differences_of_mmff() -> None:
    mol = mol_from_smiles(DRUG_LIKE[1])
    system = torsion_system(mol, embed_seeds(mol, 1, seed=3), rules=EVERYTHING)
    batch = collate_torsion_systems([system])
    model = MmffEnergy()

    def evaluate(phi: torch.Tensor) -> tuple[float, torch.Tensor]:
        x = torsion_positions(batch, phi)
        result = model.evaluate(conformer_structures(with_conformers(mol, [x.numpy()])))
        assert bool(result.valid.all())
        return float(result.energies[0]), -result.forces

    phi = _random_phi(batch.num_torsions, torch.Generator().manual_seed(6))
    _, grad_x = evaluate(phi)
    grad = torsion_gradient(batch, phi, grad_x)
    h = 1e-5
    fd = torch.tensor(
        [(evaluate(phi + h * e)[0] - evaluate(phi - h * e)[0]) / (2 * h) for e in torch.eye(len(phi)).double()],
        dtype=torch.float64,
    )
    torch.testing.assert_close(grad, fd, atol=2e-6, rtol=1e-5)


def test_torsion_gradient_under_inference_mode() -> None:
    with torch.inference_mode():
        batch = collate_torsion_systems([_system(DRUG_LIKE[3])], samples_per_system=2)
        phi = _random_phi(batch.num_torsions, torch.Generator().manual_seed(8))
        x = torsion_positions(batch, phi)
        grad_x = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        grad = torsion_gradient(batch, phi, grad_x)
    assert grad.shape == phi.shape and torch.isfinite(grad).all() and not grad.requires_grad
    torch.testing.assert_close(grad, torsion_gradient(batch._clone(), phi.clone(), grad_x.clone()))


# --- renumbering -----------------------------------------------------------------------------------------


def _reorder_torsions(system: TorsionSystem, order: torch.Tensor) -> TorsionSystem:
    ptr = system.moving_ptr.tolist()
    sides = [system.moving_atoms[ptr[i] : ptr[i + 1]] for i in order.tolist()]
    sizes = torch.tensor([len(s) for s in sides])
    return TorsionSystem(
        seed_positions=system.seed_positions,
        torsion_atoms=system.torsion_atoms[order],
        moving_atoms=torch.cat(sides),
        moving_ptr=torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(sizes, 0)]),
        node_attr=system.node_attr,
        edge_index=system.edge_index,
        edge_attr=system.edge_attr,
        system_id=system.system_id,
    )


@pytest.mark.parametrize("smiles", DRUG_LIKE[:3])
def test_renumbering_atoms_and_torsions_permutes_the_answer(smiles: str) -> None:
    gen = torch.Generator().manual_seed(12)
    mol = mol_from_smiles(smiles)
    seeds = embed_seeds(mol, 1, seed=13)
    perm = torch.randperm(mol.GetNumAtoms(), generator=gen)  # new atom k is old atom perm[k]
    inv = torch.argsort(perm)
    renumbered = Chem.RenumberAtoms(mol, perm.tolist())
    old = torsion_system(mol, seeds, rules=EVERYTHING)
    new = torsion_system(renumbered, seeds[:, perm.numpy()], rules=EVERYTHING)
    new = _reorder_torsions(new, torch.randperm(new.num_torsions, generator=gen))
    assert new.num_torsions == old.num_torsions

    # each new torsion is an old one: same bond; a different reference atom only if symmetry-equivalent
    rank = list(Chem.CanonicalRankAtoms(mol, breakTies=False))
    axis = {frozenset(t[1:3].tolist()): i for i, t in enumerate(inv[old.torsion_atoms])}
    match = torch.tensor([axis[frozenset(t[1:3].tolist())] for t in new.torsion_atoms])
    for t_new, t_old in zip(perm[new.torsion_atoms], old.torsion_atoms[match], strict=True):
        assert all(rank[int(p)] == rank[int(q)] for p, q in zip(t_new, t_old, strict=True))

    # the same angles (up to the symmetric-reference offset, zero when the definitions agree)
    phi_old = _random_phi(old.num_torsions, gen)
    seed_new = new.seed_positions[0]
    offset = dihedral(seed_new, new.torsion_atoms) - dihedral(seed_new, inv[old.torsion_atoms[match]])
    same = (new.torsion_atoms == inv[old.torsion_atoms[match]]).all(1)
    assert same.float().mean() > 0.5 and offset[same].abs().max() < 1e-12
    phi_new = phi_old[match] + offset
    x_old = torsion_positions(collate_torsion_systems([old]), phi_old)
    x_new = torsion_positions(collate_torsion_systems([new]), phi_new)
    torch.testing.assert_close(_distances(x_new), _distances(x_old[perm])[:, :], atol=1e-10, rtol=0)

    # the gradient per torsion permutes with them
    weights = torch.rand(mol.GetNumAtoms(), mol.GetNumAtoms(), generator=gen, dtype=torch.float64)
    weights = weights + weights.T
    b_old, b_new = collate_torsion_systems([old]), collate_torsion_systems([new])
    grads = []
    for b, x, w, phi in ((b_old, x_old, weights, phi_old), (b_new, x_new, weights[perm][:, perm], phi_new)):
        x = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(_pair_energy(x, b, w), x)
        grads.append(torsion_gradient(b, phi, gx))
    torch.testing.assert_close(grads[1], grads[0][match], atol=1e-9, rtol=1e-9)

    # graph features follow the atoms
    torch.testing.assert_close(new.node_attr, old.node_attr[perm])
    old_edges = {(int(i), int(j)): k for k, (i, j) in enumerate(old.edge_index.T)}
    for k, (i, j) in enumerate(perm[new.edge_index].T):
        torch.testing.assert_close(new.edge_attr[k], old.edge_attr[old_edges[(int(i), int(j))]])


# --- chemistry -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("smiles", DRUG_LIKE)
def test_random_torsions_keep_stereochemistry_and_bonds(smiles: str) -> None:
    mol = mol_from_smiles(smiles)
    system = _system(smiles)
    spec = stereo_spec(mol)
    gen = torch.Generator().manual_seed(21)
    batch = collate_torsion_systems([system], samples_per_system=8)
    x = torsion_positions(batch, _random_phi(batch.num_torsions, gen)).reshape(8, -1, 3).numpy()
    hops = torch.as_tensor(Chem.GetDistanceMatrix(mol))
    clashes = 0
    for pos in x:
        assert stereo_mismatch(mol, pos, spec) == ([], [])
        check = check_conformer(mol, pos, spec)
        assert not check.reflected
        if not check.ok:  # only a steric clash: atoms three or more bonds apart closer than a bond would be
            assert check.reason is not None and check.reason.startswith("connectivity")
            assert _distances(torch.as_tensor(pos))[hops >= 3].min() < 2.0
            clashes += 1
    assert clashes < 8


def test_torsion_enumeration_on_small_molecules() -> None:
    def kinds(smiles: str, rules: TorsionRules | None = None) -> list[tuple[RotorKind, AmideKind]]:
        return [(t.rotor, t.amide) for t in find_torsions(mol_from_smiles(smiles), rules)]

    heavy, sym, h = RotorKind.HEAVY, RotorKind.SYMMETRIC_HYDROGEN, RotorKind.HYDROGEN
    none = AmideKind.NONE
    assert kinds("CCCC") == [(sym, none), (heavy, none), (sym, none)]
    assert kinds("CCCC", TorsionRules()) == [(heavy, none)]
    assert kinds("CCO", TorsionRules()) == [(h, none)]  # OH: sampled by default
    assert kinds("CCO", TorsionRules(hydrogen_rotors=HydrogenRotors.NONE)) == []
    assert kinds("c1ccccc1N") == [(h, none)]  # NH2: sampled (ETKDG seeds can twist an aromatic NH2)
    assert kinds("CCC[NH3+]", TorsionRules()) == [(heavy, none)]  # CH3 and NH3+ tops: frozen
    assert kinds("C1CCCCC1") == []  # ring bonds
    assert kinds("C=C") == [] and kinds("CC#N") == [] and kinds("N#CC#N") == []  # nothing turns about a line
    assert [k for k in kinds("CNC(C)=O") if k[1] is not none] == [(heavy, AmideKind.SECONDARY)]
    assert [k for k in kinds("CN(C)C(C)=O") if k[1] is not none] == [(heavy, AmideKind.TERTIARY)]
    assert [k[1] for k in kinds("CNC(C)=O", TorsionRules())] == [AmideKind.SECONDARY]  # all amides by default
    tertiary_only = TorsionRules(amides=AmideRotors.TERTIARY)
    assert [k[1] for k in kinds("CNC(C)=O", tertiary_only)] == []
    assert [k[1] for k in kinds("CN(C)C(C)=O", tertiary_only)] == [AmideKind.TERTIARY]
    assert [k[1] for k in kinds("CN(C)C(C)=O", TorsionRules(amides=AmideRotors.NONE))] == []


def test_linear_chain_gives_one_well_defined_torsion() -> None:
    mol = mol_from_smiles("CCC#CCC")  # atoms 0 1 2 3 4 5: 2 and 3 are sp
    heavy = [t for t in find_torsions(mol) if t.rotor is RotorKind.HEAVY]
    assert len(heavy) == 1
    (t,) = heavy
    assert set(t.chain) == {2, 3} and t.atoms[1] == t.chain[-1]
    assert mol.GetBondBetweenAtoms(t.atoms[1], t.atoms[2]) is not None  # a real bond
    assert t.atoms[0] in {n.GetIdx() for n in mol.GetAtomWithIdx({1: 1, 3: 4}[t.chain[0]]).GetNeighbors()}


def test_torsion_system_fields_and_validation() -> None:
    system = _system(DRUG_LIKE[3])
    assert system.edge_attr.shape == (system.edge_index.shape[1], BOND_FEATURES)
    assert system.seed_torsions().shape == (1, system.num_torsions)
    bad = system.torsion_atoms.clone()
    bad[0, [0, 3]] = bad[0, [3, 0]]  # a on the moving side
    with pytest.raises(ValueError, match="moving side"):
        TorsionSystem(**{**system.__dict__, "torsion_atoms": bad})
    with pytest.raises(ValueError, match="phi must be"):
        torsion_positions(collate_torsion_systems([system]), torch.zeros(system.num_torsions + 1))
    with pytest.raises(ValueError, match="seed 3 requested"):
        collate_torsion_systems([system], torch.tensor([3]))
    with pytest.raises(ValueError, match="implicit hydrogens"):
        find_torsions(Chem.MolFromSmiles("CCO"))
    mol = mol_from_smiles(DRUG_LIKE[3])
    seeds = embed_seeds(mol, 1, seed=11)
    with pytest.raises(ValueError, match=r"seed_positions must be \[S, \d+, 3\]"):
        torsion_system(mol, seeds[:, :-1])
    with pytest.raises(ValueError, match=r"seed_positions must be .* got \(0, "):
        torsion_system(mol, seeds[:0])
    broken = seeds.copy()
    broken[0, 0, 1] = np.inf
    with pytest.raises(ValueError, match="seed_positions contain NaN or infinite"):
        torsion_system(mol, broken)
    assert torsion_system(mol, seeds[0]).num_seeds == 1  # one [n, 3] seed is lifted


def test_seeds_are_deduplicated_by_ring_shape() -> None:
    aromatic = mol_from_smiles("CCOc1ccccc1")
    assert embed_seeds(aromatic, 5, seed=3).shape == (1, aromatic.GetNumAtoms(), 3)
    puckered = mol_from_smiles("C[C@H]1CC[C@@H](N)CC1")  # trans: the ring's stereo is given
    assert embed_seeds(puckered, 8, seed=3, ring_rmsd_threshold=0.0).shape[0] == 8
    seeds = embed_seeds(puckered, 8, seed=3)
    assert 1 < seeds.shape[0] <= 8
    assert np.isfinite(seeds).all()


def test_a_long_chain_gets_its_seeds_from_random_coordinates_where_eigenvector_embedding_fails() -> None:
    from molecules.etkdg import embed

    chain = mol_from_smiles("C" * 60)  # 182 atoms: RDKit's eigenvector start embeds 1 of 4 at this seed
    plain = embed(chain, 4, seed=1)
    rescued = embed(chain, 4, seed=1, random_coords_fallback=True)
    assert len(plain) < 4 and rescued.shape == (4, chain.GetNumAtoms(), 3)
    np.testing.assert_array_equal(rescued[: len(plain)], plain)  # the eigenvector ones first, unchanged
    spec = stereo_spec(chain)
    assert all(check_conformer(chain, x, spec).ok for x in rescued)
    small = mol_from_smiles("CCOc1ccccc1")
    np.testing.assert_array_equal(embed(small, 3, seed=2), embed(small, 3, seed=2, random_coords_fallback=True))


def test_invertible_nitrogens_are_acyclic_pyramids_with_three_distinct_heavy_neighbours() -> None:
    sulfonamide = mol_from_smiles("CCN(C)S(C)(=O)=O")
    assert invertible_nitrogens(sulfonamide) == [(2, (1, 3, 4))]
    for smiles in ("CN(C)S(C)(=O)=O", "CN1CCCCC1", "CCNC", "c1ccncc1"):  # two alike, in a ring, an N-H, aromatic
        assert invertible_nitrogens(mol_from_smiles(smiles)) == [], smiles
    renumbered = Chem.RenumberAtoms(sulfonamide, list(reversed(range(sulfonamide.GetNumAtoms()))))
    (centre, _), n = invertible_nitrogens(renumbered)[0], sulfonamide.GetNumAtoms()
    assert centre == n - 1 - 2  # the same atom, wherever it is numbered


def test_nitrogen_invertomers_read_the_side_of_the_pyramid() -> None:
    sulfonamide = mol_from_smiles("CCN(C)S(C)(=O)=O")
    x = embed_seeds(sulfonamide, 1, seed=1, mmff_relax=True)
    side = nitrogen_invertomers(sulfonamide, x)
    assert side.shape == (1, 1) and abs(int(side[0, 0])) == 1
    assert nitrogen_invertomers(sulfonamide, -x)[0, 0] == -side[0, 0]  # the mirror image: the other invertomer
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    q[:, 0] *= np.linalg.det(q)  # a proper rotation
    assert nitrogen_invertomers(sulfonamide, x @ q + 2.0)[0, 0] == side[0, 0]  # keeps it
    amide = mol_from_smiles("CCN(C)C(C)=O")  # planar: no side
    assert nitrogen_invertomers(amide, embed_seeds(amide, 1, seed=1, mmff_relax=True)).tolist() == [[0]]
    assert nitrogen_invertomers(mol_from_smiles("CCO"), np.zeros((2, 9, 3))).shape == (2, 0)


def test_seeds_keep_both_invertomers_of_an_acyclic_nitrogen() -> None:
    """No torsion inverts a nitrogen: one seed would put every conformer on its invertomer."""
    sulfonamide = mol_from_smiles("CCN(C)S(C)(=O)=O")
    assert embed_seeds(sulfonamide, 4, seed=1, mmff_relax=True).shape[0] == 1  # no ring: one seed
    seeds = embed_seeds(sulfonamide, 4, seed=1, mmff_relax=True, invertomers=True)
    assert sorted(nitrogen_invertomers(sulfonamide, seeds).ravel().tolist()) == [-1, 1]
    spec = stereo_spec(sulfonamide)
    assert all(check_conformer(sulfonamide, p, spec).ok for p in seeds)
    amide = mol_from_smiles("CCN(C)C(C)=O")  # flat: its noise makes no second seed
    assert embed_seeds(amide, 4, seed=1, mmff_relax=True, invertomers=True).shape[0] == 1


def test_seeds_name_the_atoms_mmff_cannot_type() -> None:
    with pytest.raises(ValueError, match=r"seeds are MMFF94-relaxed, and MMFF94 cannot type .*Xe"):
        embed_seeds(mol_from_smiles("[Xe]F"), 1, mmff_relax=True)


def test_unassigned_stereo_gets_seeds_of_each_configuration_as_etkdg_samples_it() -> None:
    """Without ``@`` in the SMILES, ETKDG draws a configuration per conformer: the seeds must not all share one."""
    open_centre = mol_from_smiles("CCC(O)CCN")
    elements = find_unassigned_stereo(open_centre)
    seeds = embed_seeds(open_centre, 4, seed=1, mmff_relax=True)  # the product's seed count
    # no ring: one seed per configuration, where the SMILES-given case has one seed in all
    assert sorted(configurations(open_centre, seeds, elements)) == [
        ("CHI_TETRAHEDRAL_CCW",),
        ("CHI_TETRAHEDRAL_CW",),
    ]
    given = mol_from_smiles("CC[C@H](O)CCN")
    assert embed_seeds(given, 4, seed=1).shape[0] == 1  # no ring, stereo given: one seed, as before
    double_bond = mol_from_smiles("CCC=CCC")
    keys = configurations(double_bond, embed_seeds(double_bond, 2, seed=2), find_unassigned_stereo(double_bond))
    assert set(keys) == {("STEREOE",), ("STEREOZ",)}
    assert 2 <= len(keys) <= 4  # at most num_seeds per configuration


def test_molecules_without_torsions_batch_with_others() -> None:
    rigid = _system("c1ccccc1", rules=TorsionRules())
    assert rigid.num_torsions == 0
    flexible = _system(DRUG_LIKE[3])
    batch = collate_torsion_systems([rigid, flexible, rigid], samples_per_system=2)
    phi = _random_phi(batch.num_torsions, torch.Generator().manual_seed(30))
    x = torsion_positions(batch, phi)
    n = rigid.num_atoms
    torch.testing.assert_close(x[:n], rigid.seed_positions[0] - rigid.seed_positions[0].mean(0))
    assert _wrapped(dihedral(x, batch.torsion_atoms) - phi).abs().max() < 1e-8
    assert torsion_gradient(batch, phi, torch.ones_like(x)).shape == (batch.num_torsions,)
