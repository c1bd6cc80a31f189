"""Inference-time knobs of the torsional pipeline on ``drugs_dev`` at the full protocol (L <= 512, K = 2L).

The cheap dev proxy used to select the shipped model (K <= 32) cannot see what limits the product on large
ensembles, where K reaches hundreds of conformers per molecule and breadth decides recall. This benchmark scores
variants of the fast pipeline (torsional model, then RDKit MMFF94: ``bench conformers``' ``torsional+mmff``) with the
conformer benchmark's own runner, so every number is comparable to ``bench conformers``; the product's default,
relaxed selection, is the variant ``relaxdedup4@3+tfr30+mix0.35+merge`` (``torsional+select``; before the
seventeenth session ``relaxdedup3@3+tfr30+mix0.35``):

- ``mmff<N>``: the shipped model, MMFF94 with at most ``N`` iterations (the product and the baselines use 200);
- ``steps<N>``: ``N`` integration steps instead of the checkpoint's;
- ``scale<A>``: the control multiplied by ``A`` (``0`` is the untrained base process, ``1`` the model): a
  cheap stand-in for a hotter target;
- ``ladder<A>``: a factor drawn uniformly in ``[A, 1]`` per conformer (a mixture of temperatures, for breadth);
- ``over<F>``: ``ceil(F K)`` draws, the ``K`` lowest in MMFF94 single-point energy kept (precision for speed);
- ``relaxover<F>@<T>``: ``ceil(F K)`` draws, every one relaxed by MMFF94 (the same 200 iterations, no second
  relaxation), ``K`` kept by drawing without replacement from ``exp(-E / T)`` over the relaxed energies
  (``T`` in kcal/mol; ``0``: the ``K`` lowest): what post-hoc energy knowledge buys, at F times the relaxations;
- ``ckpt:<PATH>``: another checkpoint (e.g. one trained at another tau), MMFF94 200;
- ``seeds<N>``: up to ``N`` ETKDG seeds per configuration (ring shapes) instead of the checkpoint's;
- ``control<N>``: the random-torsion control with ``N`` seeds, MMFF94 200 (the baseline the seeds must be fair to);
  ``control<N>+amide<F>``: the same with acyl isomers at room temperature (the rule alone, without learning);
  a suffix ``+lhs``: each torsion's K angles a Latin hypercube (every conformer uniform, the set spread evenly);
  on any other variant (``mmff200+lhs``, ``ckpt:PATH+lhs``): the integration noise stratified across the samples
  (:func:`sampler.torsion_sde.stratified_normal`: every conformer's law unchanged);
  a last suffix ``+planar`` (``mmff200+planar``, ``relaxdedup2@3+lhs+planar``): every acyl torsion drawn at its
  isomer's planar angle (0 or pi) rather than at the network's angle on that isomer;
  ``+mix<P>`` (after the others, ``relaxdedup2@3+mix0.5``): a share ``P`` of the draws from the random-torsion
  control with the sampler's seeds instead of the network (a mixed proposal ahead of the selection);
  ``+tfr<P>[e<E>]`` (``relaxdedup3@3+tfr30+mix0.35``, ``control4+tfr30``): relaxed selection's draws, or the control's
  conformers, relaxed in torsion space first (at most ``E`` MMFF94 evaluations, default 40) and then by ``P``
  Cartesian iterations (:mod:`molecules.torsion_relaxation`) instead of 200 Cartesian iterations;
  ``+ele<E>`` (``relaxdedup3@3+tfr30+mix0.35+elescreened``): relaxed selection removes duplicates and draws the K by
  MMFF94 energies with ``E`` electrostatics (``screened``: dielectric 4r; ``off``), relaxation unchanged;
  ``+final<N>`` (``relaxdedup3@3+tfr30+mix0.35+final30``): the K kept relaxed ``N`` more Cartesian iterations;
  ``+gap<G>`` (``relaxdedup3@3+tfr30+mix0.35+gap0.4``): relaxed selection counts two relaxed conformers as one basin
  below torsion-fingerprint distance ``G`` (default ``DUPLICATE_GAP``) rather than 0.15;
  ``+scoreani``: relaxed selection removes duplicates and draws the K by ANI-2xt energies (float32) of the relaxed
  draws where ANI-2xt applies (MMFF94's elsewhere); ``+isoani`` (any variant of the torsional model): each acyl
  isomer's energy is ANI-2xt's of its MMFF94-relaxed starts (:func:`molecules.acyl_isomers.acyl_isomers`);
  ``+win<W>`` (``relaxdedup3@3+tfr30+mix0.35+win10``): relaxed selection chooses among the relaxed draws within ``W``
  kcal/mol of the lowest while at least K are left (``RelaxedSelection.energy_window``);
  ``+merge`` (``relaxdedup3@3+tfr30+mix0.35+merge``): with ``+tfr``, duplicates among the descended draws removed
  before the Cartesian polish, so only distinct basins are polished (``RelaxedSelection.merge_before_polish``);
- ``isostarts<N>``: the acyl isomers' relaxed energies from N more ETKDG starts than the kept seeds (the
  fast pipeline uses ``ISOMER_STARTS``; every other variant keeps that default);
- ``thin<F>``: ``ceil(F K)`` draws, ``K`` kept by removing the most crowded in torsion space
  (:func:`molecules.diversity.thin_crowded`: near-duplicates go first);
- ``relaxthin<F>``: ``ceil(F K)`` draws, every one relaxed by MMFF94 (no second relaxation), then thinned to
  ``K`` in torsion space: duplicates *after* relaxation (draws that fall into one basin) go first;
  ``relaxthin<F>@<N>``: the draws relaxed for only ``N`` iterations before thinning, the kept ``K`` then
  relaxed as the fast pipeline does (cheaper: ``F K N + 200 K`` iterations instead of ``200 F K``);
- ``relaxdedup<F>@<T>``: ``ceil(F K)`` draws relaxed as in ``relaxover``, duplicates removed (torsion-space gap
  below ``DUPLICATE_GAP``, never below ``K`` left), then ``K`` drawn from the rest's Boltzmann law at ``T`` kcal/mol;
  ``relaxdedup<F>@<T>@<N>``: the same after only ``N`` iterations, the kept ``K`` then relaxed as the fast pipeline's;
- ``amide<F>``: acyl isomers (amides, esters, acids; amides only before the rule covered esters, as in the
  ``amide_isomers_{a,b}`` runs) at room temperature with floor ``F`` (:mod:`molecules.acyl_isomers`);
  ``amideoff``: the network's own isomers.

``--mmff-iters N`` gives every variant but ``mmff<N>`` another MMFF94 iteration cap (method names get ``@mmffN``).

Development set only (``drugs_dev``): never ``spice_test``.

Reproduce: ``python -m benchmarks.torsional_knobs --variants mmff200 mmff100 mmff400 steps6 scale0.7 ladder0.3
over1.5 --tag knobs`` (writes ``benchmarks/results/conformers_<tag>.{md,json,png}``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem
from torch import nn

from benchmarks.conformers import BenchConfig, run
from benchmarks.methods import (
    METHODS,
    GenerationError,
    Method,
    MethodSettings,
    RandomTorsionGenerator,
    RdkitMmffOptimizer,
    TorsionalGenerator,
    TorsionFirstMmffOptimizer,
    register_method,
)
from benchmarks.report import summaries, write_report
from energy.ani2xt import Ani2xtEnergy
from energy.mmff import ELECTROSTATICS, mmff_energies, mmff_optimize
from molecules.diversity import thin_crowded, torsion_fingerprints
from molecules.rmsd import conformer_coordinates
from molecules.selection import RelaxedSelection, boltzmann_pick, select_relaxed
from molecules.structures import Scorer, energy_scorer, with_conformers
from molecules.torsion_relaxation import TorsionRelaxation

__all__ = ["ScaledControl", "TunedTorsionalGenerator", "register_variant"]

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parent.parent
#: torsion-fingerprint distance below which two relaxed conformers count as one basin (about 8 degrees on one torsion)
DUPLICATE_GAP = RelaxedSelection().duplicate_gap


class ScaledControl(nn.Module):
    """``lambda_g * net(...)``: the control of every torsion of sample ``g`` scaled by that sample's factor.

    The factors are drawn per call of the integration (one batch), uniformly in ``[low, high]``, from
    ``generator``; the wrapped network's :meth:`graph_index` is passed through."""

    def __init__(self, network: Any, low: float, high: float, generator: torch.Generator) -> None:
        super().__init__()
        self.network = network
        self.low, self.high, self.generator = low, high, generator
        self._factors: torch.Tensor | None = None

    def graph_index(self, *args: Any) -> Any:
        num_graphs = int(args[2])
        self._factors = self.low + (self.high - self.low) * torch.rand(num_graphs, generator=self.generator)
        return self.network.graph_index(*args)

    def forward(self, t: torch.Tensor, *args: Any) -> torch.Tensor:
        v = self.network(t, *args)
        factors = self._factors
        if factors is None or factors.shape[0] != t.shape[0]:
            raise RuntimeError("ScaledControl needs graph_index() once per batch before its calls")
        torsion_batch = args[6]
        return v * factors.to(v.dtype)[torsion_batch]


@dataclass
class TunedTorsionalGenerator(TorsionalGenerator):
    """:class:`TorsionalGenerator` with a scaled control (``low``..``high``) and oversampling by energy."""

    low: float = 1.0
    high: float = 1.0
    oversample: float = 1.0
    relaxed_kt: float | None = None  # kcal/mol: keep K of the relaxed draws by their Boltzmann law (None: no relaxing)
    relax_iters: int = 200
    num_seeds_override: int | None = None
    isomer_floor: float | str | None = "default"  # "default": the sampler's; None: the network's own isomers
    stratified: bool = False
    isomer_starts: int | None = None  # None: the sampler's (ISOMER_STARTS)
    thin: float = 1.0  # ceil(thin K) draws, K kept by thinning the most crowded in torsion space
    relaxed_thin: bool = False  # thin after relaxing every draw (MMFF94, relax_iters) rather than before
    dedup_kt: float | None = None  # relaxed draws: duplicates (gap < DUPLICATE_GAP) removed, then K by Boltzmann
    prerelax_iters: int | None = None  # relaxed_thin: this many iterations before thinning (the refiner finishes)
    acyl_planar: bool | None = None  # None: the sampler's (ACYL_PLANAR)
    control_share: float = 0.0  # this share of the draws from the random-torsion control (the sampler's seeds)
    torsion_first: TorsionRelaxation | None = None  # dedup_kt: relax in torsion space first, then a Cartesian polish
    score_electrostatics: str = "vacuum"  # dedup_kt: the electrostatics of the selection's energy
    final_iters: int = 0  # dedup_kt: the K kept then relaxed this many more Cartesian iterations
    duplicate_gap: float = DUPLICATE_GAP  # dedup_kt: the torsion-fingerprint distance of one basin
    score_ani: bool = False  # dedup_kt: duplicates and the energy draw by ANI-2xt (float32) where it applies
    isomers_ani: bool = False  # the acyl isomers' energies by ANI-2xt (float32) where it applies
    energy_window: float | None = None  # dedup_kt: kcal/mol above the lowest relaxed draw, while K are left
    merge_before_polish: bool = False  # dedup_kt with torsion_first: duplicates removed before the polish too
    _tag: str = field(default="", repr=False)
    _ani: Scorer | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"tuned-torsional[{self._tag}]"

    def generate(self, mol: Chem.Mol, num_conformers: int, seed: int) -> Chem.Mol:
        sampler = self._load()
        count = math.ceil(max(self.oversample, self.thin) * num_conformers)
        shipped, config, floor, stratified = sampler.network, sampler.config, sampler.isomer_floor, sampler.stratified
        sampler.stratified, starts, planar = self.stratified, sampler.isomer_starts, sampler.acyl_planar
        isomer_scorer = sampler.isomer_scorer
        if self.isomers_ani:
            sampler.isomer_scorer = self._ani_scores
        if self.acyl_planar is not None:
            sampler.acyl_planar = self.acyl_planar
        if self.isomer_starts is not None:
            sampler.isomer_starts = self.isomer_starts
        if self.isomer_floor != "default":
            sampler.isomer_floor = self.isomer_floor
        if (self.low, self.high) != (1.0, 1.0):
            sampler.network = ScaledControl(shipped, self.low, self.high, torch.Generator().manual_seed(seed + 7))
        if self.num_seeds_override is not None:
            sampler.config = dataclasses.replace(config, num_seeds=self.num_seeds_override)
        draws = RelaxedSelection(oversample=max(self.oversample, self.thin), uniform_share=self.control_share)
        try:  # count draws, a control_share of them with uniform torsions (as relaxed selection's proposals)
            positions = sampler.selection_draws(mol, num_conformers, draws, seed=seed, steps=self.steps)
        except ValueError as exc:
            raise GenerationError(str(exc)) from exc
        finally:
            sampler.network, sampler.config, sampler.isomer_floor = shipped, config, floor
            sampler.stratified, sampler.isomer_starts, sampler.acyl_planar = stratified, starts, planar
            sampler.isomer_scorer = isomer_scorer
        if self.dedup_kt is not None:
            selection = RelaxedSelection(
                oversample=self.oversample,
                kt_kcal_mol=self.dedup_kt,
                duplicate_gap=self.duplicate_gap,
                energy_window=self.energy_window,
                max_iters=self.prerelax_iters or self.relax_iters,
                torsion_first=self.torsion_first,
                score_electrostatics=self.score_electrostatics,
                final_iters=self.final_iters,
                merge_before_polish=self.merge_before_polish,
            )
            try:
                x, _ = select_relaxed(
                    mol,
                    positions,
                    num_conformers,
                    selection,
                    np.random.default_rng(seed + 11),
                    scorer=self._ani_scores if self.score_ani else None,
                )
            except ValueError as exc:
                raise GenerationError(f"relaxed selection: {exc}") from exc
            return with_conformers(mol, x)
        if self.relaxed_kt is not None or self.relaxed_thin:
            relaxed = with_conformers(mol, positions)
            try:
                iters = self.prerelax_iters or self.relax_iters
                energies = np.array([e for _, e in mmff_optimize(relaxed, max_iters=iters)])
            except ValueError as exc:
                raise GenerationError(f"relaxed selection: {exc}") from exc
            x = conformer_coordinates(relaxed)
            if self.relaxed_thin:
                keep = thin_crowded(torsion_fingerprints(mol, x), num_conformers)
            else:
                keep = boltzmann_pick(
                    energies, num_conformers, self.relaxed_kt or 0.0, np.random.default_rng(seed + 11)
                )
            return with_conformers(mol, x[keep])
        if count > num_conformers and self.thin > 1:
            positions = positions[thin_crowded(torsion_fingerprints(mol, positions), num_conformers)]
        elif count > num_conformers:
            positions = positions[_lowest_mmff(mol, positions, num_conformers)]
        return with_conformers(mol, positions)

    def _ani_scores(self, mol: Chem.Mol, positions: np.ndarray) -> np.ndarray:
        """ANI-2xt energies (kcal/mol, float32 network) of ``positions``; ``nan`` where it does not apply."""
        if self._ani is None:
            self._ani = energy_scorer(Ani2xtEnergy(dtype="float32"))
        return self._ani(mol, positions)


def _lowest_mmff(mol: Chem.Mol, positions: np.ndarray, keep: int) -> np.ndarray:
    """Indices (ascending) of the ``keep`` conformers lowest in MMFF94 single-point energy."""
    try:
        energies = mmff_energies(mol, positions)
    except ValueError as exc:
        raise GenerationError(f"energy ranking: {exc}") from exc
    return np.sort(np.argsort(energies, kind="stable")[:keep])


def _take_suffix(variant: str, pattern: str) -> tuple[str, re.Match[str] | None]:
    """``variant`` without the first match of ``pattern`` (a ``+word`` suffix), and that match (``None``: absent)."""
    found = re.search(pattern, variant)
    return (variant[: found.start()] + variant[found.end() :], found) if found else (variant, None)


def _take_selection_suffix(variant: str, pattern: str, word: str) -> tuple[str, re.Match[str] | None]:
    """:func:`_take_suffix` for a suffix of relaxed selection (``word``, e.g. ``+gap<G>``): refused elsewhere."""
    rest, found = _take_suffix(variant, pattern)
    if found and not rest.startswith("relaxdedup"):
        raise ValueError(f"{word} applies to relaxdedup variants (relaxed selection), not {rest!r}")
    return rest, found


def register_variant(variant: str, checkpoint: Path, mmff_iters: int = 200) -> str:
    """Register the method of one ``--variants`` word (module docstring); returns its method name.
    ``mmff_iters``: the MMFF94 iteration cap of every variant but ``mmffN`` (which sets its own)."""
    if mmff_iters < 1:
        raise ValueError(f"mmff_iters must be at least 1, got {mmff_iters}")
    name = f"knob:{variant}" if mmff_iters == 200 else f"knob:{variant}@mmff{mmff_iters}"
    if name in METHODS:
        return name
    ck = str(checkpoint)
    iters, steps, low, high, over, seeds = mmff_iters, None, 1.0, 1.0, 1.0, None
    relaxed_kt: float | None = None
    amide: float | str | None = "default"
    isomer_starts: int | None = None
    thin, relaxed_thin, prerelax = 1.0, False, None
    dedup_kt: float | None = None
    share = 0.0
    torsion_first = None
    variant, found_ele = _take_selection_suffix(variant, r"\+ele([a-z]+)", "+ele<E>")
    electrostatics = found_ele[1] if found_ele else "vacuum"
    if electrostatics not in ELECTROSTATICS:
        raise ValueError(f"+ele takes one of {ELECTROSTATICS}, not {electrostatics!r}")
    variant, found_final = _take_selection_suffix(variant, r"\+final(\d+)", "+final<N>")
    final_iters = int(found_final[1]) if found_final else 0
    if found_final and final_iters < 1:
        raise ValueError("+final<N> takes N >= 1")
    variant, found_gap = _take_selection_suffix(variant, r"\+gap(\d+(?:\.\d+)?)", "+gap<G>")
    duplicate_gap = float(found_gap[1]) if found_gap else DUPLICATE_GAP
    variant, found_win = _take_selection_suffix(variant, r"\+win(\d+(?:\.\d+)?)", "+win<W>")
    window = float(found_win[1]) if found_win else None
    variant, found_ani = _take_selection_suffix(variant, r"\+scoreani", "+scoreani")
    variant, found_merge = _take_selection_suffix(variant, r"\+merge", "+merge")
    variant, found_isoani = _take_suffix(variant, r"\+isoani")
    variant, found = _take_suffix(variant, r"\+tfr(\d+)(?:e(\d+))?")
    if found:
        torsion_first = TorsionRelaxation(polish_iters=int(found[1]), max_evals=int(found[2] or 40))
        if not variant.startswith(("relaxdedup", "control")):
            raise ValueError(f"+tfr applies to relaxdedup and control variants, not {variant!r}")
    if found_merge and torsion_first is None:  # a control variant was refused with the suffix
        raise ValueError("+merge applies to relaxed selection relaxed in torsion space first (+tfr)")
    if "+mix" in variant:
        variant, _, share_word = variant.partition("+mix")
        try:
            share = float(share_word)
        except ValueError:
            share = -1.0
        if not 0 < share <= 1:
            raise ValueError(f"unknown variant {variant}+mix{share_word}: +mixP takes a share in (0, 1]")
    planar = variant.endswith("+planar")
    if planar:
        variant = variant[: -len("+planar")]
    stratified = variant.endswith("+lhs")
    if stratified:
        variant = variant[:-4]
    try:
        if variant.startswith("control"):
            if planar or share:  # variants of the product, not of the control
                raise ValueError
            seeds_word, _, amide_word = variant[7:].partition("+amide")
            control = RandomTorsionGenerator(
                num_seeds=int(seeds_word), isomer_floor=float(amide_word) if amide_word else None, stratified=stratified
            )
            if control.num_seeds < 1 or not 0 <= (control.isomer_floor or 0) <= 0.5:
                raise ValueError
            isomers = "" if control.isomer_floor is None else f", acyl isomers at 298 K (floor {control.isomer_floor})"
            isomers += ", stratified (a Latin hypercube per torsion)" if stratified else ""
            control_refiner: RdkitMmffOptimizer | TorsionFirstMmffOptimizer = RdkitMmffOptimizer(iters, "MMFF94", 1)
            relaxed = f"MMFF94 maxIters {iters}"
            if torsion_first is not None:
                control_refiner = TorsionFirstMmffOptimizer(torsion_first)
                relaxed = torsion_first.description
            description = f"random torsions, {control.num_seeds} seeds{isomers}, {relaxed}"
            register_method(name, lambda s: Method(name, control, control_refiner, description))
            return name
        if variant.startswith("isostarts"):
            isomer_starts = int(variant[9:])
            if isomer_starts < 1:
                raise ValueError
        elif variant.startswith("seeds"):
            seeds = int(variant[5:])
        elif variant.startswith("mmff"):
            iters = int(variant[4:])
        elif variant.startswith("steps"):
            steps = int(variant[5:])
        elif variant.startswith("scale"):
            low = high = float(variant[5:])
        elif variant.startswith("ladder"):
            low = float(variant[6:])
        elif variant.startswith("relaxdedup"):
            factor, _, rest = variant[10:].partition("@")
            kt, _, pre = rest.partition("@")
            over, dedup_kt, prerelax = float(factor), float(kt), int(pre) if pre else None
            if dedup_kt < 0 or (prerelax is not None and prerelax < 1):
                raise ValueError
        elif variant.startswith("relaxthin"):
            factor, _, pre = variant[9:].partition("@")
            thin, relaxed_thin, prerelax = float(factor), True, int(pre) if pre else None
            if thin <= 1 or (prerelax is not None and prerelax < 1):
                raise ValueError
        elif variant.startswith("thin"):
            thin = float(variant[4:])
            if thin <= 1:
                raise ValueError
        elif variant.startswith("over"):
            over = float(variant[4:])
        elif variant.startswith("relaxover"):
            factor, _, kt = variant[9:].partition("@")
            over, relaxed_kt = float(factor), float(kt)
            if relaxed_kt < 0:
                raise ValueError
        elif variant == "amideoff":
            amide = None
        elif variant.startswith("amide"):
            amide = float(variant[5:])
            if not 0 <= amide <= 0.5:
                raise ValueError
        elif variant.startswith("ckpt:"):
            ck = variant[5:]
        else:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"unknown variant {variant!r}: mmffN, stepsN, scaleA, ladderA, overF, relaxoverF@T, seedsN, amideF, "
            "amideoff, isostartsN, thinF, relaxthinF[@N], relaxdedupF@T[@N], controlN, controlN+amideF or ckpt:PATH "
            "(any with +lhs)"
        ) from None
    if (
        over < 1
        or iters < 1
        or (steps is not None and steps < 1)
        or not 0 <= low <= high
        or (seeds is not None and seeds < 1)
    ):
        raise ValueError(f"variant {variant!r} out of range")
    isomers_ani = found_isoani is not None
    tuned = (
        low,
        high,
        over,
        seeds,
        amide,
        relaxed_kt or dedup_kt,
        stratified,
        isomer_starts,
        thin,
        planar,
        share,
        isomers_ani,
    ) != (1.0, 1.0, 1.0, None, "default", None, False, None, 1.0, False, 0.0, False)
    generator: TorsionalGenerator = (
        TunedTorsionalGenerator(
            ck,
            steps,
            low=low,
            high=high,
            oversample=over,
            num_seeds_override=seeds,
            isomer_floor=amide,
            relaxed_kt=relaxed_kt,
            relax_iters=iters,
            stratified=stratified,
            isomer_starts=isomer_starts,
            thin=thin,
            relaxed_thin=relaxed_thin,
            prerelax_iters=prerelax,
            dedup_kt=dedup_kt,
            acyl_planar=True if planar else None,
            control_share=share,
            torsion_first=torsion_first,
            score_electrostatics=electrostatics,
            final_iters=final_iters,
            duplicate_gap=duplicate_gap,
            score_ani=found_ani is not None,
            isomers_ani=isomers_ani,
            energy_window=window,
            merge_before_polish=found_merge is not None,
            _tag=variant
            + ("+lhs" if stratified else "")
            + ("+planar" if planar else "")
            + (f"+mix{share:g}" if share else "")
            + (f"+tfr{torsion_first.polish_iters}e{torsion_first.max_evals}" if torsion_first else "")
            + (f"+ele{electrostatics}" if electrostatics != "vacuum" else "")
            + (f"+final{final_iters}" if final_iters else "")
            + (f"+gap{duplicate_gap:g}" if found_gap else "")
            + ("+scoreani" if found_ani else "")
            + ("+isoani" if found_isoani else "")
            + (f"+win{window:g}" if window is not None else "")
            + ("+merge" if found_merge else ""),
        )
        if tuned
        else TorsionalGenerator(ck, steps)
    )
    refiner = (
        None
        if relaxed_kt is not None or ((relaxed_thin or dedup_kt is not None) and prerelax is None)
        else RdkitMmffOptimizer(iters, "MMFF94", 1)
    )  # relaxed while selecting
    lhs = ", integration noise stratified across the samples" if stratified else ""
    lhs += ", acyl torsions at their isomer's planar angle" if planar else ""
    lhs += f", {share:.0%} of the draws from the random-torsion control" if share else ""
    lhs += f", relaxed by {torsion_first.description}" if torsion_first else ""
    lhs += f", selected by MMFF94 energies with {electrostatics} electrostatics" if electrostatics != "vacuum" else ""
    lhs += f", the kept relaxed {final_iters} more Cartesian iterations" if final_iters else ""
    lhs += f", one basin below torsion-fingerprint distance {duplicate_gap:g}" if found_gap else ""
    lhs += ", selected by ANI-2xt energies where it applies" if found_ani else ""
    lhs += ", acyl isomers by ANI-2xt energies where it applies" if found_isoani else ""
    lhs += f", relaxed draws within {window:g} kcal/mol of the lowest while K are left" if window is not None else ""
    lhs += ", duplicates removed before the Cartesian polish too" if found_merge else ""
    description = f"torsional pipeline, {variant}{lhs} ({ck}; MMFF94 maxIters {iters})"
    register_method(name, lambda s: Method(name, generator, refiner, description))
    return name


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--variants",
        nargs="+",
        required=True,
        help="mmffN stepsN scaleA ladderA overF relaxoverF@T seedsN amideF amideoff controlN controlN+amideF ckpt:PATH",
    )
    p.add_argument("--checkpoint", type=Path, default=_REPO / "checkpoints" / "torsional.pt")
    p.add_argument("--mmff-iters", type=int, default=200, help="MMFF94 iteration cap of every variant but mmffN")
    p.add_argument("--max-refs", type=int, default=512)
    p.add_argument("--num-molecules", type=int, default=None, help="the N smallest molecules (smoke runs)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--datasets", nargs="+", default=["drugs_dev"], help="tune on drugs_dev; spice_test only to check")
    p.add_argument("--tag", default="knobs")
    p.add_argument("--data-dir", type=Path, default=_REPO.parent / "shared" / "data")
    p.add_argument("--out-dir", type=Path, default=_REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    # a registered method's name (``rdkit+mmff``) is scored as it is: a baseline in the same run, for speed
    names = [v if v in METHODS else register_variant(v, args.checkpoint, args.mmff_iters) for v in args.variants]
    config = BenchConfig(
        datasets=tuple(args.datasets),
        methods=tuple(names),
        max_refs=args.max_refs,
        num_molecules=args.num_molecules,
        seed=args.seed,
        settings=MethodSettings(threads=1, torsional_checkpoint=str(args.checkpoint)),
        tag=args.tag,
    )
    command = "python -m benchmarks.torsional_knobs " + shlex.join(sys.argv[1:] if argv is None else argv)
    results = run(config, args.data_dir)
    paths = write_report(results, args.out_dir, args.tag, command)
    for per_method in summaries(results).values():
        for name, s in per_method.items():
            log.info(
                "%-22s COV-R@1.0 %5.1f%%  AMR-R %.3f Å  COV-P@1.0 %5.1f%%  AMR-P %.3f Å",
                name,
                100 * s.at("cov_r_mean", 1.0),
                s.amr_r_mean,
                100 * s.at("cov_p_mean", 1.0),
                s.amr_p_mean,
            )
    log.info("wrote %s; reproduce: %s", ", ".join(str(p) for p in paths), command)


if __name__ == "__main__":
    main()
