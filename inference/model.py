"""What the pipeline needs of a conformer model: draw checked conformers for a request, and say what it is.

Any model (today the Cartesian :class:`inference.conformer_sampling.ConformerSampler`) is used through
:class:`ConformerModel` only: ``sample(SamplingRequest) -> SampledConformers``, ``with_energy`` and
``provenance``. :mod:`inference.api`, the CLI and the service never depend on how a model draws its samples;
:func:`inference.loading.load_sampler` builds the right one from a checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from rdkit import Chem

from energy.protocol import EnergyModel

__all__ = ["ConformerModel", "LoadedModel", "ModelProvenance", "SampledConformers", "SamplingRequest"]


@dataclass(frozen=True, kw_only=True)
class SamplingRequest:
    """What to sample: ``num_conformers`` drawn (before checks and pruning)."""

    smiles: str
    num_conformers: int = 10
    seed: int = 0
    steps: int | None = None
    relax: bool = False
    fmax: float = 0.05
    max_relax_steps: int = 300
    prune_rms: float | None = None
    energy_window: float | None = None  # kcal/mol above the lowest
    fragments: str = "reject"  # or "largest": see molecules.smiles.mol_from_smiles
    refine_rounds: int = 0  # test-time Adjoint Sampling: RAM rounds on this molecule alone before sampling
    repair: bool = False  # MMFF94 from the input's bond graph, stereo enforced, before the checks
    repair_iters: int = 200
    mmff_relax: bool | None = None  # the model's fast MMFF94 relaxation; None: the model's default
    # draw more, relax each, keep distinct basins by energy (torsional model); None: the model's default
    relaxed_selection: bool | None = None


@dataclass
class SampledConformers:
    """Accepted conformers (sorted by energy when energies exist) and what happened to the others."""

    mol: Chem.Mol  # explicit hydrogens, one RDKit conformer per accepted sample
    energies_ev: list[float]
    reflected: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    pruned: int = 0
    outside_window: int = 0
    repaired: int = 0
    stereo_repaired: int = 0  # of the repaired: a wrong stereocentre or double bond put right
    repair_skipped: str | None = None
    mmff_relaxed: int = 0  # conformers given the model's fast MMFF94 relaxation before scoring
    acyl_isomers_turned: int = 0  # amide bonds of raw samples turned to the isomer drawn at room temperature
    clashes: int = 0  # returned conformers with a steric clash (models whose bonds cannot break report, not reject)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def num_conformers(self) -> int:
        return self.mol.GetNumConformers()

    def summary(self) -> dict[str, Any]:
        return {
            "returned": self.num_conformers,
            "reflected": self.reflected,
            "rejected": dict(self.rejected),
            "pruned": self.pruned,
            "outside_energy_window": self.outside_window,
            "repaired": self.repaired,
            "stereo_repaired": self.stereo_repaired,
            "clashes": self.clashes,
            "mmff_relaxed": self.mmff_relaxed,
            "acyl_isomers_turned": self.acyl_isomers_turned,
            **({"repair_skipped": self.repair_skipped} if self.repair_skipped else {}),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


@dataclass(frozen=True, kw_only=True)
class ModelProvenance:
    """Where a model came from, as every answer reports it.

    Attributes:
        path: the checkpoint file.
        sha256: the checkpoint file's SHA-256 (hex).
        kind: the checkpoint's stored kind (``"conformers"`` for the Cartesian sampler).
        training_round: training rounds behind the weights (``None`` if the checkpoint does not say).
        training_energy_calls: energy evaluations spent in training.
        training_energy_model: the energy model the network was trained against.
        integration_steps: SDE steps per sample by default (``None`` where the model has no such notion).
        versions: package versions the checkpoint was written with.
    """

    path: Path
    sha256: str
    kind: str
    training_round: int | None = None
    training_energy_calls: int | None = None
    training_energy_model: str | None = None
    integration_steps: int | None = None
    versions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_checkpoint(
        cls, path: Path, payload: Mapping[str, Any], *, energy_model: str | None, integration_steps: int | None
    ) -> ModelProvenance:
        """From a loaded checkpoint ``payload`` (:func:`training.checkpoint.load_checkpoint`) stored at ``path``."""
        from training.checkpoint import file_sha256

        return cls(
            path=path,
            sha256=file_sha256(path),
            kind=str(payload.get("kind")),
            training_round=payload.get("round"),
            training_energy_calls=payload.get("energy_calls"),
            training_energy_model=energy_model,
            integration_steps=integration_steps,
            versions={str(k): str(v) for k, v in (payload.get("versions") or {}).items()},
        )

    @property
    def checkpoint(self) -> str:
        """The checkpoint's file name (what answers show; the full path stays on the server)."""
        return self.path.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "sha256": self.sha256,
            "kind": self.kind,
            "training_round": self.training_round,
            "training_energy_calls": self.training_energy_calls,
            "training_energy_model": self.training_energy_model,
            "integration_steps": self.integration_steps,
            "versions": dict(self.versions),
        }


@runtime_checkable
class ConformerModel(Protocol):
    """A loaded conformer model.

    ``sample`` draws ``request.num_conformers`` samples and returns those passing the connectivity and stereo
    checks (sorted by energy when it has an energy model); ``with_energy`` returns the same network (shared,
    not copied) paired with another energy model (or none) for scoring and relaxation.
    """

    @property
    def provenance(self) -> ModelProvenance: ...

    #: whether ``repair`` is on when a request leaves it unset (``PostProcessing.repair is None``)
    default_repair: bool
    #: whether relaxed selection is on when a request leaves it unset (``PostProcessing.select is None``)
    default_select: bool

    def sample(self, request: SamplingRequest) -> SampledConformers: ...

    def with_energy(self, energy: EnergyModel | None) -> ConformerModel: ...


class LoadedModel:
    """What every loaded model shares: its :class:`ModelProvenance` (set by the subclass as ``_provenance``)
    and an ``energy`` model (or none) that :meth:`with_energy` swaps without copying the network."""

    _provenance: ModelProvenance
    energy: EnergyModel | None

    @property
    def provenance(self) -> ModelProvenance:
        """The checkpoint (path, SHA-256, kind) and how its network was trained."""
        return self._provenance

    def with_energy(self, energy: EnergyModel | None) -> Self:
        """The same network (shared, not copied) with another energy model for scoring and relaxation."""
        other = copy.copy(self)
        other.energy = energy
        return other
