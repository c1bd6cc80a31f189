"""Batched relaxation: lowers energies, converges to RDKit's own MMFF minima, keeps invalid entries apart."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import CalculationFailed
from ase.optimize import BFGS
from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from energy.mmff import KCAL_PER_MOL_IN_EV, MmffEnergy
from energy.protocol import EnergyResult, Structures
from energy.relax import EnergyModelCalculator, RelaxConfig, relax, select_structures
from molecules.structures import conformer_structures
from molecules.topology import molecules_structures


def embedded(smiles: str, n: int = 1, seed: int = 5) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert len(rdDistGeom.EmbedMultipleConfs(mol, n, randomSeed=seed)) == n
    return mol


def max_force(model: MmffEnergy, s: Structures) -> torch.Tensor:
    """``[G]`` largest atomic force norm, evaluated afresh."""
    f = model.evaluate(s).forces.norm(dim=-1)
    batch = torch.repeat_interleave(torch.arange(s.num_structures), s.num_atoms)
    return torch.zeros(s.num_structures, dtype=f.dtype).scatter_reduce_(0, batch, f, "amax")


def at(s: Structures, positions: torch.Tensor) -> Structures:
    return select_structures(s, torch.ones(s.num_structures, dtype=torch.bool), positions)


@pytest.mark.parametrize("optimizer", ["lbfgs", "fire"])
def test_relaxation_lowers_every_energy_and_converges(optimizer: str) -> None:
    model = MmffEnergy()
    s = molecules_structures([embedded("CCCCO", 3), embedded("CC(=O)Nc1ccc(O)cc1", 2)])  # ragged: 15, 20 atoms
    config = RelaxConfig(fmax=0.02, optimizer=optimizer, max_steps=2000)
    result = relax(model, s, config)
    assert bool(result.valid.all()) and bool(result.converged.all())
    assert bool((result.energies < result.initial_energies).all())
    torch.testing.assert_close(result.initial_energies, model.evaluate(s).energies)
    final = at(s, result.positions)
    torch.testing.assert_close(result.energies, model.evaluate(final).energies)  # energies belong to positions
    assert bool((max_force(model, final) <= config.fmax).all())
    torch.testing.assert_close(result.max_force, max_force(model, final))
    assert bool((result.steps > 0).all()) and bool((result.steps <= config.max_steps).all())


def test_lbfgs_reaches_rdkits_mmff_minimum() -> None:
    model = MmffEnergy()
    mol = embedded("CCOC(=O)c1ccc(N)cc1", 4)  # benzocaine
    s = conformer_structures(mol)
    result = relax(model, s, RelaxConfig(fmax=1e-3, max_steps=3000))
    assert bool(result.converged.all())
    # RDKit's minimizer, continued from our minima, finds (almost) nothing left to gain
    ours = mol.__copy__()
    n = mol.GetNumAtoms()
    for k, conf in enumerate(ours.GetConformers()):
        conf.SetPositions(result.positions[k * n : (k + 1) * n].numpy())
    continued = rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(ours, maxIters=10_000)
    assert all(not_converged == 0 for not_converged, _ in continued)
    gained = result.energies.numpy() / KCAL_PER_MOL_IN_EV - np.array([e for _, e in continued])
    assert np.all(gained < 1e-2) and np.all(gained > -1e-6), gained  # kcal/mol


def test_rigid_molecule_has_the_same_minimum_as_rdkit_from_the_same_start() -> None:
    mol = embedded("CC(=O)c1ccccc1", 3)  # acetophenone: one conformer up to symmetry
    result = relax(MmffEnergy(), conformer_structures(mol), RelaxConfig(fmax=1e-3, max_steps=3000))
    theirs = mol.__copy__()
    rdkit = rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(theirs, maxIters=10_000)
    expected = np.array([e for _, e in rdkit]) * KCAL_PER_MOL_IN_EV
    np.testing.assert_allclose(result.energies.numpy(), expected, atol=1e-2 * KCAL_PER_MOL_IN_EV, rtol=0)


def test_step_limit_reports_not_converged() -> None:
    s = conformer_structures(embedded("CCCCO", 2))
    result = relax(MmffEnergy(), s, RelaxConfig(max_steps=2))
    assert result.steps.tolist() == [2, 2]
    assert not bool(result.converged.any()) and bool(result.valid.all())
    assert bool((result.max_force > 0.05).all())
    zero = relax(MmffEnergy(), s, RelaxConfig(max_steps=0))
    torch.testing.assert_close(zero.positions, s.positions)
    assert zero.steps.tolist() == [0, 0]


def test_invalid_entries_stay_put_and_the_rest_relaxes() -> None:
    good = conformer_structures(embedded("CCO"))
    boron = conformer_structures(embedded("B(O)O"))
    parts = [good, boron, good]
    s = Structures(
        positions=torch.cat([p.positions for p in parts]),
        num_atoms=torch.cat([p.num_atoms for p in parts]),
        atomic_numbers=torch.cat([p.atomic_numbers for p in parts]),
        total_charge=torch.cat([p.total_charge for p in parts]),
        multiplicity=torch.cat([p.multiplicity for p in parts]),
        connection_tables=tuple(t for p in parts for t in (p.connection_tables or ())),
    )
    result = relax(MmffEnergy(), s, RelaxConfig(fmax=0.01))
    assert result.valid.tolist() == [True, False, True] and result.converged.tolist() == [True, False, True]
    assert result.reasons[1] is not None and "B (Z=5)" in result.reasons[1]
    n = int(good.num_atoms[0])
    torch.testing.assert_close(result.positions[n : n + int(boron.num_atoms[0])], boron.positions)
    assert math.isnan(float(result.energies[1])) and int(result.steps[1]) == 0
    torch.testing.assert_close(result.energies[0], result.energies[2])  # same start, same path


class FailsLater:
    """MMFF, except that structures with ``atoms`` atoms turn invalid from the ``after``-th call on."""

    def __init__(self, atoms: int, after: int) -> None:
        self.inner, self.atoms, self.after, self.calls = MmffEnergy(), atoms, after, 0

    @property
    def name(self) -> str:
        return "fails-later"

    def evaluate(self, structures: Structures) -> EnergyResult:
        self.calls += 1
        r = self.inner.evaluate(structures)
        if self.calls < self.after:
            return r
        hit = structures.num_atoms == self.atoms
        nodes = torch.repeat_interleave(hit, structures.num_atoms)
        return EnergyResult(
            energies=torch.where(hit, float("nan"), r.energies),
            forces=torch.where(nodes[:, None], 0.0, r.forces),
            valid=r.valid & ~hit,
            reasons=tuple("simulated crash" if h else x for h, x in zip(hit.tolist(), r.reasons, strict=True)),
        )


def test_structure_turning_invalid_keeps_its_last_valid_positions() -> None:
    ethanol, propane = embedded("CCO"), embedded("CCC")
    s = molecules_structures([ethanol, propane])
    model = FailsLater(atoms=ethanol.GetNumAtoms(), after=4)  # calls 1-3 fine: start + steps 1, 2
    result = relax(model, s, RelaxConfig(fmax=0.01))
    assert result.valid.tolist() == [False, True] and result.converged.tolist() == [False, True]
    assert result.reasons[0] is not None and "invalid after step 3 (simulated crash)" in result.reasons[0]
    assert int(result.steps[0]) == 3
    n = ethanol.GetNumAtoms()
    last = conformer_structures(ethanol).positions
    kept = select_structures(s, torch.tensor([True, False]), result.positions)
    assert not torch.equal(kept.positions, last)  # it did move before failing
    assert float(MmffEnergy().evaluate(kept).energies[0]) == pytest.approx(float(result.energies[0]), rel=1e-12)
    assert float(result.energies[0]) < float(result.initial_energies[0])
    assert result.positions[:n].isfinite().all()


def test_empty_batch_and_bad_config() -> None:
    result = relax(MmffEnergy(), molecules_structures([]))
    assert result.positions.shape == (0, 3) and result.converged.shape == (0,)
    with pytest.raises(ValueError, match="optimizer"):
        RelaxConfig(optimizer="bfgs")
    with pytest.raises(ValueError, match="fmax"):
        RelaxConfig(fmax=0.0)


def test_ase_calculator_adapter() -> None:
    mol = embedded("CCO")
    table = Chem.MolToMolBlock(mol)
    atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())
    atoms.calc = EnergyModelCalculator(MmffEnergy(), connection_table=table)
    s = conformer_structures(mol)
    direct = MmffEnergy().evaluate(s)
    assert atoms.get_potential_energy() == pytest.approx(float(direct.energies[0]), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), direct.forces.numpy(), rtol=1e-12, atol=1e-12)
    assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    ours = relax(MmffEnergy(), s, RelaxConfig(fmax=0.01))
    assert atoms.get_potential_energy() == pytest.approx(float(ours.energies[0]), abs=1e-3)
    broken = Atoms(numbers=[5, 8, 8], positions=[[0, 0, 0], [1.4, 0, 0], [0, 1.4, 0]])
    broken.calc = EnergyModelCalculator(MmffEnergy())
    with pytest.raises(CalculationFailed, match=r"no connection table|B \(Z=5\)"):
        broken.get_potential_energy()
