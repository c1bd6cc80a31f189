"""The energy worker's side of the torsional conformer model: a :class:`buffer.torsion_jobs.TorsionEvaluationJob`
in, encoded torsion replay entries out (the trainer's side is :mod:`training.torsional_worker`).

The target is the one :meth:`training.torsional_training.TorsionalTrainer.evaluate` computes in process:
``-clip(dE/dphi / tau + d log p_1^base / dphi)`` per torsion, ``dE/dphi`` the torque of ``dE/dx`` about each
rotatable bond (:func:`sampler.torsion_geometry.torsion_torque`). Each entry carries its sample id
``JOB_ID:K`` (``K``: the sample's index in the job), so a buffer can be audited for losses and duplicates.
A job with ``relax_iterations > 0`` is evaluated on the relaxed torsional surface, as the trainer does in
process (:meth:`training.torsional_training.TorsionalTrainer.relaxed_positions`): each sample minimized by MMFF94
with its dihedrals held, then energy and torque at the relaxed geometry.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch
from rdkit import Chem

from buffer.codec import encode_replay_entries
from buffer.jobs import JobState, JobStatus
from buffer.torsion_jobs import TorsionEvaluationJob
from energy.mmff import MmffEnergy, mmff_torsion_relax
from energy.protocol import EnergyModel, EnergyResult, Structures
from sampler.torsion_geometry import TorsionBatch, torsion_torque
from sampler.torsion_loss import torsion_adjoint_target
from sampler.torsion_replay import TorsionSamples
from sampler.torus import TorusBase

__all__ = ["evaluate_torsion_job", "relax_at_torsions", "relaxed_structures", "torque_batch"]

log = logging.getLogger(__name__)


def torque_batch(job: TorsionEvaluationJob) -> TorsionBatch:
    """The job's samples as a :class:`TorsionBatch` (global atom indices) at their positions ``x(phi_1)``; no
    graph features (the torque needs only which atoms each torsion moves)."""
    s = job.structures
    g = s.num_structures
    offsets = torch.cumsum(s.num_atoms, 0) - s.num_atoms
    torsion_batch = torch.repeat_interleave(torch.arange(g), job.num_torsions)
    moving_torsion = torch.repeat_interleave(torch.arange(job.phi.shape[0]), job.moving_counts)
    limit = s.num_atoms[torsion_batch]
    moving_limit = limit[moving_torsion]
    if bool((job.torsion_atoms < 0).any() or (job.torsion_atoms >= limit[:, None]).any()) or bool(
        (job.moving_atoms < 0).any() or (job.moving_atoms >= moving_limit).any()
    ):
        raise ValueError(f"job {job.job_id}: a torsion refers to an atom outside its molecule")
    x = s.positions.to(torch.float64)
    return TorsionBatch(
        positions=x,
        node_batch=torch.repeat_interleave(torch.arange(g), s.num_atoms),
        num_nodes=s.num_atoms.long(),
        torsion_atoms=(job.torsion_atoms + offsets[torsion_batch][:, None]).long(),
        torsion_batch=torsion_batch,
        moving_atoms=(job.moving_atoms + offsets[torsion_batch][moving_torsion]).long(),
        moving_torsion=moving_torsion,
        node_attr=x.new_zeros(x.shape[0], 0),
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        edge_attr=x.new_zeros(0, 0),
        system_ids=job.system_ids.long(),
        seed_index=torch.zeros(g, dtype=torch.long),
    )


def relax_at_torsions(
    mols: Sequence[Chem.Mol],
    batch: TorsionBatch,
    positions: torch.Tensor,
    max_iters: int,
    properties: Sequence[Any] | None = None,
    variant: str = "MMFF94",
) -> torch.Tensor:
    """``[N, 3]`` positions of ``batch``'s samples (``mols[g]`` the molecule of sample ``g``), each minimized
    ``max_iters`` MMFF94 steps with its own dihedrals held (:func:`energy.mmff.mmff_torsion_relax`);
    ``properties[g]`` its MMFF94 typing, reused when given. A sample that cannot be relaxed (non-finite
    positions, a molecule MMFF94 cannot type) keeps its positions, for the energy model to judge; the others are
    unaffected."""
    x = positions.detach().to(torch.float64).clone()
    starts = (torch.cumsum(batch.num_nodes, 0) - batch.num_nodes).tolist()
    for g, mol in enumerate(mols):
        lo, n = starts[g], int(batch.num_nodes[g])
        dihedrals = batch.torsion_atoms[batch.torsion_batch == g] - lo
        try:
            relaxed = mmff_torsion_relax(
                mol,
                x[lo : lo + n].numpy(),
                dihedrals.numpy(),
                max_iters=max_iters,
                properties=None if properties is None else properties[g],
                variant=variant,
            )
        except ValueError as exc:
            log.warning("sample %d not relaxed (%s); evaluated as it is", g, exc)
            continue
        x[lo : lo + n] = torch.from_numpy(relaxed)
    return x


def relaxed_structures(job: TorsionEvaluationJob, batch: TorsionBatch, variant: str = "MMFF94") -> Structures:
    """The job's structures, each minimized ``job.relax_iterations`` steps of ``variant`` with its dihedrals
    held."""
    tables = job.structures.connection_tables
    assert tables is not None  # checked by the job
    parsed: dict[str, Chem.Mol] = {}
    mols = []
    for g, table in enumerate(tables):
        assert table is not None
        if table not in parsed:
            mol = Chem.MolFromMolBlock(table, removeHs=False)
            if mol is None:
                raise ValueError(f"job {job.job_id}: sample {g}'s mol block could not be parsed")
            parsed[table] = mol
        mols.append(parsed[table])
    x = relax_at_torsions(mols, batch, batch.positions, job.relax_iterations, variant=variant)
    return dataclasses.replace(job.structures, positions=x)


def evaluate_torsion_job(model: EnergyModel, job: TorsionEvaluationJob) -> tuple[list[bytes], JobStatus]:
    """Evaluate once; the encoded replay entries of the valid samples (target
    ``-clip(dE/dphi / tau + d log p_1^base / dphi)``, ``dE/dphi`` the torque of ``dE/dx`` about each bond) and
    the job's status. ``model`` reads each sample's mol block (the MMFF94 adapter caches it per molecule)."""
    s = job.structures
    batch = torque_batch(job)
    if job.relax_iterations:
        if not isinstance(model, MmffEnergy):
            raise ValueError(
                f"job {job.job_id} asks for the relaxed torsional target (MMFF94 relaxation), but this worker's "
                f"energy model is {model.name!r}: run MMFF94 workers for it"
            )
        s = relaxed_structures(job, batch, model.variant)  # relaxed on the surface the model evaluates
    result: EnergyResult = model.evaluate(s)
    grad_x = -torch.where(torch.isfinite(result.forces), result.forces, 0.0).to(torch.float64)
    phi = job.phi.to(torch.float64)
    grad_phi = torsion_torque(batch, s.positions.to(torch.float64), grad_x)
    target = torsion_adjoint_target(phi, grad_phi, tau=job.tau_ev, base=TorusBase(), max_grad=job.max_grad)
    g = s.num_structures
    bad = torch.zeros(g, dtype=torch.long).index_add_(0, batch.torsion_batch, (~torch.isfinite(target)).long())
    valid = result.valid & torch.isfinite(result.energies) & (bad == 0)
    dtype = job.phi.dtype
    energies = result.energies.to(dtype)
    status = JobStatus(
        state=JobState.DONE,
        evaluated=g,
        valid=int(valid.sum()),
        energy_sum=float(energies[valid].sum()) if bool(valid.any()) else 0.0,
    )
    if not bool(valid.any()):
        return [], status
    keep = valid[batch.torsion_batch]
    samples = TorsionSamples(
        system_ids=job.system_ids[valid],
        num_torsions=job.num_torsions[valid],
        phi=job.phi[keep],
        adjoint=target[keep].to(dtype),
        energies=energies[valid],
        model_version=torch.full((int(valid.sum()),), job.model_version, dtype=torch.long),
    )
    ids = [f"{job.job_id}:{k}" for k in torch.nonzero(valid).flatten().tolist()]
    return encode_replay_entries(samples.to_replay(), sample_ids=ids), status
