"""Conformers as files, rendered from the JSON answers: SDF with the SD tags of :mod:`molecules.tags` and
CREST's ensemble XYZ layout — the same files the CLI and the Python API write (``docs/OUTPUT.md``).

The HTTP service renders from its JSON answers (:class:`~service.schemas.ConformerResponse`), so a queued
job's stored results and a sync answer give the same file. Atoms are in the order of the answer's
``elements``: the request SMILES's (also for an enumerated stereoisomer, whose configuration the 3D
coordinates carry).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rdkit import Chem

from molecules.ensemble import DEFAULT_TEMPERATURE_K
from molecules.sdf import sdf_text
from molecules.smiles import mol_from_smiles
from molecules.structures import with_conformers
from molecules.tags import crest_xyz_text, tag_conformers
from molecules.xyz import XyzFrame, xyz_text
from service.schemas import ConformerResponse

__all__ = ["MEDIA_TYPES", "render"]

MEDIA_TYPES = {"sdf": "chemical/x-mdl-sdfile", "xyz": "chemical/x-xyz", "json": "application/json"}


def _molecule(answer: ConformerResponse) -> Chem.Mol:
    mol = mol_from_smiles(answer.input_smiles or answer.smiles)
    return with_conformers(mol, [np.asarray(c.positions, dtype=float) for c in answer.conformers])


def _energies(answer: ConformerResponse) -> list[float] | None:
    energies = [c.energy_ev for c in answer.conformers]
    return None if any(e is None for e in energies) else [float(e) for e in energies if e is not None]


def _sdf(answer: ConformerResponse) -> str:
    prov = answer.provenance
    temperature = prov.post_processing.temperature_k if prov.post_processing else DEFAULT_TEMPERATURE_K
    records = tag_conformers(
        _molecule(answer),
        answer.name or answer.smiles,
        energies_ev=_energies(answer),
        energy_model=prov.energy_model,
        checks_passed=answer.checks.passed,
        input_smiles=answer.input_smiles or answer.smiles,
        temperature_k=temperature,
        isomeric_smiles=answer.isomeric_smiles,
        model_sha256=prov.model.sha256,
        pipeline=prov.pipeline,
    )
    return sdf_text(records)


def _xyz(answer: ConformerResponse, titled: bool) -> str:
    symbols = answer.elements
    positions = np.asarray([c.positions for c in answer.conformers], dtype=float).reshape(-1, len(symbols), 3)
    energies = _energies(answer)
    name = answer.name or answer.smiles
    if energies is None:
        return xyz_text([XyzFrame(tuple(symbols), p, name) for p in positions])
    return crest_xyz_text(symbols, positions, energies, title=name if titled else None)


def render(fmt: str, answers: Sequence[ConformerResponse]) -> str:
    """``sdf`` or ``xyz`` text of every conformer of every answer, in order. XYZ is CREST's layout (the energy
    in Hartree on each comment line, lowest first), followed by the molecule's name when the file holds
    several molecules."""
    if fmt not in ("sdf", "xyz"):
        raise ValueError(f"unknown format {fmt!r}: json, sdf or xyz")
    answers = [a for a in answers if a.conformers]
    titled = len(answers) > 1
    return "".join(_sdf(a) if fmt == "sdf" else _xyz(a, titled) for a in answers)
