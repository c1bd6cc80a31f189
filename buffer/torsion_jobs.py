"""Evaluation jobs of the torsional conformer model: what an energy worker needs to turn ``G`` sampled
conformers into torsion replay entries, as an explicit record (never pickle).

A job carries, per sample, the molecule (its MDL mol block with explicit hydrogens, in
``structures.connection_tables``: energy models parse it once per molecule and cache it), the Cartesian
positions ``x(phi_1)`` (Å), the torsions ``phi_1`` (radians) and the torsions' definition in the molecule's own
atom numbering (``torsion_atoms`` ``(a, b, c, d)`` and the atoms each torsion moves), so the worker computes
``dE/dphi`` as the torque of ``dE/dx`` about each bond without re-deriving which bonds rotate; plus the target's
temperature ``tau_ev`` and clip ``max_grad`` (:func:`sampler.torsion_loss.torsion_adjoint_target`).
Jobs travel on the same streams as :class:`buffer.jobs.EvaluationJob` (one per energy model);
:func:`decode_job` tells them apart by their record kind.

Example:
    >>> blob = job.encode()  # doctest: +SKIP
    >>> decode_job(blob).job_id == job.job_id  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from buffer.codec import RecordFormatError, decode_record, record_kind
from buffer.jobs import EVALUATION_JOB, EvaluationJob, encode_job, job_fields, record_tensor
from buffer.keys import validate_name
from energy.protocol import Structures

__all__ = ["TORSION_EVALUATION_JOB", "TorsionEvaluationJob", "decode_job"]

TORSION_EVALUATION_JOB = "torsion-evaluation-job"


@dataclass(frozen=True, kw_only=True)
class TorsionEvaluationJob:
    """``G`` torsional samples with ``T`` torsions in total, bound for replay buffer ``buffer``.

    Attributes:
        job_id: unique and deterministic (``run:identity:rROUND:K``).
        buffer: the replay buffer the entries go to.
        structures: positions ``x(phi_1)`` ``[N, 3]`` (Å), elements, charge, spin and one mol block per sample.
        system_ids: ``[G]`` the trainer's system (molecule and seed) of each sample.
        model_version: the training round whose control drew the samples.
        phi: ``[T]`` the sampled torsions (radians), sample by sample.
        num_torsions: ``[G]`` torsions per sample.
        torsion_atoms: ``[T, 4]`` ``(a, b, c, d)`` per torsion, atom indices within its sample (``c`` moves).
        moving_counts: ``[T]`` atoms moved by each torsion.
        moving_atoms: ``[sum(moving_counts)]`` those atoms, torsion by torsion, indices within the sample.
        tau_ev: temperature of the target ``exp(-E / tau)`` (eV).
        max_grad: per-torsion clip of ``dg/dphi``.
        relax_iterations: ``0``: the energy of ``x(phi_1)`` as it is. ``N > 0``: the relaxed torsional target
            (MMFF94 minimized ``N`` steps with the rotatable dihedrals held; MMFF94 workers only).
    """

    job_id: str
    buffer: str
    structures: Structures
    system_ids: torch.Tensor
    model_version: int
    phi: torch.Tensor
    num_torsions: torch.Tensor
    torsion_atoms: torch.Tensor
    moving_counts: torch.Tensor
    moving_atoms: torch.Tensor
    tau_ev: float
    max_grad: float
    relax_iterations: int = 0

    def __post_init__(self) -> None:
        validate_name("job id", self.job_id, allow_colon=True)
        validate_name("buffer name", self.buffer)
        g = self.structures.num_structures
        if self.system_ids.shape != (g,) or self.num_torsions.shape != (g,):
            raise ValueError(f"system_ids and num_torsions must be [{g}] (one per sample)")
        t = int(self.num_torsions.sum())
        if self.phi.shape != (t,) or self.torsion_atoms.shape != (t, 4) or self.moving_counts.shape != (t,):
            raise ValueError(f"phi [T], torsion_atoms [T, 4] and moving_counts [T] need T = {t}")
        if self.moving_atoms.shape != (int(self.moving_counts.sum()),):
            raise ValueError("moving_atoms must hold sum(moving_counts) atoms")
        tables = self.structures.connection_tables
        if tables is None or any(table is None for table in tables):
            raise ValueError("every sample needs its mol block (structures.connection_tables)")
        if self.relax_iterations < 0:
            raise ValueError(f"relax_iterations must be >= 0, got {self.relax_iterations}")

    def encode(self) -> bytes:
        arrays = {
            "phi": self.phi.detach().cpu().numpy(),
            "num_torsions": self.num_torsions.cpu().numpy(),
            "torsion_atoms": self.torsion_atoms.cpu().numpy(),
            "moving_counts": self.moving_counts.cpu().numpy(),
            "moving_atoms": self.moving_atoms.cpu().numpy(),
        }
        meta = {"tau_ev": self.tau_ev, "max_grad": self.max_grad, "relax_iterations": self.relax_iterations}
        return encode_job(TORSION_EVALUATION_JOB, self, meta, arrays)

    @classmethod
    def decode(cls, blob: bytes) -> TorsionEvaluationJob:
        record = decode_record(blob, TORSION_EVALUATION_JOB)
        return cls(
            **job_fields(record),
            phi=record_tensor(record, "phi"),
            num_torsions=record_tensor(record, "num_torsions"),
            torsion_atoms=record_tensor(record, "torsion_atoms"),
            moving_counts=record_tensor(record, "moving_counts"),
            moving_atoms=record_tensor(record, "moving_atoms"),
            tau_ev=float(record.meta["tau_ev"]),
            max_grad=float(record.meta["max_grad"]),
            relax_iterations=int(record.meta.get("relax_iterations", 0)),  # absent in records of older versions
        )


def decode_job(blob: bytes) -> EvaluationJob | TorsionEvaluationJob:
    """Either kind of evaluation job, by the kind its record declares (unknown kinds raise
    :class:`buffer.codec.RecordFormatError`)."""
    kind = record_kind(blob)
    if kind == TORSION_EVALUATION_JOB:
        return TorsionEvaluationJob.decode(blob)
    if kind == EVALUATION_JOB:
        return EvaluationJob.decode(blob)
    raise RecordFormatError(f"unknown job kind {kind!r}: run the same adjoint-sampling version everywhere")
