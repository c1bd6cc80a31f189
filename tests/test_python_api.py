"""The Python API (inference.api): a SMILES or an RDKit molecule in, an RDKit molecule with scored, weighted,
ranked, de-duplicated conformers and their provenance out — with the tiny checkpoint and MMFF94 scores."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from energy.units import BOLTZMANN_EV_PER_K, KCAL_PER_MOL_IN_EV
from inference.api import ConformerGenerator, conformer_records, generate_conformers
from inference.loading import load_sampler
from inference.options import DEFAULTS, PostProcessing
from molecules.sdf import sdf_text
from molecules.stereo import UnassignedStereoError
from training.checkpoint import file_sha256
from training.paths import SHIPPED_SYNTHETIC_CHECKPOINT

FLEXIBLE = "OCCCC(=O)N"  # rotatable bonds: distinct conformers and some duplicates among 8 draws


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def generator(tiny_conformer_checkpoint: Path) -> Iterator[ConformerGenerator]:
    with ConformerGenerator(checkpoint=tiny_conformer_checkpoint) as gen:
        yield gen


def test_returns_a_molecule_with_energies_weights_ranks_and_provenance(
    generator: ConformerGenerator, tiny_conformer_checkpoint: Path
) -> None:
    mol = generate_conformers(FLEXIBLE, num_conformers=8, energy_model="mmff", seed=2, generator=generator)
    assert isinstance(mol, Chem.Mol) and mol.GetNumConformers() >= 1
    assert mol.GetNumAtoms() == Chem.AddHs(Chem.MolFromSmiles(FLEXIBLE)).GetNumAtoms()
    confs = list(mol.GetConformers())
    energies = np.array([c.GetDoubleProp("energy_eV") for c in confs])
    relative = np.array([c.GetDoubleProp("relative_energy_kcal_mol") for c in confs])
    weights = np.array([c.GetDoubleProp("boltzmann_weight") for c in confs])
    assert [c.GetIntProp("conformer_rank") for c in confs] == list(range(1, len(confs) + 1))
    assert (np.diff(energies) >= 0).all() and relative[0] == 0.0
    np.testing.assert_allclose(relative, (energies - energies[0]) / KCAL_PER_MOL_IN_EV)
    assert weights.sum() == pytest.approx(1.0)
    by_hand = np.exp(-(energies - energies.min()) / (BOLTZMANN_EV_PER_K * 298.15))
    np.testing.assert_allclose(weights, by_hand / by_hand.sum(), rtol=1e-12)
    assert mol.GetDoubleProp("boltzmann_temperature_K") == 298.15
    assert mol.GetProp("energy_model") == "mmff" and mol.GetProp("_Name") == FLEXIBLE
    assert mol.GetProp("checks_passed") == "connectivity,stereochemistry,finite_energy"
    assert mol.GetProp("model_sha256") == file_sha256(tiny_conformer_checkpoint)
    assert mol.GetIntProp("model_training_round") == 1 and mol.GetBoolProp("repaired")
    provenance = json.loads(mol.GetProp("provenance"))
    assert provenance["post_processing"] == {**DEFAULTS.to_dict(), "select": False}  # the Cartesian model's default
    assert provenance["seed"] == 2
    assert provenance["model"]["checkpoint"] == "tiny.pt" and provenance["energy_model"] == "mmff"
    rejected = sum(json.loads(mol.GetProp("conformers_rejected")).values())
    assert mol.GetNumConformers() + rejected + mol.GetIntProp("duplicates_removed") == 8  # every draw accounted for

    records = conformer_records(mol)  # the SD tags of docs/OUTPUT.md, nothing internal
    supplier = Chem.SDMolSupplier()
    supplier.SetData(sdf_text(records), removeHs=False)
    back = list(supplier)
    assert [m.GetProp("_Name") for m in back] == [FLEXIBLE] * len(confs)
    assert [float(m.GetProp("boltzmann_weight")) for m in back] == pytest.approx(weights, abs=1e-6)
    assert "provenance" not in back[0].GetPropsAsDict() and back[0].GetProp("model_sha256") == mol.GetProp(
        "model_sha256"
    )


def test_same_seed_same_conformers_and_duplicates_removed_by_default(generator: ConformerGenerator) -> None:
    kept = generate_conformers(FLEXIBLE, num_conformers=8, energy_model="mmff", seed=4, generator=generator)
    again = generate_conformers(FLEXIBLE, num_conformers=8, energy_model="mmff", seed=4, generator=generator)
    every = generate_conformers(
        FLEXIBLE, num_conformers=8, energy_model="mmff", seed=4, dedup_rmsd=0, generator=generator
    )
    positions = [c.GetPositions() for c in kept.GetConformers()]
    np.testing.assert_array_equal(positions, [c.GetPositions() for c in again.GetConformers()])
    assert every.GetIntProp("duplicates_removed") == 0
    assert every.GetNumConformers() == kept.GetNumConformers() + kept.GetIntProp("duplicates_removed")
    # what was kept is the lowest of each group: the lowest overall survives
    assert kept.GetConformer(0).GetDoubleProp("energy_eV") == every.GetConformer(0).GetDoubleProp("energy_eV")
    tolerant = generate_conformers(
        FLEXIBLE, num_conformers=8, energy_model="mmff", seed=4, energy_tolerance=0, generator=generator
    )
    assert tolerant.GetNumConformers() == every.GetNumConformers()  # nothing is within 0 kcal/mol


def test_unassigned_stereo_is_refused_naming_the_atoms(generator: ConformerGenerator) -> None:
    with pytest.raises(UnassignedStereoError, match=r"1 stereocentre \(C1\)"):
        generate_conformers("CC(O)CC", energy_model="mmff", generator=generator)
    with pytest.raises(UnassignedStereoError, match=r"double bond \(C1=C2\)"):
        generate_conformers("CC=CC", energy_model="mmff", generator=generator)


def test_stereoisomers_are_enumerated_each_under_its_own_smiles(generator: ConformerGenerator) -> None:
    mols = generate_conformers(
        "CC(O)C(F)CC", stereo="enumerate", num_conformers=3, energy_model="mmff", seed=1, generator=generator
    )
    assert isinstance(mols, list) and len(mols) == 4
    isomeric = [m.GetProp("isomeric_smiles") for m in mols]
    assert len(set(isomeric)) == 4 and all("@" in s for s in isomeric)
    assert {m.GetProp("input_smiles") for m in mols} == {"CC(O)C(F)CC"}
    assert [m.GetProp("_Name") for m in mols] == isomeric  # without a name, the isomer's SMILES is the title
    for mol, smiles in zip(mols, isomeric, strict=True):
        assert [a.GetSymbol() for a in mol.GetAtoms()][:7] == ["C", "C", "O", "C", "F", "C", "C"]  # input order
        wanted = Chem.CanonSmiles(smiles)
        for conf in mol.GetConformers():  # the 3D structure has the configuration its SMILES names
            probe = Chem.Mol(mol, confId=conf.GetId())
            Chem.AssignStereochemistryFrom3D(probe)
            assert Chem.CanonSmiles(Chem.MolToSmiles(Chem.RemoveHs(probe))) == wanted
    capped = generate_conformers(
        "CC(O)C(F)CC", stereo="enumerate", max_isomers=2, num_conformers=2, energy_model="none", generator=generator
    )
    assert len(capped) == 2
    assigned = generate_conformers("C[C@H](O)CC", stereo="enumerate", num_conformers=2, generator=generator)
    assert len(assigned) == 1 and assigned[0].GetProp("isomeric_smiles") == Chem.CanonSmiles("C[C@H](O)CC")


def test_an_rdkit_molecule_keeps_its_atom_order_name_and_properties(generator: ConformerGenerator) -> None:
    mol = Chem.AddHs(Chem.MolFromSmiles("NC(=O)CCCO"))  # another atom order than the canonical SMILES
    rdDistGeom.EmbedMolecule(mol, randomSeed=1)
    mol.SetProp("_Name", "hydroxybutanamide")
    mol.SetProp("vendor_id", "Z123")
    out = generate_conformers(mol, num_conformers=4, energy_model="mmff", generator=generator)
    assert [a.GetSymbol() for a in out.GetAtoms()] == [a.GetSymbol() for a in mol.GetAtoms()]
    assert out.GetProp("_Name") == "hydroxybutanamide" and out.GetProp("vendor_id") == "Z123"
    assert out.GetNumConformers() >= 1  # repaired by MMFF94 from the bond graph: the tiny model's samples pass
    positions = out.GetConformer(0).GetPositions()
    for bond in mol.GetBonds():  # the input's bonds are bonds of the answer
        d = np.linalg.norm(positions[bond.GetBeginAtomIdx()] - positions[bond.GetEndAtomIdx()])
        assert 0.85 < d < 1.75
    assert conformer_records(out)[0].GetProp("vendor_id") == "Z123"


def test_no_energy_model_means_no_energies_and_invalid_options_are_refused(generator: ConformerGenerator) -> None:
    mol = generate_conformers("CCO", num_conformers=3, energy_model=None, dedup_rmsd=0, generator=generator)
    assert mol.GetProp("energy_model") == "none" and "finite_energy" not in mol.GetProp("checks_passed")
    assert all(not c.HasProp("energy_eV") for c in mol.GetConformers())
    with pytest.raises(ValueError, match="relax needs an energy model"):
        generate_conformers("CCO", energy_model="none", relax=True, generator=generator)
    for bad in ({"dedup_rmsd": -1}, {"temperature_k": 0}, {"stereo": "guess"}, {"max_isomers": 0}):
        with pytest.raises(ValueError):
            PostProcessing(**bad)  # type: ignore[arg-type]
    assert math.isclose(DEFAULTS.temperature_k, 298.15) and DEFAULTS.repair is None and DEFAULTS.dedup_rmsd == 0.5


def test_load_sampler_reads_the_stored_kind(tiny_conformer_checkpoint: Path) -> None:
    sampler = load_sampler(tiny_conformer_checkpoint)
    assert sampler.provenance.kind == "conformers" and sampler.provenance.training_round == 1
    assert sampler.provenance.sha256 == file_sha256(tiny_conformer_checkpoint)
    if SHIPPED_SYNTHETIC_CHECKPOINT.is_file():
        with pytest.raises(ValueError, match="not a conformer model"):
            load_sampler(SHIPPED_SYNTHETIC_CHECKPOINT)
    with pytest.raises(FileNotFoundError):
        load_sampler(tiny_conformer_checkpoint.with_name("missing.pt"))


def test_relaxed_selection_is_the_torsional_models_default() -> None:
    """Left unset, ``select`` is the torsional model's default (on) and recorded as done; ``select=False`` is the fast
    pipeline: other conformers from the same seed, both the requested number."""
    shipped = Path(__file__).resolve().parent.parent / "checkpoints" / "torsional.pt"
    kept = {}
    for select in (None, True, False):
        mol = generate_conformers(
            FLEXIBLE, num_conformers=8, checkpoint=shipped, energy_model=None, dedup_rmsd=0, select=select
        )
        assert mol.GetNumConformers() == 8
        assert json.loads(mol.GetProp("provenance"))["post_processing"]["select"] is (select is not False)
        kept[select] = np.stack([c.GetPositions() for c in mol.GetConformers()])
    np.testing.assert_array_equal(kept[None], kept[True])
    assert not np.allclose(kept[None], kept[False])
    # repair MMFF94-optimizes the raw samples itself: selection, left unset, is recorded as not done, and asked for,
    # refused with the reason (it used to be dropped silently)
    mol = generate_conformers(FLEXIBLE, num_conformers=4, checkpoint=shipped, energy_model=None, repair=True)
    assert json.loads(mol.GetProp("provenance"))["post_processing"]["select"] is False
    with pytest.raises(ValueError, match="repair"):
        generate_conformers(FLEXIBLE, num_conformers=4, checkpoint=shipped, energy_model=None, repair=True, select=True)
    with pytest.raises(ValueError, match="repair"):  # one home for the rule: every front end builds these options
        PostProcessing(select=True, repair=True)
