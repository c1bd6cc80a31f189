"""benchmarks.round_cost: the projection of a round from its measured pieces, and the published settings."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.round_cost import measure, project, published_settings
from sampler.egnn import EGNNConfig
from training.synthetic import PRESETS, GridConfig


def test_projection_separates_per_step_from_once_costs() -> None:
    # refresh = 2 s once + 0.5 s per step: 7 s at p = 10, 12 s at 2p = 20; 100 steps, 50 gradient steps of 0.1 s
    per_step, once, round_s = project(7.0, 12.0, 10, 0.1, steps=100, grad_steps=50)
    assert per_step == pytest.approx(0.5)
    assert once == pytest.approx(2.0)
    assert round_s == pytest.approx(2.0 + 100 * 0.5 + 50 * 0.1)


def test_projection_never_goes_negative_on_noisy_probes() -> None:
    per_step, once, round_s = project(5.0, 4.0, 10, 0.0, steps=100, grad_steps=0)  # 2p faster than p: noise
    assert per_step == 0.0 and once == 5.0 and round_s == 5.0


@pytest.mark.parametrize(("system", "steps"), [("dw4", 200), ("lj13", 1000)])
def test_published_settings_follow_algorithm_md(system: str, steps: int) -> None:
    config = published_settings(system)
    assert (config.network.num_layers, config.network.hidden) == (5, 128)
    assert config.trainer.samples_per_round == 1000
    assert config.trainer.grad_steps_per_round == 100
    assert config.train_grid.num_steps == steps
    assert config.buffer_capacity == 10_000
    assert config.system == system


def test_a_measured_round_adds_up_and_counts_rounds_in_the_budget() -> None:
    tiny = dataclasses.replace(
        PRESETS["dw4"],
        network=EGNNConfig(node_features=1, num_layers=1, hidden=8),
        trainer=dataclasses.replace(PRESETS["dw4"].trainer, samples_per_round=16, initial_samples=32, batch_size=8),
        train_grid=GridConfig(num_steps=40),
    )
    cost = measure(tiny, "tiny", probe_steps=2, gradient_probe=2)
    assert cost.samples == 16 and cost.steps == 40 and cost.grad_steps == tiny.trainer.grad_steps_per_round
    assert all(t > 0 for t in cost.refresh_probe_s)
    assert cost.round_s == pytest.approx(
        cost.once_s + 40 * cost.per_step_s + cost.grad_steps * cost.per_gradient_step_s
    )
    assert cost.rounds_in_budget == pytest.approx(1800.0 / cost.round_s)
