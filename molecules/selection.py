"""Relaxed selection: draw more conformers than asked, relax them, keep distinct basins by their Boltzmann law.

A sampler's K draws, each relaxed by MMFF94, often land in the same basin (the same local minimum reached from
nearby starts): those slots add nothing to an ensemble's coverage. Relaxed selection draws ``ceil(F K)``
conformers, relaxes every one (MMFF94 in torsion space first, then a short Cartesian polish of the distinct
descended draws only, ``merge_before_polish``: :mod:`molecules.torsion_relaxation`; or RDKit's Cartesian minimizer
alone, ``max_iters``), sets aside those the
relaxation left with a wrong bond or stereocentre (:func:`molecules.validity.check_conformer`; used only where
fewer than K others are valid), removes duplicates (two relaxed conformers whose torsion fingerprints,
:func:`molecules.diversity.torsion_fingerprints`, lie closer than ``duplicate_gap``: one basin, of which the lower
in energy stays; never fewer than K are left), and then draws K of the rest without
replacement from the Boltzmann law of their relaxed energies at ``kt`` (Gumbel top-k: with keys
``-E_i / kt + G_i``, ``G_i`` standard Gumbel, the K largest keys are a draw without replacement from
``p_i ∝ exp(-E_i / kt)``; ``kt = 0``: the K lowest).
Removing duplicates buys recall; the energy draw buys back precision.

A molecule whose SMILES leaves stereocentres or stereo double bonds unassigned is drawn from seeds of each
configuration (:func:`molecules.torsions.embed_seeds`), as ETKDG draws a random configuration per conformer. Its
configurations are different compounds, which do not interconvert; ``per_configuration`` shares the K among them
in proportion to their valid draws (largest remainders) and chooses each share as above among that configuration's
draws alone, instead of one energy draw over all (measured: it does not pay, so it is off by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from rdkit import Chem

from energy.mmff import ELECTROSTATICS, mmff_energies, mmff_optimize, mmff_properties
from molecules.diversity import thin_crowded, torsion_fingerprints
from molecules.rmsd import conformer_coordinates
from molecules.stereo import find_unassigned_stereo
from molecules.structures import Scorer, scores_or_none, with_conformers
from molecules.torsion_relaxation import TorsionRelaxation
from molecules.torsions import configurations
from molecules.validity import check_conformer, stereo_spec

__all__ = ["RelaxedSelection", "boltzmann_pick", "proportional_shares", "select_relaxed"]


@dataclass(frozen=True, kw_only=True)
class RelaxedSelection:
    """``oversample`` (F), ``kt_kcal_mol`` (the selection temperature, kcal/mol), ``duplicate_gap`` (torsion
    fingerprint distance: about 0.15 rad on one torsion), how every draw is relaxed (``torsion_first``; without
    it, ``max_iters`` Cartesian MMFF94 iterations) and the share of uniform proposals."""

    #: draws per conformer kept. With ``merge_before_polish`` (``python -m benchmarks.torsional_knobs --variants
    #: rdkit+mmff relaxdedup3@3+tfr30+mix0.35 relaxdedupF@3+tfr30+mix0.35+merge --seed S --tag merge_sS``, drugs_dev,
    #: COV-R / COV-P / AMR-P at seeds 42 and 7, conformers/s over ETKDG + MMFF94's in the same run): 3 without the
    #: merge 86.3 / 78.1 / 0.724 and 86.0 / 77.4 / 0.729 (1.13x); 3 86.5 / 77.3 / 0.728 and 85.6 / 77.8 / 0.724
    #: (1.31x); 3.5 87.3 / 77.9 / 0.726 and 85.9 / 78.0 / 0.721 (1.17x); 4 86.4 / 77.9 / 0.724 and 86.0 / 78.4 /
    #: 0.712 (1.04-1.07x); ETKDG + MMFF94 67.1 / 77.0 / 0.725 and 70.8 / 78.0 / 0.714: the merge pays for a third
    #: more draws, which buy precision
    oversample: float = 4.0
    kt_kcal_mol: float = 3.0
    #: wider gaps count near basins as one (``python -m benchmarks.torsional_knobs --variants
    #: relaxdedup3@3+tfr30+mix0.35+gapG --tag gap_e40_s42``, COV-R / COV-P / AMR-P on drugs_dev, seed 42): 0.15
    #: 86.5 / 78.0 / 0.725, 0.4 86.7 / 74.1 / 0.758, 0.8 87.0 / 72.0 / 0.774 (with 3.5 K draws and the descent capped
    #: at 20 evaluations, tag ``gap_e20_s42``: 0.15 86.0 / 79.4 / 0.709, 0.4 87.8 / 76.7 / 0.740, 0.8 89.5 / 71.8 /
    #: 0.787): two points of precision or more per point of recall, so only true duplicates go
    duplicate_gap: float = 0.15
    max_iters: int = 200
    #: relax the draws only this many iterations before selecting (the kept K are then relaxed as without
    #: selection, by the caller): cheaper, basins judged from shorter relaxations; ``None``: ``max_iters``
    screen_iters: int | None = None
    #: this share of the draws proposed with every rotatable torsion uniform (the random-torsion control's law, the
    #: sampler's seeds) instead of by the sampler: breadth the relaxation and the energy draw then sort. Chosen on
    #: drugs_dev (``python -m benchmarks.torsional_knobs --variants relaxdedup2@3+mixP``, COV-R / COV-P @1.0 Å):
    #: 0: 82.9 / 80.7, 0.25: 84.0 / 77.1, 0.35: 85.4 / 77.1, 0.5: 86.0 / 75.8, 1: 87.0 / 70.1
    #: (ETKDG + MMFF94 67.1 / 77.0, the control 81.9 / 61.6; ``benchmarks/results/conformers_relaxdedup_mix*.md``)
    uniform_share: float = 0.35
    #: relax every draw in torsion space first, then ``polish_iters`` Cartesian iterations
    #: (:mod:`molecules.torsion_relaxation`); ``None``: ``screen_iters or max_iters`` Cartesian iterations. Chosen on
    #: drugs_dev (``python -m benchmarks.torsional_knobs --variants rdkit+mmff relaxdedup2@3+mix0.35
    #: relaxdedup2@3+tfr60+mix0.35``, COV-R / COV-P @1.0 Å, conformers/s in one run): Cartesian 85.4 / 77.1, 12.5;
    #: torsions first 85.2 / 74.7, 21.1 (ETKDG + MMFF94 17.0): as much recall at 1.7x the speed; the descent merges
    #: draws of one basin that 200 Cartesian iterations leave apart, so fewer distinct basins are left to choose from
    #: and ``oversample`` 3 buys the precision back: 86.8 / 77.9 at 19.9 conformers/s (ETKDG + MMFF94 18.4).
    #: A shorter descent merges fewer: ``relaxdedupF@3+tfr30eE+mix0.35`` at seeds 42 / 7, COV-R / COV-P: F = 3,
    #: E = 40: 86.5 / 78.0, 85.6 / 77.3 (1.08x ETKDG + MMFF94's speed); F = 3, E = 15: 85.6 / 79.1, 83.5 / 79.8
    #: (1.27x); F = 4, E = 20: 85.5 / 80.1, 84.9 / 80.1 (0.98x) (tags ``evals_s42``, ``evals_s7``; ETKDG + MMFF94
    #: 67.1 / 77.0, 70.8 / 78.0). E = 20 with ``oversample`` 3.5 (``e20_full_*`` runs) gained drugs_dev's precision at
    #: both seeds (79.4 / 79.8 %) but lost spice_test's recall (79.6 against 82.0 at seed 42), so E = 40 stays
    torsion_first: TorsionRelaxation | None = field(default_factory=TorsionRelaxation)
    #: the electrostatics of the energy that removes duplicates and draws the K (:data:`energy.mmff.ELECTROSTATICS`;
    #: the relaxation and the energies returned stay MMFF94's own). Measured on drugs_dev (``python -m
    #: benchmarks.torsional_knobs --variants relaxdedup3@3+tfr30+mix0.35 relaxdedup3@3+tfr30+mix0.35+elescreened
    #: relaxdedup3@3+tfr30+mix0.35+eleoff --seed S``), COV-R / COV-P @1.0 Å at seeds 42 and 7: vacuum 86.5 / 78.0
    #: and 85.6 / 77.3, screened (4r) 85.4 / 74.7 and 83.9 / 74.8, off 85.3 / 73.8 and 82.7 / 74.0: the reference
    #: ensembles keep the vacuum folds, so vacuum stays
    score_electrostatics: str = "vacuum"
    #: the K kept then relaxed this many more Cartesian MMFF94 iterations (0: as selected)
    final_iters: int = 0
    #: kcal/mol: relaxed draws above the lowest by more than this are not chosen while at least K others are left
    #: (then near-duplicates of lower basins are kept before them); ``None``: no window. Measured on drugs_dev
    #: (``--variants relaxdedup3@3+tfr30+mix0.35+winW``, tags ``winW_s42``, ``win10_s7``), COV-R / COV-P / AMR-P:
    #: W = 10: 80.9 / 82.5 / 0.670 (seed 7: 79.9 / 82.4 / 0.663), 15: 84.6 / 79.1 / 0.701, 25: 86.3 / 78.2 / 0.725,
    #: none: 86.5 / 78.0 / 0.725: precision for recall, as a colder draw; MMFF94 puts many reference-matching
    #: conformers more than 10 kcal/mol above its vacuum minimum
    energy_window: float | None = None
    #: share the K among a molecule's unassigned-stereo configurations by their draws (module docstring); ``False``
    #: (the default): one energy draw over all of them, which favours the configurations MMFF94 puts lowest.
    #: Measured on the full spice_test protocol, the only set with such molecules (26 of 68; drugs_dev has one,
    #: an enantiomer pair), seeds 42 / 7 (``adjoint-sampling bench conformers --datasets spice_test --methods
    #: rdkit+mmff torsion-control+mmff torsion-control+tfr torsional+select --seed S --tag stereo_spice[_seed7]``
    #: with it on): COV-R / COV-P 81.9 / 62.0 and 80.4 / 62.4 against 82.0 / 61.9 and 80.9 / 62.0 without; on the 26
    #: molecules recall −0.4 / −1.1 points, precision +0.1 / +0.9; the 42 others identical; drugs_dev's one (tags
    #: ``stereo_drugs_one_s42``, ``_s7``) COV-P 91.7 / 75.0 against 91.7 / 83.3. So off by default
    per_configuration: bool = False
    #: with ``torsion_first``: remove duplicates among the descended draws (torsion fingerprints closer than
    #: ``duplicate_gap``, the lower in descent energy stays, never fewer than K left) before the Cartesian polish, so
    #: only distinct basins are polished (the polish costs as much as the descent, and 15-57 % of a drug-sized
    #: molecule's draws descend into a basin another draw reached); duplicates are removed again after the polish.
    #: Not with ``per_configuration`` (its duplicates are removed within each configuration)
    merge_before_polish: bool = True

    def __post_init__(self) -> None:
        if self.score_electrostatics not in ELECTROSTATICS:
            raise ValueError(f"unknown score_electrostatics {self.score_electrostatics!r}: one of {ELECTROSTATICS}")
        if not self.oversample >= 1 or not self.kt_kcal_mol >= 0 or not self.duplicate_gap >= 0:
            raise ValueError(
                f"oversample must be >= 1 and kt_kcal_mol, duplicate_gap >= 0, got {self.oversample}, "
                f"{self.kt_kcal_mol}, {self.duplicate_gap}"
            )
        if not 0 <= self.uniform_share <= 1:
            raise ValueError(f"uniform_share must be in [0, 1], got {self.uniform_share}")
        if self.screen_iters is not None and self.torsion_first is not None:
            raise ValueError("screen_iters and torsion_first are two ways to relax the draws: give one")
        if self.energy_window is not None and not self.energy_window >= 0:
            raise ValueError(f"energy_window must be >= 0 kcal/mol or None, got {self.energy_window}")
        if self.final_iters < 0:
            raise ValueError(f"final_iters must be >= 0, got {self.final_iters}")
        if self.max_iters < 1 or (self.screen_iters is not None and self.screen_iters < 1):
            raise ValueError(
                f"max_iters and screen_iters must be at least 1, got {self.max_iters}, {self.screen_iters}"
            )

    @property
    def polishes_distinct_only(self) -> bool:
        """Whether duplicates go before the Cartesian polish (``merge_before_polish`` where it applies)."""
        return self.torsion_first is not None and self.merge_before_polish and not self.per_configuration

    def draws(self, keep: int) -> int:
        """How many conformers to draw for ``keep``."""
        return math.ceil(self.oversample * keep)

    def uniform_draws(self, keep: int) -> int:
        """How many of :meth:`draws` are proposed with uniform torsions."""
        return round(self.uniform_share * self.draws(keep))


def boltzmann_pick(energies: np.ndarray, keep: int, kt: float, rng: np.random.Generator) -> np.ndarray:
    """Indices (ascending) of ``keep`` of ``energies`` drawn without replacement with weights ``exp(-E / kt)``
    (Gumbel top-k; energies and ``kt`` in one unit); ``kt = 0``: the ``keep`` lowest."""
    e = np.asarray(energies, dtype=np.float64)
    if kt < 0 or not np.isfinite(e).all():
        raise ValueError(f"kt must be >= 0 and energies finite, got kt={kt}")
    keys = -e if kt == 0 else -e / kt + rng.gumbel(size=e.shape)
    return np.sort(np.argsort(-keys, kind="stable")[:keep])


def proportional_shares(sizes: np.ndarray, keep: int) -> np.ndarray:
    """``keep`` (at most ``sum(sizes)``) shared among groups in proportion to ``sizes``, by largest remainders
    (ties to the earlier group); no group gets more than its size."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if not 0 <= keep <= total:
        raise ValueError(f"cannot share {keep} among groups of {total}")
    exact = keep * sizes / max(total, 1)
    shares = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - shares), kind="stable")
    shares[order[: keep - int(shares.sum())]] += 1
    return shares


def _configuration_groups(mol: Chem.Mol, x: np.ndarray, pool: np.ndarray) -> list[np.ndarray]:
    """``pool`` split by the stereo configuration of each draw ``x[pool]`` (of the unassigned elements; one
    group where none is unassigned), in order of first appearance."""
    unassigned = find_unassigned_stereo(mol)
    if not unassigned:
        return [pool]
    keys = configurations(mol, x[pool], unassigned)
    order = list(dict.fromkeys(keys))
    return [pool[[k == key for k in keys]] for key in order]


def _choose(
    mol: Chem.Mol,
    x: np.ndarray,
    score: np.ndarray,
    pool: np.ndarray,
    keep: int,
    selection: RelaxedSelection,
    rng: np.random.Generator,
) -> np.ndarray:
    """``keep`` of ``pool`` (``len(pool) >= keep``): the energy window, duplicates removed, the Boltzmann draw."""
    if selection.energy_window is not None:
        inside = pool[score[pool] <= score[pool].min() + selection.energy_window]
        pool = inside if len(inside) >= keep else pool[np.sort(np.argsort(score[pool], kind="stable")[:keep])]
    fingerprints = torsion_fingerprints(mol, x[pool])
    unique = pool[thin_crowded(fingerprints, keep, min_gap=selection.duplicate_gap, priority=score[pool])]
    return unique[boltzmann_pick(score[unique], keep, selection.kt_kcal_mol, rng)]


def select_relaxed(
    mol: Chem.Mol,
    positions: np.ndarray,
    keep: int,
    selection: RelaxedSelection,
    rng: np.random.Generator,
    *,
    scorer: Scorer | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``keep`` of the draws ``positions [N, n, 3]`` (Å; ``mol`` with explicit hydrogens), relaxed and selected as
    the module docstring says: their relaxed positions ``[keep, n, 3]`` and MMFF94 energies (kcal/mol), in the
    draws' order. Fewer draws than ``keep``: all of them, relaxed. ``scorer``: the duplicates and the energy draw
    by its energies of the relaxed geometries instead (MMFF94's where it gives any ``nan``).

    Raises:
        ValueError: MMFF94 cannot type ``mol``, ``keep < 1``, or the positions do not fit ``mol``.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    first = selection.torsion_first
    if first is not None:
        x, energies = first.descend(mol, positions)
        if selection.polishes_distinct_only:
            distinct = thin_crowded(
                torsion_fingerprints(mol, x), keep, min_gap=selection.duplicate_gap, priority=energies
            )
            x, energies = x[distinct], energies[distinct]
        x, energies = first.polish(mol, x, energies)
    else:
        relaxed = with_conformers(mol, positions)
        iters = selection.screen_iters or selection.max_iters
        energies = np.array([e for _, e in mmff_optimize(relaxed, max_iters=iters)])
        x = conformer_coordinates(relaxed)
    spec = stereo_spec(mol)
    checks = [check_conformer(mol, p, spec, allow_clashes=True) for p in x]
    valid = np.array([c.ok for c in checks], dtype=bool)
    x = np.stack([c.positions if c.ok else p for c, p in zip(checks, x, strict=True)])  # a mirror image reflected
    pool = np.flatnonzero(valid)
    if len(pool) < keep:  # too few valid: every valid one, then the rest (the caller's checks count them)
        chosen = np.sort(np.concatenate([pool, np.flatnonzero(~valid)[: keep - len(pool)]]))
        return x[chosen], energies[chosen]
    score = energies
    other = scores_or_none(scorer, mol, x[pool])
    if other is None and selection.score_electrostatics != "vacuum":
        other = mmff_energies(
            mol, x[pool], properties=mmff_properties(mol, electrostatics=selection.score_electrostatics)
        )
    if other is not None:
        score = energies.copy()
        score[pool] = other
    groups = _configuration_groups(mol, x, pool) if selection.per_configuration else [pool]
    shares = proportional_shares(np.array([len(g) for g in groups]), keep)
    chosen = np.sort(
        np.concatenate([_choose(mol, x, score, g, k, selection, rng) for g, k in zip(groups, shares, strict=True) if k])
    )
    if selection.final_iters:
        kept = with_conformers(mol, x[chosen])
        final = np.array([e for _, e in mmff_optimize(kept, max_iters=selection.final_iters)])
        return conformer_coordinates(kept), final
    return x[chosen], energies[chosen]
