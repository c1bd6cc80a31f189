"""What a written conformer carries: the one schema of per-conformer SD tags, and CREST's ensemble XYZ.

Every front end (CLI, HTTP service, Python API) writes conformers through :func:`tag_conformers`, so an
SDF means the same thing wherever it came from. Each conformer is one SD record:

- title (first line of the record): the input's ID (the ``.smi`` name, the SDF title, the CSV ID column,
  or a generated ``mol<k>``); all conformers of one input share it, as OMEGA's output does;
- the input's own SD properties / CSV columns, carried through unchanged;
- the tags below (the input's property of the same name, if any, is overwritten, with a warning).

=============================  =====================================================================
tag                            value
=============================  =====================================================================
``energy_eV``                  absolute energy under the energy model, eV (6 decimals)
``relative_energy_kcal_mol``   above the lowest conformer written for this input, kcal/mol (4 decimals)
``boltzmann_weight``           population ``exp(−ΔE/k_B T) / Σ exp(−ΔE/k_B T)`` over the conformers
                               written for this input (6 significant digits)
``boltzmann_temperature_K``    the ``T`` of the weights, K
``conformer_rank``             1 = lowest energy; records are written in rank order
``energy_model``               the energy model that scored the conformers (e.g. ``uma-s-1p1``)
``checks_passed``              comma-separated checks every written conformer passed
                               (e.g. ``connectivity,stereochemistry``; ``none`` if none ran)
``input_smiles``               the input SMILES (for an SDF input: the SMILES written from its record)
=============================  =====================================================================

and, where the writer knows them (:data:`PROVENANCE_TAGS`):

=============================  =====================================================================
``isomeric_smiles``            the isomeric SMILES the conformers were sampled for (one stereoisomer
                               of the input when stereoisomers were enumerated)
``model_sha256``               SHA-256 of the checkpoint that drew the conformers
``pipeline``                   what was done to the model's draws before the checks
                               (:func:`pipeline_label`: ``relaxed selection (MMFF94)``,
                               ``MMFF94-relaxed draws``, ``MMFF94-repaired draws`` or ``raw draws``,
                               then ``, relaxed with <energy model>`` where that was asked for)
=============================  =====================================================================

Without an energy model the energy, weight, temperature and rank tags are absent (never a fake
value), and the records keep the sampler's order. ``docs/OUTPUT.md`` has the same table for users.

CREST's ensemble file (``crest_conformers.xyz``) is a multi-frame XYZ file; :func:`crest_xyz_text` writes
its exact layout (CREST's ``wrxyz``: Fortran ``(2x,i0)`` atom count, ``(2x,f18.8)`` energy,
``(1x,a2,1x,3f20.10)`` atoms): per frame the atom count, then a comment line whose first token is the
bare total energy in **Hartree** (the unit of CREST's xTB energies; CREST reads the first number on
the line back as the energy), then ``symbol x y z`` in Å, frames sorted by energy, lowest first. A file of
several molecules may name each frame's molecule after the energy (``title``): the energy stays the first
token, so CREST's reader still finds it.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from rdkit import Chem

from energy.units import HARTREE_EV
from molecules.ensemble import (
    DEFAULT_TEMPERATURE_K,
    boltzmann_weights,
    conformer_ranks,
    energy_order,
    relative_energies_kcal_mol,
)
from molecules.xyz import XyzFrame

__all__ = [
    "CONFORMER_TAGS",
    "PROVENANCE_TAGS",
    "TAG_BOLTZMANN_TEMPERATURE",
    "TAG_BOLTZMANN_WEIGHT",
    "TAG_CHECKS_PASSED",
    "TAG_ENERGY",
    "TAG_ENERGY_MODEL",
    "TAG_INPUT_SMILES",
    "TAG_ISOMERIC_SMILES",
    "TAG_MODEL_SHA256",
    "TAG_PIPELINE",
    "TAG_RANK",
    "TAG_RELATIVE_ENERGY",
    "conformer_tags",
    "crest_energy_ev",
    "crest_xyz_text",
    "pipeline_label",
    "tag_conformers",
    "write_crest_xyz",
]

log = logging.getLogger(__name__)

TAG_ENERGY = "energy_eV"
TAG_RELATIVE_ENERGY = "relative_energy_kcal_mol"
TAG_BOLTZMANN_WEIGHT = "boltzmann_weight"
TAG_BOLTZMANN_TEMPERATURE = "boltzmann_temperature_K"
TAG_RANK = "conformer_rank"
TAG_ENERGY_MODEL = "energy_model"
TAG_CHECKS_PASSED = "checks_passed"
TAG_INPUT_SMILES = "input_smiles"
TAG_ISOMERIC_SMILES = "isomeric_smiles"
TAG_MODEL_SHA256 = "model_sha256"
TAG_PIPELINE = "pipeline"

CONFORMER_TAGS = (
    TAG_ENERGY,
    TAG_RELATIVE_ENERGY,
    TAG_BOLTZMANN_WEIGHT,
    TAG_BOLTZMANN_TEMPERATURE,
    TAG_RANK,
    TAG_ENERGY_MODEL,
    TAG_CHECKS_PASSED,
    TAG_INPUT_SMILES,
)
"""The conformer tags, in the order they are written."""

PROVENANCE_TAGS = (TAG_ISOMERIC_SMILES, TAG_MODEL_SHA256, TAG_PIPELINE)
"""Written after :data:`CONFORMER_TAGS` when given: what was sampled, by which checkpoint, and how."""


def pipeline_label(*, selected: bool, mmff_relaxed: int, repaired: int, relaxed_with: str | None = None) -> str:
    """The :data:`TAG_PIPELINE` value from what happened to one molecule's draws: relaxed selection (``selected``,
    its draws MMFF94-relaxed), the fast MMFF94 relaxation (``mmff_relaxed`` conformers), an MMFF94 repair
    (``repaired``) or none; ``relaxed_with``: the energy model of a final relaxation."""
    if selected and mmff_relaxed:
        label = "relaxed selection (MMFF94)"
    elif mmff_relaxed:
        label = "MMFF94-relaxed draws"
    elif repaired:
        label = "MMFF94-repaired draws"
    else:
        label = "raw draws"
    return label if relaxed_with is None else f"{label}, relaxed with {relaxed_with}"


def conformer_tags(
    num_conformers: int,
    *,
    energies_ev: Sequence[float] | np.ndarray | None = None,
    energy_model: str | None = None,
    checks_passed: Sequence[str] | None = None,
    input_smiles: str | None = None,
    temperature_k: float = DEFAULT_TEMPERATURE_K,
    isomeric_smiles: str | None = None,
    model_sha256: str | None = None,
    pipeline: str | None = None,
) -> list[dict[str, str]]:
    """The tag values of each conformer, in the given conformer order, as the strings written to the SDF.

    ``None`` arguments leave their tags out; energy-derived tags need ``energies_ev`` (absolute, eV).
    """
    if energies_ev is not None and len(energies_ev) != num_conformers:
        raise ValueError(f"{len(energies_ev)} energies for {num_conformers} conformers")
    common: dict[str, str] = {}
    if energy_model is not None:
        common[TAG_ENERGY_MODEL] = energy_model
    if checks_passed is not None:
        common[TAG_CHECKS_PASSED] = ",".join(checks_passed) or "none"
    if input_smiles is not None:
        common[TAG_INPUT_SMILES] = input_smiles
    if isomeric_smiles is not None:
        common[TAG_ISOMERIC_SMILES] = isomeric_smiles
    if model_sha256 is not None:
        common[TAG_MODEL_SHA256] = model_sha256
    if pipeline is not None:
        common[TAG_PIPELINE] = pipeline
    if energies_ev is None:
        return [dict(common) for _ in range(num_conformers)]
    energies = np.asarray(energies_ev, dtype=np.float64)
    relative = relative_energies_kcal_mol(energies)
    weights = boltzmann_weights(energies, temperature_k)
    ranks = conformer_ranks(energies)
    return [
        {
            TAG_ENERGY: f"{energies[k]:.6f}",
            TAG_RELATIVE_ENERGY: f"{relative[k]:.4f}",
            TAG_BOLTZMANN_WEIGHT: f"{weights[k]:.6g}",
            TAG_BOLTZMANN_TEMPERATURE: f"{temperature_k:.2f}",
            TAG_RANK: str(int(ranks[k])),
            **common,
        }
        for k in range(num_conformers)
    ]


def tag_conformers(
    mol: Chem.Mol,
    record_id: str,
    *,
    energies_ev: Sequence[float] | np.ndarray | None = None,
    energy_model: str | None = None,
    checks_passed: Sequence[str] | None = None,
    input_smiles: str | None = None,
    input_properties: Mapping[str, object] | None = None,
    temperature_k: float = DEFAULT_TEMPERATURE_K,
    isomeric_smiles: str | None = None,
    model_sha256: str | None = None,
    pipeline: str | None = None,
) -> list[Chem.Mol]:
    """One single-conformer copy of ``mol`` per conformer, titled ``record_id``, carrying the input's
    properties and the :data:`CONFORMER_TAGS`; lowest energy first (the conformers' order without energies).

    Write them with :func:`molecules.sdf.sdf_text` / ``write_sdf`` (or any ``Chem.SDWriter``).
    """
    if "\n" in record_id or "\r" in record_id:
        raise ValueError(f"a record title must be one line, got {record_id!r}")
    conformers = list(mol.GetConformers())
    tags = conformer_tags(
        len(conformers),
        energies_ev=energies_ev,
        energy_model=energy_model,
        checks_passed=checks_passed,
        input_smiles=input_smiles,
        temperature_k=temperature_k,
        isomeric_smiles=isomeric_smiles,
        model_sha256=model_sha256,
        pipeline=pipeline,
    )
    carried = {str(k): str(v) for k, v in (input_properties or {}).items() if v is not None}
    clashes = sorted(set(carried) & set(CONFORMER_TAGS + PROVENANCE_TAGS))
    if clashes:
        log.warning("%s: input properties %s are overwritten by this program's tags", record_id, clashes)
    order = range(len(conformers)) if energies_ev is None else energy_order(energies_ev)
    out = []
    for k in order:
        single = Chem.Mol(mol, confId=conformers[int(k)].GetId())
        single.SetProp("_Name", record_id)
        for key, value in {**carried, **tags[int(k)]}.items():
            single.SetProp(key, value)
        out.append(single)
    return out


def _check_frames(
    symbols: Sequence[str], positions: np.ndarray, energies_ev: Sequence[float] | np.ndarray
) -> np.ndarray:
    if positions.ndim != 3 or positions.shape[1:] != (len(symbols), 3):
        raise ValueError(f"positions must be [conformers, {len(symbols)}, 3] Å, got shape {positions.shape}")
    energies = np.asarray(energies_ev, dtype=np.float64)
    if energies.shape != (positions.shape[0],):
        raise ValueError(
            f"crest_conformers.xyz carries one energy per frame: got {energies.size} energies for "
            f"{positions.shape[0]} conformers (without an energy model, write plain XYZ: molecules.xyz)"
        )
    if not np.isfinite(energies).all():
        raise ValueError("crest_conformers.xyz needs a finite energy for every frame")
    return energies


def crest_xyz_text(
    symbols: Sequence[str],
    positions: np.ndarray,
    energies_ev: Sequence[float] | np.ndarray,
    *,
    title: str | None = None,
) -> str:
    """``crest_conformers.xyz`` text: the frames sorted by energy, each comment line the bare energy in Hartree.

    Args:
        symbols: element symbols, one per atom (e.g. ``[a.GetSymbol() for a in mol.GetAtoms()]``).
        positions: ``[C, n_atoms, 3]`` Å (e.g. ``molecules.rmsd.conformer_coordinates(mol)``).
        energies_ev: absolute energies, eV, one per conformer.
        title: written after the energy on every comment line (one line, e.g. the molecule's ID in a file of
            several molecules); ``None`` writes the bare energy, exactly as CREST does.
    """
    if title is not None and ("\n" in title or "\r" in title):
        raise ValueError(f"an XYZ title must be one line, got {title!r}")
    positions = np.asarray(positions, dtype=np.float64)
    energies = _check_frames(symbols, positions, energies_ev)
    suffix = f"  {title}" if title else ""
    lines: list[str] = []
    for k in energy_order(energies):
        lines.append(f"  {len(symbols)}\n  {energies[k] / HARTREE_EV:18.8f}{suffix}\n")
        lines.extend(
            f" {s:<2s} {x:20.10f}{y:20.10f}{z:20.10f}\n" for s, (x, y, z) in zip(symbols, positions[k], strict=True)
        )
    return "".join(lines)


def write_crest_xyz(
    path: str | Path, symbols: Sequence[str], positions: np.ndarray, energies_ev: Sequence[float] | np.ndarray
) -> Path:
    """Write :func:`crest_xyz_text` to ``path`` (``.gz`` compresses)."""
    path = Path(path)
    text = crest_xyz_text(symbols, positions, energies_ev)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def crest_energy_ev(frame: XyzFrame) -> float:
    """The energy of a CREST ensemble frame (read with :func:`molecules.xyz.read_xyz`) in eV: the first
    number on its comment line, in Hartree."""
    for token in frame.comment.split():
        try:
            return float(token) * HARTREE_EV
        except ValueError:
            continue
    raise ValueError(f"no energy on the XYZ comment line {frame.comment.strip()[:60]!r} (CREST writes it in Hartree)")
