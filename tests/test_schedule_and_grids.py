import math

import pytest
import torch

from sampler.grids import QuadraticLinearGrid, UniformGrid
from sampler.schedule import GeometricNoiseSchedule

SCHEDULES = [
    GeometricNoiseSchedule(sigma_min=1e-3, sigma_max=1.0),
    GeometricNoiseSchedule(sigma_min=1e-3, sigma_max=2.0),
]


@pytest.mark.parametrize("s", SCHEDULES)
def test_h2_plus_alpha2_is_terminal_variance(s: GeometricNoiseSchedule) -> None:
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(s.h2(t) + s.alpha2(t), s.h2(torch.ones_like(t)))
    assert s.h2(torch.zeros(1, dtype=torch.float64)).item() == 0.0
    assert abs(s.alpha2(torch.ones(1, dtype=torch.float64)).item()) < 1e-15
    assert s.terminal_variance() == pytest.approx(s.sigma_max**2 * (1 - (s.sigma_min / s.sigma_max) ** 2))


@pytest.mark.parametrize("s", SCHEDULES)
def test_dh2_dt_is_sigma_squared(s: GeometricNoiseSchedule) -> None:
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(s.h2(t).sum(), t)
    torch.testing.assert_close(grad, s.sigma(t.detach()) ** 2)
    # and the integral of sigma^2 by the trapezoid rule
    grid = torch.linspace(0, 0.7, 20001, dtype=torch.float64)
    integral = torch.trapezoid(s.sigma(grid) ** 2, grid)
    assert integral.item() == pytest.approx(s.h2(torch.tensor(0.7, dtype=torch.float64)).item(), rel=1e-6)


def test_sigma_formula_and_monotone() -> None:
    s = GeometricNoiseSchedule(sigma_min=1e-3, sigma_max=1.0)
    ln_d = math.log(1000.0)
    assert s.sigma(torch.tensor(1.0)).item() == pytest.approx(1e-3 * math.sqrt(2 * ln_d), rel=1e-5)
    assert s.sigma(torch.tensor(0.0)).item() == pytest.approx(1.0 * math.sqrt(2 * ln_d), rel=1e-5)
    t = torch.linspace(0, 1, 11)
    assert bool((s.sigma(t)[1:] < s.sigma(t)[:-1]).all())


@pytest.mark.parametrize("bad", [(0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_schedule_rejects_bad_values(bad: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="sigma_min"):
        GeometricNoiseSchedule(sigma_min=bad[0], sigma_max=bad[1])


@pytest.mark.parametrize(
    "grid",
    [
        UniformGrid(num_steps=7),
        QuadraticLinearGrid(num_steps=7),
        QuadraticLinearGrid(num_steps=100),
        QuadraticLinearGrid(num_steps=1),
        UniformGrid(num_steps=1),
    ],
)
def test_grids_increase_from_zero_to_one(grid: UniformGrid | QuadraticLinearGrid) -> None:
    t = grid.times(dtype=torch.float64)
    assert t.shape == (grid.num_steps + 1,)
    assert t[0].item() == 0.0 and t[-1].item() == pytest.approx(1.0)
    assert bool((t[1:] > t[:-1]).all())


def test_quadratic_linear_grid_shape() -> None:
    t = QuadraticLinearGrid(num_steps=100, t_switch=0.25, quadratic_fraction=0.5).times(dtype=torch.float64)
    dt = t[1:] - t[:-1]
    assert t[50].item() == pytest.approx(0.25)
    assert bool((dt[:50][1:] > dt[:50][:-1]).all())  # quadratic: growing steps
    torch.testing.assert_close(dt[50:], torch.full((50,), 0.75 / 50, dtype=torch.float64))


def test_grid_rejects_bad_steps() -> None:
    with pytest.raises(ValueError, match="num_steps"):
        UniformGrid(num_steps=0)
    with pytest.raises(ValueError, match="t_switch"):
        QuadraticLinearGrid(num_steps=10, t_switch=1.5)
