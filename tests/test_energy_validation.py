"""energy.validation: one reason per bad structure, None for good ones; result assembly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from energy.protocol import Structures
from energy.validation import (
    Evaluated,
    StructureLimits,
    _first_problem,
    assemble_result,
    conformer_array,
    structure_problems,
)

GFN2_LIKE = StructureLimits(model="GFN2-xTB", supported_elements=frozenset(range(1, 87)))

# water, Å
WATER_Z = [8, 1, 1]
WATER_X = [[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]]


def batch(*molecules: tuple[list[int], list[list[float]], int, int], dtype: torch.dtype = torch.float64) -> Structures:
    """Structures from ``(atomic numbers, positions, charge, multiplicity)`` tuples."""
    return Structures(
        positions=torch.tensor([x for _, xs, _, _ in molecules for x in xs], dtype=dtype).reshape(-1, 3),
        num_atoms=torch.tensor([len(z) for z, _, _, _ in molecules], dtype=torch.long),
        atomic_numbers=torch.tensor([a for z, _, _, _ in molecules for a in z], dtype=torch.long),
        total_charge=torch.tensor([q for _, _, q, _ in molecules], dtype=torch.long),
        multiplicity=torch.tensor([m for _, _, _, m in molecules], dtype=torch.long),
    )


def water(charge: int = 0, multiplicity: int = 1, **changes: object) -> tuple[list[int], list[list[float]], int, int]:
    z, x = list(WATER_Z), [list(r) for r in WATER_X]
    if "z" in changes:
        z = changes["z"]  # type: ignore[assignment]
    if "x" in changes:
        x = changes["x"]  # type: ignore[assignment]
    return z, x, charge, multiplicity


def test_an_empty_batch_has_no_problems_and_an_empty_result() -> None:
    empty = batch()
    assert structure_problems(empty, GFN2_LIKE) == []
    result = assemble_result(empty, [])
    assert result.energies.shape == (0,) and result.forces.shape == (0, 3) and result.valid.shape == (0,)
    assert result.reasons == ()


def test_good_structures_have_no_problem() -> None:
    assert structure_problems(batch(water(), water(charge=1, multiplicity=2)), GFN2_LIKE) == [None, None]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_coordinates_name_the_atom(bad: float) -> None:
    x = [list(r) for r in WATER_X]
    x[2][1] = bad
    problems = structure_problems(batch(water(), water(x=x), water()), GFN2_LIKE)
    assert problems[0] is None and problems[2] is None
    assert problems[1] == "non-finite coordinates (nan or inf) at atom(s) 2"


def test_coincident_atoms_are_reported_short_contacts_are_not() -> None:
    x = [list(r) for r in WATER_X]
    x[2] = [x[1][0], x[1][1] + 0.05, x[1][2]]  # H on top of H
    problems = structure_problems(batch(water(x=x)), GFN2_LIKE)
    assert problems == ["coincident atoms 1 and 2: 0.05 Å apart (minimum 0.1 Å)"]
    x[2] = [x[1][0], x[1][1] + 0.5, x[1][2]]  # a clash, but the model's energy is meaningful there
    assert structure_problems(batch(water(x=x)), GFN2_LIKE) == [None]
    strict = StructureLimits(model="m", min_distance_angstrom=0.6)
    assert structure_problems(batch(water(x=x)), strict)[0] is not None


def test_unsupported_elements_are_named() -> None:
    uranium = water(z=[92, 1, 1], multiplicity=1)
    oganesson = water(z=[118, 1, 1], multiplicity=1)
    problems = structure_problems(batch(uranium, water(), oganesson), GFN2_LIKE)
    assert problems[0] == "unsupported element(s) U (Z=92) for GFN2-xTB: supported are Z in 1-86"
    assert problems[1] is None
    assert problems[2] is not None and "Og (Z=118)" in problems[2]


def test_particles_and_impossible_atomic_numbers_are_not_molecules() -> None:
    any_element = StructureLimits(model="m")
    problems = structure_problems(batch(water(z=[0, 1, 1]), water(z=[119, 1, 1])), any_element)
    assert problems[0] is not None and "Z=0" in problems[0] and "1-118" in problems[0]
    assert problems[1] is not None and "Z=119" in problems[1]


def test_too_many_atoms_against_the_models_limit() -> None:
    limited = StructureLimits(model="GFN2-xTB", max_atoms=2)
    assert structure_problems(batch(water()), limited) == [
        "3 atoms exceed the limit of 2 atoms for GFN2-xTB (max_atoms)"
    ]
    assert structure_problems(batch(water()), StructureLimits(model="m", max_atoms=3)) == [None]


@pytest.mark.parametrize(
    ("charge", "multiplicity", "expected"),
    [
        (0, 1, None),  # 10 electrons, closed shell
        (0, 3, None),  # triplet water: odd multiplicity, even electrons
        (1, 2, None),  # 9 electrons, doublet
        (0, 2, "charge +0 and multiplicity 2 are inconsistent: 10 electrons (even) need an odd multiplicity"),
        (-1, 1, "charge -1 and multiplicity 1 are inconsistent: 11 electrons (odd) need an even multiplicity"),
        (0, 0, "multiplicity must be >= 1, got 0"),
        (8, 5, "multiplicity 5 needs 4 unpaired electrons, but there are 2 electrons"),
        (11, 1, "charge +11 leaves -1 electrons"),
    ],
)
def test_charge_and_multiplicity_must_fit_the_electron_count(
    charge: int, multiplicity: int, expected: str | None
) -> None:
    assert structure_problems(batch(water(charge, multiplicity)), GFN2_LIKE) == [expected]


def test_the_first_problem_in_documented_order_is_reported() -> None:
    x = [list(r) for r in WATER_X]
    x[0][0] = math.nan
    # nan coordinates, an unsupported element and a bad multiplicity at once: coordinates win
    [problem] = structure_problems(batch(water(z=[92, 1, 1], multiplicity=2, x=x)), GFN2_LIKE)
    assert problem is not None and problem.startswith("non-finite")


def test_the_vectorised_checks_agree_with_checking_each_structure_alone() -> None:
    """A random batch mixing every kind of problem (and contacts just either side of the coincidence
    threshold) gets exactly the reasons the one-structure-at-a-time checks give."""
    rng = np.random.default_rng(7)
    limits = StructureLimits(model="test", supported_elements=frozenset({1, 6, 7, 8}), max_atoms=30)
    molecules = []
    for k in range(300):
        n = int(rng.integers(0 if k % 50 == 0 else 1, 40))
        z = rng.choice([1, 6, 7, 8], size=n).tolist()
        x = rng.normal(scale=3.0, size=(n, 3))
        kind = k % 7
        if kind == 1 and n:
            x[rng.integers(n), rng.integers(3)] = rng.choice([math.nan, math.inf])
        if kind == 2 and n:
            z[rng.integers(n)] = int(rng.choice([0, 9, 92, 200]))
        if kind == 3 and n > 1:  # a pair right at the threshold, either side
            x[1] = x[0] + np.array([0.1 + rng.choice([-1e-3, 1e-3, 1e-9]), 0.0, 0.0])
        charge, mult = (int(rng.integers(-2, 3)), int(rng.integers(0, 4))) if kind == 4 else (0, 1 + sum(z) % 2)
        molecules.append((z, x.tolist(), charge, mult))
    structures = batch(*molecules)
    expected = [
        _first_problem(np.asarray(x, dtype=np.float64).reshape(-1, 3), np.asarray(z, dtype=np.int64), q, m, limits)
        for z, x, q, m in molecules
    ]
    assert structure_problems(structures, limits) == expected
    assert sum(p is None for p in expected) > 50 and sum(p is not None for p in expected) > 50


def test_2d_positions_are_a_contract_violation() -> None:
    flat = Structures(
        positions=torch.zeros(3, 2),
        num_atoms=torch.tensor([3]),
        atomic_numbers=torch.tensor([8, 1, 1]),
        total_charge=torch.tensor([0]),
        multiplicity=torch.tensor([1]),
    )
    with pytest.raises(ValueError, match="3D"):
        structure_problems(flat, GFN2_LIKE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_assemble_result_fills_invalid_entries_with_nan_and_zero_forces(dtype: torch.dtype) -> None:
    structures = batch(water(), water(), water(), dtype=dtype)
    forces = np.arange(9, dtype=np.float64).reshape(3, 3)
    outcomes: list[Evaluated | str] = [
        Evaluated(energy_ev=-1.5, forces_ev_per_angstrom=forces),
        "coincident atoms 1 and 2",
        Evaluated(energy_ev=math.nan, forces_ev_per_angstrom=forces),
    ]
    result = assemble_result(structures, outcomes)
    assert result.energies.dtype == dtype and result.forces.dtype == dtype
    assert result.valid.tolist() == [True, False, False]
    assert result.reasons == (None, "coincident atoms 1 and 2", "model returned a non-finite energy or force")
    assert result.energies[0].item() == -1.5
    assert torch.isnan(result.energies[1:]).all()
    torch.testing.assert_close(result.forces[:3], torch.as_tensor(forces, dtype=dtype))
    assert (result.forces[3:] == 0).all()


def test_assemble_result_checks_counts_and_shapes() -> None:
    structures = batch(water())
    with pytest.raises(ValueError, match="expected 1 outcomes"):
        assemble_result(structures, [])
    with pytest.raises(ValueError, match="forces of shape"):
        assemble_result(structures, [Evaluated(energy_ev=0.0, forces_ev_per_angstrom=np.zeros((2, 3)))])


def test_conformer_array_lifts_one_conformer_and_keeps_a_batch() -> None:
    one = np.arange(9.0).reshape(3, 3)
    x, single = conformer_array(one, 3)
    assert single and x.shape == (1, 3, 3) and x.dtype == np.float64
    np.testing.assert_array_equal(x[0], one)
    batch3, single = conformer_array(np.stack([one, one + 1.0]).astype(np.float32), 3)
    assert not single and batch3.shape == (2, 3, 3) and batch3.dtype == np.float64
    empty, _ = conformer_array(np.zeros((0, 3, 3)), 3)
    assert empty.shape == (0, 3, 3)


def test_conformer_array_refuses_what_each_caller_forbids() -> None:
    one = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"seeds must be \[S, 4, 3\] for this molecule, got \(3, 3\)"):
        conformer_array(one, 4, what="seeds", axis="S")
    with pytest.raises(ValueError, match=r"positions must be \[C, 3, 3\] for this molecule, got \(3, 3\)"):
        conformer_array(one, 3, single=False)
    with pytest.raises(ValueError, match=r"got \(0, 3, 3\)"):
        conformer_array(np.zeros((0, 3, 3)), 3, empty=False)
    bad = np.zeros((2, 3, 3))
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        conformer_array(bad, 3)
    x, _ = conformer_array(bad, 3, finite=False)
    assert np.isnan(x[1, 2, 0])
