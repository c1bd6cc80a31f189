import pytest
import torch

from sampler.bridge import bridge_drift_target, bridge_sample
from sampler.grids import UniformGrid
from sampler.schedule import GeometricNoiseSchedule
from sampler.sde import EulerMaruyama, VarianceMatchedEuler, zero_control
from sampler.state import SystemGraph, collate

S = GeometricNoiseSchedule(sigma_min=1e-3, sigma_max=1.5)


def _batch(copies: int, n: int, dim: int):  # type: ignore[no-untyped-def]
    return collate([SystemGraph.fully_connected(torch.ones(n, 1, dtype=torch.float64), dim=dim)] * copies)


@pytest.mark.parametrize("t_value", [0.1, 0.5, 0.9])
def test_bridge_moments(t_value: float) -> None:
    g = torch.Generator().manual_seed(0)
    n, dim, copies = 5, 3, 20000
    batch = _batch(copies, n, dim)
    x1_single = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x1_single = x1_single - x1_single.mean(0)
    x1 = batch.replace(positions=x1_single.repeat(copies, 1))
    t = torch.full((copies,), t_value, dtype=torch.float64)
    xt = bridge_sample(S, t, x1, g).positions.view(copies, n, dim)
    tt = torch.tensor(t_value, dtype=torch.float64)
    h2t, h21 = S.h2(tt), S.terminal_variance()
    expected_mean = h2t / h21 * x1_single
    expected_var = (h2t * S.alpha2(tt) / h21) * (n - 1) / n  # COM projection removes 1/n of the variance
    torch.testing.assert_close(xt.mean(0), expected_mean, atol=5 * float(expected_var.sqrt()) / copies**0.5, rtol=0)
    var = xt.var(0).mean()
    assert var.item() == pytest.approx(expected_var.item(), rel=0.03)
    assert xt.mean(1).abs().max().item() < 1e-12  # COM-free


def test_bridge_endpoints() -> None:
    g = torch.Generator().manual_seed(1)
    batch = _batch(4, 3, 2)
    x1 = batch.replace(positions=batch.remove_com(torch.randn(12, 2, generator=g, dtype=torch.float64)))
    at0 = bridge_sample(S, torch.zeros(4, dtype=torch.float64), x1, g).positions
    at1 = bridge_sample(S, torch.ones(4, dtype=torch.float64), x1, g).positions
    torch.testing.assert_close(at0, torch.zeros_like(at0))
    torch.testing.assert_close(at1, x1.positions)


def test_bridge_rejects_wrong_time_shape() -> None:
    batch = _batch(3, 3, 2)
    with pytest.raises(ValueError, match="one entry per graph"):
        bridge_sample(S, torch.zeros(2), batch)


def test_bridge_drift_target_is_the_bridge_drift() -> None:
    """Driving the base SDE with v = (X1 - Xt)/alpha_t^2 must land on X1 (the pinned bridge)."""
    g = torch.Generator().manual_seed(2)
    batch = _batch(2000, 4, 3)
    single = torch.randn(4, 3, generator=g, dtype=torch.float64)
    single = single - single.mean(0)
    x1 = batch.replace(positions=single.repeat(2000, 1))

    def control(t: torch.Tensor, state):  # type: ignore[no-untyped-def]
        return bridge_drift_target(S, t.clamp(max=0.999), state, x1)

    end = EulerMaruyama(schedule=S, grid=UniformGrid(num_steps=400)).sample(control, batch, g)
    err = (end.positions - x1.positions).norm(dim=-1).mean()
    assert err.item() < 0.05


@pytest.mark.parametrize("steps", [20, 100])
def test_base_process_terminal_variance(steps: int) -> None:
    g = torch.Generator().manual_seed(3)
    n, dim = 4, 3
    batch = _batch(20000, n, dim)
    grid = UniformGrid(num_steps=steps)
    t = grid.times(dtype=torch.float64)
    # Euler–Maruyama: the left Riemann sum of sigma^2
    x = EulerMaruyama(schedule=S, grid=grid).sample(zero_control, batch, g).positions
    riemann = float((S.sigma(t[:-1]) ** 2 * (t[1:] - t[:-1])).sum())
    assert x.var(0).mean().item() == pytest.approx(riemann * (n - 1) / n, rel=0.02)
    # the variance-matched step: exactly h_1^2 on any grid
    x = VarianceMatchedEuler(schedule=S, grid=grid).sample(zero_control, batch, g).positions
    assert x.var(0).mean().item() == pytest.approx(S.terminal_variance() * (n - 1) / n, rel=0.02)
    # and EM converges to it as the grid refines
    fine = UniformGrid(num_steps=5000).times(dtype=torch.float64)
    fine_sum = float((S.sigma(fine[:-1]) ** 2 * (fine[1:] - fine[:-1])).sum())
    assert fine_sum == pytest.approx(S.terminal_variance(), rel=2e-3)


def test_every_state_com_free_even_with_a_drifting_control() -> None:
    g = torch.Generator().manual_seed(4)
    batch = collate([SystemGraph.fully_connected(torch.ones(k, 1, dtype=torch.float64), dim=3) for k in (2, 5, 9)])
    seen = []

    def biased(t: torch.Tensor, state):  # type: ignore[no-untyped-def]
        return torch.ones_like(state.positions) * 3.0  # pure COM push, must be projected out

    def check(k: int, state) -> None:  # type: ignore[no-untyped-def]
        seen.append(float(state.graph_sum(state.positions).abs().max()))

    EulerMaruyama(schedule=S, grid=UniformGrid(num_steps=20)).sample(biased, batch, g, callback=check)
    assert len(seen) == 20
    assert max(seen) < 1e-12
