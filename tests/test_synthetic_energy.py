import math

import numpy as np
import pytest
import torch

from energy.mcmc import mala
from energy.protocol import EnergyModel, Structures
from energy.synthetic import DoubleWell, LennardJones, pairwise_distances

DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "synthetic"


def test_dw4_known_value_square() -> None:
    side = 4.0  # square of side 4: four edges at d0 (zero), two diagonals at 4 sqrt 2
    x = torch.tensor([[[0.0, 0], [side, 0], [side, side], [0, side]]], dtype=torch.float64)
    r = side * math.sqrt(2) - 4.0
    expected = 2 * (0.9 * r**4 - 4.0 * r**2)
    assert DoubleWell().energy(x).item() == pytest.approx(expected)


def test_lj_pair_at_minimum_and_convention() -> None:
    x = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]], dtype=torch.float64)
    lj = LennardJones(num_particles=2)
    # pair at r_m: eps[(1)^12 - 2 (1)^6] = -1, counted twice; oscillator 0.5 * 2 * 0.25
    assert lj.energy(x).item() == pytest.approx(-2.0 + 0.25)
    assert LennardJones(num_particles=2, pair_factor=1.0).energy(x).item() == pytest.approx(-1.0 + 0.25)


@pytest.mark.parametrize("model", [DoubleWell(), LennardJones()])
def test_forces_are_minus_gradient_by_finite_differences(model: DoubleWell | LennardJones) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, model.num_particles, model.dim, generator=g, dtype=torch.float64) * (
        1.5 if model.name == "dw4" else 0.9
    )
    _, forces = model.energy_and_forces(x)
    h = 1e-6
    fd = torch.zeros_like(x)
    for idx in np.ndindex(*x.shape[1:]):
        dx = torch.zeros_like(x)
        dx[(slice(None), *idx)] = h
        fd[(slice(None), *idx)] = -(model.energy(x + dx) - model.energy(x - dx)) / (2 * h)
    rel = (forces - fd).norm() / fd.norm()
    assert rel.item() < 1e-6


def test_energy_model_protocol_and_invalid_entries() -> None:
    model = LennardJones()
    assert isinstance(model, EnergyModel)
    x = torch.randn(3, 13, 3, dtype=torch.float64)
    x[1, 0, 0] = float("nan")
    x[2, 1] = x[2, 0]  # coincident particles: infinite LJ energy
    result = model.evaluate(Structures.uniform(x))
    assert result.valid.tolist() == [True, False, False]
    assert result.reasons[0] is None and "non-finite" in str(result.reasons[1])
    assert torch.isnan(result.energies[1:]).all()
    assert result.forces[13:].abs().max().item() == 0.0
    with pytest.raises(ValueError, match="13 particles"):
        model.evaluate(Structures.uniform(torch.zeros(1, 4, 3)))


@pytest.mark.skipif(not (DATA / "LJ13_test.npy").is_file(), reason="shared reference data not present")
def test_lj_reference_samples_are_stationary_only_under_the_double_pair_sum() -> None:
    x = torch.from_numpy(np.load(DATA / "LJ13_test.npy")[:200]).double().view(-1, 13, 3)
    drift = {}
    for factor in (1.0, 2.0):
        lj = LennardJones(pair_factor=factor)
        out = mala(lj, x, step_size=1e-4, num_steps=800, generator=torch.Generator().manual_seed(0))
        drift[factor] = float(lj.energy(out.samples).mean() - lj.energy(x).mean())
    assert abs(drift[2.0]) < 1.5
    assert drift[1.0] > 5.0


def test_pairwise_distances_counts_unordered_pairs() -> None:
    x = torch.tensor([[[0.0, 0], [3.0, 0], [0.0, 4.0]]])
    torch.testing.assert_close(pairwise_distances(x), torch.tensor([[3.0, 4.0, 5.0]]))
