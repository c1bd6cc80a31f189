"""Training the torsional conformer sampler (ALGORITHM.md section 6b): bridge-matching warm-up on the torsions
of ETKDG + MMFF94 conformers, then Reciprocal Adjoint Matching against an energy model, over many training
molecules at once.

Only the rotatable torsions are learned; bond lengths, angles, rings and stereocentres stay those of the
seed conformers (MMFF94-relaxed ETKDG embeddings, several per molecule where ring shapes differ), so every
sample is valid by construction. Each (molecule, seed) pair is one *system* of the replay buffer: a sample is
the torsion vector ``phi_1`` of one system with its lean adjoint target
``-clip(dE/dphi / tau + d log p_1^base / dphi)``, where ``dE/dphi`` is the torque of the Cartesian gradient
about each bond (the vector–Jacobian product through ``x(phi)``).

A round: draw ``molecules_per_round`` systems, ``copies`` samples each, with the current control (one batched
Euler–Maruyama integration on the torus), evaluate the energy once per sample, push into the buffer, then take
``gradient_steps`` RAM steps on batches drawn from the buffer. The config is stored whole in every checkpoint;
resume restores weights, optimizer, buffer and random state exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem
from tqdm import tqdm

from buffer.memory import InMemoryReplayBuffer
from energy.mmff import mmff_properties
from energy.protocol import EnergyModel, Structures
from energy.registry import build_energy_model
from molecules.acyl_isomers import AcylIsomers, acyl_isomers_or_none, choose_acyl_isomers
from molecules.dataset import MoleculeFilter, load_training_molecules
from molecules.etkdg import embed
from molecules.features import ATOM_FEATURES
from molecules.smiles import mol_from_smiles
from molecules.structures import spin_multiplicity, total_charge
from molecules.torsions import BOND_FEATURES, embed_seeds, torsion_system
from sampler.grids import UniformGrid
from sampler.torsion_geometry import (
    TorsionBatch,
    TorsionSystem,
    collate_torsion_systems,
    dihedral,
    torsion_positions,
    torsion_torque,
)
from sampler.torsion_loss import (
    flat_bottom_scale,
    torsion_adjoint_target,
    torsion_bridge_matching_loss,
    torsion_ram_loss,
)
from sampler.torsion_network import (
    TorsionControlConfig,
    TorsionControlNetwork,
    torsion_network_from_dict,
    torsion_network_to_dict,
)
from sampler.torsion_replay import TorsionSamples
from sampler.torsion_sde import TorsionControl, TorusVarianceMatchedEuler
from sampler.torus import TorusBase
from training.checkpoint import load_checkpoint, save_checkpoint
from training.torsion_evaluation import relax_at_torsions

__all__ = [
    "CHECKPOINT_KIND",
    "TorsionalRunConfig",
    "TorsionalTrainer",
    "bind_control",
    "config_from_dict",
    "config_to_dict",
    "molecule_systems",
    "train_torsional",
]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "torsional-conformers"
_RELAXABLE = ("mmff",)


@dataclass(frozen=True, kw_only=True)
class TorsionalRunConfig:
    """Everything that defines a torsional training run.

    Attributes:
        energy_model: registry name of the training energy (``mmff``, ``ani2xt``, ``xtb``, ...).
        tau_ev: temperature of the target ``exp(-E / tau)`` in eV (kT at 298 K is 0.0257 eV).
        training_smiles, selection, num_molecules: the training molecules (SPICE train, benchmark molecules
            held out; a seeded random subset of ``num_molecules``).
        num_seeds: ETKDG embeddings per molecule, MMFF94-relaxed, kept where their ring shapes differ.
        network: the torsion control network.
        sde_steps: Euler–Maruyama steps on the torus, in training and (by default) at inference.
        max_grad: per-torsion clip of ``dg/dphi`` (published: 200).
        molecules_per_round, copies: fresh samples per round = their product.
        gradient_steps, batch_size: RAM steps per round and buffer samples per step.
        buffer_size: replay-buffer capacity (samples).
        learning_rate, grad_clip_norm: Adam and the gradient-norm clip.
        warmup_conformers, warmup_steps, warmup_batch: ETKDG + MMFF94 conformers per molecule whose torsions
            the bridge-matching warm-up regresses onto, its steps and samples per step (0 steps: no warm-up).
        max_rounds: the RAM budget.
        relax_iterations: ``0``: the target is the energy of rigid rotations of the seed, ``E(x(phi))``.
            ``N > 0``: the relaxed torsional surface ``min {E(x) : dihedrals(x) = phi}``, approximated by N
            MMFF94 minimizer steps with the rotatable dihedrals held (:func:`energy.mmff.mmff_torsion_relax`),
            its gradient the torque at the relaxed geometry (envelope theorem). MMFF94 training energy only.
        window_ev: ``0``: the target is ``exp(-E / tau)``. ``W > 0``: the flat-bottomed target
            ``exp(-F / tau)``, ``F = tau softplus((E - E_seed - W) / tau)``: uniform over every torsion state
            within ``W`` of its seed's energy (the control's breadth), the Boltzmann law at ``tau`` beyond it
            (:func:`sampler.torsion_loss.flat_bottom_scale`).
        acyl_rule: put every fresh sample's acyl bonds (amides, esters, acids) on isomers drawn at room
            temperature before its energy is taken, as inference does (:func:`molecules.acyl_isomers.
            choose_acyl_isomers`), so that the other torsions are learned beside the isomers the product
            returns rather than beside the network's own (``False``: the network's own, as before).
        dtype: ``float32`` or ``float64`` for the network and the map ``x(phi)``.
    """

    energy_model: str = "mmff"
    tau_ev: float = 0.05
    training_smiles: str = "spice/spice_train.txt"
    selection: MoleculeFilter = field(default_factory=MoleculeFilter)
    num_molecules: int = 256
    num_seeds: int = 4
    network: TorsionControlConfig = field(
        default_factory=lambda: TorsionControlConfig(node_features=ATOM_FEATURES, edge_features=BOND_FEATURES)
    )
    sde_steps: int = 40
    max_grad: float = 200.0
    molecules_per_round: int = 16
    copies: int = 8
    gradient_steps: int = 40
    batch_size: int = 32
    buffer_size: int = 8192
    learning_rate: float = 1e-3
    grad_clip_norm: float = 1.0
    warmup_conformers: int = 16
    warmup_steps: int = 400
    warmup_batch: int = 32
    max_rounds: int = 300
    relax_iterations: int = 0
    window_ev: float = 0.0
    acyl_rule: bool = False
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.tau_ev <= 0:
            raise ValueError(f"tau_ev must be > 0, got {self.tau_ev}")
        for name in ("num_molecules", "num_seeds", "sde_steps", "molecules_per_round", "copies", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.relax_iterations < 0:
            raise ValueError(f"relax_iterations must be >= 0, got {self.relax_iterations}")
        if self.window_ev < 0:
            raise ValueError(f"window_ev must be >= 0, got {self.window_ev}")
        if self.relax_iterations and self.energy_model not in _RELAXABLE:
            raise ValueError(
                f"relax_iterations needs an MMFF94 training energy (relaxation and energy must be one surface), "
                f"got energy_model {self.energy_model!r}"
            )
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float32 if self.dtype == "float32" else torch.float64


def config_to_dict(config: TorsionalRunConfig) -> dict[str, Any]:
    """Plain data (no module paths) for the checkpoint."""
    d = dataclasses.asdict(config)
    d["network"] = torsion_network_to_dict(config.network)
    d["selection"] = dataclasses.asdict(config.selection)
    return d


def config_from_dict(d: dict[str, Any]) -> TorsionalRunConfig:
    d = dict(d)
    d["network"] = torsion_network_from_dict(d["network"])
    d["selection"] = MoleculeFilter(**d["selection"])
    return TorsionalRunConfig(**d)


@dataclass(frozen=True)
class MoleculeSystems:
    """One molecule's torsional systems (one per kept seed) and what the energy model needs."""

    mol: Chem.Mol
    systems: tuple[TorsionSystem, ...]
    connection_table: str


def molecule_systems(
    mol: Chem.Mol, *, num_seeds: int, first_id: int, seed: int, dtype: torch.dtype = torch.float32
) -> MoleculeSystems:
    """MMFF94-relaxed ETKDG seeds of ``mol`` (explicit hydrogens), one :class:`TorsionSystem` per seed with ids
    ``first_id, first_id + 1, ...``. Raises ``ValueError`` when ETKDG cannot embed the molecule."""
    seeds = embed_seeds(mol, num_seeds, seed=seed + 1, mmff_relax=True)  # RDKit refuses randomSeed 0
    systems = tuple(torsion_system(mol, seeds[k], system_id=first_id + k, dtype=dtype) for k in range(seeds.shape[0]))
    return MoleculeSystems(mol, systems, Chem.MolToMolBlock(mol, includeStereo=True))


def bind_control(network: TorsionControlNetwork, batch: TorsionBatch) -> TorsionControl:
    """The :class:`sampler.torsion_sde.TorsionControl` of ``batch``: ``v(t, phi) = net(t, x(phi), graph)``."""

    index = network.graph_index(
        batch.node_attr, batch.node_batch, batch.num_graphs, batch.edge_index, batch.torsion_atoms, batch.torsion_batch
    )

    def control(t: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        x = torsion_positions(batch, phi)
        return network(
            t,
            x,
            batch.node_attr,
            batch.edge_index,
            batch.edge_attr,
            batch.node_batch,
            batch.torsion_atoms,
            batch.torsion_batch,
            index,
        )

    return control


class TorsionalTrainer:
    """The alternation loop over a fixed set of torsional systems (see the module docstring)."""

    def __init__(
        self,
        config: TorsionalRunConfig,
        molecules: Sequence[MoleculeSystems],
        energy: EnergyModel,
        *,
        seed: int,
        warmup_torsions: dict[int, torch.Tensor] | None = None,
    ) -> None:
        self.config = config
        self.molecules = list(molecules)
        self.systems = [s for m in self.molecules for s in m.systems]
        self._owner = [i for i, m in enumerate(self.molecules) for _ in m.systems]
        for k, s in enumerate(self.systems):
            if s.system_id != k:
                raise ValueError("system ids must be 0 .. S-1 in molecule order")
        self.energy = energy
        self.base = TorusBase()
        self.integrator = TorusVarianceMatchedEuler(
            schedule=self.base.schedule, grid=UniformGrid(num_steps=config.sde_steps)
        )
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the run's seed alone
            torch.manual_seed(seed)
            self.network = TorsionControlNetwork(config.network).to(config.torch_dtype)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.learning_rate)
        self.buffer = InMemoryReplayBuffer(config.buffer_size)
        self.generator = torch.Generator().manual_seed(seed)
        self.warmup_torsions = warmup_torsions or {}
        self.round = 0
        self.warmup_done = 0
        self.energy_calls = 0
        self.wall_seconds = 0.0
        self.history: list[dict[str, float]] = []
        self._properties: dict[int, Any] = {}  # MMFF94 typing per molecule, for the relaxed target
        self._seed_energies: dict[int, float] = {}  # energy of each system's seed, for the flat-bottomed target
        self._isomers: dict[int, list[AcylIsomers]] = {}  # acyl isomers per molecule, for the acyl rule

    # ----------------------------------------------------------------- sampling and energies
    def collate(self, system_ids: Sequence[int]) -> TorsionBatch:
        return collate_torsion_systems([self.systems[i] for i in system_ids]).to(dtype=self.config.torch_dtype)

    def sample(self, system_ids: Sequence[int]) -> tuple[TorsionBatch, torch.Tensor]:
        """``phi_1`` for one sample of each listed system, in one batched integration (then the acyl rule,
        where ``config.acyl_rule``)."""
        batch = self.collate(system_ids)
        self.network.eval()
        phi = self.integrator.sample(
            bind_control(self.network, batch),
            batch.torsion_batch,
            batch.num_graphs,
            dtype=self.config.torch_dtype,
            generator=self.generator,
        )
        self.network.train()
        if self.config.acyl_rule:
            phi = self.apply_acyl_rule(batch, phi)
        return batch, phi

    def acyl_isomers(self, owner: int) -> list[AcylIsomers]:
        """The acyl isomers of training molecule ``owner`` (relaxed MMFF94 energies, computed once)."""
        if owner not in self._isomers:
            m = self.molecules[owner]
            self._isomers[owner] = acyl_isomers_or_none(m.mol, m.systems)
        return self._isomers[owner]

    def apply_acyl_rule(self, batch: TorsionBatch, phi: torch.Tensor) -> torch.Tensor:
        """``phi`` with each sample's acyl torsions put on isomers drawn at room temperature (draws from
        ``self.generator``), as :meth:`inference.torsional_sampling.TorsionalSampler.sample_positions` does."""
        counts = batch.torsions_per_graph.tolist()
        parts = list(torch.split(phi, counts))
        for g, system_id in enumerate(batch.system_ids.tolist()):
            isomers = self.acyl_isomers(self._owner[int(system_id)])
            if isomers and counts[g]:
                parts[g] = choose_acyl_isomers(parts[g], 1, isomers, self.generator)
        return torch.cat(parts) if parts else phi

    def structures(self, batch: TorsionBatch, positions: torch.Tensor) -> Structures:
        mols = [self.molecules[self._owner[int(i)]] for i in batch.system_ids]
        return Structures(
            positions=positions.detach().to(torch.float64),
            num_atoms=batch.num_nodes,
            atomic_numbers=torch.tensor([a.GetAtomicNum() for m in mols for a in m.mol.GetAtoms()], dtype=torch.long),
            total_charge=torch.tensor([total_charge(m.mol) for m in mols], dtype=torch.long),
            multiplicity=torch.tensor([spin_multiplicity(m.mol) for m in mols], dtype=torch.long),
            connection_tables=tuple(m.connection_table for m in mols),
        )

    def relaxed_positions(self, batch: TorsionBatch, x: torch.Tensor) -> torch.Tensor:
        """Each sample relaxed by MMFF94 with its rotatable dihedrals held (``config.relax_iterations`` steps)."""
        owners = [self._owner[int(i)] for i in batch.system_ids.tolist()]
        for owner in set(owners) - set(self._properties):
            self._properties[owner] = mmff_properties(self.molecules[owner].mol)
        mols = [self.molecules[o].mol for o in owners]
        props = [self._properties[o] for o in owners]
        return relax_at_torsions(mols, batch, x, self.config.relax_iterations, props)

    def seed_energies(self, batch: TorsionBatch) -> torch.Tensor:
        """``[G]`` the training energy of each sample's seed geometry (eV), computed once per system."""
        ids = [int(i) for i in batch.system_ids]
        if any(i not in self._seed_energies for i in ids):
            result = self.energy.evaluate(self.structures(batch, batch.positions.to(torch.float64)))
            for i, e, ok in zip(ids, result.energies.tolist(), result.valid.tolist(), strict=True):
                if not ok:
                    raise ValueError(f"the seed of system {i} has no valid training energy")
                self._seed_energies.setdefault(i, float(e))
        return torch.tensor([self._seed_energies[i] for i in ids], dtype=torch.float64)

    def evaluate(self, batch: TorsionBatch, phi: torch.Tensor) -> TorsionSamples:
        """Energies and lean adjoint targets of terminal samples; invalid ones are dropped (logged)."""
        with torch.no_grad():
            x = torsion_positions(batch, phi).to(torch.float64)
        if self.config.relax_iterations:
            x = self.relaxed_positions(batch, x)
        result = self.energy.evaluate(self.structures(batch, x))
        self.energy_calls += batch.num_graphs
        grad_x = -result.forces.to(torch.float64)
        grad_phi = torsion_torque(batch.to(dtype=torch.float64), x, grad_x)
        if self.config.window_ev > 0:
            ceiling = self.seed_energies(batch) + self.config.window_ev
            scale = flat_bottom_scale(result.energies.to(torch.float64), ceiling, self.config.tau_ev)
            grad_phi = grad_phi * scale.nan_to_num(1.0)[batch.torsion_batch]
        target = torsion_adjoint_target(
            phi.to(torch.float64), grad_phi, tau=self.config.tau_ev, base=self.base, max_grad=self.config.max_grad
        )
        keep = result.valid.clone()
        if not bool(keep.all()):
            log.warning("%d of %d samples had no valid energy; dropped", int((~keep).sum()), len(keep))
        counts = batch.torsions_per_graph
        keep_t = keep[batch.torsion_batch]
        dtype = self.config.torch_dtype
        return TorsionSamples(
            system_ids=batch.system_ids[keep],
            num_torsions=counts[keep],
            phi=phi[keep_t].to(dtype),
            adjoint=target[keep_t].to(dtype),
            energies=result.energies[keep].to(dtype),
            model_version=torch.full((int(keep.sum()),), self.round, dtype=torch.long),
        )

    # ----------------------------------------------------------------- the losses
    def _step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip_norm)
        self.optimizer.step()
        return float(loss.detach())

    def warmup_step(self) -> float:
        """One bridge-matching step on data torsions (ETKDG + MMFF94 conformers of the drawn molecules)."""
        c = self.config
        ids = torch.randint(len(self.systems), (c.warmup_batch,), generator=self.generator).tolist()
        batch = self.collate(ids)
        phis = []
        for i in ids:
            data = self.warmup_torsions[self._owner[i]]
            k = int(torch.randint(data.shape[0], (1,), generator=self.generator))
            phis.append(data[k])
        phi1 = torch.cat(phis).to(c.torch_dtype)
        loss = torsion_bridge_matching_loss(
            bind_control(self.network, batch),
            phi1,
            batch.torsion_batch,
            batch.num_graphs,
            base=self.base,
            generator=self.generator,
            normalized=True,
        ).loss
        self.warmup_done += 1
        return self._step(loss)

    def ram_loss(self) -> torch.Tensor:
        """The RAM loss of one batch drawn from the buffer (draws and bridge noise from ``self.generator``)."""
        c = self.config
        drawn = TorsionSamples.from_replay(self.buffer.sample(c.batch_size, self.generator))
        batch = self.collate(drawn.system_ids.tolist())
        return torsion_ram_loss(
            bind_control(self.network, batch),
            drawn.phi.to(c.torch_dtype),
            drawn.adjoint.to(c.torch_dtype),
            batch.torsion_batch,
            batch.num_graphs,
            base=self.base,
            generator=self.generator,
        ).loss

    def ram_step(self) -> float:
        return self._step(self.ram_loss())

    def refresh(self) -> TorsionSamples:
        """Fresh samples of ``molecules_per_round`` random systems, ``copies`` each, pushed into the buffer."""
        c = self.config
        drawn = torch.randint(len(self.systems), (c.molecules_per_round,), generator=self.generator)
        batch, phi = self.sample(drawn.repeat_interleave(c.copies).tolist())
        samples = self.evaluate(batch, phi)
        if samples.num_samples:
            self.buffer.push(samples.to_replay())
        return samples

    def train_round(self) -> dict[str, float]:
        start = time.perf_counter()
        samples = self.refresh()
        t_sample = time.perf_counter() - start
        losses = [self.ram_step() for _ in range(self.config.gradient_steps)]
        self.round += 1
        seconds = time.perf_counter() - start
        self.wall_seconds += seconds
        e = samples.energies.double()
        stats = {
            "round": float(self.round),
            "loss": float(np.mean(losses)) if losses else math.nan,
            "energy_median_ev": float(e.median()) if e.numel() else math.nan,
            "valid": float(samples.num_samples),
            "sample_seconds": t_sample,
            "seconds": seconds,
        }
        self.history.append(stats)
        return stats

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "control": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "round": self.round,
            "energy_calls": self.energy_calls,
            "wall_seconds": self.wall_seconds,
            "history": {"rounds": list(self.history), "warmup_done": self.warmup_done},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["control"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.round = int(state["round"])
        self.energy_calls = int(state["energy_calls"])
        self.wall_seconds = float(state["wall_seconds"])
        self.history = list(state["history"]["rounds"])
        self.warmup_done = int(state["history"]["warmup_done"])


def warmup_data(mol: Chem.Mol, systems: Sequence[TorsionSystem], num_conformers: int, seed: int) -> torch.Tensor:
    """``[C, m]`` dihedrals of ``num_conformers`` ETKDG + MMFF94 conformers at the molecule's torsions."""
    from energy.mmff import mmff_optimize
    from molecules.structures import with_conformers

    confs = embed(mol, num_conformers, seed + 1)
    if len(confs) == 0:
        raise ValueError("ETKDG could not embed the molecule")
    m = with_conformers(mol, confs)
    mmff_optimize(m, max_iters=200)
    x = torch.as_tensor(np.stack([c.GetPositions() for c in m.GetConformers()]), dtype=torch.float64)
    atoms = systems[0].torsion_atoms
    return torch.stack([dihedral(xi, atoms) for xi in x])


def build_molecules(
    config: TorsionalRunConfig, data_dir: Path, *, seed: int, show_progress: bool = True
) -> tuple[list[MoleculeSystems], dict[int, torch.Tensor]]:
    """The training molecules' systems (molecules without rotatable torsions or that fail to embed are skipped,
    logged) and, for the warm-up, their ETKDG + MMFF94 torsions."""
    path = Path(config.training_smiles)
    if not path.is_absolute():
        path = data_dir / path
    entries = load_training_molecules(
        path, data_dir=data_dir, selection=config.selection, limit=config.num_molecules, seed=seed
    )
    molecules: list[MoleculeSystems] = []
    warm: dict[int, torch.Tensor] = {}
    skipped: dict[str, int] = {}
    next_id = 0
    for entry in tqdm(entries, desc="seeding molecules", disable=not show_progress, leave=False):
        try:
            mol = mol_from_smiles(entry.smiles)
            ms = molecule_systems(
                mol, num_seeds=config.num_seeds, first_id=next_id, seed=seed, dtype=config.torch_dtype
            )
            if ms.systems[0].num_torsions == 0:
                skipped["no rotatable torsion"] = skipped.get("no rotatable torsion", 0) + 1
                continue
            if config.warmup_steps > 0:
                warm[len(molecules)] = warmup_data(mol, ms.systems, config.warmup_conformers, seed)
        except ValueError as exc:
            reason = str(exc).split(":")[0][:60]
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        molecules.append(ms)
        next_id += len(ms.systems)
    log.info(
        "%d training molecules, %d systems (seeds); skipped %s",
        len(molecules),
        next_id,
        skipped or "none",
    )
    if not molecules:
        raise ValueError("no usable training molecule")
    return molecules, warm


def _torsions_per_system(systems: Sequence[TorsionSystem]) -> list[int]:
    return [int(s.torsion_atoms.shape[0]) for s in systems]


def _check_same_systems(path: Path | None, payload: dict[str, Any], systems: Sequence[TorsionSystem]) -> None:
    """Refuse to resume onto other training systems than the run's (the seeding code changed since the
    checkpoint was written): its replay buffer and sample ids would not fit them."""
    now = _torsions_per_system(systems)
    stored = payload.get("extra", {}).get("torsions_per_system")
    entries = payload["resume"]["buffer"].get("entries")
    mismatch = stored is not None and list(stored) != now
    if stored is None and entries is not None:  # older checkpoints: check the buffer's entries instead
        ids, counts = entries["system_ids"].long(), entries["num_nodes"].long()
        mismatch = bool(ids.numel()) and (int(ids.max()) >= len(now) or bool((torch.tensor(now)[ids] != counts).any()))
    if mismatch:
        before = f"{len(stored)} systems" if stored is not None else "its replay buffer's"
        raise ValueError(
            f"{path} was written for other training systems ({before}) than this code builds ({len(now)} systems, "
            f"{sum(now)} torsions): the seeding changed since; start a new run, or resume with the code that wrote it"
        )


def train_torsional(
    config: TorsionalRunConfig,
    *,
    data_dir: Path,
    seed: int,
    out: Path | None,
    resume: Path | None = None,
    max_minutes: float | None = None,
    checkpoint_every: int = 10,
    show_progress: bool = True,
) -> TorsionalTrainer:
    """Warm-up then RAM rounds until ``config.max_rounds`` (or ``max_minutes`` of this call), checkpointing every
    ``checkpoint_every`` rounds and at the end. ``resume`` continues a run exactly (its stored config wins)."""
    payload = None
    if resume is not None:
        payload = load_checkpoint(resume)
        if payload.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"{resume} is a {payload.get('kind')!r} checkpoint, not {CHECKPOINT_KIND!r}")
        if "resume" not in payload:
            raise ValueError(f"{resume} holds weights only; it cannot be resumed")
        config = config_from_dict(payload["config"])
        seed = int(payload["extra"]["seed"])
    molecules, warm = build_molecules(config, data_dir, seed=seed, show_progress=show_progress)
    energy = build_energy_model(config.energy_model)
    trainer = TorsionalTrainer(config, molecules, energy, seed=seed, warmup_torsions=warm)
    if payload is not None:
        _check_same_systems(resume, payload, trainer.systems)
        trainer.load_state_dict({**payload, **payload["resume"]})
        trainer.buffer.load_state_dict(payload["resume"]["buffer"])
        torch.set_rng_state(payload["resume"]["torch_rng"])
        log.info("resumed %s at round %d (warm-up steps %d)", resume, trainer.round, trainer.warmup_done)
    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes

    def save() -> None:
        if out is not None:
            extra = {"seed": seed, "torsions_per_system": _torsions_per_system(trainer.systems)}
            save_checkpoint(out, trainer, config_to_dict(config), kind=CHECKPOINT_KIND, extra=extra)

    def out_of_time() -> bool:
        return deadline is not None and time.monotonic() > deadline

    remaining_warmup = config.warmup_steps - trainer.warmup_done
    if remaining_warmup > 0:
        bar = tqdm(
            total=config.warmup_steps,
            initial=trainer.warmup_done,
            desc="warm-up (bridge matching)",
            disable=not show_progress,
        )
        recent: list[float] = []
        while trainer.warmup_done < config.warmup_steps and not out_of_time():
            recent = [*recent[-49:], trainer.warmup_step()]
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(recent):.3f}")
            if trainer.warmup_done % 100 == 0:
                log.info("warm-up step %d: loss %.4f", trainer.warmup_done, float(np.mean(recent)))
                save()
        bar.close()
    bar = tqdm(total=config.max_rounds, initial=trainer.round, desc="RAM rounds", disable=not show_progress)
    while trainer.round < config.max_rounds and not out_of_time():
        stats = trainer.train_round()
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.3f}", E=f"{stats['energy_median_ev']:.2f}")
        log.info(
            "round %d: loss %.4f, median energy %.3f eV, %d valid, %.1f s (sampling %.1f s)",
            trainer.round,
            stats["loss"],
            stats["energy_median_ev"],
            int(stats["valid"]),
            stats["seconds"],
            stats["sample_seconds"],
        )
        if trainer.round % checkpoint_every == 0:
            save()
    bar.close()
    save()
    return trainer
