"""fairchem UMA/eSEN adapter, on random-weight checkpoints built on the fly (tests/fairchem_tiny.py).

Every model here is loaded from a file by ``FairchemEnergy(checkpoint=path)``, the path users take with a
real UMA or eSEN checkpoint; nothing is downloaded.
"""

from __future__ import annotations

import math
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from energy.fairchem import FairchemCheckpointError, FairchemEnergy
from energy.protocol import EnergyModel, EnergyResult, Structures
from energy.registry import build_energy_model
from molecules.structures import conformer_structures
from tests.fairchem_tiny import TinyModelSpec, write_random_checkpoint
from tests.helpers import random_rotation

Item = tuple[list[int], torch.Tensor, int, int]  # atomic numbers, positions [n, 3] Å, charge, multiplicity


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The tiny model's tensors are too small for intra-op threads; on a shared 2-core machine a second
    thread only adds spin-waiting (measured: 55 s for this file with 2 threads under load, 14 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fairchem")
    return {
        arch: write_random_checkpoint(root / f"{arch}.pt", TinyModelSpec(architecture=arch)) for arch in ("uma", "esen")
    }


@pytest.fixture(scope="session")
def uma(checkpoints: dict[str, Path]) -> FairchemEnergy:
    return FairchemEnergy(checkpoint=checkpoints["uma"], dtype="float64")


@pytest.fixture(scope="session")
def esen(checkpoints: dict[str, Path]) -> FairchemEnergy:
    return FairchemEnergy(checkpoint=checkpoints["esen"], dtype="float64")


@pytest.fixture(params=["uma", "esen"])
def model(request: pytest.FixtureRequest) -> FairchemEnergy:
    return request.getfixturevalue(request.param)


def embedded(smiles: str, seed: int = 0) -> Item:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert rdDistGeom.EmbedMolecule(mol, randomSeed=seed) == 0
    s = conformer_structures(mol)
    return s.atomic_numbers.tolist(), s.positions, int(s.total_charge[0]), int(s.multiplicity[0])


def batch(items: list[Item]) -> Structures:
    if not items:
        return Structures(
            positions=torch.zeros(0, 3, dtype=torch.float64),
            num_atoms=torch.zeros(0, dtype=torch.long),
            atomic_numbers=torch.zeros(0, dtype=torch.long),
            total_charge=torch.zeros(0, dtype=torch.long),
            multiplicity=torch.zeros(0, dtype=torch.long),
        )
    return Structures(
        positions=torch.cat([pos for _, pos, _, _ in items]),
        num_atoms=torch.tensor([len(z) for z, _, _, _ in items]),
        atomic_numbers=torch.tensor([a for z, _, _, _ in items for a in z]),
        total_charge=torch.tensor([c for _, _, c, _ in items]),
        multiplicity=torch.tensor([m for _, _, _, m in items]),
    )


def alkane_chain(carbons: int) -> Item:
    """An all-trans zigzag C_nH_{2n+2} (C–C 1.54 Å, C–H 1.09 Å), built without a force field."""
    step, wiggle = 1.54 * math.sin(math.radians(54.75)), 1.54 * math.cos(math.radians(54.75)) / 2
    z: list[int] = []
    pos: list[list[float]] = []
    for i in range(carbons):
        x, y = i * step, wiggle if i % 2 else -wiggle
        s = 1.0 if i % 2 else -1.0
        z += [6, 1, 1]
        pos += [[x, y, 0.0], [x, y + s * 0.63, 0.89], [x, y + s * 0.63, -0.89]]
    z += [1, 1]
    pos += [[-1.09, -wiggle, 0.0], [(carbons - 1) * step + 1.09, pos[-3][1], 0.0]]
    return z, torch.tensor(pos, dtype=torch.float64), 0, 1


@pytest.fixture(scope="module")
def ethanol() -> Item:
    return embedded("CCO", seed=1)


def evaluate(model: EnergyModel, items: list[Item]) -> EnergyResult:
    return model.evaluate(batch(items))


# --- physics -------------------------------------------------------------------------------------------


def test_forces_are_minus_energy_gradient(model: FairchemEnergy, ethanol: Item) -> None:
    """Central differences of the energy, all 3n components in one batch, float64."""
    z, pos, charge, mult = ethanol
    pos = pos + 0.05 * torch.randn(pos.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = 1e-4
    displaced = []
    for k in range(pos.numel()):
        for sign in (1.0, -1.0):
            p = pos.clone().reshape(-1)
            p[k] += sign * h
            displaced.append((z, p.reshape(-1, 3), charge, mult))
    result = evaluate(model, [(z, pos, charge, mult), *displaced])
    assert bool(result.valid.all())
    e = result.energies[1:].reshape(-1, 2)
    fd_forces = -((e[:, 0] - e[:, 1]) / (2 * h)).reshape(-1, 3)
    forces = result.forces[: len(z)]
    assert float(forces.norm()) > 1e-3  # random weights, but not a flat surface
    rel = float((fd_forces - forces).norm() / forces.norm())
    assert rel < 1e-4, rel


def test_rigid_motion_and_permutation(model: FairchemEnergy, ethanol: Item) -> None:
    z, pos, charge, mult = ethanol
    g = torch.Generator().manual_seed(3)
    rot = random_rotation(3, g)
    moved = pos @ rot.T + torch.tensor([3.0, -7.0, 11.0], dtype=torch.float64)
    perm = torch.randperm(len(z), generator=g)
    permuted = (torch.tensor(z)[perm].tolist(), pos[perm], charge, mult)
    result = evaluate(model, [ethanol, (z, moved, charge, mult), permuted])
    n = len(z)
    f0, f_moved, f_perm = result.forces.split(n)
    torch.testing.assert_close(result.energies[1:], result.energies[:1].expand(2), rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(f_moved, f0 @ rot.T, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(f_perm, f0[perm], rtol=1e-8, atol=1e-9)


def test_batch_equals_one_at_a_time(model: FairchemEnergy, ethanol: Item) -> None:
    z, pos, _, _ = embedded("c1ccccc1O", seed=2)
    items = [ethanol, (z, pos, 0, 1), embedded("O"), (z, pos, 1, 2)]
    together = evaluate(model, items)
    alone = [evaluate(model, [item]) for item in items]
    torch.testing.assert_close(together.energies, torch.cat([r.energies for r in alone]), rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(together.forces, torch.cat([r.forces for r in alone]), rtol=1e-8, atol=1e-9)


def test_matches_fairchems_own_ase_calculator(uma: FairchemEnergy) -> None:
    """The same numbers as ``FAIRChemCalculator`` on the same predictor: conversion, charge, spin, units."""
    from ase import Atoms
    from fairchem.core.calculate.ase_calculator import FAIRChemCalculator

    z, pos, _, _ = embedded("CC(=O)[O-]", seed=4)
    items = [(z, pos, -1, 1), (z, pos, 0, 2)]
    ours = evaluate(uma, items)
    calc = FAIRChemCalculator(uma.predict_unit, task_name="omol")
    for k, (z_k, pos_k, charge, mult) in enumerate(items):
        atoms = Atoms(numbers=z_k, positions=pos_k.numpy())
        atoms.info.update(charge=charge, spin=mult)
        atoms.calc = calc
        assert math.isclose(float(ours.energies[k]), atoms.get_potential_energy(), rel_tol=1e-12, abs_tol=1e-10)
        np.testing.assert_allclose(ours.forces[k * len(z) : (k + 1) * len(z)].numpy(), atoms.get_forces(), atol=1e-10)


def test_charge_and_spin_reach_the_model(model: FairchemEnergy, ethanol: Item) -> None:
    z, pos, _, _ = ethanol
    e = evaluate(model, [(z, pos, 0, 1), (z, pos, 0, 3), (z, pos, 1, 2), (z, pos, -1, 2)]).energies.tolist()
    assert len({round(x, 9) for x in e}) == 4, e


def test_other_tasks_take_no_charge_or_spin(checkpoints: dict[str, Path], uma: FairchemEnergy, ethanol: Item) -> None:
    omat = FairchemEnergy(checkpoint=checkpoints["uma"], task_name="omat", dtype="float64")
    z, pos, _, _ = ethanol
    result = evaluate(omat, [(z, pos, 0, 1), (z, pos, 1, 2)])
    assert result.valid.tolist() == [True, False]
    assert "charge" in str(result.reasons[1])
    assert float(result.energies[0]) != float(evaluate(uma, [ethanol]).energies[0])  # another head


def test_precision_and_output_dtype(checkpoints: dict[str, Path], uma: FairchemEnergy, ethanol: Item) -> None:
    single = FairchemEnergy(checkpoint=checkpoints["uma"])  # float32, fairchem's training precision
    z, pos, c, m = ethanol
    r32 = evaluate(single, [(z, pos.float(), c, m)])
    r64 = evaluate(uma, [ethanol])
    assert r32.energies.dtype == r32.forces.dtype == torch.float32  # results follow the input positions
    assert r64.energies.dtype == torch.float64
    torch.testing.assert_close(r32.energies.double(), r64.energies, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(r32.forces.double(), r64.forces, rtol=1e-3, atol=1e-4)


def test_large_molecule_and_chunked_batches(checkpoints: dict[str, Path], uma: FairchemEnergy, ethanol: Item) -> None:
    big = alkane_chain(100)
    assert len(big[0]) == 302
    items = [ethanol, big, embedded("O")]
    whole = evaluate(uma, items)
    assert bool(whole.valid.all()) and bool(torch.isfinite(whole.forces).all())
    chunked = FairchemEnergy(checkpoint=checkpoints["uma"], dtype="float64", max_atoms_per_batch=12)
    torch.testing.assert_close(evaluate(chunked, items).energies, whole.energies, rtol=1e-10, atol=1e-9)


def test_evaluates_inside_inference_mode(uma: FairchemEnergy, ethanol: Item) -> None:
    expected = evaluate(uma, [ethanol])
    with torch.inference_mode():
        got = evaluate(uma, [ethanol])
    torch.testing.assert_close(got.forces, expected.forces)


# --- bad input ------------------------------------------------------------------------------------------


def test_bad_structures_are_invalid_and_the_rest_survives(uma: FairchemEnergy, ethanol: Item) -> None:
    z, pos, c, m = ethanol
    water = embedded("O")
    nan_pos = pos.clone()
    nan_pos[2, 1] = float("nan")
    inf_pos = pos.clone()
    inf_pos[0, 0] = float("inf")
    coincident = pos.clone()
    coincident[1] = coincident[0]
    oganesson = [118, *z[1:]]
    cases = {
        "nan": ((z, nan_pos, c, m), "non-finite"),
        "inf": ((z, inf_pos, c, m), "non-finite"),
        "coincident": ((z, coincident, c, m), "coincident atoms 0 and 1"),
        "unsupported element": ((oganesson, pos, c, m), "Z=118"),
        "dummy atom": (([0, *z[1:]], pos, c, m), "Z=0"),
        "single atom": (([6], pos[:1], 0, 3), "single isolated atom"),
        "charge beyond fairchem's range": ((z, pos, -150, 1), "outside fairchem's range"),
        "multiplicity 0": ((z, pos, 0, 0), "multiplicity must be >= 1"),
        "odd electrons as a singlet": ((z, pos, 1, 1), "inconsistent"),
    }
    items = [ethanol] + [case for case, _ in cases.values()] + [water]
    result = evaluate(uma, items)
    assert result.valid.tolist() == [True] + [False] * len(cases) + [True]
    for k, (name, (_, expected)) in enumerate(cases.items(), start=1):
        assert expected in str(result.reasons[k]), (name, result.reasons[k])
        assert math.isnan(float(result.energies[k]))
    reference = evaluate(uma, [ethanol, water])
    torch.testing.assert_close(result.energies[[0, -1]], reference.energies, rtol=1e-10, atol=1e-9)
    n = len(z)
    torch.testing.assert_close(result.forces[:n], reference.forces[:n])
    torch.testing.assert_close(result.forces[-3:], reference.forces[n:])
    assert not bool(result.forces[n:-3].any())  # invalid entries carry zero forces


def test_empty_batch(uma: FairchemEnergy) -> None:
    result = evaluate(uma, [])
    assert result.energies.shape == (0,) and result.forces.shape == (0, 3) and result.valid.shape == (0,)
    assert result.reasons == ()


def test_a_failing_batch_is_retried_one_structure_at_a_time(
    uma: FairchemEnergy, ethanol: Item, monkeypatch: pytest.MonkeyPatch
) -> None:
    water = embedded("O")
    expected = evaluate(uma, [ethanol, water])
    predict = uma.predict_unit.predict

    def fails_on_water(data: Any, *args: Any, **kwargs: Any) -> Any:
        if bool((data.natoms == 3).any()):
            raise RuntimeError("boom")
        return predict(data, *args, **kwargs)

    monkeypatch.setattr(uma.predict_unit, "predict", fails_on_water)
    result = evaluate(uma, [ethanol, water, ethanol])
    assert result.valid.tolist() == [True, False, True]
    assert "RuntimeError: boom" in str(result.reasons[1])
    torch.testing.assert_close(result.energies[[0, 2]], expected.energies[[0, 0]])


# --- loading --------------------------------------------------------------------------------------------


def test_missing_checkpoint_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "uma-s-1p1.pt"
    with pytest.raises(FairchemCheckpointError, match="not found") as info:
        FairchemEnergy(checkpoint=path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"this is not a checkpoint", b""], ids=["garbage", "empty"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(FairchemCheckpointError, match="cannot load fairchem checkpoint") as info:
        FairchemEnergy(checkpoint=path)
    assert str(path) in str(info.value)


def test_a_state_dict_is_not_an_inference_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"linear.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(FairchemCheckpointError, match="MLIPInferenceCheckpoint") as info:
        FairchemEnergy(checkpoint=path)
    assert str(path) in str(info.value)


def test_unknown_task_lists_the_known_ones(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(FairchemCheckpointError, match=r"no task 'oc20'.*\['omol'\]"):
        FairchemEnergy(checkpoint=checkpoints["esen"], task_name="oc20")


def test_registry_needs_a_checkpoint_and_builds_the_model(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="checkpoint=PATH"):
        build_energy_model("fairchem")
    model = build_energy_model("fairchem", checkpoint=str(checkpoints["esen"]))
    assert isinstance(model, FairchemEnergy) and isinstance(model, EnergyModel) and model.name == "fairchem"


def test_no_network_no_global_rng_use_and_repeatable_results(
    checkpoints: dict[str, Path], ethanol: Item, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    model = FairchemEnergy(checkpoint=checkpoints["uma"])
    first, second = evaluate(model, [ethanol]), evaluate(model, [ethanol])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    # fairchem draws random per-edge roll angles each call; seeded per call, results repeat bit for bit
    assert torch.equal(first.energies, second.energies) and torch.equal(first.forces, second.forces)


# --- GPU ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_matches_cpu(checkpoints: dict[str, Path], uma: FairchemEnergy, ethanol: Item) -> None:
    gpu = FairchemEnergy(checkpoint=checkpoints["uma"], device="cuda", dtype="float64")
    items = [ethanol, embedded("c1ccccc1O", seed=2), alkane_chain(20)]
    cpu_result = evaluate(uma, items)
    structures = batch(items)
    moved = Structures(
        positions=structures.positions.cuda(),
        num_atoms=structures.num_atoms,
        atomic_numbers=structures.atomic_numbers,
        total_charge=structures.total_charge,
        multiplicity=structures.multiplicity,
    )
    gpu_result = gpu.evaluate(moved)
    assert gpu_result.energies.device.type == "cuda"  # results follow the input positions
    torch.testing.assert_close(gpu_result.energies.cpu(), cpu_result.energies, rtol=1e-9, atol=1e-8)
    torch.testing.assert_close(gpu_result.forces.cpu(), cpu_result.forces, rtol=1e-7, atol=1e-8)
