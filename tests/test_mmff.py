"""MMFF94 through RDKit: forces are -grad E, energies are RDKit's (converted once), bad input is invalid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import units
from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from energy.mmff import KCAL_PER_MOL_IN_EV, MmffEnergy, mmff_energies, mmff_properties
from energy.protocol import EnergyModel, Structures
from energy.registry import build_energy_model
from molecules.structures import conformer_structures
from molecules.topology import molecules_structures

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"


def embedded(smiles: str, n: int = 1, seed: int = 7) -> Chem.Mol:
    """ETKDG conformers (seed 0 gives identical conformers in RDKit 2026.9: avoid it)."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert len(rdDistGeom.EmbedMultipleConfs(mol, n, randomSeed=seed)) == n
    return mol


def rdkit_energy_grad(mol: Chem.Mol, conf_id: int, variant: str = "MMFF94") -> tuple[float, torch.Tensor]:
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
    ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, props, confId=conf_id)
    return ff.CalcEnergy(), torch.tensor(ff.CalcGrad(), dtype=torch.float64).view(-1, 3)


def with_positions(s: Structures, positions: torch.Tensor) -> Structures:
    return Structures(
        positions=positions,
        num_atoms=s.num_atoms,
        atomic_numbers=s.atomic_numbers,
        total_charge=s.total_charge,
        multiplicity=s.multiplicity,
        connection_tables=s.connection_tables,
    )


def repeated(s: Structures, copies: int, positions: torch.Tensor) -> Structures:
    """``copies`` copies of the one-structure batch ``s`` at ``positions`` ``[copies * n, 3]``."""
    assert s.connection_tables is not None
    return Structures(
        positions=positions,
        num_atoms=s.num_atoms.repeat(copies),
        atomic_numbers=s.atomic_numbers.repeat(copies),
        total_charge=s.total_charge.repeat(copies),
        multiplicity=s.multiplicity.repeat(copies),
        connection_tables=s.connection_tables * copies,
    )


def test_kcal_per_mol_factor() -> None:
    # 4184 J/mol over the Faraday constant N_A e = 96485.33212 C/mol; ASE's (CODATA 2014) agree to 1e-7
    assert KCAL_PER_MOL_IN_EV == pytest.approx(4184.0 / 96485.33212, rel=1e-10)
    assert KCAL_PER_MOL_IN_EV == pytest.approx(units.kcal / units.mol, rel=1e-7)


def test_registry_builds_mmff() -> None:
    model = build_energy_model("mmff")
    assert isinstance(model, MmffEnergy) and isinstance(model, EnergyModel) and model.name == "mmff94"
    with pytest.raises(ValueError, match="MMFF94s"):
        MmffEnergy("MMFF95")


@pytest.mark.parametrize("variant", ["MMFF94", "MMFF94s"])
def test_energies_and_forces_are_rdkits_converted(variant: str) -> None:
    mol = embedded("CC(=O)Nc1ccc(O)cc1", n=3)  # paracetamol: the variants differ at the amide N
    result = MmffEnergy(variant).evaluate(conformer_structures(mol))
    assert bool(result.valid.all())
    n = mol.GetNumAtoms()
    for k, conf in enumerate(mol.GetConformers()):
        e_kcal, g_kcal = rdkit_energy_grad(mol, conf.GetId(), variant)
        assert float(result.energies[k]) == pytest.approx(e_kcal * KCAL_PER_MOL_IN_EV, rel=1e-12, abs=1e-12)
        torch.testing.assert_close(result.forces[k * n : (k + 1) * n], -g_kcal * KCAL_PER_MOL_IN_EV)


def test_variants_differ() -> None:
    s = conformer_structures(embedded("CC(=O)Nc1ccc(O)cc1"))
    assert (
        abs(float(MmffEnergy("MMFF94").evaluate(s).energies[0] - MmffEnergy("MMFF94s").evaluate(s).energies[0])) > 1e-4
    )


def test_forces_are_minus_gradient_by_central_differences() -> None:
    s = conformer_structures(embedded(ASPIRIN))
    model = MmffEnergy()
    x = s.positions
    n = x.shape[0]
    h = 1e-4
    shifts = torch.eye(3 * n, dtype=torch.float64).view(3 * n, n, 3) * h
    displaced = torch.cat([x + shifts, x - shifts]).reshape(-1, 3)  # all 2 * 3n displacements in one batch
    e = model.evaluate(repeated(s, 6 * n, displaced))
    assert bool(e.valid.all())
    grad = (e.energies[: 3 * n] - e.energies[3 * n :]) / (2 * h)
    forces = model.evaluate(s).forces.flatten()
    rel = float((forces + grad).norm() / forces.norm())
    assert rel < 1e-4, rel


def test_cached_and_uncached_agree_and_cutoff_keeps_near_pairs() -> None:
    s = conformer_structures(embedded(ASPIRIN, n=2))
    cached = MmffEnergy()
    first, again = cached.evaluate(s), cached.evaluate(s)
    fresh = MmffEnergy(cache_size=0).evaluate(s)
    torch.testing.assert_close(first.energies, again.energies, rtol=0, atol=0)
    torch.testing.assert_close(first.energies, fresh.energies, rtol=0, atol=0)
    torch.testing.assert_close(first.forces, fresh.forces, rtol=0, atol=0)
    # a cutoff longer than the molecule changes nothing; a short one drops (small) long-range terms
    torch.testing.assert_close(MmffEnergy(nonbonded_cutoff=50.0).evaluate(s).energies, first.energies)
    short = MmffEnergy(nonbonded_cutoff=3.0).evaluate(s).energies
    assert bool((short != first.energies).all())
    with pytest.raises(ValueError, match="positive"):
        MmffEnergy(nonbonded_cutoff=0.0)


def test_charged_molecule_and_salt() -> None:
    acetate = embedded("CC(=O)[O-]")
    ammonium = embedded("C[NH3+]")
    s = molecules_structures([acetate, ammonium])
    assert s.total_charge.tolist() == [-1, 1]
    result = MmffEnergy().evaluate(s)
    assert result.valid.tolist() == [True, True]
    assert float(result.energies[0]) == pytest.approx(rdkit_energy_grad(acetate, 0)[0] * KCAL_PER_MOL_IN_EV)


def all_trans_alkane(n: int) -> Chem.Mol:
    """C_nH_(2n+2) as an all-trans zigzag built from bond geometry (ETKDG takes seconds at this size)."""
    mol = Chem.AddHs(Chem.MolFromSmiles("C" * n))
    conf = Chem.Conformer(mol.GetNumAtoms())
    carbons = torch.tensor([[1.27 * i, 0.89 * (i % 2), 0.0] for i in range(n)], dtype=torch.float64)
    placed = [0] * n
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() == 6:
            conf.SetAtomPosition(atom.GetIdx(), carbons[atom.GetIdx()].tolist())
            continue
        c = atom.GetNeighbors()[0].GetIdx()
        away = -1.0 if c % 2 == 0 else 1.0
        options = [[0.0, 0.63 * away, 0.89], [0.0, 0.63 * away, -0.89], [1.09 if c else -1.09, 0.0, 0.0]]
        conf.SetAtomPosition(atom.GetIdx(), (carbons[c] + torch.tensor(options[placed[c]])).tolist())
        placed[c] += 1
    conf.Set3D(True)
    mol.AddConformer(conf, assignId=True)
    return mol


def test_three_hundred_atoms_evaluate() -> None:
    mol = all_trans_alkane(100)  # C100H202: 302 atoms
    result = MmffEnergy().evaluate(conformer_structures(mol))
    assert mol.GetNumAtoms() == 302 and bool(result.valid[0])
    assert math.isfinite(float(result.energies[0])) and bool(torch.isfinite(result.forces).all())


def test_empty_batch() -> None:
    empty = molecules_structures([])
    result = MmffEnergy().evaluate(empty)
    assert result.energies.shape == (0,) and result.forces.shape == (0, 3) and result.reasons == ()


def _bad_batch() -> tuple[Structures, list[str]]:
    """A good conformer between bad ones; the expected reason fragment for each entry."""
    good = conformer_structures(embedded("CCO"))
    boron = conformer_structures(embedded("B(O)(O)c1ccccc1"))
    radical = conformer_structures(embedded("[CH2]C"))
    nan = with_positions(good, good.positions.clone().index_fill_(0, torch.tensor([2]), float("nan")))
    coincident = with_positions(good, good.positions.clone())
    coincident.positions[1] = coincident.positions[0]
    no_table = Structures(
        positions=good.positions,
        num_atoms=good.num_atoms,
        atomic_numbers=good.atomic_numbers,
        total_charge=good.total_charge,
        multiplicity=good.multiplicity,
    )
    assert good.connection_tables is not None
    wrong_charge = Structures(
        positions=good.positions,
        num_atoms=good.num_atoms,
        atomic_numbers=good.atomic_numbers,
        total_charge=torch.tensor([1]),
        multiplicity=torch.tensor([2]),
        connection_tables=good.connection_tables,
    )
    heavy = Chem.MolFromSmiles("CCO")  # implicit hydrogens
    rdDistGeom.EmbedMolecule(heavy, randomSeed=7)
    implicit = conformer_structures(heavy)
    swapped_z = good.atomic_numbers.clone()
    swapped_z[0] = 8  # keeps the electron count even
    wrong_element = Structures(
        positions=good.positions,
        num_atoms=good.num_atoms,
        atomic_numbers=swapped_z,
        total_charge=good.total_charge,
        multiplicity=good.multiplicity,
        connection_tables=good.connection_tables,
    )
    other_table = Structures(
        positions=good.positions,
        num_atoms=good.num_atoms,
        atomic_numbers=good.atomic_numbers,
        total_charge=good.total_charge,
        multiplicity=good.multiplicity,
        connection_tables=(Chem.MolToMolBlock(embedded("CCC")),),
    )
    garbage = Structures(
        positions=good.positions,
        num_atoms=good.num_atoms,
        atomic_numbers=good.atomic_numbers,
        total_charge=good.total_charge,
        multiplicity=good.multiplicity,
        connection_tables=("not a mol block",),
    )
    parts = [
        (boron, "B (Z=5)"),
        (good, ""),
        (radical, "closed-shell"),
        (nan, "non-finite"),
        (coincident, "coincident atoms 0 and 1"),
        (no_table, "no connection table"),
        (wrong_charge, "differs from the connection table's formal charges"),
        (implicit, "implicit hydrogens"),
        (wrong_element, "table C, structure O"),
        (other_table, "connection table has 11 atoms, the structure 9"),
        (garbage, "could not be parsed"),
        (good, ""),
    ]
    tables = tuple(p.connection_tables[0] if p.connection_tables else None for p, _ in parts)
    batch = Structures(
        positions=torch.cat([p.positions for p, _ in parts]),
        num_atoms=torch.cat([p.num_atoms for p, _ in parts]),
        atomic_numbers=torch.cat([p.atomic_numbers for p, _ in parts]),
        total_charge=torch.cat([p.total_charge for p, _ in parts]),
        multiplicity=torch.cat([p.multiplicity for p, _ in parts]),
        connection_tables=tables,
    )
    return batch, [r for _, r in parts]


def test_bad_input_is_invalid_with_reason_and_spares_the_rest() -> None:
    batch, expected = _bad_batch()
    result = MmffEnergy().evaluate(batch)
    reference = MmffEnergy().evaluate(conformer_structures(embedded("CCO")))
    for k, fragment in enumerate(expected):
        if fragment:
            reason = result.reasons[k]
            assert not bool(result.valid[k]), k
            assert reason is not None and fragment in reason, (k, reason)
            assert math.isnan(float(result.energies[k]))
        else:
            assert bool(result.valid[k]) and result.reasons[k] is None
            assert float(result.energies[k]) == pytest.approx(float(reference.energies[0]), rel=1e-12)
    offsets = torch.cumsum(batch.num_atoms, 0) - batch.num_atoms
    for k in (i for i, f in enumerate(expected) if f):  # invalid entries carry zero forces
        start, n = int(offsets[k]), int(batch.num_atoms[k])
        assert bool((result.forces[start : start + n] == 0).all())


def test_untypable_valence_names_the_problem() -> None:
    # every element is in MMFF's set, yet pentacoordinate phosphorus (PF5) has no MMFF types
    mol = embedded("FP(F)(F)(F)F")
    assert not rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol)
    result = MmffEnergy().evaluate(conformer_structures(mol))
    assert not bool(result.valid[0])
    assert result.reasons[0] is not None and "could not assign atom types" in result.reasons[0]


def test_mmff_optimize_restores_the_bond_graph_of_a_distorted_conformer() -> None:
    from rdkit.Chem import rdDistGeom

    from energy.mmff import mmff_optimize
    from molecules.validity import check_conformer, stereo_spec

    mol = Chem.AddHs(Chem.MolFromSmiles("C[C@H](N)C(=O)O"))
    rdDistGeom.EmbedMultipleConfs(mol, 3, randomSeed=11)
    import numpy as np

    rng = np.random.default_rng(0)
    for conf in mol.GetConformers():  # 0.25 Å noise on every coordinate: the bond perception fails
        pos = conf.GetPositions() + rng.normal(0.0, 0.25, (mol.GetNumAtoms(), 3))
        for i, p in enumerate(pos):
            conf.SetAtomPosition(i, p.tolist())
    spec = stereo_spec(mol)
    before = [check_conformer(mol, c.GetPositions(), spec).ok for c in mol.GetConformers()]
    results = mmff_optimize(mol, max_iters=500)
    after = [check_conformer(mol, c.GetPositions(), spec).ok for c in mol.GetConformers()]
    assert not all(before) and all(after)
    assert len(results) == 3 and all(converged for converged, _ in results)
    with pytest.raises(ValueError, match="cannot type"):
        borane = Chem.AddHs(Chem.MolFromSmiles("CB(C)C"))  # MMFF94 has no boron types
        rdDistGeom.EmbedMolecule(borane, randomSeed=3)
        mmff_optimize(borane)


def _pentane_at(phi_deg: float) -> tuple[Chem.Mol, np.ndarray, list[int], list[int]]:
    """n-pentane (MMFF94-relaxed) with its C1-C2-C3-C4 dihedral set rigidly to ``phi_deg``; the dihedral and
    the atoms on the C3 side of the C2-C3 bond."""
    from rdkit.Chem import rdMolTransforms

    mol = Chem.AddHs(Chem.MolFromSmiles("CCCCC"))
    rdDistGeom.EmbedMolecule(mol, randomSeed=5)
    rdForceFieldHelpers.MMFFOptimizeMolecule(mol, maxIters=2000)
    dihedral = [0, 1, 2, 3]
    rdMolTransforms.SetDihedralDeg(mol.GetConformer(), *dihedral, phi_deg)
    # the atoms SetDihedralDeg moves: the C3 side of the C2-C3 bond
    side = Chem.GetMolFrags(Chem.FragmentOnBonds(mol, [mol.GetBondBetweenAtoms(1, 2).GetIdx()], addDummies=False))
    moving = sorted(next(f for f in side if 2 in f))
    return mol, np.asarray(mol.GetConformer().GetPositions()), dihedral, moving


def test_torsion_relax_holds_the_dihedrals_and_lowers_the_energy() -> None:
    import numpy as np
    from rdkit.Chem import rdMolTransforms

    from energy.mmff import mmff_torsion_relax

    mol, x, dihedral, _ = _pentane_at(20.0)  # eclipsed-ish: rigid rotation leaves strain the rest relieves
    dihedrals = [dihedral, [1, 2, 3, 4]]
    before = [rdMolTransforms.GetDihedralDeg(mol.GetConformer(), *d) for d in dihedrals]
    relaxed = mmff_torsion_relax(mol, x, dihedrals, max_iters=500)
    ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, rdForceFieldHelpers.MMFFGetMoleculeProperties(mol))
    assert ff.CalcEnergy(relaxed.ravel().tolist()) < ff.CalcEnergy(x.ravel().tolist()) - 0.1
    probe = Chem.Mol(mol)
    probe.GetConformer().SetPositions(relaxed)
    after = [rdMolTransforms.GetDihedralDeg(probe.GetConformer(), *d) for d in dihedrals]
    assert np.allclose(before, after, atol=0.2)
    assert float(np.abs(relaxed - x).max()) > 0.01  # everything else moved
    free = mmff_torsion_relax(mol, x, np.zeros((0, 4)), max_iters=500)  # nothing held: the dihedral turns
    probe.GetConformer().SetPositions(free)
    assert abs(rdMolTransforms.GetDihedralDeg(probe.GetConformer(), *dihedral) - before[0]) > 5.0
    batch = mmff_torsion_relax(mol, np.stack([x, x]), dihedrals, max_iters=500)
    assert batch.shape == (2, *x.shape) and np.allclose(batch[0], relaxed)
    with pytest.raises(ValueError, match="NaN"):
        mmff_torsion_relax(mol, np.full_like(x, np.nan), dihedrals)
    with pytest.raises(ValueError, match="outside"):
        mmff_torsion_relax(mol, x, [[0, 1, 2, 99]])
    with pytest.raises(ValueError, match="positions must be"):
        mmff_torsion_relax(mol, x[:3], dihedrals)


def test_relaxed_surface_gradient_is_the_torque_at_the_relaxed_geometry() -> None:
    """Envelope theorem: d/dphi min{E(x) : dihedrals(x) = phi} equals the torque of dE/dx about the bond at the
    constrained minimum, checked against central differences of the relaxed energy (both backbone dihedrals
    held, so the relaxation cannot hop between basins). Near eclipsed, the rigid surface is another function."""
    from energy.mmff import mmff_torsion_relax
    from sampler.torsion_geometry import TorsionBatch, torsion_torque

    held = [[0, 1, 2, 3], [1, 2, 3, 4]]
    energies, torques = {}, {}
    for phi in (28.0, 30.0, 32.0):
        mol, x, dihedral, moving = _pentane_at(phi)
        relaxed = mmff_torsion_relax(mol, x, held, max_iters=5000)
        ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, rdForceFieldHelpers.MMFFGetMoleculeProperties(mol))
        energies[phi] = ff.CalcEnergy(relaxed.ravel().tolist())
        for name, pos in (("relaxed", relaxed), ("rigid", x)):
            grad = torch.tensor(ff.CalcGrad(pos.ravel().tolist()), dtype=torch.float64).reshape(-1, 3)
            batch = TorsionBatch.single(torch.from_numpy(pos), torsion_atoms=torch.tensor([dihedral]), moving=[moving])
            torques[name, phi] = float(torsion_torque(batch, batch.positions, grad)[0])
    finite = (energies[32.0] - energies[28.0]) / math.radians(4.0)
    assert abs(finite) > 1.0  # kcal/mol/rad: away from a stationary point
    assert torques["relaxed", 30.0] == pytest.approx(finite, rel=0.02)
    assert abs(torques["rigid", 30.0] - finite) > 0.04 * abs(finite)


def test_mmff_energies_of_many_positions_equal_one_force_field_per_conformer() -> None:
    mol = Chem.AddHs(Chem.MolFromSmiles("CCOC(=O)c1ccccc1N"))
    rdDistGeom.EmbedMultipleConfs(mol, numConfs=5, randomSeed=11)
    x = np.stack([c.GetPositions() for c in mol.GetConformers()])
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol)
    expected = [
        rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, props, confId=c.GetId()).CalcEnergy()
        for c in mol.GetConformers()
    ]
    assert len(set(np.round(expected, 3))) == 5  # five different energies
    np.testing.assert_allclose(mmff_energies(mol, x), expected, rtol=1e-10)
    bare = Chem.Mol(mol)
    bare.RemoveAllConformers()  # the molecule's own conformers play no part
    np.testing.assert_allclose(mmff_energies(bare, x, properties=props), expected, rtol=1e-10)
    assert mmff_energies(mol, x[:0]).shape == (0,)
    with pytest.raises(ValueError, match="positions must be"):
        mmff_energies(mol, x[:, :4])


def _coulomb(mol: Chem.Mol, x: np.ndarray, props: object, power: int, dielectric: float) -> float:
    """MMFF94's buffered Coulomb sum: 1-4 pairs at 3/4, farther pairs in full, 332.0716 q_i q_j / (D (R + 0.05)^n)."""
    hops = Chem.GetDistanceMatrix(mol)
    q = np.array([props.GetMMFFPartialCharge(i) for i in range(mol.GetNumAtoms())])  # type: ignore[attr-defined]
    total = 0.0
    for i in range(mol.GetNumAtoms()):
        for j in range(i + 1, mol.GetNumAtoms()):
            if hops[i, j] >= 3:
                scale = 0.75 if hops[i, j] == 3 else 1.0
                r = float(np.linalg.norm(x[i] - x[j]))
                total += scale * 332.0716 * q[i] * q[j] / (dielectric * (r + 0.05) ** power)
    return total


def test_electrostatics_screened_is_dielectric_4r_and_off_drops_the_term() -> None:
    mol = Chem.AddHs(Chem.MolFromSmiles("NCCC(=O)O"))
    rdDistGeom.EmbedMolecule(mol, randomSeed=3)
    x = mol.GetConformer().GetPositions()[None]
    vacuum_props = mmff_properties(mol)
    vacuum = mmff_energies(mol, x, properties=vacuum_props)[0]
    off = mmff_energies(mol, x, properties=mmff_properties(mol, electrostatics="off"))[0]
    screened = mmff_energies(mol, x, properties=mmff_properties(mol, electrostatics="screened"))[0]
    assert abs(vacuum - off) > 1.0  # a polar molecule: the term matters
    assert np.isclose(vacuum - off, _coulomb(mol, x[0], vacuum_props, 1, 1.0), atol=1e-3)
    assert np.isclose(screened - off, _coulomb(mol, x[0], vacuum_props, 2, 4.0), atol=1e-3)
    with pytest.raises(ValueError, match="electrostatics"):
        mmff_properties(mol, electrostatics="water")
