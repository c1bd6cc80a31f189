"""SMILES in, checked low-energy conformers out: the amortized sampler at inference time.

Pipeline: parse the SMILES; integrate the controlled SDE for ``K`` copies of the molecule; check every
conformer's connectivity and stereochemistry (reflecting mirror images, dropping the rest with reasons);
optionally relax with the energy model; score energies; sort; prune near-duplicates by heavy-atom RMSD and
apply an energy window.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem

from energy.protocol import EnergyModel, Structures
from energy.units import KCAL_PER_MOL_IN_EV
from inference.model import LoadedModel, ModelProvenance, SampledConformers, SamplingRequest
from molecules.graph import molecular_system
from molecules.repair import RepairConfig, RepairResult, repair_conformers
from molecules.smiles import mol_from_smiles
from molecules.structures import conformer_structures, with_conformers
from molecules.validity import check_conformer, stereo_spec
from sampler.networks import build_control
from sampler.state import collate
from training.checkpoint import load_checkpoint
from training.conformer_training import CHECKPOINT_KIND, ConformerRunConfig

__all__ = ["ConformerSampler", "SampledConformers", "SamplingRequest"]

log = logging.getLogger(__name__)


class ConformerSampler(LoadedModel):
    """A trained control network plus (optionally) an energy model for scoring and relaxation."""

    #: raw Cartesian samples often miss a bond length or a stereocentre: repaired unless a request says not to
    default_repair = True
    #: relaxed selection is a torsional pipeline's: a request asking for it is refused
    default_select = False

    def __init__(self, checkpoint: str | Path, *, energy: EnergyModel | None = None, device: str = "cpu") -> None:
        payload = load_checkpoint(checkpoint)
        if payload.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"{checkpoint} is a {payload.get('kind')!r} checkpoint, not a conformer sampler")
        self.config = ConformerRunConfig.from_dict(payload["config"])
        self.control = build_control(self.config.network)
        self.control.load_state_dict(payload["control"])
        self.control.eval().to(device)
        self.device = device
        self.energy = energy
        self.checkpoint = Path(checkpoint)
        #: how the network was trained: ``round``, ``energy_calls``, ``versions`` (from the checkpoint)
        self.training: dict[str, Any] = {k: payload.get(k) for k in ("round", "energy_calls", "versions")}
        self._provenance = ModelProvenance.from_checkpoint(
            self.checkpoint,
            payload,
            energy_model=self.config.energy_model,
            integration_steps=int(self.config.eval_grid.num_steps),
        )

    def sample_positions(self, mol: Chem.Mol, count: int, *, seed: int, steps: int | None = None) -> np.ndarray:
        """Raw terminal states ``[count, atoms, 3]`` (Å) for ``mol`` (explicit hydrogens, atom order kept):
        no checks, no relaxation. The benchmark scores these as they are."""
        return self._integrate(molecular_system(mol).graph, count, steps, seed)

    def refined_control(self, mol: Chem.Mol, rounds: int, *, seed: int) -> torch.nn.Module:
        """Test-time Adjoint Sampling: a copy of the amortized control fine-tuned by ``rounds`` RAM rounds
        (the checkpoint's trainer settings: ``M`` samples and ``K`` gradient steps per round) against this
        sampler's energy model, on ``mol`` alone. The loaded control is left untouched."""
        if self.energy is None:
            raise ValueError("refinement needs an energy model (it trains against its energies and forces)")
        if rounds < 1:
            raise ValueError(f"refine rounds must be at least 1, got {rounds}")
        from buffer.memory import InMemoryReplayBuffer
        from energy.target import EnergyTarget
        from sampler.trainer import AdjointSamplingTrainer

        system = molecular_system(mol)
        control = copy.deepcopy(self.control).train()
        trainer = AdjointSamplingTrainer(
            control=control,
            target=EnergyTarget(model=self.energy, chemistry={system.system_id: system.chemistry}),
            buffer=InMemoryReplayBuffer(self.config.buffer_capacity),
            schedule=self.config.schedule,
            integrator=self.config.train_grid.build_integrator(self.config.schedule),
            systems=[system.graph],
            config=self.config.trainer,
            seed=seed,
        )
        for r in range(rounds):
            trainer.set_progress(r / rounds)
            stats = trainer.run_round()
            log.info("refine %d/%d: %s", r + 1, rounds, stats.line())
        return control.eval()

    def _integrate(
        self, system_graph: Any, count: int, steps: int | None, seed: int, control: torch.nn.Module | None = None
    ) -> np.ndarray:
        grid = self.config.eval_grid
        if steps is not None:
            grid = type(grid)(kind=grid.kind, num_steps=steps, integrator=grid.integrator)
        integrator = grid.build_integrator(self.config.schedule)
        start = collate([system_graph] * count).to(self.device)
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            x1 = integrator.sample(control or self.control, start, generator)
        return x1.positions.detach().cpu().double().numpy().reshape(count, -1, 3)

    def sample(self, request: SamplingRequest) -> SampledConformers:
        if request.num_conformers < 1:
            raise ValueError("num_conformers must be at least 1")
        if request.relaxed_selection:
            raise ValueError("relaxed selection (select) needs the torsional model, not the Cartesian one")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        mol = mol_from_smiles(request.smiles, fragments=request.fragments)
        system = molecular_system(mol)
        control = None
        if request.refine_rounds:
            control = self.refined_control(mol, request.refine_rounds, seed=request.seed)
            timings["refine"] = time.perf_counter() - t0
            t0 = time.perf_counter()
        raw = self._integrate(system.graph, request.num_conformers, request.steps, request.seed, control)
        timings["sample"] = time.perf_counter() - t0
        return finish_samples(mol, raw, request, self.energy, timings, mmff_relax=bool(request.mmff_relax))


def _mmff_relax(
    mol: Chem.Mol, accepted: list[np.ndarray], spec: Any, rejected: dict[str, int]
) -> tuple[list[np.ndarray], int]:
    """RDKit MMFF94 (200 iterations) on every accepted conformer; one that then fails the checks is rejected
    with reason ``after MMFF94 relaxation: ...``. A molecule MMFF cannot type keeps its conformers (logged)."""
    from energy.mmff import mmff_optimize

    relaxed = with_conformers(mol, accepted)
    try:
        mmff_optimize(relaxed, max_iters=200)
    except ValueError as exc:
        log.info("MMFF94 relaxation skipped: %s", exc)
        return accepted, 0
    kept = []
    for conf in relaxed.GetConformers():
        check = check_conformer(mol, conf.GetPositions(), spec, allow_clashes=True)
        if check.ok:
            kept.append(check.positions)
        else:
            key = "after MMFF94 relaxation: " + (check.reason or "rejected").split(":")[0]
            rejected[key] = rejected.get(key, 0) + 1
    return kept, len(accepted)


def _repair(mol: Chem.Mol, raw: np.ndarray, max_iters: int) -> tuple[np.ndarray, RepairResult | None, str | None]:
    """:func:`molecules.repair.repair_conformers` on the raw samples: MMFF94 from ``mol``'s own bond graph
    (bond lengths and angles), then the input's stereochemistry enforced where a configuration came out
    wrong. A molecule MMFF cannot type keeps its raw samples, with the reason."""
    try:
        result = repair_conformers(mol, raw, RepairConfig(max_iters=max_iters))
    except ValueError as exc:
        log.info("repair skipped: %s", exc)
        return raw, None, str(exc)
    return result.positions, result, None


def _prune(mol: Chem.Mol, positions: list[np.ndarray], threshold: float) -> list[int]:
    """Greedy pruning in energy order: keep a conformer unless it is within ``threshold`` Å heavy-atom RMSD
    (symmetry-aware, optimal proper alignment) of one already kept."""
    from molecules.rmsd import best_rmsd_matrix, heavy_atom_mappings

    heavy, mappings = heavy_atom_mappings(mol)
    coords = np.stack(positions)[:, heavy]
    rmsd = best_rmsd_matrix(coords, coords, mappings)
    kept: list[int] = []
    for i in range(len(positions)):
        if all(rmsd[i, j] >= threshold for j in kept):
            kept.append(i)
    return kept


def finish_samples(
    mol: Chem.Mol,
    raw: np.ndarray,
    request: SamplingRequest,
    energy: EnergyModel | None,
    timings: dict[str, float],
    *,
    allow_clashes: bool = False,
    mmff_relax: bool = False,
) -> SampledConformers:
    """Everything after the model's raw samples ``[K, atoms, 3]``, shared by every conformer model: optional
    MMFF94 repair, connectivity and stereo checks (mirror images reflected), scoring or relaxation with
    ``energy``, the energy window and RMSD pruning. ``allow_clashes``: steric clashes are counted, not rejected
    (for models whose covalent bonds cannot break). ``mmff_relax``: a fast MMFF94 relaxation (RDKit, at most
    200 iterations) of every accepted conformer before scoring, checked again afterwards."""
    t0 = time.perf_counter()
    repaired, stereo_repaired, repair_skipped = 0, 0, None
    if request.repair:
        t0 = time.perf_counter()
        raw, repair, repair_skipped = _repair(mol, raw, request.repair_iters)
        if repair is not None:
            repaired, stereo_repaired = len(raw), repair.stereo_fixed
        timings["repair"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    spec = stereo_spec(mol)
    accepted: list[np.ndarray] = []
    rejected: dict[str, int] = {}
    reflected = 0
    clashes = 0
    for pos in raw:
        check = check_conformer(mol, pos, spec, allow_clashes=allow_clashes)
        if check.ok:
            accepted.append(check.positions)
            reflected += int(check.reflected)
            clashes += int(check.clash is not None)
        else:
            key = (check.reason or "rejected").split(":")[0]
            rejected[key] = rejected.get(key, 0) + 1
    timings["check"] = time.perf_counter() - t0
    mmff_relaxed = 0
    if mmff_relax and accepted:
        t0 = time.perf_counter()
        accepted, mmff_relaxed = _mmff_relax(mol, accepted, spec, rejected)
        clashes = sum(int(check_conformer(mol, p, spec, allow_clashes=True).clash is not None) for p in accepted)
        timings["mmff_relax"] = time.perf_counter() - t0
    out = SampledConformers(
        mol=with_conformers(mol, accepted),
        energies_ev=[],
        reflected=reflected,
        rejected=rejected,
        repaired=repaired,
        stereo_repaired=stereo_repaired,
        repair_skipped=repair_skipped,
        clashes=clashes,
        mmff_relaxed=mmff_relaxed,
    )
    if not accepted or energy is None:
        out.seconds = timings
        return out

    t0 = time.perf_counter()
    structures = conformer_structures(out.mol)
    energies, positions, keep = _score(energy, structures, request, rejected)
    timings["relax" if request.relax else "energy"] = time.perf_counter() - t0
    order = np.argsort(energies[keep])
    kept_pos = [positions[i] for i in np.flatnonzero(keep)[order]]
    kept_e = energies[keep][order]
    if request.relax:  # relaxation can break a bond or invert a centre: check again
        recheck = [check_conformer(mol, p, spec) for p in kept_pos]
        bad = [not c.ok for c in recheck]
        for c in recheck:
            if not c.ok:
                key = "after relaxation: " + (c.reason or "rejected").split(":")[0]
                rejected[key] = rejected.get(key, 0) + 1
        kept_pos = [c.positions for c in recheck if c.ok]
        kept_e = kept_e[~np.array(bad, dtype=bool)] if bad else kept_e
    if request.energy_window is not None and len(kept_e):
        inside = (kept_e - kept_e[0]) / KCAL_PER_MOL_IN_EV <= request.energy_window
        out.outside_window = int((~inside).sum())
        kept_pos, kept_e = [p for p, ok in zip(kept_pos, inside, strict=True) if ok], kept_e[inside]
    if request.prune_rms is not None and len(kept_pos) > 1:
        t1 = time.perf_counter()
        chosen = _prune(mol, kept_pos, request.prune_rms)
        out.pruned = len(kept_pos) - len(chosen)
        kept_pos, kept_e = [kept_pos[i] for i in chosen], kept_e[chosen]
        timings["prune"] = time.perf_counter() - t1
    out.mol = with_conformers(mol, kept_pos)
    out.energies_ev = [float(e) for e in kept_e]
    out.seconds = timings
    return out


def _score(
    energy: EnergyModel, structures: Structures, request: SamplingRequest, rejected: dict[str, int]
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    n = int(structures.num_atoms[0])
    if request.relax:
        from energy.relax import RelaxConfig, relax

        res = relax(energy, structures, RelaxConfig(fmax=request.fmax, max_steps=request.max_relax_steps))
        energies = res.energies.double().numpy()
        positions = list(res.positions.double().numpy().reshape(-1, n, 3))
        valid, reasons = res.valid.numpy(), res.reasons
    else:
        result = energy.evaluate(structures)
        energies = result.energies.double().numpy()
        positions = list(structures.positions.double().numpy().reshape(-1, n, 3))
        valid, reasons = result.valid.numpy(), result.reasons
    for ok, reason in zip(valid, reasons, strict=True):
        if not ok:
            key = f"energy: {(reason or 'invalid').split(':')[0]}"
            rejected[key] = rejected.get(key, 0) + 1
    keep = valid & np.isfinite(energies)
    return energies, positions, keep
