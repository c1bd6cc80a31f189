"""Training end to end: the Gaussian target with an analytic answer, checkpoints and exact resume."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from buffer.memory import InMemoryReplayBuffer
from sampler.egnn import EGNNConfig, EGNNControl
from sampler.grids import UniformGrid
from sampler.schedule import GeometricNoiseSchedule
from sampler.sde import VarianceMatchedEuler
from sampler.state import SystemBatch, SystemGraph
from sampler.target import TerminalEvaluation
from sampler.trainer import AdjointSamplingTrainer, TrainerConfig
from training.checkpoint import load_checkpoint, restore_trainer, save_checkpoint
from training.synthetic import PRESETS, GridConfig, SyntheticRunConfig, build_trainer
from training.synthetic_training import train_synthetic

TARGET_VAR = 0.25  # p*(x) ∝ exp(-|x|^2 / (2 * 0.25)) on the COM-free subspace, tau = 1


def gaussian_target(batch: SystemBatch) -> TerminalEvaluation:
    e = batch.graph_sum(0.5 * (batch.positions**2).sum(-1)) / TARGET_VAR
    return TerminalEvaluation(
        energies=e, energy_gradient=batch.positions / TARGET_VAR, valid=torch.ones(batch.num_graphs, dtype=torch.bool)
    )


@pytest.mark.slow
def test_trained_sampler_matches_gaussian_variance() -> None:
    torch.manual_seed(0)
    n = 4
    schedule = GeometricNoiseSchedule(sigma_min=1e-3, sigma_max=1.0)
    trainer = AdjointSamplingTrainer(
        control=EGNNControl(EGNNConfig(node_features=1, num_layers=2, hidden=32)),
        target=gaussian_target,
        buffer=InMemoryReplayBuffer(2000),
        schedule=schedule,
        integrator=VarianceMatchedEuler(schedule=schedule, grid=UniformGrid(num_steps=50)),
        systems=[SystemGraph.fully_connected(torch.ones(n, 1), dim=2)],
        config=TrainerConfig(
            tau=1.0,
            max_grad_norm=1e3,
            samples_per_round=128,
            initial_samples=256,
            grad_steps_per_round=40,
            batch_size=128,
            learning_rate=3e-3,
        ),
        seed=0,
    )
    trainer.train(15)
    x = trainer.sample(4000).positions
    expected = TARGET_VAR * (n - 1) / n
    assert x.var(0).mean().item() == pytest.approx(expected, rel=0.10)
    # the untrained (base) process is far from it: the test can fail
    base = trainer.sample(4000, controlled=False).positions
    assert abs(base.var(0).mean().item() - expected) / expected > 0.5


def tiny_config() -> SyntheticRunConfig:
    c = PRESETS["dw4"]
    return replace(
        c,
        network=EGNNConfig(node_features=1, num_layers=2, hidden=8),
        trainer=replace(c.trainer, samples_per_round=16, initial_samples=16, grad_steps_per_round=3, batch_size=8),
        train_grid=GridConfig(num_steps=10),
        buffer_capacity=40,
        max_rounds=4,
    )


def test_resume_is_exact(tmp_path: Path) -> None:
    config = tiny_config()
    straight = train_synthetic(config, seed=3, out=None, show_progress=False)

    first = train_synthetic(config, seed=3, out=tmp_path / "ck.pt", max_rounds=2, show_progress=False)
    assert first.round == 2
    resumed = train_synthetic(
        config, seed=3, out=tmp_path / "ck2.pt", resume=tmp_path / "ck.pt", max_rounds=4, show_progress=False
    )
    assert resumed.round == 4
    for (name, a), b in zip(straight.control.state_dict().items(), resumed.control.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert [h.loss for h in straight.history] == pytest.approx([h.loss for h in resumed.history])
    assert straight.energy_calls == resumed.energy_calls


def test_checkpoint_holds_config_versions_and_stats(tmp_path: Path) -> None:
    config = tiny_config()
    trainer = build_trainer(config, seed=0)
    trainer.train(1)
    save_checkpoint(tmp_path / "a.pt", trainer, config.to_dict(), kind="synthetic")
    payload = load_checkpoint(tmp_path / "a.pt")
    assert SyntheticRunConfig.from_dict(payload["config"]) == config
    assert payload["versions"]["torch"] == torch.__version__
    assert payload["history"][0]["round"] == 1 and payload["energy_calls"] == 32
    small = tmp_path / "w.pt"
    save_checkpoint(small, trainer, config.to_dict(), kind="synthetic", include_resume_state=False)
    with pytest.raises(ValueError, match="cannot be resumed"):
        restore_trainer(build_trainer(config, seed=0), load_checkpoint(small))


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    config = tiny_config()
    train_synthetic(config, seed=0, out=tmp_path / "c.pt", max_rounds=1, show_progress=False)
    other = replace(config, buffer_capacity=41)
    with pytest.raises(ValueError, match="different configuration"):
        train_synthetic(other, seed=0, out=None, resume=tmp_path / "c.pt", max_rounds=2, show_progress=False)


def test_bad_checkpoint_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"hello": 1}, other)
    with pytest.raises(ValueError, match="not an adjoint-sampling checkpoint"):
        load_checkpoint(other)


def test_invalid_energy_evaluations_never_reach_the_buffer() -> None:
    torch.manual_seed(0)
    schedule = GeometricNoiseSchedule(sigma_min=1e-3, sigma_max=1.0)

    def half_invalid(batch: SystemBatch) -> TerminalEvaluation:
        ok = torch.arange(batch.num_graphs) % 2 == 0
        e = torch.where(ok, torch.zeros(batch.num_graphs), torch.full((batch.num_graphs,), float("nan")))
        grad = torch.where(ok[batch.batch, None], batch.positions, torch.full_like(batch.positions, float("nan")))
        return TerminalEvaluation(energies=e, energy_gradient=grad, valid=ok)

    buffer = InMemoryReplayBuffer(1000)
    trainer = AdjointSamplingTrainer(
        control=EGNNControl(EGNNConfig(node_features=1, num_layers=1, hidden=8)),
        target=half_invalid,
        buffer=buffer,
        schedule=schedule,
        integrator=VarianceMatchedEuler(schedule=schedule, grid=UniformGrid(num_steps=5)),
        systems=[SystemGraph.fully_connected(torch.ones(3, 1), dim=3)],
        config=TrainerConfig(samples_per_round=10, initial_samples=10, grad_steps_per_round=2, batch_size=4),
    )
    stats = trainer.run_round()
    assert len(buffer) == 10  # 5 of the initial 10, 5 of the 10 fresh
    assert stats.valid_fraction == pytest.approx(0.5)
    assert stats.energy_calls == 20
    assert all(torch.isfinite(p).all() for p in trainer.control.parameters())


@pytest.mark.gpu
def test_a_training_round_on_cuda() -> None:
    config = tiny_config()
    trainer = build_trainer(config, seed=0)
    trainer.control.to("cuda")
    trainer.optimizer = torch.optim.Adam(trainer.control.parameters(), lr=1e-3)
    stats = trainer.run_round()
    assert stats.valid_fraction > 0 and torch.isfinite(torch.tensor(stats.loss))
