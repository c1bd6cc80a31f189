"""Training the amortized conformer sampler: bridge-matching warm-up on ETKDG conformers, then Reciprocal
Adjoint Matching against the energy model, over many training molecules at once.

The config is stored whole in every checkpoint; resume restores optimizer, buffer and random state.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from buffer.memory import InMemoryReplayBuffer
from energy.protocol import EnergyModel
from energy.registry import build_energy_model
from energy.target import EnergyTarget
from molecules.dataset import MoleculeFilter, load_training_molecules
from molecules.etkdg import embed_many
from molecules.features import ATOM_FEATURES, PAIR_FEATURES
from molecules.graph import MolecularSystem, molecular_system
from molecules.smiles import mol_from_smiles
from sampler.egnn import EGNNConfig
from sampler.networks import ControlConfig, build_control, network_from_dict, network_to_dict
from sampler.schedule import GeometricNoiseSchedule
from sampler.state import SystemBatch, collate
from sampler.tensor_product_config import TensorProductConfig
from sampler.trainer import AdjointSamplingTrainer, TrainerConfig
from training.checkpoint import load_checkpoint, restore_trainer, save_checkpoint
from training.synthetic import GridConfig

__all__ = [
    "CHECKPOINT_KIND",
    "ConformerRunConfig",
    "build_conformer_trainer",
    "tensor_product_network",
    "train_conformers",
    "training_systems",
    "warm_up",
    "warmup_batches",
]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "conformers"


@dataclass(frozen=True, kw_only=True)
class ConformerRunConfig:
    """Everything that defines a conformer-sampler training run.

    Attributes:
        energy_model: registry name (``xtb``, ``mmff``, ``gfn1-xtb``, ``fairchem``); ``energy_workers`` its
            process pool where the model has one.
        training_smiles: SPICE-format TSV of training SMILES (relative paths are relative to ``data_dir``).
        num_molecules: how many filtered training molecules to train on (a seeded random subset).
        network: the control network, an EGNN (default) or a tensor-product config (stored with a ``kind``
            tag; untagged = EGNN, see :mod:`sampler.networks`).
        warmup_conformers, warmup_steps, warmup_batch: ETKDG conformers per molecule, bridge-matching steps
            and graphs per step of the warm-up (0 steps = no warm-up: pure Adjoint Sampling).
        max_rounds, max_minutes: the RAM budget (rounds set the learning-rate schedule).
    """

    energy_model: str = "xtb"
    energy_workers: int = 2
    training_smiles: str = "spice/spice_train.txt"
    selection: MoleculeFilter = field(default_factory=MoleculeFilter)
    num_molecules: int = 1000
    schedule: GeometricNoiseSchedule = field(
        default_factory=lambda: GeometricNoiseSchedule(sigma_min=1e-3, sigma_max=1.0)
    )
    network: ControlConfig = field(
        default_factory=lambda: EGNNConfig(
            node_features=ATOM_FEATURES, edge_features=PAIR_FEATURES, num_layers=4, hidden=64, coordinate_range=1.0
        )
    )
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(
            tau=5e-3,
            max_grad_norm=150.0,
            samples_per_round=32,
            initial_samples=32,
            grad_steps_per_round=25,
            batch_size=16,
            learning_rate=3e-4,
            lr_decay_to=0.1,
        )
    )
    train_grid: GridConfig = field(default_factory=lambda: GridConfig(num_steps=50))
    eval_grid: GridConfig = field(default_factory=lambda: GridConfig(num_steps=100))
    warmup_conformers: int = 8
    warmup_steps: int = 2000
    warmup_batch: int = 16
    buffer_capacity: int = 4000
    max_rounds: int = 200
    max_minutes: float = 60.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "network": network_to_dict(self.network)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConformerRunConfig:
        d = dict(d)
        return cls(
            **{k: v for k, v in d.items() if k not in _NESTED},
            selection=MoleculeFilter(**{**d["selection"], "elements": tuple(d["selection"]["elements"])}),
            schedule=GeometricNoiseSchedule(**d["schedule"]),
            network=network_from_dict(d["network"]),
            trainer=TrainerConfig(**d["trainer"]),
            train_grid=GridConfig(**d["train_grid"]),
            eval_grid=GridConfig(**d["eval_grid"]),
        )


_NESTED = {"selection", "schedule", "network", "trainer", "train_grid", "eval_grid"}


def tensor_product_network() -> TensorProductConfig:
    """The e3nn tensor-product alternative to the default EGNN 4x64, of a similar parameter count
    (``benchmarks/results/control_networks.md``)."""
    return TensorProductConfig(
        node_features=ATOM_FEATURES, edge_features=PAIR_FEATURES, num_layers=4, scalars=48, vectors=16, radial_hidden=48
    )


def training_systems(config: ConformerRunConfig, data_dir: Path, seed: int) -> list[MolecularSystem]:
    path = Path(config.training_smiles)
    path = path if path.is_absolute() else data_dir / path
    molecules = load_training_molecules(
        path, data_dir=data_dir, selection=config.selection, limit=config.num_molecules, seed=seed
    )
    return [molecular_system(mol_from_smiles(m.smiles), system_id=i) for i, m in enumerate(molecules)]


def build_conformer_trainer(
    config: ConformerRunConfig,
    systems: list[MolecularSystem],
    seed: int,
    *,
    energy_options: dict[str, Any] | None = None,
    energy: EnergyModel | None = None,
) -> AdjointSamplingTrainer:
    """The trainer of a run (initial weights from ``seed``); ``energy`` replaces the configuration's energy model
    (e.g. the Redis trainer's stand-in, whose evaluations happen in ``worker energy`` processes)."""
    torch.manual_seed(seed)
    if energy is None:
        options = {"workers": config.energy_workers} if config.energy_model in ("xtb", "gfn1-xtb") else {}
        energy = build_energy_model(config.energy_model, **{**options, **(energy_options or {})})
    return AdjointSamplingTrainer(
        control=build_control(config.network),
        target=EnergyTarget(model=energy, chemistry={s.system_id: s.chemistry for s in systems}),
        buffer=InMemoryReplayBuffer(config.buffer_capacity),
        schedule=config.schedule,
        integrator=config.train_grid.build_integrator(config.schedule),
        systems=[s.graph for s in systems],
        config=config.trainer,
        seed=seed,
    )


def warmup_batches(
    systems: list[MolecularSystem], conformers: list[Any], batch_graphs: int, seed: int
) -> list[SystemBatch]:
    """Shuffle every (molecule, ETKDG conformer) pair into batches of ``batch_graphs`` graphs."""
    pairs = [(s, torch.as_tensor(c)) for s, confs in zip(systems, conformers, strict=True) for c in confs]
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = []
    for start in range(0, len(order), batch_graphs):
        chunk = [pairs[i] for i in order[start : start + batch_graphs]]
        batch = collate([s.graph for s, _ in chunk], torch.cat([x for _, x in chunk]))
        batches.append(batch.replace(positions=batch.remove_com(batch.positions)))
    return batches


def train_conformers(
    config: ConformerRunConfig,
    *,
    data_dir: Path,
    seed: int,
    out: Path | None,
    cache_dir: Path | None = None,
    resume: Path | None = None,
    checkpoint_every: int = 10,
    show_progress: bool = True,
    energy_options: dict[str, Any] | None = None,
    init_from: Path | None = None,
) -> AdjointSamplingTrainer:
    """Warm-up (unless resuming past it), then RAM rounds until ``max_rounds`` or ``max_minutes``.

    ``init_from`` starts a new run from another conformer checkpoint's control weights (same network, fresh
    optimizer); the warm-up then runs only if ``warmup_steps > 0`` (0: straight to RAM fine-tuning, e.g. of a
    warmed-up model under another energy model or budget)."""
    start = time.perf_counter()
    systems = training_systems(config, data_dir, seed)
    log.info(
        "%d training molecules, %d to %d atoms",
        len(systems),
        min(s.num_atoms for s in systems),
        max(s.num_atoms for s in systems),
    )
    trainer = build_conformer_trainer(config, systems, seed, energy_options=energy_options)
    extra: dict[str, Any] = {"seed": seed, "warmup_loss": None}
    if resume is not None:
        payload = load_checkpoint(resume)
        if payload.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"{resume} is not a conformer-sampler checkpoint")
        if ConformerRunConfig.from_dict(payload["config"]) != config:
            raise ValueError(f"{resume} was trained with a different configuration; refusing to resume")
        restore_trainer(trainer, payload)
        extra = dict(payload.get("extra", extra))
        log.info("resumed from %s at round %d", resume, trainer.round)
    else:
        if init_from is not None:
            _load_control(trainer, config, init_from, extra)
        if config.warmup_steps > 0:
            warm_up(
                trainer,
                config,
                systems,
                extra,
                seed=seed,
                cache_dir=cache_dir,
                out=out,
                checkpoint_every=checkpoint_every,
                show_progress=show_progress,
            )
    bar = tqdm(total=config.max_rounds, initial=trainer.round, desc="RAM rounds", disable=not show_progress)
    try:
        while trainer.round < config.max_rounds and time.perf_counter() - start < 60.0 * config.max_minutes:
            trainer.set_progress(trainer.round / config.max_rounds)
            stats = trainer.run_round()
            bar.update(1)
            bar.set_postfix(
                loss=f"{stats.loss:.3g}",
                E=f"{stats.mean_energy:.3g}",
                valid=f"{stats.valid_fraction:.2f}",
                calls=stats.energy_calls,
            )
            if out is not None and checkpoint_every > 0 and trainer.round % checkpoint_every == 0:
                save_checkpoint(out, trainer, config.to_dict(), kind=CHECKPOINT_KIND, extra=extra)
    finally:
        bar.close()
        if out is not None:
            save_checkpoint(out, trainer, config.to_dict(), kind=CHECKPOINT_KIND, extra=extra)
    return trainer


def _load_control(
    trainer: AdjointSamplingTrainer, config: ConformerRunConfig, path: Path, extra: dict[str, Any]
) -> None:
    """Start from another conformer checkpoint's control weights (same network; fresh optimizer)."""
    payload = load_checkpoint(path)
    if payload.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is not a conformer-sampler checkpoint")
    source = ConformerRunConfig.from_dict(payload["config"])
    if source.network != config.network:
        raise ValueError(
            f"{path} has network {source.network}, this run {config.network}: cannot start from its weights"
        )
    trainer.control.load_state_dict(payload["control"])
    extra["init_from"] = {"path": str(path), "round": payload.get("round"), "extra": payload.get("extra")}
    log.info("control initialised from %s", path)


def warm_up(
    trainer: AdjointSamplingTrainer,
    config: ConformerRunConfig,
    systems: list[MolecularSystem],
    extra: dict[str, Any],
    *,
    seed: int,
    cache_dir: Path | None,
    out: Path | None,
    checkpoint_every: int,
    show_progress: bool,
    stop: Callable[[], bool] | None = None,
) -> bool:
    """Bridge matching on cached ETKDG conformers, in chunks of 50 steps; a snapshot every ``50 N`` steps.

    Continues from ``extra["warmup_steps_done"]`` (a multiple of 50, as snapshots record it; 0 when absent);
    ``stop`` is asked before each chunk. Returns whether the warm-up is complete (``False``: stopped, with
    ``extra`` recording how far it got)."""
    chunk = 50
    first = int(extra.get("warmup_steps_done") or 0)
    if first >= config.warmup_steps:
        return True
    confs = embed_many(
        [s.mol for s in systems],
        config.warmup_conformers,
        seed=seed,
        workers=max(1, config.energy_workers),
        cache_dir=cache_dir,
        show_progress=show_progress,
    )
    batches = warmup_batches(systems, confs, config.warmup_batch, seed)
    t0 = time.perf_counter() - (float(extra.get("warmup_seconds") or 0.0) if first else 0.0)
    losses: list[float] = list(extra.get("warmup_loss") or []) if first else []
    bar = tqdm(total=config.warmup_steps, initial=first, desc="warm-up (bridge matching)", disable=not show_progress)
    for done in range(first, config.warmup_steps, chunk):
        if stop is not None and stop():
            bar.close()
            extra["warmup_loss"], extra["warmup_steps_done"] = losses, done
            extra["warmup_seconds"] = time.perf_counter() - t0
            log.info("warm-up stopped after %d of %d steps", done, config.warmup_steps)
            return False
        n = min(chunk, config.warmup_steps - done)
        offset = done % len(batches)  # continue the cycle where the previous chunk stopped
        rotated = batches[offset:] + batches[:offset]
        losses.append(trainer.warmup_bridge_matching(rotated, n, normalized=True))
        bar.update(n)
        bar.set_postfix(loss=f"{losses[-1]:.3g}")
        if out is not None and checkpoint_every > 0 and (done + n) % (chunk * checkpoint_every) == 0:
            extra["warmup_loss"], extra["warmup_steps_done"] = losses, done + n
            extra["warmup_seconds"] = time.perf_counter() - t0
            save_checkpoint(out, trainer, config.to_dict(), kind=CHECKPOINT_KIND, extra=extra)
    bar.close()
    extra["warmup_steps_done"] = config.warmup_steps
    extra["warmup_loss"] = losses
    extra["warmup_seconds"] = time.perf_counter() - t0
    log.info(
        "warm-up: %d steps in %.0f s, loss %.3g -> %.3g",
        config.warmup_steps,
        extra["warmup_seconds"],
        losses[0],
        losses[-1],
    )
    return True
