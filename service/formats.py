"""Conformers as files: SDF (bonds from the SMILES, energies as properties) and multi-frame XYZ.

The HTTP service renders from its JSON answers (:class:`~service.schemas.ConformerResponse`), so a queued
job's stored results and a sync answer give the same file; the CLI renders from the sampled molecule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from rdkit import Chem

from molecules.sdf import sdf_text
from molecules.smiles import mol_from_smiles
from molecules.structures import with_conformers
from molecules.xyz import XyzFrame, xyz_text
from service.schemas import ConformerResponse

__all__ = ["MEDIA_TYPES", "conformers_sdf", "conformers_xyz", "render"]

MEDIA_TYPES = {"sdf": "chemical/x-mdl-sdfile", "xyz": "chemical/x-xyz", "json": "application/json"}


def conformers_sdf(smiles: str, mol: Chem.Mol, properties: Sequence[Mapping[str, object]]) -> str:
    """One SDF record per conformer of ``mol`` with its ``properties`` (and the SMILES, a name)."""
    conformers = list(mol.GetConformers())
    return sdf_text(
        [Chem.Mol(mol, confId=c.GetId()) for c in conformers],
        [{"_Name": f"{smiles} conformer {k}", "SMILES": smiles, **p} for k, p in enumerate(properties)],
    )


def conformers_xyz(smiles: str, mol: Chem.Mol, energies_ev: Sequence[float | None]) -> str:
    symbols = tuple(a.GetSymbol() for a in mol.GetAtoms())
    frames = [
        XyzFrame(symbols, c.GetPositions(), f"{smiles} E={e:.6f} eV" if e is not None else smiles)
        for c, e in zip(mol.GetConformers(), energies_ev, strict=True)
    ]
    return xyz_text(frames)


def render(fmt: str, answers: Sequence[ConformerResponse]) -> str:
    """``sdf`` or ``xyz`` text of every conformer of every answer, in order."""
    parts = []
    for answer in answers:
        if not answer.conformers:
            continue
        mol = with_conformers(
            mol_from_smiles(answer.smiles), [np.asarray(c.positions, dtype=float) for c in answer.conformers]
        )
        if fmt == "sdf":
            props: list[dict[str, object]] = [
                {
                    "rank": c.rank,
                    "energy_eV": c.energy_ev,
                    "relative_energy_kcal_mol": c.relative_energy_kcal_mol,
                    "energy_model": answer.provenance.energy_model,
                }
                for c in answer.conformers
            ]
            parts.append(conformers_sdf(answer.smiles, mol, props))
        elif fmt == "xyz":
            parts.append(conformers_xyz(answer.smiles, mol, [c.energy_ev for c in answer.conformers]))
        else:
            raise ValueError(f"unknown format {fmt!r}: json, sdf or xyz")
    return "".join(parts)
