"""The bond-validity regulariser (ALGORITHM.md section 4) and its place in the RAM target."""

from __future__ import annotations

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from energy.mmff import MmffEnergy
from energy.protocol import Structures
from energy.regulariser import BondValidityRegulariser, element_radii, pair_topology
from energy.target import EnergyTarget, SystemChemistry
from molecules.structures import conformer_structures
from molecules.topology import molecules_structures
from sampler.loss import adjoint_target, clip_per_particle
from sampler.schedule import GeometricNoiseSchedule
from sampler.state import SystemBatch, SystemGraph, collate

PT = Chem.GetPeriodicTable()


def relaxed(smiles: str, n: int = 1) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    rdDistGeom.EmbedMultipleConfs(mol, n, randomSeed=11)
    rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(mol)
    return mol


def reference_energy(mol: Chem.Mol, x: torch.Tensor, alpha: float = 100.0) -> float:
    """The formula, pair by pair, straight from RDKit's radii and bonds."""
    total = 0.0
    n = mol.GetNumAtoms()
    for i in range(n):
        for j in range(i + 1, n):
            zi, zj = mol.GetAtomWithIdx(i).GetAtomicNum(), mol.GetAtomWithIdx(j).GetAtomicNum()
            d = float((x[i] - x[j]).norm())
            if mol.GetBondBetweenAtoms(i, j) is not None:
                total += max(0.0, d - 1.5 * (PT.GetRcovalent(zi) + PT.GetRcovalent(zj)))
            else:
                total += max(0.0, (PT.GetRvdw(zi) + PT.GetRvdw(zj)) / 1.5 - d)
    return alpha * total


def with_positions(s: Structures, x: torch.Tensor) -> Structures:
    return Structures(
        positions=x,
        num_atoms=s.num_atoms,
        atomic_numbers=s.atomic_numbers,
        total_charge=s.total_charge,
        multiplicity=s.multiplicity,
        connection_tables=s.connection_tables,
    )


def distorted(seed: int = 0) -> tuple[list[Chem.Mol], Structures]:
    """Ethanol and benzamide, shaken hard enough to stretch bonds and make clashes."""
    mols = [relaxed("CCO"), relaxed("NC(=O)c1ccccc1")]
    s = molecules_structures(mols)
    g = torch.Generator().manual_seed(seed)
    return mols, with_positions(s, s.positions + 0.6 * torch.randn(s.positions.shape, generator=g, dtype=torch.float64))


def test_radii_are_rdkits() -> None:
    cov, vdw = element_radii()
    assert float(cov[6]) == PT.GetRcovalent(6) == 0.76 and float(vdw[1]) == PT.GetRvdw(1) == 1.2


def test_energy_matches_the_formula_pair_by_pair() -> None:
    mols, s = distorted()
    result = BondValidityRegulariser().evaluate(s)
    n0 = mols[0].GetNumAtoms()
    expected = [reference_energy(mols[0], s.positions[:n0]), reference_energy(mols[1], s.positions[n0:])]
    assert all(e > 0 for e in expected)
    torch.testing.assert_close(result.energies, torch.tensor(expected, dtype=torch.float64))


def test_gradient_matches_central_differences() -> None:
    _, s = distorted(seed=1)
    reg = BondValidityRegulariser()
    topo = reg.topology(s)
    x = s.positions
    d = (x[topo.first] - x[topo.second]).norm(dim=-1)
    assert float((d - topo.threshold).abs().min()) > 1e-5  # no pair within 10 h of a kink of the relu
    grad = reg(x, topo).gradient
    h = 1e-6
    fd = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for c in range(3):
            e = x.clone()
            e[i, c] += h
            plus = reg(e, topo).energies.sum()
            e[i, c] -= 2 * h
            minus = reg(e, topo).energies.sum()
            fd[i, c] = (plus - minus) / (2 * h)
    assert float(grad.abs().max()) > 50  # something is active
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-6)


def test_zero_for_relaxed_molecules() -> None:
    s = molecules_structures([relaxed("CCCCO", 3), relaxed("NC(=O)c1ccccc1"), relaxed("FC(F)(F)c1ccccc1")])
    result = BondValidityRegulariser().evaluate(s)
    assert bool((result.energies == 0).all()) and bool((result.gradient == 0).all())


def test_stretched_bond_and_clash_have_known_energies() -> None:
    mol = relaxed("CCO")
    s = conformer_structures(mol)
    reg = BondValidityRegulariser()
    topo = reg.topology(s)
    # stretch the O-H bond to 1.2 Å beyond its limit 1.5 (0.66 + 0.31)
    o = next(a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() == "O")
    h = next(nb.GetIdx() for nb in mol.GetAtomWithIdx(o).GetNeighbors() if nb.GetSymbol() == "H")
    x = s.positions.clone()
    axis = (x[h] - x[o]) / (x[h] - x[o]).norm()
    limit = 1.5 * (PT.GetRcovalent(8) + PT.GetRcovalent(1))
    x[h] = x[o] + (limit + 1.2) * axis
    out = reg(x, topo)
    assert float(out.energies[0]) == pytest.approx(100 * 1.2, rel=1e-9)  # the hydrogen clashes with nothing
    torch.testing.assert_close(out.gradient[h] @ axis, torch.tensor(100.0, dtype=torch.float64))
    # a clash: the two carbons' far hydrogens pushed onto each other (non-bonded, 0.5 Å apart)
    x = s.positions.clone()
    c0, c1 = 0, 1
    h0 = next(nb.GetIdx() for nb in mol.GetAtomWithIdx(c0).GetNeighbors() if nb.GetSymbol() == "H")
    h1 = next(nb.GetIdx() for nb in mol.GetAtomWithIdx(c1).GetNeighbors() if nb.GetSymbol() == "H")
    x[h1] = x[h0] + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    out = reg(x, topo)
    assert float(out.energies[0]) >= 100 * (2 * 1.2 / 1.5 - 0.5) - 1e-9
    assert float(out.energies[0]) == pytest.approx(reference_energy(mol, x), rel=1e-12)
    assert float(out.gradient[h1, 0]) < 0  # the clash pushes h1 away from h0 along +x: dE/dx < 0


def test_batched_equals_one_by_one_and_edge_list_equals_table() -> None:
    mols, s = distorted(seed=2)
    reg = BondValidityRegulariser()
    both = reg.evaluate(s)
    n0 = mols[0].GetNumAtoms()
    for k, (mol, rows) in enumerate(zip(mols, [slice(0, n0), slice(n0, None)], strict=True)):
        alone = reg.evaluate(with_positions(conformer_structures(mol), s.positions[rows]))
        torch.testing.assert_close(both.energies[k : k + 1], alone.energies)
        torch.testing.assert_close(both.gradient[rows], alone.gradient)
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mols[0].GetBonds()]
    bonds += [(b.GetEndAtomIdx() + n0, b.GetBeginAtomIdx() + n0) for b in mols[1].GetBonds()]
    topo = pair_topology(s.num_atoms, s.atomic_numbers, torch.tensor(bonds).T)
    torch.testing.assert_close(reg(s.positions, topo).energies, both.energies)


def test_angle_pairs_can_be_left_out() -> None:
    # a relaxed carboxylic acid: its C···H 1-3 pair (1.84 Å) is inside (1.7 + 1.2) / 1.5 = 1.93 Å
    s = conformer_structures(relaxed("CC(=O)O"))
    assert float(BondValidityRegulariser().evaluate(s).energies[0]) > 0
    assert float(BondValidityRegulariser(exclude_angle_pairs=True).evaluate(s).energies[0]) == 0
    n = int(s.num_atoms[0])
    full = BondValidityRegulariser().topology(s)
    lean = BondValidityRegulariser(exclude_angle_pairs=True).topology(s)
    mol = Chem.MolFromMolBlock(s.connection_tables[0], removeHs=False)  # type: ignore[index]
    dm = Chem.GetDistanceMatrix(mol)
    assert full.first.numel() == n * (n - 1) // 2
    assert lean.first.numel() == sum(1 for i in range(n) for j in range(i + 1, n) if dm[i, j] != 2)


def test_missing_table_is_an_error() -> None:
    s = conformer_structures(relaxed("CO"))
    bare = Structures(
        positions=s.positions,
        num_atoms=s.num_atoms,
        atomic_numbers=s.atomic_numbers,
        total_charge=s.total_charge,
        multiplicity=s.multiplicity,
    )
    with pytest.raises(ValueError, match="structure 0 has no connection table"):
        BondValidityRegulariser().evaluate(bare)


SCHEDULE = GeometricNoiseSchedule(sigma_min=1e-3, sigma_max=1.0)


def molecule_batch() -> tuple[EnergyTarget, EnergyTarget, SystemBatch]:
    mols, s = distorted(seed=3)
    chemistry = {}
    graphs = []
    n0 = mols[0].GetNumAtoms()
    for sid, (mol, rows) in enumerate(zip(mols, [slice(0, n0), slice(n0, None)], strict=True)):
        z = s.atomic_numbers[rows]
        chemistry[sid] = SystemChemistry(atomic_numbers=z, connection_table=Chem.MolToMolBlock(mol))
        graphs.append(SystemGraph.fully_connected(z[:, None].double(), dim=3, system_id=sid))
    batch = collate(graphs, s.positions)
    plain = EnergyTarget(model=MmffEnergy(), chemistry=chemistry)
    regularised = EnergyTarget(model=MmffEnergy(), chemistry=chemistry, regulariser=BondValidityRegulariser())
    return plain, regularised, batch


def test_energy_target_passes_the_regulariser_gradient() -> None:
    plain, regularised, batch = molecule_batch()
    without, with_reg = plain(batch), regularised(batch)
    assert without.extra_gradient is None and with_reg.extra_gradient is not None
    torch.testing.assert_close(with_reg.energy_gradient, without.energy_gradient)
    expected = BondValidityRegulariser().evaluate(regularised.structures(batch)).gradient
    torch.testing.assert_close(with_reg.extra_gradient, expected)
    assert float(expected.abs().max()) > 0


def test_ram_target_adds_the_clipped_regulariser_without_tau() -> None:
    _, regularised, batch = molecule_batch()
    evaluation = regularised(batch)
    assert evaluation.extra_gradient is not None
    grad_e, extra = evaluation.energy_gradient, evaluation.extra_gradient
    base = adjoint_target(batch, grad_e, schedule=SCHEDULE, tau=0.5, max_grad_norm=150.0)
    for tau in (0.5, 2.0):  # the regulariser's share does not depend on tau
        full = adjoint_target(batch, grad_e, schedule=SCHEDULE, tau=tau, max_grad_norm=150.0, extra_gradient=extra)
        rescaled = adjoint_target(batch, grad_e, schedule=SCHEDULE, tau=tau, max_grad_norm=150.0)
        share = batch.remove_com(-clip_per_particle(extra, 150.0))
        torch.testing.assert_close(full - rescaled, share)
    # clipped separately: a huge regulariser gradient moves each atom's target by at most 150 (before COM)
    huge = extra * 1e4
    full = adjoint_target(batch, grad_e, schedule=SCHEDULE, tau=0.5, max_grad_norm=150.0, extra_gradient=huge)
    assert float((full - base).norm(dim=-1).max()) <= 2 * 150.0 + 1e-6
