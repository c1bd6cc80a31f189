"""The Adjoint Sampling loop (ALGORITHM.md section 5): alternate a buffer refresh with K RAM steps.

1. Initial buffer: samples of the base process (no control), energies evaluated once.
2. Each round: (a) sample ``M`` terminal states with the current control (Euler–Maruyama), evaluate
   energies and gradients once, push ``(system, X_1, E, -clip(grad g))`` into the FIFO buffer;
   (b) take ``K`` Adam steps of the RAM loss on batches drawn from the buffer.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from sampler.loss import adjoint_target, bridge_matching_loss, reciprocal_adjoint_matching_loss
from sampler.replay import ReplayBuffer, ReplaySamples
from sampler.schedule import GeometricNoiseSchedule
from sampler.sde import EulerMaruyama, zero_control
from sampler.state import SystemBatch, SystemGraph, collate
from sampler.target import TerminalTarget

__all__ = ["AdjointSamplingTrainer", "RoundStats", "TrainerConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """Settings of the alternation loop.

    Attributes:
        tau: temperature of the target ``exp(-E / tau)`` (eV for molecules).
        max_grad_norm: per-particle clip of ``grad g``.
        samples_per_round: ``M``, new terminal samples (energy calls) per round.
        initial_samples: base-process samples that seed the buffer.
        grad_steps_per_round: ``K``.
        batch_size: buffer entries (graphs) per gradient step.
        learning_rate: Adam learning rate.
        weight_clip_norm: clip of the parameters' gradient norm (``None`` = off).
        lr_decay_to: final learning rate as a fraction of the initial one, reached by a cosine decay
            over the run's progress (``set_progress``; 1.0 = constant learning rate).
    """

    tau: float = 1.0
    max_grad_norm: float = 150.0
    samples_per_round: int = 128
    initial_samples: int = 128
    grad_steps_per_round: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-4
    weight_clip_norm: float | None = 1.0
    lr_decay_to: float = 1.0


@dataclass(frozen=True)
class RoundStats:
    """One round's numbers, as logged and stored in checkpoints."""

    round: int
    loss: float
    mean_energy: float
    valid_fraction: float
    energy_calls: int
    wall_seconds: float
    refresh_seconds: float = 0.0
    gradient_seconds: float = 0.0

    def line(self) -> str:
        return (
            f"round {self.round:5d}  loss {self.loss:10.4f}  mean E {self.mean_energy:10.4f}  "
            f"valid {100 * self.valid_fraction:5.1f}%  energy calls {self.energy_calls:8d}  "
            f"wall {self.wall_seconds:8.1f}s"
        )


class AdjointSamplingTrainer:
    """Trains a control network by Reciprocal Adjoint Matching against a replay buffer."""

    def __init__(
        self,
        *,
        control: nn.Module,
        target: TerminalTarget,
        buffer: ReplayBuffer,
        schedule: GeometricNoiseSchedule,
        integrator: EulerMaruyama,
        systems: Sequence[SystemGraph],
        config: TrainerConfig,
        seed: int = 0,
    ) -> None:
        if not systems:
            raise ValueError("the trainer needs at least one system to train on")
        self.control = control
        self.target = target
        self.buffer = buffer
        self.schedule = schedule
        if integrator.schedule != schedule:
            raise ValueError("the integrator must use the trainer's noise schedule")
        self.integrator = integrator
        self.systems = {g.system_id: g for g in systems}
        self.system_order = [g.system_id for g in systems]
        self.config = config
        self.optimizer = torch.optim.Adam(control.parameters(), lr=config.learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        self.round = 0
        self.energy_calls = 0
        self.wall_seconds = 0.0
        self.history: list[RoundStats] = []

    # -- sampling -------------------------------------------------------------------------------
    def draw_systems(self, count: int) -> list[SystemGraph]:
        idx = torch.randint(len(self.system_order), (count,), generator=self.generator).tolist()
        return [self.systems[self.system_order[i]] for i in idx]

    def sample(self, count: int, *, controlled: bool = True) -> SystemBatch:
        """``count`` terminal samples of the current control (or of the base process)."""
        start = collate(self.draw_systems(count))
        param = next(self.control.parameters())
        start = start.to(param.device, param.dtype)
        control = self.control if controlled else zero_control
        was_training = self.control.training
        self.control.eval()
        try:
            return self.integrator.sample(control, start, self.generator)
        finally:
            self.control.train(was_training)

    def refresh(self, count: int, *, controlled: bool = True) -> tuple[float, float]:
        """Sample, evaluate energies once, push the valid samples. Returns (mean energy, valid fraction)."""
        x1 = self.sample(count, controlled=controlled).to("cpu")
        evaluation = self.target(x1)
        self.energy_calls += count
        valid = evaluation.valid
        target = adjoint_target(
            x1,
            evaluation.energy_gradient,
            schedule=self.schedule,
            tau=self.config.tau,
            max_grad_norm=self.config.max_grad_norm,
            extra_gradient=evaluation.extra_gradient,
        )
        keep_nodes = valid[x1.batch]
        if bool(valid.any()):
            self.buffer.push(
                ReplaySamples(
                    system_ids=x1.system_ids[valid],
                    num_nodes=x1.num_nodes[valid],
                    positions=x1.positions[keep_nodes],
                    adjoint=target[keep_nodes],
                    energies=evaluation.energies[valid],
                    model_version=torch.full((int(valid.sum()),), self.round, dtype=torch.long),
                )
            )
        mean_e = float(evaluation.energies[valid].mean()) if bool(valid.any()) else float("nan")
        return mean_e, float(valid.float().mean())

    # -- learning -------------------------------------------------------------------------------
    def _batch_from_buffer(self) -> tuple[SystemBatch, torch.Tensor]:
        draw = self.buffer.sample(self.config.batch_size, self.generator)
        graphs = [self.systems[i] for i in draw.system_ids.tolist()]
        param = next(self.control.parameters())
        x1 = collate(graphs, draw.positions).to(param.device, param.dtype)
        return x1, draw.adjoint.to(param.device, param.dtype)

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.weight_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.control.parameters(), self.config.weight_clip_norm)
        self.optimizer.step()

    def set_progress(self, fraction: float) -> None:
        """Tell the trainer how far through its budget (rounds or time) the run is, in [0, 1]: sets the
        cosine-decayed learning rate."""
        frac = min(max(fraction, 0.0), 1.0)
        c = self.config
        scale = c.lr_decay_to + (1 - c.lr_decay_to) * 0.5 * (1 + math.cos(math.pi * frac))
        for group in self.optimizer.param_groups:
            group["lr"] = c.learning_rate * scale

    def gradient_steps(self, num_steps: int) -> float:
        """``num_steps`` Adam steps of the RAM loss; returns the mean loss."""
        self.control.train()
        total = 0.0
        for _ in range(num_steps):
            x1, target = self._batch_from_buffer()
            result = reciprocal_adjoint_matching_loss(
                self.control, x1, target, schedule=self.schedule, generator=self.generator
            )
            self._step(result.loss)
            total += float(result.loss.detach())
        return total / max(num_steps, 1)

    def warmup_bridge_matching(self, data: Sequence[SystemBatch], num_steps: int, *, normalized: bool = False) -> float:
        """Bridge-matching warm-up on data batches (e.g. RDKit conformers); returns the mean loss."""
        self.control.train()
        total = 0.0
        param = next(self.control.parameters())
        for k in range(num_steps):
            x1 = data[k % len(data)].to(param.device, param.dtype)
            result = bridge_matching_loss(
                self.control, x1, schedule=self.schedule, generator=self.generator, normalized=normalized
            )
            self._step(result.loss)
            total += float(result.loss.detach())
        return total / max(num_steps, 1)

    def run_round(self) -> RoundStats:
        """One alternation: refresh the buffer (the base process seeds it first), then K steps."""
        start = time.perf_counter()
        if len(self.buffer) == 0:
            self.refresh(self.config.initial_samples, controlled=False)
        mean_e, valid = self.refresh(self.config.samples_per_round)
        mid = time.perf_counter()
        loss = self.gradient_steps(self.config.grad_steps_per_round)
        end = time.perf_counter()
        self.round += 1
        self.wall_seconds += end - start
        stats = RoundStats(
            self.round, loss, mean_e, valid, self.energy_calls, self.wall_seconds, mid - start, end - mid
        )
        self.history.append(stats)
        log.info(stats.line())
        return stats

    def train(self, num_rounds: int, *, on_round: Callable[[RoundStats], None] | None = None) -> list[RoundStats]:
        out = []
        for _ in range(num_rounds):
            stats = self.run_round()
            out.append(stats)
            if on_round is not None:
                on_round(stats)
        return out

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Control, optimizer, RNG and counters (the buffer is saved by its owner)."""
        return {
            "control": self.control.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "round": self.round,
            "energy_calls": self.energy_calls,
            "wall_seconds": self.wall_seconds,
            "history": [asdict(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.control.load_state_dict(state["control"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.round = int(state["round"])
        self.energy_calls = int(state["energy_calls"])
        self.wall_seconds = float(state["wall_seconds"])
        self.history = [RoundStats(**h) for h in state["history"]]
