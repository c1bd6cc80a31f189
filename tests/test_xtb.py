"""energy.xtb (GFN2-/GFN1-xTB through tblite) and energy.units.

Known answers: CODATA constants, tblite's own single points (computed here through
``tblite.interface.Calculator``), forces against central finite differences of the energy.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ase.units
import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdDepictor, rdDistGeom
from tblite.interface import Calculator

from energy.protocol import Structures
from energy.registry import build_energy_model
from energy.units import (
    BOHR_ANGSTROM,
    HARTREE_EV,
    angstrom_to_bohr,
    gradient_hartree_bohr_to_forces_ev_angstrom,
    hartree_to_ev,
    kelvin_to_hartree,
)
from energy.xtb import TbliteEvaluator, XtbEnergy, XtbSettings, XtbTask
from molecules.structures import conformer_structures

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    """tblite shares torch's OpenMP runtime; >1 thread only slows small molecules (see the benchmark)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def embedded(smiles: str, conformers: int = 1, seed: int = 42) -> Structures:
    """ETKDG conformers (RDKit 2026.9 gives identical conformers for ``randomSeed=0``: avoid it)."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    ids = rdDistGeom.EmbedMultipleConfs(mol, numConfs=conformers, randomSeed=seed)
    assert len(ids) == conformers
    return conformer_structures(mol)


def with_changes(s: Structures, **changes: Any) -> Structures:
    return dataclasses.replace(s, **changes)


def direct_tblite(
    s: Structures,
    k: int,
    method: str = "GFN2-xTB",
    charge: int | None = None,
    uhf: int | None = None,
    solvent: str | None = None,
) -> tuple[float, np.ndarray]:
    """Structure ``k`` through tblite's own interface with its defaults, converted to eV and eV/Å by hand."""
    start = int(s.num_atoms[:k].sum())
    rows = slice(start, start + int(s.num_atoms[k]))
    calc = Calculator(
        method,
        s.atomic_numbers[rows].numpy(),
        s.positions[rows].numpy() / 0.529177210903,
        charge=float(s.total_charge[k]) if charge is None else float(charge),
        uhf=int(s.multiplicity[k]) - 1 if uhf is None else uhf,
    )
    calc.set("verbosity", 0)
    if solvent is not None:
        calc.add("alpb-solvation", solvent)
    result = calc.singlepoint()
    return result.get("energy") * 27.211386245988, -result.get("gradient") * (27.211386245988 / 0.529177210903)


# --- units --------------------------------------------------------------------------------------------------------


def test_constants_are_codata_2018() -> None:
    assert HARTREE_EV == 27.211386245988
    assert BOHR_ANGSTROM == 0.529177210903
    codata2018 = ase.units.create_units("2018")
    assert HARTREE_EV == pytest.approx(codata2018["Hartree"], rel=1e-11)
    assert BOHR_ANGSTROM == pytest.approx(codata2018["Bohr"], rel=1e-11)


def test_conversions_against_known_values() -> None:
    assert hartree_to_ev(-0.5) == pytest.approx(-13.605693122994)  # hydrogen atom ground state
    np.testing.assert_allclose(angstrom_to_bohr(np.array([[0.529177210903, 0.0, 1.0]])), [[1.0, 0.0, 1.8897261246]])
    # the atomic unit of force, 8.2387234983e-8 N (CODATA 2018) = 51.4220674763 eV/Å; forces are minus the gradient
    au_force = 8.2387234983e-8 / 1.602176634e-19 * 1e-10
    np.testing.assert_allclose(
        gradient_hartree_bohr_to_forces_ev_angstrom(np.array([[1.0, -2.0, 0.0]])),
        [[-au_force, 2 * au_force, 0.0]],
        rtol=1e-10,
    )
    # tblite documents 300 K as 9.5e-4 Hartree (k_B = 3.1668e-6 Hartree/K)
    assert kelvin_to_hartree(300.0) == pytest.approx(9.5004e-4, rel=1e-5)


# --- agreement with tblite ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "smiles"),
    [("GFN2-xTB", "CCO"), ("GFN2-xTB", "Oc1ccccc1C(=O)O"), ("GFN1-xTB", "CCO"), ("GFN1-xTB", "CC(=O)N")],
)
@pytest.mark.parametrize("reuse", [False, True])
def test_energies_and_forces_match_tblite(method: str, smiles: str, reuse: bool) -> None:
    s = embedded(smiles, conformers=3)
    result = XtbEnergy(method=method, workers=0, reuse_calculators=reuse).evaluate(s)
    assert result.valid.all()
    # a warm-started SCF (reuse) agrees within the SCF tolerance (~1e-8 Hartree, ~1e-5 Hartree/Bohr)
    energy_tol, force_tol = (1e-5, 2e-3) if reuse else (1e-9, 1e-8)
    for k in range(3):
        energy, forces = direct_tblite(s, k, method)
        assert result.energies[k].item() == pytest.approx(energy, abs=energy_tol)
        rows = slice(int(s.num_atoms[:k].sum()), int(s.num_atoms[: k + 1].sum()))
        np.testing.assert_allclose(result.forces[rows].numpy(), forces, atol=force_tol, rtol=0)
    assert len(set(result.energies.tolist())) == 3  # three different conformers, three energies


# --- forces are −∇E -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "smiles"),
    [("GFN2-xTB", "CCO"), ("GFN1-xTB", "CCO"), ("GFN2-xTB", "[CH3]"), ("GFN2-xTB", "CC(=O)[O-]")],
)
def test_forces_are_minus_the_energy_gradient(method: str, smiles: str) -> None:
    """Central differences, step 1e-4 Å, SCF tightened (accuracy 0.01): relative error < 1e-4."""
    s = embedded(smiles, seed=7)
    n, h = s.positions.shape[0], 1e-4
    displaced = []
    for i in range(n):
        for d in range(3):
            for sign in (1.0, -1.0):
                x = s.positions.clone()
                x[i, d] += sign * h
                displaced.append(with_changes(s, positions=x))
    model = XtbEnergy(method=method, accuracy=0.01, workers=0)
    result = model.evaluate(Structures.concat([s, *displaced]))
    assert result.valid.all()
    e = result.energies[1:].reshape(n, 3, 2)
    fd_forces = -(e[..., 0] - e[..., 1]) / (2 * h)
    forces = result.forces[:n]
    assert forces.norm() > 0.1  # an embedded, unrelaxed geometry: forces worth comparing
    assert ((fd_forces - forces).norm() / forces.norm()).item() < 1e-4


def tasks_of(s: Structures) -> list[XtbTask]:
    ends = torch.cumsum(s.num_atoms, 0).tolist()
    return [
        XtbTask(
            numbers=s.atomic_numbers[end - n : end].numpy().astype(np.int32),
            positions_bohr=angstrom_to_bohr(s.positions[end - n : end].numpy()),
            charge=int(s.total_charge[k]),
            uhf=int(s.multiplicity[k]) - 1,
        )
        for k, (n, end) in enumerate(zip(s.num_atoms.tolist(), ends, strict=True))
    ]


def test_one_calculator_per_molecule_bounded_and_dropped_on_failure() -> None:
    ethanol, acetate = tasks_of(embedded("CCO", conformers=3)), tasks_of(embedded("CC(=O)[O-]"))
    reuse = TbliteEvaluator(XtbSettings())
    for task in ethanol + acetate + ethanol:
        reuse(task)
    assert reuse.cached_molecules == 2  # ethanol and acetate, whatever the number of conformers
    cation = dataclasses.replace(ethanol[0], charge=1, uhf=1)
    reuse(cation)
    assert reuse.cached_molecules == 3  # same atoms, another charge: another calculator
    bounded = TbliteEvaluator(XtbSettings(max_cached_calculators=1))
    for task in ethanol + acetate:
        bounded(task)
    assert bounded.cached_molecules == 1
    fresh = TbliteEvaluator(XtbSettings(reuse_calculators=False))
    fresh(ethanol[0])
    assert fresh.cached_molecules == 0
    strict = TbliteEvaluator(XtbSettings(max_iterations=3))
    with pytest.raises(Exception, match="SCF not converged"):
        strict(ethanol[0])
    assert strict.cached_molecules == 0  # a failed calculation leaves no state behind
    copy = pickle.loads(pickle.dumps(reuse))
    assert copy.cached_molecules == 0 and copy.settings == reuse.settings  # workers start empty


# --- charge, spin, solvent ----------------------------------------------------------------------------------------


def test_a_radical_evaluates_as_a_doublet() -> None:
    methyl = embedded("[CH3]")
    assert methyl.multiplicity.tolist() == [2]
    result = XtbEnergy(workers=0).evaluate(methyl)
    assert result.valid.tolist() == [True]
    energy, _ = direct_tblite(methyl, 0, uhf=1)
    assert result.energies[0].item() == pytest.approx(energy, abs=1e-9)
    singlet = XtbEnergy(workers=0).evaluate(with_changes(methyl, multiplicity=torch.tensor([1])))
    assert singlet.valid.tolist() == [False]
    assert "9 electrons (odd) need an even multiplicity" in str(singlet.reasons[0])


def test_a_charged_molecule_gets_its_charge() -> None:
    acetate = embedded("CC(=O)[O-]")
    assert acetate.total_charge.tolist() == [-1]
    result = XtbEnergy(workers=0).evaluate(acetate)
    assert result.valid.tolist() == [True]
    anion, _ = direct_tblite(acetate, 0)
    neutral_radical, _ = direct_tblite(acetate, 0, charge=0, uhf=1)
    assert result.energies[0].item() == pytest.approx(anion, abs=1e-9)
    assert abs(result.energies[0].item() - neutral_radical) > 1.0  # the charge changed the answer


def test_implicit_solvent_matches_tblite_and_differs_from_gas_phase() -> None:
    s = embedded("CC(=O)[O-]")
    gas = XtbEnergy(workers=0).evaluate(s).energies[0].item()
    model = XtbEnergy(workers=0, solvent="water")
    assert model.name == "GFN2-xTB/ALPB(water)"
    water = model.evaluate(s).energies[0].item()
    energy, _ = direct_tblite(s, 0, solvent="water")
    assert water == pytest.approx(energy, abs=1e-9)
    assert water < gas - 0.5  # an anion is strongly stabilized by water
    gbsa = XtbEnergy(workers=0, solvent="water", solvation_model="gbsa").evaluate(s).energies[0].item()
    assert gbsa < gas - 0.5 and gbsa != water


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"solvent": "unobtainium"}, "solvent 'unobtainium'"),
        ({"method": "GFN3-xTB"}, "unknown xTB method"),
        ({"solvation_model": "cosmo"}, "unknown solvation model"),
        ({"accuracy": 0.0}, "accuracy"),
        ({"workers": -1}, "workers"),
    ],
)
def test_bad_settings_fail_at_construction(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        XtbEnergy(**options)  # type: ignore[arg-type]


def test_the_registry_builds_both_methods() -> None:
    assert build_energy_model("xtb", workers=0).name == "GFN2-xTB"
    assert build_energy_model("gfn1-xtb", workers=0).name == "GFN1-xTB"


# --- bad input: invalid with a reason, nothing else lost ----------------------------------------------------------


def test_bad_structures_are_invalid_with_reasons_and_the_rest_survives() -> None:
    first, second = embedded("CCO", seed=1), embedded("CCO", seed=2)

    def moved(row: int, value: torch.Tensor) -> Structures:
        x = first.positions.clone()
        x[row] = value
        return with_changes(first, positions=x)

    def element(z: int) -> Structures:
        numbers = first.atomic_numbers.clone()
        numbers[0] = z
        return with_changes(first, atomic_numbers=numbers)

    batch = Structures.concat(
        [
            first,
            moved(3, torch.tensor([math.nan, 0.0, 0.0], dtype=torch.float64)),
            moved(4, torch.tensor([0.0, math.inf, 0.0], dtype=torch.float64)),
            moved(5, first.positions[4] + 0.01),
            element(92),
            element(118),
            with_changes(first, total_charge=torch.tensor([1])),  # 25 electrons as a singlet
            second,
        ]
    )
    result = XtbEnergy(workers=0).evaluate(batch)
    assert result.valid.tolist() == [True, False, False, False, False, False, False, True]
    reasons = result.reasons
    assert reasons[1] == "non-finite coordinates (nan or inf) at atom(s) 3"
    assert reasons[2] == "non-finite coordinates (nan or inf) at atom(s) 4"
    assert reasons[3] is not None and reasons[3].startswith("coincident atoms 4 and 5")
    assert reasons[4] == "unsupported element(s) U (Z=92) for GFN2-xTB: supported are Z in 1-86"
    assert reasons[5] == "unsupported element(s) Og (Z=118) for GFN2-xTB: supported are Z in 1-86"
    assert reasons[6] is not None and "25 electrons (odd) need an even multiplicity" in reasons[6]
    assert torch.isnan(result.energies[1:7]).all() and (result.forces[9:63] == 0).all()
    alone = XtbEnergy(workers=0).evaluate(Structures.concat([first, second]))
    torch.testing.assert_close(result.energies[[0, 7]], alone.energies, atol=1e-6, rtol=0)


def test_an_scf_that_does_not_converge_is_invalid_and_the_rest_survives() -> None:
    ethanol = embedded("CCO")  # converges in 9 cycles
    benzene = embedded("c1ccccc1")
    stretched = with_changes(benzene, positions=benzene.positions * 1.6)  # needs ~31 cycles
    result = XtbEnergy(workers=0, max_iterations=15).evaluate(Structures.concat([ethanol, stretched, ethanol]))
    assert result.valid.tolist() == [True, False, True]
    assert result.reasons[1] == "GFN2-xTB: TBLiteRuntimeError: SCF not converged in 15 cycles"
    energy, _ = direct_tblite(ethanol, 0)
    assert result.energies[0].item() == pytest.approx(energy, abs=1e-6)


def test_an_empty_batch_gives_an_empty_result() -> None:
    empty = Structures(
        positions=torch.zeros(0, 3, dtype=torch.float64),
        num_atoms=torch.zeros(0, dtype=torch.long),
        atomic_numbers=torch.zeros(0, dtype=torch.long),
        total_charge=torch.zeros(0, dtype=torch.long),
        multiplicity=torch.zeros(0, dtype=torch.long),
    )
    model = XtbEnergy(workers=2)
    result = model.evaluate(empty)
    assert result.energies.shape == (0,) and result.forces.shape == (0, 3) and result.reasons == ()
    model.close()


def test_tblite_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    benzene = embedded("c1ccccc1")
    stretched = with_changes(benzene, positions=benzene.positions * 1.6)
    result = XtbEnergy(workers=0, max_iterations=15).evaluate(Structures.concat([embedded("CCO"), stretched]))
    assert result.valid.tolist() == [True, False]
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# --- a 300-atom molecule ------------------------------------------------------------------------------------------


def long_alkene(dimensions: int) -> Structures:
    """1-hectene, C100H200: 300 atoms, as a 2D depiction (instant) or an ETKDG conformer (seconds)."""
    mol = Chem.AddHs(Chem.MolFromSmiles("C=C" + "C" * 98))
    if dimensions == 2:
        rdDepictor.Compute2DCoords(mol)
    else:
        assert rdDistGeom.EmbedMolecule(mol, randomSeed=0, useRandomCoords=True) == 0
    return conformer_structures(mol)


def test_max_atoms_rejects_a_300_atom_molecule_with_a_reason() -> None:
    big = long_alkene(2)
    assert big.num_atoms.tolist() == [300]
    result = XtbEnergy(workers=0, max_atoms=250).evaluate(Structures.concat([embedded("CCO"), big]))
    assert result.valid.tolist() == [True, False]
    assert result.reasons[1] == "300 atoms exceed the limit of 250 atoms for GFN2-xTB (max_atoms)"


@pytest.mark.slow
def test_a_300_atom_molecule_is_evaluated_without_a_limit() -> None:
    big = long_alkene(3)
    result = XtbEnergy(workers=0).evaluate(big)
    assert result.valid.tolist() == [True]
    assert math.isfinite(result.energies[0].item())
    assert result.forces.sum(0).abs().max() < 1e-3  # no net force on an isolated molecule


# --- worker processes ---------------------------------------------------------------------------------------------


def test_a_worker_loads_the_evaluator_without_torch() -> None:
    """What a worker process unpickles (the evaluator, its tasks) needs numpy and tblite, not torch: each worker
    starts in a fraction of a second instead of paying the torch import (and its slow teardown)."""
    h2 = XtbTask(
        numbers=np.array([1, 1], dtype=np.int32),
        positions_bohr=np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.4]]),
        charge=0,
        uhf=0,
    )
    payload = pickle.dumps((TbliteEvaluator(XtbSettings()), h2)).hex()
    script = (
        "import pickle, sys; evaluator, task = pickle.loads(bytes.fromhex(sys.argv[1])); point = evaluator(task); "
        "print(type(point).__name__, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'rdkit', 'scipy'}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, payload], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["XtbSinglePoint", "[]"]


@pytest.mark.slow
def test_worker_processes_give_the_in_process_answers_and_time_out_per_structure() -> None:
    conformers = embedded("CC(=O)Nc1ccc(O)cc1", conformers=4)
    batch = Structures.concat([conformers, long_alkene(2), conformers])
    with XtbEnergy(workers=2, timeout_s=2.0) as model:
        result = model.evaluate(batch)  # the 300-atom single point takes longer than 2 s
        again = model.evaluate(conformers)  # calculators reused inside the workers
    reference = XtbEnergy(workers=0, reuse_calculators=False).evaluate(conformers)
    assert result.valid.tolist() == [True] * 4 + [False] + [True] * 4
    assert result.reasons[4] == "GFN2-xTB: timed out after 2.0 s (worker killed and replaced)"
    torch.testing.assert_close(result.energies[:4], reference.energies, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.energies[5:], reference.energies, atol=1e-5, rtol=0)
    torch.testing.assert_close(again.energies, reference.energies, atol=1e-5, rtol=0)
    torch.testing.assert_close(again.forces, reference.forces, atol=2e-3, rtol=0)


@pytest.mark.slow
def test_a_relaxation_in_two_workers_is_bit_reproducible() -> None:
    """Warm-started calculators make a result depend on what its worker evaluated before; the static
    schedule makes that the same on every run (with ``schedule="dynamic"`` these runs drift apart by
    ~0.1 Å after 40 steps)."""
    from energy.relax import RelaxConfig, relax

    start = embedded("CC(=O)Nc1ccc(O)cc1", conformers=6, seed=7)
    runs = []
    for _ in range(2):
        with XtbEnergy(workers=2) as model:
            runs.append(relax(model, start, RelaxConfig(fmax=0.01, max_steps=40)))
    assert torch.equal(runs[0].positions, runs[1].positions)
    assert torch.equal(runs[0].energies, runs[1].energies)
    assert not torch.equal(runs[0].positions, start.positions)
