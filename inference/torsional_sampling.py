"""The torsional conformer model at inference: a SMILES in, conformers that are valid by construction out.

Seeds: MMFF94-relaxed ETKDG embeddings of the molecule (as in training, several where ring shapes differ; here
also where an acyclic nitrogen's invertomer differs, :data:`INVERTOMER_SEEDS`).
All ``K`` conformers are drawn in batched Euler–Maruyama integrations on the torus of the molecule's
rotatable torsions (seeds assigned round-robin), then mapped to Cartesian positions by ``x(phi)``: bond
lengths, angles, rings and stereocentres are the seeds', so nothing needs repairing. What follows (checks,
scoring, optional relaxation, window, pruning) is shared with every conformer model
(:func:`inference.conformer_sampling.finish_samples`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem

from energy.protocol import EnergyModel
from inference.conformer_sampling import finish_samples
from inference.model import LoadedModel, ModelProvenance, SampledConformers, SamplingRequest
from inference.options import SELECT_WITH_REPAIR
from molecules.acyl_isomers import AcylIsomers, acyl_isomers_or_none, choose_acyl_isomers
from molecules.graph import check_size
from molecules.selection import RelaxedSelection, select_relaxed
from molecules.smiles import mol_from_smiles
from molecules.structures import Scorer
from molecules.torsions import embed_seeds, torsion_system
from sampler.grids import UniformGrid
from sampler.torsion_geometry import TorsionSystem, collate_torsion_systems, torsion_positions
from sampler.torsion_network import TorsionControlNetwork
from sampler.torsion_sde import TorusVarianceMatchedEuler, latin_hypercube
from sampler.torus import TorusBase
from training.checkpoint import load_checkpoint
from training.torsional_training import (
    CHECKPOINT_KIND,
    MoleculeSystems,
    TorsionalTrainer,
    bind_control,
    config_from_dict,
)

__all__ = ["TorsionalSampler", "uniform_torsions"]

log = logging.getLogger(__name__)

#: the default share of the samples each acyl isomer keeps at least (:func:`choose_acyl_isomers`): none, the
#: Boltzmann law at 298.15 K alone. Measured on drugs_dev with amide bonds only (``python -m
#: benchmarks.torsional_knobs --variants amideoff amide0.05 amide0``; COV-R / COV-P @1.0 Å): the network's own
#: isomers 82.7 / 72.5, floor 0.05 81.4 / 76.7, floor 0 80.4 / 77.7
#: (``benchmarks/results/conformers_amide_isomers_{a,b}.md``)
ISOMER_FLOOR: float | None = 0.0

#: ETKDG starts added to the kept seeds for the acyl isomers' relaxed energies (one seed alone left the isomer
#: gap to wherever the rest of the molecule relaxed, and the rule flipped isomers with the sampling seed). Measured
#: on drugs_dev (``python -m benchmarks.torsional_knobs --variants isostarts8 [--seed 7]``; COV-R / COV-P @1.0 Å):
#: seed 42 80.3 / 77.8 -> 80.4 / 78.8, seed 7 76.0 / 74.5 -> 79.3 / 77.7
#: (``benchmarks/results/conformers_{product_lhs,isostarts}{,_seed7}.md``)
ISOMER_STARTS = 8

#: acyl torsions drawn at their isomer's planar angle (:func:`molecules.acyl_isomers.choose_acyl_isomers`)
ACYL_PLANAR = False

#: seeds kept also where they differ in an acyclic nitrogen's invertomer (:func:`molecules.torsions.embed_seeds`)
INVERTOMER_SEEDS = True


def seed_systems(
    mol: Chem.Mol, num_seeds: int, seed: int, dtype: torch.dtype, *, invertomers: bool = INVERTOMER_SEEDS
) -> list[TorsionSystem]:
    """One :class:`TorsionSystem` per kept MMFF94-relaxed ETKDG seed of ``mol`` (explicit hydrogens)."""
    seeds = embed_seeds(mol, num_seeds, seed=seed + 1, mmff_relax=True, invertomers=invertomers)
    return [torsion_system(mol, seeds[k], system_id=k, dtype=dtype) for k in range(seeds.shape[0])]


def uniform_torsions(
    mol: Chem.Mol,
    count: int,
    *,
    seed: int,
    num_seeds: int = 1,
    dtype: torch.dtype = torch.float64,
    isomer_floor: float | None = None,
    stratified: bool = False,
    invertomers: bool = INVERTOMER_SEEDS,
) -> np.ndarray:
    """The random-torsion control: the same seeds, every rotatable torsion uniform on ``[-pi, pi)``,
    ``[count, atoms, 3]``. ``isomer_floor``: then acyl isomers at room temperature as the product's
    (:func:`choose_acyl_isomers`; an ablation, not the control). ``stratified``: each torsion's ``count`` angles
    a Latin hypercube (one in each of ``count`` equal arcs, in random order): every conformer is still uniform,
    the set of them spread evenly (an ablation). ``invertomers``: the seeds' rule (:func:`seed_systems`)."""
    systems = seed_systems(mol, num_seeds, seed, dtype, invertomers=invertomers)
    batch = collate_torsion_systems([systems[k % len(systems)] for k in range(count)])
    g = torch.Generator().manual_seed(seed)
    if stratified and batch.num_torsions:
        u = latin_hypercube(count, batch.num_torsions // count, generator=g).to(dtype)
    else:
        u = torch.rand(batch.num_torsions, generator=g, dtype=dtype)
    phi = (u * 2 - 1) * torch.pi
    if isomer_floor is not None and batch.num_torsions:
        isomers = acyl_isomers_or_none(mol, systems, extra_starts=ISOMER_STARTS, seed=seed + 1)
        phi = choose_acyl_isomers(phi, count, isomers, g, floor=isomer_floor)
    return torsion_positions(batch, phi).numpy().reshape(count, -1, 3)


class TorsionalSampler(LoadedModel):
    """A trained torsion control network (checkpoint kind ``torsional-conformers``) plus an optional energy model
    for scoring and relaxation; implements :class:`inference.model.ConformerModel`."""

    #: samples keep the seeds' bonds, angles and stereocentres: nothing to repair
    default_repair = False
    #: relaxed selection (:mod:`molecules.selection`) unless a request turns it off: the pipeline that reaches the
    #: benchmark's recall bar (docs/torsional_model.md, "Relaxed selection is the default")
    default_select = True

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        energy: EnergyModel | None = None,
        device: str = "cpu",
        chunk: int = 256,
        mmff_relax: bool = True,
        isomer_floor: float | None = ISOMER_FLOOR,
        stratified: bool = False,
        isomer_starts: int = ISOMER_STARTS,
        selection: RelaxedSelection | None = None,
        acyl_planar: bool = ACYL_PLANAR,
        isomer_scorer: Scorer | None = None,
        invertomer_seeds: bool = INVERTOMER_SEEDS,
    ) -> None:
        payload = load_checkpoint(checkpoint)
        if payload.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"{checkpoint} is a {payload.get('kind')!r} checkpoint, not a torsional sampler")
        self.config = config_from_dict(payload["config"])
        self.network = TorsionControlNetwork(self.config.network).to(self.config.torch_dtype)
        self.network.load_state_dict(payload["control"])
        self.network.eval().to(device)
        self.device = device
        self.energy = energy
        self.chunk = chunk
        #: the default of the fast MMFF94 relaxation after sampling (measured to raise both recall and precision:
        #: benchmarks/results/conformers_torsional_*.md); a request's ``mmff_relax`` overrides it
        self.mmff_relax = mmff_relax
        #: acyl isomers (amides, esters, acids) at room temperature (:func:`choose_acyl_isomers`), each kept on at
        #: least this share of the samples; ``None``: the network's own isomers
        if isomer_floor is not None and not 0 <= isomer_floor <= 0.5:
            raise ValueError(f"isomer_floor must be in [0, 0.5] or None, got {isomer_floor}")
        self.isomer_floor = isomer_floor
        #: the integration noise stratified across each molecule's samples
        #: (:func:`sampler.torsion_sde.stratified_normal`): every conformer's law unchanged, the set spread evenly
        self.stratified = stratified
        #: extra ETKDG starts for the acyl isomers' relaxed energies (:func:`molecules.acyl_isomers.
        #: acyl_isomers_or_none`); 0: the kept seeds alone
        if isomer_starts < 0:
            raise ValueError(f"isomer_starts must be >= 0, got {isomer_starts}")
        self.isomer_starts = isomer_starts
        #: the acyl isomers' energies by this scorer of their MMFF94-relaxed starts (e.g. ANI-2xt's:
        #: :func:`molecules.structures.energy_scorer`) instead of MMFF94's; ``None``: MMFF94's
        self.isomer_scorer = isomer_scorer
        #: acyl torsions drawn at their isomer's planar angle (0 or pi) instead of the network's angle on it
        self.acyl_planar = acyl_planar
        #: the relaxed selection of requests that leave it on (``relaxed_selection`` None or True, with the MMFF94
        #: relaxation on: :mod:`molecules.selection`); ``None``: :class:`RelaxedSelection`'s defaults
        self.selection = selection
        #: seeds kept also where an acyclic nitrogen's invertomer differs (:func:`molecules.torsions.embed_seeds`)
        self.invertomer_seeds = invertomer_seeds
        self.base = TorusBase()
        self.checkpoint = Path(checkpoint)
        self.training: dict[str, Any] = {k: payload.get(k) for k in ("round", "energy_calls", "versions")}
        self._provenance = ModelProvenance.from_checkpoint(
            self.checkpoint, payload, energy_model=self.config.energy_model, integration_steps=self.config.sde_steps
        )

    def refined_network(
        self, mol: Chem.Mol, systems: list[TorsionSystem], rounds: int, *, seed: int
    ) -> TorsionControlNetwork:
        """Test-time Adjoint Sampling in torsion space: a copy of the amortized network fine-tuned by ``rounds``
        RAM rounds (the checkpoint's settings: ``molecules_per_round x copies`` samples and ``gradient_steps``
        steps per round, at its temperature) on this molecule's seeds alone, against this sampler's energy
        model (which may differ from the training energy: refinement adapts the model to it). The loaded
        network is left untouched."""
        if self.energy is None:
            raise ValueError("refinement needs an energy model (it trains against its energies and forces)")
        if rounds < 1:
            raise ValueError(f"refine rounds must be at least 1, got {rounds}")
        if not any(s.num_torsions for s in systems):
            return self.network
        molecule = MoleculeSystems(mol, tuple(systems), Chem.MolToMolBlock(mol, includeStereo=True))
        trainer = TorsionalTrainer(self.config, [molecule], self.energy, seed=seed)
        trainer.network.load_state_dict(self.network.state_dict())
        for _ in range(rounds):
            stats = trainer.train_round()
            log.info(
                "refine %d/%d: loss %.4g, median energy %.3f eV, %d valid",
                int(stats["round"]),
                rounds,
                stats["loss"],
                stats["energy_median_ev"],
                int(stats["valid"]),
            )
        return trainer.network.eval()

    def sample_positions(
        self,
        mol: Chem.Mol,
        count: int,
        *,
        seed: int,
        steps: int | None = None,
        refine_rounds: int = 0,
        timings: dict[str, float] | None = None,
        counts: dict[str, int] | None = None,
    ) -> np.ndarray:
        """``[count, atoms, 3]`` (Å) for ``mol`` (explicit hydrogens, atom order kept): all conformers in batched
        integrations of ``chunk`` samples, seeds round-robin. A molecule without rotatable torsions gets its
        seeds, repeated. ``refine_rounds``: first fine-tune on this molecule (:meth:`refined_network`; its
        seconds go to ``timings["refine"]``). Acyl bonds are put on isomers drawn at room temperature
        (:func:`choose_acyl_isomers`, unless ``isomer_floor`` is ``None``); how many were turned goes to
        ``counts["acyl_isomers_turned"]``."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        dtype = self.config.torch_dtype
        systems = seed_systems(mol, self.config.num_seeds, seed, dtype, invertomers=self.invertomer_seeds)
        isomers: list[AcylIsomers] = []
        if self.isomer_floor is not None and systems[0].num_torsions:
            isomers = acyl_isomers_or_none(
                mol, systems, extra_starts=self.isomer_starts, seed=seed + 1, scorer=self.isomer_scorer
            )
        network = self.network
        if refine_rounds:
            t0 = time.perf_counter()
            network = self.refined_network(mol, systems, refine_rounds, seed=seed)
            if timings is not None:
                timings["refine"] = time.perf_counter() - t0
        integrator = TorusVarianceMatchedEuler(
            schedule=self.base.schedule, grid=UniformGrid(num_steps=steps or self.config.sde_steps)
        )
        generator = torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, count, self.chunk):
            chosen = [systems[k % len(systems)] for k in range(start, min(count, start + self.chunk))]
            batch = collate_torsion_systems(chosen).to(device=self.device, dtype=dtype)
            if batch.num_torsions == 0:
                out.append(batch.positions.detach().cpu().double().numpy().reshape(len(chosen), -1, 3))
                continue
            with torch.no_grad():
                phi = integrator.sample(
                    bind_control(network, batch),
                    batch.torsion_batch,
                    batch.num_graphs,
                    dtype=dtype,
                    generator=generator,
                    stratified=self.stratified,
                )
                if isomers:
                    turned = choose_acyl_isomers(
                        phi,
                        len(chosen),
                        isomers,
                        generator,
                        floor=float(self.isomer_floor or 0),
                        planar=self.acyl_planar,
                    )
                    if counts is not None:
                        key = "acyl_isomers_turned"
                        counts[key] = counts.get(key, 0) + int((turned != phi).sum())
                    phi = turned
                x = torsion_positions(batch.to(dtype=torch.float64), phi.double())
            out.append(x.cpu().numpy().reshape(len(chosen), -1, 3))
        return np.concatenate(out)

    def selection_draws(self, mol: Chem.Mol, keep: int, selection: RelaxedSelection, **options: Any) -> np.ndarray:
        """The draws relaxed selection chooses ``keep`` from: ``selection.draws(keep)`` conformers, the sampler's
        (:meth:`sample_positions`, given ``options``: ``seed`` and the rest) then ``selection.uniform_draws(keep)``
        with every torsion uniform (:func:`uniform_torsions`, the same number of seeds, ``seed + 13``)."""
        total, uniform = selection.draws(keep), selection.uniform_draws(keep)
        parts = [self.sample_positions(mol, total - uniform, **options)] if total > uniform else []
        if uniform:
            parts.append(
                uniform_torsions(
                    mol,
                    uniform,
                    seed=options["seed"] + 13,
                    num_seeds=self.config.num_seeds,
                    invertomers=self.invertomer_seeds,
                )
            )
        return np.concatenate(parts)

    def sample(self, request: SamplingRequest) -> SampledConformers:
        if request.num_conformers < 1:
            raise ValueError("num_conformers must be at least 1")
        timings: dict[str, float] = {}
        counts: dict[str, int] = {}
        t0 = time.perf_counter()
        mol = mol_from_smiles(request.smiles, fragments=request.fragments)
        check_size(mol)  # the limit every model and the service share, before seconds of ETKDG on a huge molecule
        mmff_relax = self.mmff_relax if request.mmff_relax is None else request.mmff_relax
        wanted = self.default_select if request.relaxed_selection is None else request.relaxed_selection
        select = (self.selection or RelaxedSelection()) if wanted else None
        if select is not None and (not mmff_relax or request.repair):
            if request.relaxed_selection:  # asked for in so many words: say why it cannot be done
                raise ValueError(
                    SELECT_WITH_REPAIR
                    if request.repair
                    else "select relaxes every draw with MMFF94 itself: it needs MMFF94 relaxation on"
                )
            select = None
        options: dict[str, Any] = {
            "seed": request.seed,
            "steps": request.steps,
            "refine_rounds": request.refine_rounds,
            "timings": timings,
            "counts": counts,
        }
        if select is None:
            raw = self.sample_positions(mol, request.num_conformers, **options)
        else:
            raw = self.selection_draws(mol, request.num_conformers, select, **options)
        timings["sample"] = time.perf_counter() - t0 - timings.get("refine", 0.0)
        selected = 0
        if select is not None:
            t0 = time.perf_counter()
            try:
                rng = np.random.default_rng(request.seed + 11)
                raw, _ = select_relaxed(mol, raw, request.num_conformers, select, rng)
                selected = len(raw)
                mmff_relax = select.screen_iters is not None  # else relaxed while selecting
            except ValueError as exc:  # MMFF94 cannot type the molecule: the first K draws, as without selection
                log.info("relaxed selection skipped: %s", exc)
                raw = raw[: request.num_conformers]
            timings["select"] = time.perf_counter() - t0
        sampled = finish_samples(mol, raw, request, self.energy, timings, allow_clashes=True, mmff_relax=mmff_relax)
        sampled.acyl_isomers_turned = counts.get("acyl_isomers_turned", 0)
        if selected and not mmff_relax:
            sampled.mmff_relaxed = sampled.num_conformers
        return sampled
