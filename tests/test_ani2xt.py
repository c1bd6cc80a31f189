"""energy.ani2xt (ANI-2xt with auto3d's shipped weights) and energy.auto (ANI-2xt / GFN2-xTB per structure).

Known answers: auto3d's own ANI-2xt module (built here from the same weights file, its output in eV),
forces against central finite differences of the energy, tblite through energy.xtb for the auto model.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from energy.ani2xt import ANI2XT_ELEMENTS, Ani2xtEnergy
from energy.auto import AutoEnergy, choose_energy_model
from energy.protocol import Structures
from energy.registry import build_energy_model
from energy.relax import RelaxConfig, relax, select_structures
from energy.xtb import XtbEnergy
from molecules.structures import conformer_structures

# one molecule per element network: H C N O F S Cl
ALL_ELEMENTS = "CC(=O)Nc1ccc(Cl)c(F)c1SC"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ani64() -> Ani2xtEnergy:
    return Ani2xtEnergy(dtype="float64")


def embedded(smiles: str, conformers: int = 1, seed: int = 7) -> Structures:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert len(rdDistGeom.EmbedMultipleConfs(mol, numConfs=conformers, randomSeed=seed)) == conformers
    return conformer_structures(mol)


def with_multiplicity(s: Structures, multiplicity: int) -> Structures:
    return Structures(
        positions=s.positions,
        num_atoms=s.num_atoms,
        atomic_numbers=s.atomic_numbers,
        total_charge=s.total_charge,
        multiplicity=torch.full_like(s.multiplicity, multiplicity),
    )


def test_forces_are_minus_the_energy_gradient(ani64: Ani2xtEnergy) -> None:
    s = embedded(ALL_ELEMENTS)
    assert set(s.atomic_numbers.tolist()) == set(ANI2XT_ELEMENTS)
    forces = ani64.evaluate(s).forces
    n, h = s.positions.shape[0], 1e-4
    displaced = s.positions.repeat(2 * 3 * n, 1).view(2 * 3 * n, n, 3)
    for c in range(3 * n):  # every coordinate, +h then -h, all in one batched call
        displaced[2 * c].view(-1)[c] += h
        displaced[2 * c + 1].view(-1)[c] -= h
    batch = Structures.uniform(displaced)
    batch = Structures(
        positions=batch.positions,
        num_atoms=batch.num_atoms,
        atomic_numbers=s.atomic_numbers.repeat(2 * 3 * n),
        total_charge=batch.total_charge,
        multiplicity=batch.multiplicity,
    )
    e = ani64.evaluate(batch).energies
    numeric = -(e[0::2] - e[1::2]) / (2 * h)
    error = torch.linalg.norm(numeric - forces.reshape(-1)) / torch.linalg.norm(forces)
    assert error < 1e-4, float(error)


def test_energies_equal_auto3d_reference_module(ani64: Ani2xtEnergy) -> None:
    from Auto3D.engines.models.ani2xt import ANI2xt  # auto3d's own module: output in eV

    reference = ANI2xt(torch.device("cpu")).double().eval()
    network_index = {z: i for i, z in enumerate(ANI2XT_ELEMENTS)}
    molecules = [embedded(smi, conformers=2) for smi in (ALL_ELEMENTS, "OCC(N)C(=O)O", "c1ccsc1CCl")]
    ours = ani64.evaluate(Structures.concat(molecules))  # all molecules in one call
    assert bool(ours.valid.all())
    expected = []
    for s in molecules:
        g, n = s.num_structures, int(s.num_atoms[0])
        species = torch.tensor([network_index[int(z)] for z in s.atomic_numbers]).view(g, n)
        with torch.no_grad():
            expected.append(reference(species, s.positions.view(g, n, 3)))
    torch.testing.assert_close(ours.energies, torch.cat(expected), rtol=0, atol=1e-5)


def test_float32_agrees_with_float64(ani64: Ani2xtEnergy) -> None:
    s = embedded(ALL_ELEMENTS, conformers=3)
    r64, r32 = ani64.evaluate(s), Ani2xtEnergy(dtype="float32").evaluate(s)
    assert r32.energies.dtype == torch.float64  # results follow the positions' dtype
    torch.testing.assert_close(r32.energies, r64.energies, rtol=0, atol=1e-3)
    torch.testing.assert_close(r32.forces, r64.forces, rtol=0, atol=1e-3)


def test_invalid_structures_spare_the_rest(ani64: Ani2xtEnergy) -> None:
    ethanol = embedded("CCO")
    ammonium = embedded("C[NH3+]")
    bromide = embedded("CBr")
    radical = with_multiplicity(embedded("CCO"), 3)
    batch = Structures.concat([ethanol, ammonium, bromide, radical, ethanol])
    result = ani64.evaluate(batch)
    assert result.valid.tolist() == [True, False, False, False, True]
    assert "charge +1" in str(result.reasons[1])
    assert "atom 1 (Br, Z=35)" in str(result.reasons[2])
    assert "multiplicity 3" in str(result.reasons[3])
    alone = ani64.evaluate(ethanol)
    torch.testing.assert_close(result.energies[[0, 4]], alone.energies.repeat(2), rtol=0, atol=1e-9)
    assert bool(result.energies[1:4].isnan().all())
    n_eth, n_rest = int(ethanol.num_atoms[0]), int(batch.num_atoms[1:4].sum())
    assert bool((result.forces[n_eth : n_eth + n_rest] == 0).all())
    torch.testing.assert_close(result.forces[:n_eth], alone.forces, rtol=0, atol=1e-9)


def test_empty_batch(ani64: Ani2xtEnergy) -> None:
    empty = Structures(
        positions=torch.zeros((0, 3), dtype=torch.float64),
        num_atoms=torch.zeros(0, dtype=torch.long),
        atomic_numbers=torch.zeros(0, dtype=torch.long),
        total_charge=torch.zeros(0, dtype=torch.long),
        multiplicity=torch.zeros(0, dtype=torch.long),
    )
    for model in (ani64, AutoEnergy()):
        result = model.evaluate(empty)
        assert result.energies.shape == (0,) and result.forces.shape == (0, 3)
        assert result.valid.shape == (0,) and result.reasons == ()


def test_small_passes_and_inference_mode_give_the_same_answer(ani64: Ani2xtEnergy) -> None:
    batch = Structures.concat([embedded("CCO", conformers=2), embedded(ALL_ELEMENTS, conformers=2)])
    whole = ani64.evaluate(batch)
    split = Ani2xtEnergy(dtype="float64", max_atoms_per_batch=10).evaluate(batch)  # one structure per pass
    torch.testing.assert_close(split.energies, whole.energies, rtol=0, atol=1e-9)
    torch.testing.assert_close(split.forces, whole.forces, rtol=0, atol=1e-9)
    with torch.inference_mode():
        inside = ani64.evaluate(batch)
    torch.testing.assert_close(inside.forces, whole.forces, rtol=0, atol=0)


def test_batched_relaxation_matches_one_at_a_time(ani64: Ani2xtEnergy) -> None:
    s = embedded("CCOC(=O)C", conformers=3)
    config = RelaxConfig(fmax=0.02, max_steps=300)
    batched = relax(ani64, s, config)
    assert bool(batched.converged.all())
    assert bool((batched.energies < batched.initial_energies).all())
    for k in range(3):
        keep = torch.zeros(3, dtype=torch.bool)
        keep[k] = True
        alone = relax(ani64, select_structures(s, keep), config)
        assert abs(float(alone.energies[0] - batched.energies[k])) < 1e-3


def test_auto_chooser() -> None:
    assert choose_energy_model([6, 6, 8, 1, 1, 1, 1, 1, 1], 0, 1) == "ani2xt"
    assert choose_energy_model(torch.tensor([9, 16, 17, 7, 1]), 0, 1) == "ani2xt"
    assert choose_energy_model([6, 35, 1, 1, 1], 0, 1) == "xtb"  # Br
    assert choose_energy_model([15, 1, 1, 1], 0, 1) == "xtb"  # P
    assert choose_energy_model([6, 7, 1, 1, 1, 1, 1, 1], 1, 1) == "xtb"  # a cation
    assert choose_energy_model([6, 6, 1, 1, 1, 1, 1], 0, 2) == "xtb"  # a radical


def test_auto_model_dispatches_per_structure(ani64: Ani2xtEnergy) -> None:
    ethanol, bromide, ammonium = embedded("CCO", conformers=2), embedded("CBr"), embedded("C[NH3+]")
    batch = Structures.concat([ethanol, bromide, ammonium, ethanol])
    auto = build_energy_model("auto", ani2xt_options={"dtype": "float64"}, xtb_options={"workers": 0})
    assert isinstance(auto, AutoEnergy)
    with auto:
        assert auto.model_names(batch) == ["ani2xt", "ani2xt", "xtb", "xtb", "ani2xt", "ani2xt"]
        result = auto.evaluate(batch)
    assert bool(result.valid.all())
    ani = ani64.evaluate(ethanol)
    xtb = XtbEnergy(workers=0).evaluate(Structures.concat([bromide, ammonium]))
    torch.testing.assert_close(result.energies, torch.cat([ani.energies, xtb.energies, ani.energies]))
    n_eth, n_x = ethanol.positions.shape[0], int(bromide.num_atoms.sum() + ammonium.num_atoms.sum())
    torch.testing.assert_close(result.forces, torch.cat([ani.forces, xtb.forces, ani.forces]))
    assert result.forces.shape == (2 * n_eth + n_x, 3)


def test_registry_builds_ani2xt() -> None:
    model = build_energy_model("ani2xt", dtype="float32")
    assert isinstance(model, Ani2xtEnergy) and model.config.dtype == torch.float32
    assert model.weights_path.name == "ani2xt_no_repulsion.pt"


@pytest.mark.gpu
def test_cuda_matches_cpu(ani64: Ani2xtEnergy) -> None:
    s = Structures.concat([embedded(ALL_ELEMENTS, conformers=4), embedded("CCO", conformers=3)])
    cpu = ani64.evaluate(s)
    on_gpu = Ani2xtEnergy(device="cuda", dtype="float64").evaluate(s)  # positions on the CPU: results too
    torch.testing.assert_close(on_gpu.energies, cpu.energies, rtol=0, atol=1e-6)
    torch.testing.assert_close(on_gpu.forces, cpu.forces, rtol=0, atol=1e-6)
    gpu_in = Ani2xtEnergy(device="cuda", dtype="float32").evaluate(
        Structures(
            positions=s.positions.cuda(),
            num_atoms=s.num_atoms,
            atomic_numbers=s.atomic_numbers,
            total_charge=s.total_charge,
            multiplicity=s.multiplicity,
        )
    )
    assert gpu_in.energies.device.type == "cuda"
    torch.testing.assert_close(gpu_in.energies.cpu(), cpu.energies, rtol=0, atol=1e-3)
