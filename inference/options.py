"""What happens to raw samples by default: the one home of the defaults every front end shares.

The command line (``adjoint-sampling sample``), the HTTP service (``POST /v1/conformers``, ``/v1/jobs``)
and the Python API (:func:`inference.api.generate_conformers`) take their defaults from here, under the
same names (``--dedup-rmsd`` / ``"dedup_rmsd"`` / ``dedup_rmsd=``), so one request gives the same
conformers wherever it is made.

``repair`` is the model's own default (``None``): off for the default, torsional model, whose samples keep the
seeds' bonds, angles and stereocentres, so they pass the checks on their own (its acyl isomers drawn at room
temperature and its fast MMFF94 relaxation are part of that model, reported as ``acyl_isomers_turned`` and
``mmff_relaxed``); on for the Cartesian model (``--checkpoint
checkpoints/conformers.pt``), whose raw samples often miss a bond length or a stereocentre.

Example:
    >>> DEFAULTS.dedup_rmsd, DEFAULTS.stereo
    (0.5, 'refuse')
    >>> DEFAULTS.duplicates().rmsd_threshold_angstrom
    0.5
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from molecules.constants import DEFAULT_MAX_ISOMERS, DEFAULT_TEMPERATURE_K

if TYPE_CHECKING:  # the CLI's help shows these defaults without importing RDKit or numpy
    from molecules.ensemble import DuplicateCriteria

__all__ = [
    "DEFAULTS",
    "DEFAULT_ENERGY_MODEL",
    "DEFAULT_NUM_CONFORMERS",
    "MIN_TEMPERATURE_K",
    "SELECT_WITH_REPAIR",
    "STEREO_POLICIES",
    "PostProcessing",
    "StereoPolicy",
]

DEFAULT_ENERGY_MODEL = "auto"
"""Scores (and relaxes) conformers when a request names no energy model: ``auto`` = ANI-2xt for neutral
closed-shell H/C/N/O/F/S/Cl molecules, GFN2-xTB otherwise (the choice is recorded per molecule). ANI-2xt is as
accurate as GFN2-xTB against the SPICE DFT energies (Spearman 0.72 vs 0.68, MAE 1.07 vs 0.93 kcal/mol) at
10-20x its speed: ``benchmarks/results/energy_accuracy.md``."""

DEFAULT_NUM_CONFORMERS = 10
"""Conformers drawn per molecule (before checks and duplicate removal)."""

MIN_TEMPERATURE_K = 1.0
"""Boltzmann weights below 1 K are meaningless for conformers (and ``k_B T`` underflows near 0)."""

StereoPolicy = Literal["refuse", "enumerate"]
STEREO_POLICIES: tuple[StereoPolicy, ...] = ("refuse", "enumerate")


#: why ``select`` and ``repair`` are refused together (every front end says it in these words)
SELECT_WITH_REPAIR = "select relaxes every draw with MMFF94 itself: it cannot be combined with repair"


@dataclass(frozen=True, kw_only=True)
class PostProcessing:
    """What is done with the raw samples of one molecule, and with its input's open stereochemistry.

    Attributes:
        repair: MMFF94-optimize every raw sample from the input's bond graph (stereo enforced) before the
            connectivity and stereo checks; ``None``: the model's own default (off for the torsional model, whose
            samples keep the seeds' bonds and stereo; on for the Cartesian model).
        relax: locally minimize every accepted conformer with the energy model (then check again).
        dedup_rmsd: heavy-atom, symmetry-aware RMSD (Å) below which a conformer duplicates a lower-energy one
            already kept; ``0`` keeps every conformer.
        energy_tolerance: kcal/mol; if given, a duplicate must also lie within this energy of the kept one
            (CREST's ETHR). ``None``: RMSD alone; ``0``: nothing is within tolerance, so nothing is removed.
        energy_window: kcal/mol above the lowest conformer beyond which conformers are dropped (``None``: all).
        temperature_k: temperature of the Boltzmann weights, K (at least :data:`MIN_TEMPERATURE_K`).
        stereo: an input with an unassigned stereocentre or stereo double bond is refused (``"refuse"``,
            naming the atoms) or expanded into its stereoisomers, each sampled on its own (``"enumerate"``).
        max_isomers: at most this many stereoisomers per input with ``stereo="enumerate"``.
        select: relaxed selection (the torsional model with its MMFF94 relaxation): draw four times as many
            samples (35 % of them with uniform torsions), relax each (in torsion space first, then 30 Cartesian
            iterations for the distinct ones: :mod:`molecules.torsion_relaxation`), set aside invalid ones, drop
            duplicate basins and keep the requested number by the Boltzmann law of their MMFF94 energies at 3
            kcal/mol (:mod:`molecules.selection`). ``None``: the model's default (on for the torsional model, which is
            refused for the Cartesian one); ``False``: the fast pipeline (each of K draws relaxed once by 200
            Cartesian iterations: about 1.25x the speed, lower coverage on the benchmark).
    """

    repair: bool | None = None
    relax: bool = False
    dedup_rmsd: float = 0.5
    energy_tolerance: float | None = None
    energy_window: float | None = None
    temperature_k: float = DEFAULT_TEMPERATURE_K
    stereo: StereoPolicy = "refuse"
    max_isomers: int = DEFAULT_MAX_ISOMERS
    select: bool | None = None

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, what: str) -> ValueError:
            return ValueError(f"{name} must be {what}, got {value!r}")

        if not (math.isfinite(self.dedup_rmsd) and self.dedup_rmsd >= 0):
            raise bad("dedup_rmsd", self.dedup_rmsd, "a number of Å >= 0 (0 keeps every conformer)")
        tol = self.energy_tolerance
        if tol is not None and not (math.isfinite(tol) and tol >= 0):
            raise bad("energy_tolerance", tol, "a number of kcal/mol >= 0, or None")
        window = self.energy_window
        if window is not None and not (math.isfinite(window) and window >= 0):
            raise bad("energy_window", window, "a number of kcal/mol >= 0, or None")
        if not (math.isfinite(self.temperature_k) and self.temperature_k >= MIN_TEMPERATURE_K):
            raise bad("temperature_k", self.temperature_k, f"a number of kelvin >= {MIN_TEMPERATURE_K:g}")
        if self.stereo not in STEREO_POLICIES:
            raise bad("stereo", self.stereo, f"one of {STEREO_POLICIES}")
        if self.max_isomers < 1:
            raise bad("max_isomers", self.max_isomers, "at least 1")
        if self.select and self.repair:
            raise ValueError(SELECT_WITH_REPAIR)

    def duplicates(self) -> DuplicateCriteria | None:
        """The duplicate criteria, or ``None`` when duplicate removal is off (``dedup_rmsd`` or
        ``energy_tolerance`` is 0)."""
        from molecules.ensemble import DuplicateCriteria

        if self.dedup_rmsd == 0 or self.energy_tolerance == 0:
            return None
        return DuplicateCriteria(
            rmsd_threshold_angstrom=self.dedup_rmsd, energy_tolerance_kcal_mol=self.energy_tolerance
        )

    def replace(self, **changes: Any) -> PostProcessing:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULTS = PostProcessing()
"""The defaults of every front end."""
