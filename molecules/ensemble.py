"""A conformer ensemble's energy bookkeeping: relative energies, Boltzmann weights, ranks, and removal of
near-duplicates.

Energies come in as absolute energies in eV (the energy protocol's unit), one per conformer, and are
reported as chemists read them: relative to the lowest, in kcal/mol.

Boltzmann weights at temperature ``T``:

.. math::

    w_i = \\frac{\\exp(-\\Delta E_i / k_B T)}{\\sum_j \\exp(-\\Delta E_j / k_B T)}, \\qquad
    \\Delta E_i = E_i - \\min_j E_j

(subtracting the minimum first keeps every exponent ``≤ 0``, so no overflow, and the lowest conformer's
term is exactly 1, so no underflow of the sum). ``k_B = 8.617333262·10⁻⁵ eV/K`` and
``1 kcal/mol = 0.0433641… eV`` (:mod:`energy.units`).

Near-duplicates are removed the way CREST's CREGEN, Auto3D and OMEGA do it: conformers in energy order
(lowest first); each is dropped if it lies within ``rmsd_threshold_angstrom`` heavy-atom RMSD of one
already kept and, when an energy tolerance is given, also within that many kcal/mol of it. The RMSD is
:mod:`molecules.rmsd`'s: heavy atoms only, minimized over proper rotations, translations and the
molecule's graph automorphisms (so renumbered equivalent atoms, e.g. the two methyls of an isopropyl
group, and any hydrogen order count as the same structure).

Example:
    >>> boltzmann_weights([0.0, 0.0]).tolist()
    [0.5, 0.5]
    >>> conformer_ranks([-1.0, -3.0, -2.0]).tolist()
    [3, 1, 2]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rdkit import Chem

from energy.units import BOLTZMANN_EV_PER_K, KCAL_PER_MOL_IN_EV
from molecules.constants import DEFAULT_TEMPERATURE_K
from molecules.rmsd import HeavyAtomRmsd, RmsdConfig

__all__ = [
    "AUTO3D_LIKE",
    "CREST_LIKE",
    "DEFAULT_DUPLICATES",
    "DEFAULT_TEMPERATURE_K",
    "OMEGA_LIKE",
    "Deduplication",
    "DuplicateCriteria",
    "boltzmann_weights",
    "conformer_ranks",
    "energy_order",
    "relative_energies_kcal_mol",
    "remove_duplicates",
]

log = logging.getLogger(__name__)


def _energies(energies_ev: Sequence[float] | np.ndarray, name: str = "energies_ev") -> np.ndarray:
    e = np.asarray(energies_ev, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"{name} must be one energy per conformer (a 1-D sequence), got shape {e.shape}")
    bad = np.flatnonzero(~np.isfinite(e))
    if len(bad):
        raise ValueError(f"{name}: conformer {int(bad[0])} has a non-finite energy ({e[bad[0]]}); drop it first")
    return e


def relative_energies_kcal_mol(energies_ev: Sequence[float] | np.ndarray) -> np.ndarray:
    """``(E_i − min E) / (1 kcal/mol)``: energies above the lowest conformer, in kcal/mol (``[C]``)."""
    e = _energies(energies_ev)
    if len(e) == 0:
        return e
    return (e - e.min()) / KCAL_PER_MOL_IN_EV


def boltzmann_weights(
    energies_ev: Sequence[float] | np.ndarray, temperature_k: float = DEFAULT_TEMPERATURE_K
) -> np.ndarray:
    """Boltzmann populations ``w_i ∝ exp(−ΔE_i / k_B T)`` of conformers with absolute energies in eV; they
    sum to 1 (an empty ensemble gives an empty array).

    Raises:
        ValueError: a non-finite energy, or a temperature that is not a positive number of kelvin.
    """
    if not np.isfinite(temperature_k) or temperature_k <= 0:
        raise ValueError(f"temperature must be a positive number of kelvin, got {temperature_k}")
    e = _energies(energies_ev)
    if len(e) == 0:
        return e
    terms = np.exp(-(e - e.min()) / (BOLTZMANN_EV_PER_K * temperature_k))
    return terms / terms.sum()


def energy_order(energies_ev: Sequence[float] | np.ndarray) -> np.ndarray:
    """Conformer indices from the lowest energy up; equal energies keep their input order."""
    return np.argsort(_energies(energies_ev), kind="stable")


def conformer_ranks(energies_ev: Sequence[float] | np.ndarray) -> np.ndarray:
    """``[C]`` integer ranks: 1 is the lowest energy; ties are broken by input order (ranks are distinct)."""
    order = energy_order(energies_ev)
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


@dataclass(frozen=True, kw_only=True)
class DuplicateCriteria:
    """When two conformers of one molecule count as the same structure.

    Attributes:
        rmsd_threshold_angstrom: heavy-atom, symmetry-aware RMSD (Å) below which a conformer duplicates a
            lower one already kept; ``0`` switches duplicate removal off.
        energy_tolerance_kcal_mol: if given, a duplicate must also lie within this many kcal/mol of the
            kept conformer (CREST's ETHR); ``None`` decides by RMSD alone (OMEGA, RDKit, Auto3D). Ignored
            when there are no energies.
        rmsd: how the RMSD engine enumerates symmetry mappings.

    The default, 0.5 Å heavy-atom RMSD and no energy tolerance (:data:`DEFAULT_DUPLICATES`), is OMEGA's
    duplicate RMS with the same definition (heavy atoms, symmetry-aware), the common RDKit
    ``pruneRmsThresh``, and robust for unrelaxed samples, whose energies scatter by more than any
    sensible tolerance. CREST's tighter 0.125 Å with 0.05 kcal/mol is meant for fully optimized
    geometries (:data:`CREST_LIKE`; CREST measures all atoms, this heavy atoms).
    """

    rmsd_threshold_angstrom: float = 0.5
    energy_tolerance_kcal_mol: float | None = None
    rmsd: RmsdConfig = field(default_factory=RmsdConfig)

    def __post_init__(self) -> None:
        if not np.isfinite(self.rmsd_threshold_angstrom) or self.rmsd_threshold_angstrom < 0:
            raise ValueError(
                f"RMSD threshold must be a non-negative number of Å (0 turns duplicate removal off), "
                f"got {self.rmsd_threshold_angstrom}"
            )
        tol = self.energy_tolerance_kcal_mol
        if tol is not None and (not np.isfinite(tol) or tol <= 0):
            raise ValueError(f"energy tolerance must be a positive number of kcal/mol or None, got {tol}")

    @property
    def enabled(self) -> bool:
        return self.rmsd_threshold_angstrom > 0


DEFAULT_DUPLICATES = DuplicateCriteria()
OMEGA_LIKE = DuplicateCriteria(rmsd_threshold_angstrom=0.5)
"""OpenEye OMEGA's default duplicate RMS: 0.5 Å over heavy atoms, symmetry-aware."""
AUTO3D_LIKE = DuplicateCriteria(rmsd_threshold_angstrom=0.3)
"""Auto3D's default duplicate threshold: 0.3 Å heavy-atom RMSD."""
CREST_LIKE = DuplicateCriteria(rmsd_threshold_angstrom=0.125, energy_tolerance_kcal_mol=0.05)
"""CREST's CREGEN defaults (RTHR 0.125 Å, ETHR 0.05 kcal/mol), applied here to heavy atoms."""


@dataclass(frozen=True)
class Deduplication:
    """Which conformers survive duplicate removal.

    Attributes:
        kept: indices into the input, lowest energy first (input order when there are no energies).
        duplicate_of: each removed index → the kept conformer it duplicates (the lowest-energy match).
    """

    kept: tuple[int, ...]
    duplicate_of: dict[int, int]

    @property
    def num_removed(self) -> int:
        return len(self.duplicate_of)


def remove_duplicates(
    mol: Chem.Mol,
    positions: np.ndarray,
    energies_ev: Sequence[float] | np.ndarray | None = None,
    *,
    criteria: DuplicateCriteria = DEFAULT_DUPLICATES,
) -> Deduplication:
    """Greedy near-duplicate removal in energy order.

    Args:
        mol: the molecule (explicit hydrogens or not), in the atom order of ``positions``.
        positions: ``[C, n_atoms, 3]`` Å (all atoms in ``mol``'s order, or its heavy atoms only).
        energies_ev: absolute energies, one per conformer, or ``None`` (no energy model: input order,
            RMSD alone).
        criteria: thresholds (:class:`DuplicateCriteria`).

    Conformer ``i`` is dropped when some kept ``j`` has ``RMSD(i, j) < rmsd_threshold_angstrom`` and (with
    an energy tolerance and energies) ``|E_i − E_j| < energy_tolerance_kcal_mol``.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"positions must be [conformers, atoms, 3] in Å, got shape {positions.shape}")
    count = positions.shape[0]
    energies = None if energies_ev is None else _energies(energies_ev)
    if energies is not None and len(energies) != count:
        raise ValueError(f"{len(energies)} energies for {count} conformers")
    order = energy_order(energies) if energies is not None else np.arange(count)
    if not criteria.enabled or count < 2:
        return Deduplication(kept=tuple(int(i) for i in order), duplicate_of={})
    rmsd = HeavyAtomRmsd(mol, criteria.rmsd).matrix(positions, positions)
    tol = criteria.energy_tolerance_kcal_mol
    close_e = None
    if energies is not None and tol is not None:
        close_e = np.abs(energies[:, None] - energies[None, :]) / KCAL_PER_MOL_IN_EV < tol
    kept: list[int] = []
    duplicate_of: dict[int, int] = {}
    for i in (int(k) for k in order):
        match = next(
            (
                j
                for j in kept
                if rmsd[j, i] < criteria.rmsd_threshold_angstrom and (close_e is None or bool(close_e[j, i]))
            ),
            None,
        )
        if match is None:
            kept.append(i)
        else:
            duplicate_of[i] = match
    log.debug("duplicates: kept %d of %d conformers", len(kept), count)
    return Deduplication(kept=tuple(kept), duplicate_of=duplicate_of)
