"""Known-answer tests of the torsional math: wrapped normals, the torus bridge, Euler–Maruyama on the torus,
the torsional RAM / bridge-matching losses, and RAM training on a 2-D torus energy with an exact density."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from sampler.grids import UniformGrid
from sampler.replay import ReplaySamples
from sampler.schedule import GeometricNoiseSchedule
from sampler.time_embedding import FourierTime
from sampler.torsion_loss import (
    clip_per_torsion,
    flat_bottom_scale,
    torsion_adjoint_target,
    torsion_bridge_matching_loss,
    torsion_ram_loss,
)
from sampler.torsion_replay import TorsionSamples
from sampler.torsion_sde import (
    TorsionControl,
    TorusEulerMaruyama,
    TorusVarianceMatchedEuler,
    stratified_normal,
    zero_torsion_control,
)
from sampler.torus import (
    TorusBase,
    image_log_weights,
    torsion_schedule,
    torus_bridge_drift_target,
    torus_bridge_sample,
    wrap,
    wrapped_normal_log_prob,
    wrapped_normal_score,
)

F64 = torch.float64
NARROW = TorusBase(schedule=GeometricNoiseSchedule(sigma_min=math.pi / 100, sigma_max=1.0))
"""A base whose terminal law ``WN(0, ~1)`` is far from uniform, so that wrapped-normal effects show."""


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _circular_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return wrap(a - b).abs()


def _flat_batch(num_samples: int, torsions_per_sample: int) -> torch.Tensor:
    return torch.arange(num_samples).repeat_interleave(torsions_per_sample)


# --- wrapping and wrapped normals -----------------------------------------------------------------------


def test_wrap_range_and_invariance() -> None:
    g = torch.Generator().manual_seed(0)
    phi = (torch.rand(10_000, generator=g, dtype=F64) - 0.5) * 40.0
    w = wrap(phi)
    assert w.min().item() >= -math.pi and w.max().item() < math.pi
    for n in (-3, -1, 1, 5):
        torch.testing.assert_close(wrap(phi + 2 * math.pi * n), w, atol=1e-12, rtol=0)
    torch.testing.assert_close(wrap(w), w)
    torch.testing.assert_close(torch.cos(w), torch.cos(phi), atol=1e-12, rtol=0)
    edges = wrap(torch.tensor([math.pi, -math.pi, 3 * math.pi], dtype=F64))
    torch.testing.assert_close(edges, torch.full((3,), -math.pi, dtype=F64))
    assert wrap(torch.tensor([math.pi], dtype=torch.float32)).item() < math.pi


@pytest.mark.parametrize("h", [0.2, 1.0, 2.0, math.pi, 5.0])
def test_wrapped_normal_integrates_to_one(h: float) -> None:
    n = 20_000
    phi = -math.pi + (torch.arange(n, dtype=F64) + 0.5) * (2 * math.pi / n)
    density = wrapped_normal_log_prob(phi, h**2).exp()
    assert (density.sum() * 2 * math.pi / n).item() == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("h", [0.3, 1.0, math.pi])
def test_wrapped_normal_fourier_coefficients(h: float) -> None:
    """``E[cos(n phi)] = exp(-n^2 h^2 / 2)`` under ``WN(0, h^2)``."""
    n = 20_000
    phi = -math.pi + (torch.arange(n, dtype=F64) + 0.5) * (2 * math.pi / n)
    density = wrapped_normal_log_prob(phi, h**2).exp() * (2 * math.pi / n)
    for order in (1, 2, 3):
        coefficient = (density * torch.cos(order * phi)).sum().item()
        assert coefficient == pytest.approx(math.exp(-(order**2) * h**2 / 2), abs=1e-9)


@pytest.mark.parametrize("h", [0.05, 0.5, 1.5, math.pi])
def test_wrapped_normal_score_matches_autograd(h: float) -> None:
    phi = torch.linspace(-math.pi, math.pi - 1e-3, 501, dtype=F64).requires_grad_(True)
    (grad,) = torch.autograd.grad(wrapped_normal_log_prob(phi, h**2).sum(), phi)
    torch.testing.assert_close(wrapped_normal_score(phi.detach(), h**2), grad, atol=1e-9, rtol=1e-9)


def test_wrapped_normal_is_periodic_and_tends_to_the_normal() -> None:
    phi = torch.linspace(-math.pi, math.pi, 101, dtype=F64)
    for var in (0.5, 4.0):
        torch.testing.assert_close(
            wrapped_normal_log_prob(phi + 2 * math.pi, var), wrapped_normal_log_prob(phi, var), atol=1e-10, rtol=0
        )
        torch.testing.assert_close(
            wrapped_normal_score(phi - 2 * math.pi, var), wrapped_normal_score(phi, var), atol=1e-10, rtol=0
        )
    small = torch.linspace(-1.0, 1.0, 21, dtype=F64)
    normal = -0.5 * small**2 / 0.01 - 0.5 * math.log(2 * math.pi * 0.01)
    torch.testing.assert_close(wrapped_normal_log_prob(small, 0.01), normal)
    torch.testing.assert_close(wrapped_normal_score(small, 0.01), -small / 0.01)


def test_wrapped_normal_is_finite_in_float32_far_in_the_tails() -> None:
    phi = torch.tensor([-math.pi, 0.0, 3.0], dtype=torch.float32)
    for var in (1e-4, 1e-2, 10.0):
        assert torch.isfinite(wrapped_normal_log_prob(phi, var)).all()
        assert torch.isfinite(wrapped_normal_score(phi, var)).all()


def test_image_count_is_configurable() -> None:
    phi = torch.tensor([0.3], dtype=F64)
    assert image_log_weights(phi, 1.0, num_images=2).shape == (1, 5)
    assert image_log_weights(phi, 1.0).shape == (1, 13)
    # with h = pi, one image on each side is not enough; six is (the rest is below 1e-30)
    exact = wrapped_normal_log_prob(phi, math.pi**2, num_images=40)
    assert (wrapped_normal_log_prob(phi, math.pi**2, num_images=1) - exact).abs().item() > 1e-6
    torch.testing.assert_close(wrapped_normal_log_prob(phi, math.pi**2), exact, atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match="num_images"):
        TorusBase(num_images=-1)


def test_torsion_base_terminal_law_is_nearly_uniform() -> None:
    base = TorusBase()
    assert base.schedule == torsion_schedule()
    assert base.schedule.sigma_min == pytest.approx(math.pi / 100) and base.schedule.sigma_max == pytest.approx(math.pi)
    phi = torch.linspace(-math.pi, math.pi, 101, dtype=F64)
    assert (base.terminal_log_prob(phi) + math.log(2 * math.pi)).abs().max().item() < 0.02
    assert base.terminal_score(phi).abs().max().item() < 0.02
    t = torch.full_like(phi, 1.0)
    torch.testing.assert_close(base.marginal_log_prob(t, phi), base.terminal_log_prob(phi))


# --- the torus bridge ---------------------------------------------------------------------------------


def test_bridge_image_frequencies_match_the_wrapped_normal_weights() -> None:
    g = torch.Generator().manual_seed(1)
    n = 200_000
    phi1 = torch.full((n,), 3.0, dtype=F64)
    bridge = torus_bridge_sample(NARROW, torch.full((n,), 0.5, dtype=F64), phi1, torch.arange(n), g)
    weights = torch.softmax(image_log_weights(phi1[:1], NARROW.terminal_variance()), -1)[0]
    counts = torch.bincount(bridge.image + NARROW.num_images, minlength=weights.numel()).to(F64) / n
    torch.testing.assert_close(counts, weights, atol=4e-3, rtol=0)
    assert counts[NARROW.num_images - 1].item() > 0.2  # the image k = -1 is drawn often
    torch.testing.assert_close(bridge.lifted_1, phi1 + 2 * math.pi * bridge.image.to(F64))
    torch.testing.assert_close(wrap(bridge.lifted_t), bridge.phi_t)


@pytest.mark.parametrize("t_value", [0.2, 0.5, 0.8])
def test_bridge_moments_in_the_lifted_space(t_value: float) -> None:
    g = torch.Generator().manual_seed(2)
    n = 100_000
    phi1 = torch.tensor([2.5, -1.0, 0.2], dtype=F64).repeat(n // 3 + 1)[:n]
    t = torch.full((n // 2 + 1,), t_value, dtype=F64)
    batch = torch.arange(n) // 2  # two torsions per sample
    bridge = torus_bridge_sample(NARROW, t, phi1, batch, g)
    s, tt = NARROW.schedule, torch.tensor(t_value, dtype=F64)
    h2_1 = s.terminal_variance()
    mean_scale, var = (s.h2(tt) / h2_1).item(), (s.h2(tt) * s.alpha2(tt) / h2_1).item()
    residual = bridge.lifted_t - mean_scale * bridge.lifted_1
    assert residual.mean().item() == pytest.approx(0.0, abs=5 * math.sqrt(var / n))
    assert residual.var().item() == pytest.approx(var, rel=0.02)
    # conditionally on the image k = 0 of phi_1 = 0.2 the mean is alpha-weighted towards phi_1
    pick = (phi1 == 0.2) & (bridge.image == 0)
    assert bridge.lifted_t[pick].mean().item() == pytest.approx(
        mean_scale * 0.2, abs=5 * math.sqrt(var / int(pick.sum()))
    )


def test_bridge_endpoints() -> None:
    g = torch.Generator().manual_seed(3)
    phi1 = wrap(torch.randn(40, generator=g, dtype=F64) * 3)
    batch = _flat_batch(20, 2)
    at0 = torus_bridge_sample(NARROW, torch.zeros(20, dtype=F64), phi1, batch, g).phi_t
    at1 = torus_bridge_sample(NARROW, torch.ones(20, dtype=F64), phi1, batch, g).phi_t
    torch.testing.assert_close(at0, torch.zeros_like(at0))
    assert _circular_distance(at1, phi1).max().item() < 1e-12


def test_bridge_with_small_noise_concentrates_near_phi1() -> None:
    g = torch.Generator().manual_seed(4)
    base = TorusBase(schedule=GeometricNoiseSchedule(sigma_min=0.003, sigma_max=0.1))
    n = 20_000
    phi1 = torch.full((n,), 3.1, dtype=F64)  # next to the seam: the bridge must wrap correctly
    bridge = torus_bridge_sample(base, torch.full((n,), 0.9, dtype=F64), phi1, torch.arange(n), g)
    assert (bridge.image == 0).all()
    assert _circular_distance(bridge.phi_t, phi1).max().item() < 0.05 * 3.1 + 0.01


def test_bridge_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"t must be \[G\]"):
        torus_bridge_sample(NARROW, torch.zeros(2, 2), torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="torsion_batch names sample"):
        torus_bridge_sample(NARROW, torch.zeros(2), torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="phi and torsion_batch"):
        torus_bridge_sample(NARROW, torch.zeros(2), torch.zeros(3), torch.zeros(2, dtype=torch.long))


def test_bridge_drift_target_is_the_conditional_mean_of_the_lifted_drift() -> None:
    """``E[(L - lifted_t) / alpha_t^2 | phi_t, phi_1]``, estimated by binning ``phi_t``, equals the target."""
    g = torch.Generator().manual_seed(5)
    n, t_value, phi1_value = 400_000, 0.1, 2.8
    phi1 = torch.full((n,), phi1_value, dtype=F64)
    t = torch.full((n,), t_value, dtype=F64)
    bridge = torus_bridge_sample(NARROW, t, phi1, torch.arange(n), g)
    lifted_drift = (bridge.lifted_1 - bridge.lifted_t) / NARROW.schedule.alpha2(t)
    centres = torch.tensor([-3.0, -2.0, -1.0, 0.3, 1.0, 2.0, 3.0], dtype=F64)  # ±3: both images contribute
    for c in centres:
        pick = _circular_distance(bridge.phi_t, c) < 0.01
        assert int(pick.sum()) > 30
        target = torus_bridge_drift_target(NARROW, t[:1], c.view(1), phi1[:1], torch.zeros(1, dtype=torch.long))
        sem = lifted_drift[pick].std().item() / math.sqrt(int(pick.sum()))
        assert lifted_drift[pick].mean().item() == pytest.approx(target.item(), abs=5 * sem + 0.01)


def test_driving_the_torus_sde_with_the_bridge_drift_lands_on_phi1() -> None:
    g = torch.Generator().manual_seed(6)
    n = 2000
    phi1 = torch.tensor([3.0, -2.9], dtype=F64).repeat(n)
    batch = _flat_batch(n, 2)

    def control(t: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return torus_bridge_drift_target(NARROW, t.clamp(max=0.999), phi, phi1, batch)

    sde = TorusEulerMaruyama(schedule=NARROW.schedule, grid=UniformGrid(num_steps=400))
    end = sde.sample(control, batch, n, dtype=F64, generator=g)
    assert _circular_distance(end, phi1).mean().item() < 0.05


# --- Euler–Maruyama on the torus ----------------------------------------------------------------------


def test_zero_control_reproduces_the_base_terminal_law() -> None:
    """Variance-matched steps give ``WN(0, h_1^2)`` exactly; plain Euler the left Riemann sum of ``sigma^2``."""
    g = torch.Generator().manual_seed(7)
    n, grid = 40_000, UniformGrid(num_steps=50)
    batch = torch.arange(n)
    exact = TorusVarianceMatchedEuler(schedule=NARROW.schedule, grid=grid).sample(
        zero_torsion_control, batch, n, dtype=F64, generator=g
    )
    assert exact.min().item() >= -math.pi and exact.max().item() < math.pi
    h2 = NARROW.terminal_variance()
    for order in (1, 2):
        expected = math.exp(-(order**2) * h2 / 2)
        assert torch.cos(order * exact).mean().item() == pytest.approx(expected, abs=4 / math.sqrt(n))
    assert torch.sin(exact).mean().item() == pytest.approx(0.0, abs=4 / math.sqrt(n))
    edges = torch.linspace(-math.pi, math.pi, 37, dtype=F64)
    fine = torch.linspace(0, 1, 201, dtype=F64)[:-1] + 0.0025
    cells = edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * fine
    mass = NARROW.terminal_log_prob(cells).exp().mean(-1) * (2 * math.pi / 36)
    hist = torch.histc(exact, bins=36, min=-math.pi, max=math.pi) / n
    assert 0.5 * (hist - mass).abs().sum().item() < 0.02

    euler = TorusEulerMaruyama(schedule=NARROW.schedule, grid=grid)
    t = grid.times(dtype=F64)
    riemann = float((NARROW.schedule.sigma(t[:-1]) ** 2 * (t[1:] - t[:-1])).sum())
    plain = euler.sample(zero_torsion_control, batch, n, dtype=F64, generator=g)
    assert torch.cos(plain).mean().item() == pytest.approx(math.exp(-riemann / 2), abs=4 / math.sqrt(n))


def test_sde_passes_per_sample_times_and_validates() -> None:
    seen: list[tuple[int, ...]] = []

    def control(t: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        seen.append((t.shape[0], phi.shape[0]))
        return torch.ones_like(phi)

    sde = TorusEulerMaruyama(schedule=torsion_schedule(), grid=UniformGrid(num_steps=3))
    steps: list[int] = []
    out = sde.sample(control, torch.tensor([0, 0, 2]), 3, callback=lambda k, phi: steps.append(k))
    assert seen == [(3, 3)] * 3 and steps == [1, 2, 3] and out.dtype == torch.float32
    with pytest.raises(ValueError, match="torsion_batch must index"):
        sde.sample(control, torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="control returned shape"):
        sde.sample(lambda t, phi: phi[:1], torch.tensor([0, 1]), 2)


def test_sde_is_reproducible_with_a_generator() -> None:
    sde = TorusEulerMaruyama(schedule=torsion_schedule(), grid=UniformGrid(num_steps=10))
    batch = _flat_batch(5, 3)
    a = sde.sample(zero_torsion_control, batch, 5, generator=torch.Generator().manual_seed(8))
    b = sde.sample(zero_torsion_control, batch, 5, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b)


def test_stratified_normal_is_one_draw_per_slice_and_each_sample_stays_standard_normal() -> None:
    """Across the samples, each coordinate's values fall one in each equal-probability slice of N(0, 1); over
    many calls one sample's draws are N(0, 1) with independent coordinates."""
    g = torch.Generator().manual_seed(4)
    eps = stratified_normal(50, 3, generator=g, dtype=F64).reshape(50, 3)
    slices = torch.floor(torch.special.ndtr(eps) * 50).long()
    for j in range(3):
        assert sorted(slices[:, j].tolist()) == list(range(50))
    draws = torch.stack([stratified_normal(4, 2, generator=g, dtype=F64)[:2] for _ in range(20_000)])  # sample 0
    n = draws.shape[0]
    assert draws.mean(0).abs().max().item() < 4 / math.sqrt(n)
    assert (draws.var(0) - 1).abs().max().item() < 0.05
    assert abs(torch.corrcoef(draws.T)[0, 1].item()) < 4 / math.sqrt(n)
    assert (draws.abs() < 9).all()  # no infinite tail from a slice's edge


def test_stratified_integration_keeps_the_terminal_law_and_spreads_the_set() -> None:
    """``stratified=True`` with the zero control: pooled over calls the terminal law is still ``WN(0, h_1^2)``;
    within a call the samples' circular mean is closer to zero than independent noise leaves it; a batch that is
    not copies of one system is refused."""
    sde = TorusVarianceMatchedEuler(schedule=NARROW.schedule, grid=UniformGrid(num_steps=10))
    g = torch.Generator().manual_seed(9)
    count, m, calls = 16, 2, 600
    batch = torch.arange(count).repeat_interleave(m)
    strat = torch.stack(
        [sde.sample(zero_torsion_control, batch, count, dtype=F64, generator=g, stratified=True) for _ in range(calls)]
    ).reshape(calls, count, m)
    iid = torch.stack(
        [sde.sample(zero_torsion_control, batch, count, dtype=F64, generator=g) for _ in range(calls)]
    ).reshape(calls, count, m)
    n = calls * count * m
    h2 = NARROW.terminal_variance()
    assert torch.cos(strat).mean().item() == pytest.approx(math.exp(-h2 / 2), abs=4 / math.sqrt(n))
    spread_s = torch.sin(strat).mean(1).pow(2).mean().item()  # the within-call mean's variance
    spread_i = torch.sin(iid).mean(1).pow(2).mean().item()
    assert spread_s < 0.7 * spread_i
    with pytest.raises(ValueError, match="copies of one system"):
        sde.sample(zero_torsion_control, torch.tensor([0, 0, 1]), 2, stratified=True)


# --- losses and targets ---------------------------------------------------------------------------------


def test_flat_bottom_scale_is_the_derivative_of_the_flat_bottomed_energy() -> None:
    tau = 0.1
    e = torch.linspace(-1.0, 2.0, 61, dtype=F64, requires_grad=True)
    ceiling = torch.full_like(e, 0.5)
    flat = tau * torch.nn.functional.softplus((e - ceiling) / tau)
    (grad,) = torch.autograd.grad(flat.sum(), e)
    scale = flat_bottom_scale(e.detach(), ceiling, tau)
    torch.testing.assert_close(scale, grad)
    assert scale[0].item() < 1e-6 and scale[-1].item() > 1 - 1e-6  # flat far below, E - c far above
    assert scale[30].item() == pytest.approx(0.5)  # at the ceiling
    assert flat[0].item() < 1e-6 and flat[-1].item() == pytest.approx(1.5, abs=1e-6)
    with pytest.raises(ValueError, match="ceiling"):
        flat_bottom_scale(e.detach(), ceiling[:3], tau)
    with pytest.raises(ValueError, match="tau"):
        flat_bottom_scale(e.detach(), ceiling, 0.0)


def test_adjoint_target_formula_and_clip() -> None:
    g = torch.Generator().manual_seed(9)
    phi1 = wrap(torch.randn(50, generator=g, dtype=F64) * 2)
    grad_e = torch.randn(50, generator=g, dtype=F64)
    target = torsion_adjoint_target(phi1, grad_e, tau=0.25, base=NARROW)
    expected = -(grad_e / 0.25 + wrapped_normal_score(phi1, NARROW.terminal_variance()))
    torch.testing.assert_close(target, expected)
    clipped = torsion_adjoint_target(phi1, grad_e * 1e4, tau=0.25, base=NARROW)
    assert clipped.abs().max().item() == pytest.approx(200.0)
    small = torsion_adjoint_target(phi1, grad_e * 1e4, tau=0.25, base=NARROW, max_grad=3.0)
    torch.testing.assert_close(small, -clip_per_torsion(grad_e * 4e4 + NARROW.terminal_score(phi1), 3.0))
    extra = torch.full_like(phi1, 10.0)
    with_extra = torsion_adjoint_target(phi1, grad_e, tau=0.25, base=NARROW, max_grad=5.0, extra_gradient=extra)
    no_extra = torsion_adjoint_target(phi1, grad_e, tau=0.25, base=NARROW, max_grad=5.0)
    torch.testing.assert_close(with_extra, no_extra - 5.0)
    with pytest.raises(ValueError, match="tau"):
        torsion_adjoint_target(phi1, grad_e, tau=0.0, base=NARROW)
    with pytest.raises(ValueError, match="grad_phi_energy"):
        torsion_adjoint_target(phi1, grad_e[:3], tau=1.0, base=NARROW)


def test_ram_loss_matches_hand_computation() -> None:
    g = torch.Generator().manual_seed(10)
    batch = torch.tensor([0, 0, 0, 2, 2])  # sample 1 has no torsions
    phi1 = wrap(torch.randn(5, generator=g, dtype=F64) * 2)
    target = torch.randn(5, generator=g, dtype=F64)
    weight = torch.tensor(0.7, dtype=F64, requires_grad=True)

    def control(t: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return weight * torch.sin(phi) * t[batch]

    result = torsion_ram_loss(control, phi1, target, batch, 3, base=NARROW, generator=torch.Generator().manual_seed(11))
    replay = torch.Generator().manual_seed(11)
    t = torch.rand(3, generator=replay, dtype=F64)
    phi_t = torus_bridge_sample(NARROW, t, phi1, batch, replay).phi_t
    torch.testing.assert_close(result.t, t)
    torch.testing.assert_close(result.loss, ((0.7 * torch.sin(phi_t) * t[batch] - target) ** 2).mean())
    result.loss.backward()
    assert weight.grad is not None and weight.grad.abs().item() > 0


def test_bridge_matching_loss_vanishes_for_the_exact_bridge_drift() -> None:
    g = torch.Generator().manual_seed(12)
    batch = _flat_batch(64, 3)
    phi1 = wrap(torch.randn(batch.numel(), generator=g, dtype=F64) * 3)
    oracle = functools.partial(torus_bridge_drift_target, NARROW, phi1=phi1, torsion_batch=batch)

    def control(t: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return oracle(t, phi)

    for normalized in (False, True):
        result = torsion_bridge_matching_loss(control, phi1, batch, 64, base=NARROW, generator=g, normalized=normalized)
        assert result.loss.item() < 1e-20 and result.t.max().item() < 0.99
    zero = torsion_bridge_matching_loss(zero_torsion_control, phi1, batch, 64, base=NARROW, generator=g)
    assert zero.loss.item() > 1.0


def test_torsion_samples_round_trip_through_replay_samples() -> None:
    samples = TorsionSamples(
        system_ids=torch.tensor([4, 7, 4]),
        num_torsions=torch.tensor([2, 0, 3]),
        phi=torch.tensor([0.1, -0.2, 0.3, 0.4, -3.0]),
        adjoint=torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]),
        energies=torch.tensor([-1.0, -2.0, -3.0]),
        model_version=torch.tensor([0, 1, 1]),
    )
    torch.testing.assert_close(samples.torsion_batch, torch.tensor([0, 0, 2, 2, 2]))
    replay = samples.to_replay()
    assert isinstance(replay, ReplaySamples) and replay.positions.shape == (5, 1)
    back = TorsionSamples.from_replay(ReplaySamples.concat(replay.split()))
    for name in ("system_ids", "num_torsions", "phi", "adjoint", "energies", "model_version"):
        torch.testing.assert_close(getattr(back, name), getattr(samples, name))
    with pytest.raises(ValueError, match="phi must be"):
        TorsionSamples(**{**vars(samples), "phi": torch.zeros(4)})


# --- RAM training on a 2-D torus energy with an exact Boltzmann density ----------------------------------


class TorusMLP(nn.Module):
    """Control for a fixed number ``m`` of torsions per sample on the flat layout: inputs ``sin(j phi)``,
    ``cos(j phi)`` for ``j = 1 .. harmonics`` and Fourier features of ``t``; output ``v = u / sigma_t``."""

    def __init__(self, num_torsions: int, *, hidden: int = 64, harmonics: int = 3, time_frequencies: int = 4) -> None:
        super().__init__()
        self.num_torsions = num_torsions
        self.orders: torch.Tensor
        self.register_buffer("orders", torch.arange(1, harmonics + 1, dtype=torch.float32), persistent=False)
        self.time = FourierTime(time_frequencies)
        width = 2 * num_torsions * harmonics + self.time.dim
        self.net = nn.Sequential(
            nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, num_torsions)
        )

    def forward(self, t: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        angles = (phi.view(-1, self.num_torsions, 1) * self.orders.to(phi.dtype)).flatten(1)
        features = torch.cat([angles.sin(), angles.cos(), self.time(t, phi.dtype)], dim=-1)
        return self.net(features).reshape(-1)


EnergyGrad = Callable[[torch.Tensor], torch.Tensor]


def _train_ram(
    grad_energy: EnergyGrad,
    num_torsions: int,
    *,
    base: TorusBase,
    tau: float,
    seed: int,
    rounds: int = 30,
    steps_per_round: int = 100,
    new_per_round: int = 2000,
    capacity: int = 20_000,
    batch_size: int = 512,
    sde_steps: int = 100,
    lr: float = 3e-3,
) -> tuple[TorusMLP, TorusEulerMaruyama]:
    """The Adjoint Sampling loop on the torus with a FIFO buffer of (phi_1, -clip(grad g)) pairs; the
    learning rate decays (cosine) to 3 % of ``lr``. Returns the control and the integrator."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = TorusMLP(num_torsions)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    total = rounds * steps_per_round
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * min(i / total, 1.0)))
    )
    sde = TorusEulerMaruyama(schedule=base.schedule, grid=UniformGrid(num_steps=sde_steps))
    draw_batch = _flat_batch(new_per_round, num_torsions)
    train_batch = _flat_batch(batch_size, num_torsions)

    def refresh(control: TorsionControl) -> tuple[torch.Tensor, torch.Tensor]:
        phi1 = sde.sample(control, draw_batch, new_per_round, generator=g)
        target = torsion_adjoint_target(phi1, grad_energy(phi1), tau=tau, base=base)
        return phi1.view(-1, num_torsions), target.view(-1, num_torsions)

    buffer_phi, buffer_target = refresh(zero_torsion_control)
    for round_index in range(rounds):
        if round_index:
            phi1, target = refresh(net)
            buffer_phi = torch.cat([buffer_phi, phi1])[-capacity:]
            buffer_target = torch.cat([buffer_target, target])[-capacity:]
        for _ in range(steps_per_round):
            idx = torch.randint(buffer_phi.shape[0], (batch_size,), generator=g)
            loss = torsion_ram_loss(
                net,
                buffer_phi[idx].view(-1),
                buffer_target[idx].view(-1),
                train_batch,
                batch_size,
                base=base,
                generator=g,
            ).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return net, sde


def _grid(n: int) -> torch.Tensor:
    return -math.pi + (torch.arange(n, dtype=F64) + 0.5) * (2 * math.pi / n)


def _total_variation(samples: torch.Tensor, exact: torch.Tensor) -> float:
    hist = torch.histc(samples.to(F64), bins=exact.numel(), min=-math.pi, max=math.pi)
    return 0.5 * (hist / hist.sum() - exact).abs().sum().item()


K_EV, C_EV, TAU_EV = 1.0, 0.5, 0.5  # k / tau = 2, c / tau = 1


def _energy_2d(phi: torch.Tensor) -> torch.Tensor:
    """``E = k (1 + cos 3 phi_1) + k (1 + cos 3 phi_2) + c cos(phi_1 - phi_2)`` on ``[..., 2]``."""
    a, b = phi[..., 0], phi[..., 1]
    return K_EV * (2 + torch.cos(3 * a) + torch.cos(3 * b)) + C_EV * torch.cos(a - b)


def _grad_energy_2d(phi_flat: torch.Tensor) -> torch.Tensor:
    phi = phi_flat.view(-1, 2)
    a, b = phi[:, 0], phi[:, 1]
    coupling = C_EV * torch.sin(a - b)
    return torch.stack([-3 * K_EV * torch.sin(3 * a) - coupling, -3 * K_EV * torch.sin(3 * b) + coupling], -1).view(-1)


def test_grad_energy_2d_matches_autograd() -> None:
    phi = wrap(torch.randn(20, 2, generator=torch.Generator().manual_seed(13), dtype=F64) * 2).requires_grad_(True)
    (grad,) = torch.autograd.grad(_energy_2d(phi).sum(), phi)
    torch.testing.assert_close(_grad_energy_2d(phi.detach().view(-1)), grad.view(-1))


def _exact_2d() -> tuple[torch.Tensor, list[torch.Tensor], float]:
    """Quadrature of ``exp(-E / tau)`` on a 720 x 720 grid: the density, its two 36-bin marginals and
    ``E[cos(phi_1 - phi_2)]``."""
    n = 720
    x = _grid(n)
    mesh = torch.stack(torch.meshgrid(x, x, indexing="ij"), dim=-1)
    log_density = -_energy_2d(mesh) / TAU_EV
    density = (log_density - log_density.max()).exp()
    density = density / density.sum()
    marginals = [density.sum(1).view(36, -1).sum(1), density.sum(0).view(36, -1).sum(1)]
    return density, marginals, (density * torch.cos(mesh[..., 0] - mesh[..., 1])).sum().item()


class _ExactControl2d:
    """The optimal control ``v*(t, phi) = grad log psi_t(phi)``, ``psi_t = WN(., alpha_t^2) * exp(-g)`` on the
    torus (a spectral convolution on an ``n x n`` grid, bilinear interpolation between grid points), with
    ``g = E / tau + log p_1^base``."""

    def __init__(self, base: TorusBase, n: int = 128) -> None:
        self.base, self.n = base, n
        x = -math.pi + torch.arange(n, dtype=F64) * (2 * math.pi / n)
        mesh = torch.stack(torch.meshgrid(x, x, indexing="ij"), dim=-1)
        g = _energy_2d(mesh) / TAU_EV + base.terminal_log_prob(mesh).sum(-1)
        self.spectrum = torch.fft.fft2((-(g - g.min())).exp())
        freq = torch.fft.fftfreq(n, d=1.0 / n).to(F64)
        self.k1, self.k2 = torch.meshgrid(freq, freq, indexing="ij")
        self.fields: dict[float, torch.Tensor] = {}

    def _field(self, t: float) -> torch.Tensor:
        if t not in self.fields:
            alpha2 = self.base.schedule.alpha2(torch.tensor(t, dtype=F64))
            smoothed = self.spectrum * torch.exp(-(self.k1**2 + self.k2**2) * alpha2 / 2)
            psi = torch.fft.ifft2(smoothed).real
            grads = [torch.fft.ifft2(smoothed * 1j * k).real / psi for k in (self.k1, self.k2)]
            self.fields[t] = torch.stack(grads, -1)
        return self.fields[t]

    def __call__(self, t: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        field = self._field(float(t[0]))
        pos = (phi.view(-1, 2).to(F64) + math.pi) * (self.n / (2 * math.pi))
        i0, frac = pos.floor().long(), pos - pos.floor()
        out = torch.zeros(pos.shape, dtype=F64)
        for di in (0, 1):
            for dj in (0, 1):
                weight = (frac[:, 0] if di else 1 - frac[:, 0]) * (frac[:, 1] if dj else 1 - frac[:, 1])
                out += weight[:, None] * field[(i0[:, 0] + di) % self.n, (i0[:, 1] + dj) % self.n]
        return out.view(-1).to(phi.dtype)


def test_the_exact_optimal_control_reproduces_the_2d_boltzmann_law() -> None:
    """Euler–Maruyama on the torus driven by the exact ``v*`` (no learning) samples ``exp(-E / tau)``: the
    base process, the terminal cost and the integrator fit together, joint mode weights included."""
    _, exact, exact_coupling = _exact_2d()
    base = TorusBase()
    sde = TorusEulerMaruyama(schedule=base.schedule, grid=UniformGrid(num_steps=100))
    num_samples = 20_000
    phi = sde.sample(
        _ExactControl2d(base),
        _flat_batch(num_samples, 2),
        num_samples,
        dtype=F64,
        generator=torch.Generator().manual_seed(14),
    ).view(-1, 2)
    assert max(_total_variation(phi[:, j], exact[j]) for j in range(2)) < 0.03
    assert torch.cos(phi[:, 0] - phi[:, 1]).mean().item() == pytest.approx(exact_coupling, abs=0.03)


def test_ram_target_averages_to_the_optimal_control_under_the_target_bridge() -> None:
    """The fixed point of RAM: ``E[-clip(grad g(phi_1)) | phi_t] = v*(t, phi_t)`` when ``phi_1 ~ exp(-E / tau)``
    and ``phi_t`` is drawn from the torus bridge. With a narrow base (``h_1 ~ 1``) this fixes the sign of the
    base-score term in ``grad g`` (flipping it moves the conditional mean by more than 0.3)."""
    g = torch.Generator().manual_seed(15)
    tau, t_value = 0.8, 0.15

    def energy(phi: torch.Tensor) -> torch.Tensor:
        return torch.cos(phi) - 0.6 * torch.sin(2 * phi)

    def grad_energy(phi: torch.Tensor) -> torch.Tensor:
        return -torch.sin(phi) - 1.2 * torch.cos(2 * phi)

    n_grid = 4000
    x = _grid(n_grid)
    density = torch.exp(-energy(x) / tau)
    n = 600_000
    cell = torch.multinomial(density, n, replacement=True, generator=g)
    phi1 = wrap(x[cell] + (torch.rand(n, generator=g, dtype=F64) - 0.5) * (2 * math.pi / n_grid))
    t = torch.full((n,), t_value, dtype=F64)
    phi_t = torus_bridge_sample(NARROW, t, phi1, torch.arange(n), g).phi_t
    target = torsion_adjoint_target(phi1, grad_energy(phi1), tau=tau, base=NARROW, max_grad=1e6)
    flipped = target + 2 * NARROW.terminal_score(phi1)  # the base-score term with the wrong sign

    alpha2 = NARROW.schedule.alpha2(torch.tensor(t_value, dtype=F64))
    log_tilt = -energy(x) / tau - NARROW.terminal_log_prob(x)  # -g on the grid
    worst_flipped = 0.0
    for c in (-2.5, -1.5, -0.5, 0.5, 1.5, 2.5):
        offset = wrap(x - c)
        log_w = wrapped_normal_log_prob(offset, alpha2) + log_tilt
        v_star = (torch.softmax(log_w, 0) * -wrapped_normal_score(offset, alpha2)).sum().item()
        pick = _circular_distance(phi_t, torch.tensor(c, dtype=F64)) < 0.01
        assert int(pick.sum()) > 300
        sem = target[pick].std().item() / math.sqrt(int(pick.sum()))
        assert target[pick].mean().item() == pytest.approx(v_star, abs=5 * sem + 0.02)
        worst_flipped = max(worst_flipped, abs(flipped[pick].mean().item() - v_star))
    assert worst_flipped > 0.3


@pytest.mark.slow
def test_ram_on_a_2d_torus_energy_matches_the_boltzmann_marginals() -> None:
    """The trained sampler's per-torsion marginals (36 bins, 20k samples) are within TV 0.05 of the exact
    ones from a 720 x 720 quadrature of ``exp(-E / tau)``; the untrained (base) sampler's are above 0.2.

    The joint mode weights (the coupling ``E[cos(phi_1 - phi_2)]``, exact -0.40) are learned slowly: this
    budget reaches about -0.16 (the exact control reaches -0.40, see the test above; with an exact-sample
    buffer and four times the gradient steps the same regression reaches -0.34). Only the direction is
    checked here.
    """
    _, exact, exact_coupling = _exact_2d()
    base = TorusBase()
    net, sde = _train_ram(_grad_energy_2d, 2, base=base, tau=TAU_EV, seed=0)
    num_samples = 20_000
    batch = _flat_batch(num_samples, 2)
    g = torch.Generator().manual_seed(100)
    trained = sde.sample(net, batch, num_samples, generator=g).view(-1, 2)
    untrained = sde.sample(zero_torsion_control, batch, num_samples, generator=g).view(-1, 2)
    tv_trained = [_total_variation(trained[:, j], exact[j]) for j in range(2)]
    tv_untrained = [_total_variation(untrained[:, j], exact[j]) for j in range(2)]
    coupling = torch.cos(trained[:, 0] - trained[:, 1]).mean().item()
    print(f"TV trained {tv_trained}, untrained {tv_untrained}; coupling {coupling:.3f} (exact {exact_coupling:.3f})")
    assert max(tv_trained) < 0.05
    assert min(tv_untrained) > 0.2
    assert exact_coupling < coupling < 0.0 and abs(torch.cos(untrained[:, 0] - untrained[:, 1]).mean().item()) < 0.05
    assert coupling < -0.1
