"""A checkpoint in, a conformer model out: the one place that knows which class reads which checkpoint.

The checkpoint's stored ``kind`` decides: ``"torsional-conformers"`` is the torsional
:class:`~inference.torsional_sampling.TorsionalSampler`, ``"conformers"`` the Cartesian
:class:`~inference.conformer_sampling.ConformerSampler`. Every caller receives a
:class:`~inference.model.ConformerModel` and uses nothing else of it.

Example:
    >>> sampler = load_sampler("checkpoints/conformers.pt")  # doctest: +SKIP
    >>> sampler.provenance.sha256[:12]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from energy.protocol import EnergyModel
from inference.model import ConformerModel
from training.checkpoint import load_checkpoint
from training.conformer_training import CHECKPOINT_KIND as CARTESIAN_KIND
from training.torsional_training import CHECKPOINT_KIND as TORSIONAL_KIND

__all__ = ["SAMPLER_KINDS", "load_sampler"]

SAMPLER_KINDS = (TORSIONAL_KIND, CARTESIAN_KIND)
"""Checkpoint kinds :func:`load_sampler` reads."""


def load_sampler(checkpoint: str | Path, *, energy: EnergyModel | None = None, device: str = "cpu") -> ConformerModel:
    """The conformer model stored in ``checkpoint``, on ``device``, scoring with ``energy`` (or not at all).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a checkpoint, or a checkpoint of a kind no conformer model reads (e.g. a DW-4 one).
    """
    path = Path(checkpoint)
    kind = load_checkpoint(path).get("kind")
    if kind == TORSIONAL_KIND:
        from inference.torsional_sampling import TorsionalSampler

        return TorsionalSampler(path, energy=energy, device=device)
    if kind == CARTESIAN_KIND:
        from inference.conformer_sampling import ConformerSampler

        return ConformerSampler(path, energy=energy, device=device)
    raise ValueError(f"{path} is a {kind!r} checkpoint, not a conformer model (kinds read: {list(SAMPLER_KINDS)})")
