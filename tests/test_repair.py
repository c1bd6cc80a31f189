"""Stereo-enforcing MMFF94 repair (molecules.repair): wrong centres and double bonds put right, right ones kept."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from molecules.repair import RepairConfig, repair_conformers
from molecules.structures import with_conformers
from molecules.validity import check_conformer, stereo_mismatch, stereo_spec

GLUCOSE = "OC[C@H]1O[C@@H](O)[C@H](O)[C@@H](O)[C@@H]1O"


def _embed(smiles: str, seed: int = 7) -> np.ndarray:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = seed  # type: ignore[assignment]
    assert rdDistGeom.EmbedMolecule(mol, params) == 0
    return mol.GetConformer().GetPositions()


def _mol(smiles: str) -> Chem.Mol:
    return Chem.AddHs(Chem.MolFromSmiles(smiles))


def test_a_conformer_of_an_epimer_gets_the_requested_centres() -> None:
    mol = _mol(GLUCOSE)
    epimers = [GLUCOSE.replace("[C@H](O)[C@@H](O)", "[C@@H](O)[C@@H](O)"), GLUCOSE.replace("O[C@@H](O)", "O[C@H](O)")]
    spec = stereo_spec(mol)
    for smiles in epimers:
        wrong = _embed(smiles)  # same heavy-atom order, same hydrogens: a conformer of mol with one centre inverted
        bad_centres, _ = stereo_mismatch(mol, wrong, spec)
        assert len(bad_centres) == 1
        result = repair_conformers(mol, wrong[None])
        assert result.stereo_attempted == 1 and result.stereo_fixed == 1 and result.reflected == 0
        assert check_conformer(mol, result.positions[0], spec).ok


def test_the_mirror_image_of_an_epimer_is_reflected_then_one_centre_inverted() -> None:
    mol = _mol(GLUCOSE)
    epimer = _embed(GLUCOSE.replace("O[C@@H](O)", "O[C@H](O)"))
    mirrored = epimer * np.array([-1.0, 1.0, 1.0])  # 4 of 5 centres wrong
    assert len(stereo_mismatch(mol, mirrored, stereo_spec(mol))[0]) == 4
    result = repair_conformers(mol, mirrored[None])
    assert result.stereo_fixed == 1 and result.reflected == 1
    assert check_conformer(mol, result.positions[0]).ok


def test_a_double_bond_with_the_wrong_geometry_is_turned() -> None:
    mol = _mol("C/C=C/C(=O)OC")
    wrong = _embed("C/C=C\\C(=O)OC")
    assert stereo_mismatch(mol, wrong, stereo_spec(mol))[1]
    result = repair_conformers(mol, wrong[None])
    assert result.stereo_fixed == 1
    assert check_conformer(mol, result.positions[0]).ok


def test_a_right_conformer_gets_exactly_rdkits_own_mmff_minimization() -> None:
    mol = _mol(GLUCOSE)
    right = _embed(GLUCOSE, seed=3)
    result = repair_conformers(mol, np.stack([right, right]), RepairConfig(max_iters=150))
    assert result.stereo_attempted == 0
    short = repair_conformers(mol, right[None], RepairConfig(max_iters=2))
    assert short.not_converged == 1 and result.not_converged == 0
    assert check_conformer(mol, result.positions[0]).ok
    reference = with_conformers(mol, [right])
    rdForceFieldHelpers.MMFFOptimizeMolecule(reference, maxIters=150)
    for positions in result.positions:
        assert np.allclose(positions, reference.GetConformer().GetPositions(), atol=1e-6)


def test_a_stretched_bond_is_restored() -> None:
    mol = _mol("CCO")
    pos = _embed("CCO")
    pos[2] += (pos[2] - pos[1]) * 0.8  # C-O bond 80 % too long: connectivity check fails
    assert not check_conformer(mol, pos).ok
    assert check_conformer(mol, repair_conformers(mol, pos[None]).positions[0]).ok


def test_unusable_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot type"):
        repair_conformers(_mol("CB(C)C"), np.zeros((1, 13, 3)))
    with pytest.raises(ValueError, match="does not match"):
        repair_conformers(_mol("CCO"), np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="passes"):
        RepairConfig(passes=-1)


def test_the_benchmark_refiner_repairs_every_conformer_it_is_given() -> None:
    from benchmarks.methods import MethodSettings, build_methods

    (method,) = build_methods(["adjoint+repair"], MethodSettings(checkpoint="unused.pt"))
    assert method.refiner is not None
    mol = _mol(GLUCOSE)
    wrong = [_embed(GLUCOSE.replace("O[C@@H](O)", "O[C@H](O)"), seed=s) for s in (1, 2)]
    refined = method.refiner.refine(with_conformers(mol, wrong))
    assert refined.mol.GetNumConformers() == 2 and not refined.reasons
    assert all(check_conformer(mol, c.GetPositions()).ok for c in refined.mol.GetConformers())
    boron = _mol("CB(C)C")
    dropped = method.refiner.refine(with_conformers(boron, [np.zeros((boron.GetNumAtoms(), 3))]))
    assert dropped.mol.GetNumConformers() == 0 and "cannot type" in dropped.reasons[0]


def test_corpus_reasons_are_counted_by_kind() -> None:
    from benchmarks.conformers import _reason_kind

    assert _reason_kind("connectivity: missing bonds C0-C1") == "connectivity"
    assert _reason_kind("stereo: the mirror image (every stereocentre inverted)") == "stereo: mirror image"
    assert _reason_kind("stereo: 1 of 3 stereocentres inverted (atoms [2])") == "stereo: centres"
    assert _reason_kind("stereo: 1 of 1 double bonds with the wrong E/Z") == "stereo: double bonds"
    both = "stereo: 1 of 3 stereocentres inverted (atoms [2]); 1 of 1 double bonds with the wrong E/Z"
    assert _reason_kind(both) == "stereo: centres and double bonds"


def test_repair_then_relax_chains_the_refiners() -> None:
    from benchmarks.methods import MethodSettings, build_methods

    settings = MethodSettings(checkpoint="unused.pt", relax_model="mmff", relax_fmax=1e-4, relax_max_steps=50)
    (method,) = build_methods(["adjoint+repair+relax"], settings)
    assert method.refiner is not None and method.refiner.name == "repair[mmff94+stereo]+relax[mmff]"
    mol = _mol(GLUCOSE)
    wrong = _embed(GLUCOSE.replace("O[C@@H](O)", "O[C@H](O)"))
    refined = method.refiner.refine(with_conformers(mol, [wrong]))
    assert refined.mol.GetNumConformers() == 1 and refined.steps > 0
    assert check_conformer(mol, refined.mol.GetConformer().GetPositions()).ok
