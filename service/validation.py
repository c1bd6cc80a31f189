"""Chemistry checks at the HTTP edge: what the request schema cannot express.

Every SMILES is parsed and turned into the sampler's graph before anything is sampled or queued, so a
broken SMILES, an element the network has no feature for, a molecule over the size limit, or (with
``stereo: refuse``, the default) a stereocentre or double bond left unassigned is a 422 that names the field
(``smiles``, ``smiles[3]``) with a message a chemist understands — never a failed job later.
"""

from __future__ import annotations

from collections.abc import Sequence

from rdkit import Chem

from molecules.features import ELEMENTS
from molecules.graph import MAX_ATOMS, molecular_system
from molecules.smiles import SmilesError, mol_from_smiles
from molecules.stereo import UnassignedStereoError, find_unassigned_stereo
from service.schemas import FieldError

__all__ = ["SUPPORTED_ELEMENTS", "ApiError", "energy_model_error", "molecule_problem", "smiles_errors"]

SUPPORTED_ELEMENTS: tuple[str, ...] = tuple(Chem.GetPeriodicTable().GetElementSymbol(z) for z in ELEMENTS)


class ApiError(Exception):
    """An answer other than 2xx: status, one-sentence message, offending fields, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = list(errors)
        self.headers = headers or {}


def molecule_problem(smiles: str, *, stereo: str = "refuse") -> str | None:
    """Why the sampler cannot take ``smiles`` (``None``: it can); with ``stereo="refuse"``, open
    stereochemistry is a problem too."""
    try:
        mol = mol_from_smiles(smiles)
    except SmilesError as exc:
        return str(exc)
    bad = sorted({a.GetSymbol() for a in mol.GetAtoms() if a.GetAtomicNum() not in ELEMENTS})
    if bad:
        return (
            f"unsupported element{'s' if len(bad) > 1 else ''} {', '.join(bad)} in {smiles!r}; "
            f"the model knows {' '.join(SUPPORTED_ELEMENTS)}"
        )
    n = mol.GetNumAtoms()
    if n > MAX_ATOMS:
        return f"{smiles!r} has {n} atoms with hydrogens; the limit is {MAX_ATOMS}"
    if n < 2:
        return f"{smiles!r} has a single atom: there is no conformation to sample"
    try:
        molecular_system(mol)
    except ValueError as exc:
        return f"{smiles!r}: {exc}"
    if stereo == "refuse":
        unassigned = find_unassigned_stereo(mol)
        if unassigned:
            return f'{UnassignedStereoError(smiles, unassigned)} (request "stereo": "enumerate")'
    return None


def smiles_errors(
    smiles: Sequence[str], *, field: str = "smiles", indexed: bool = False, stereo: str = "refuse"
) -> list[FieldError]:
    """One :class:`FieldError` per SMILES the sampler cannot take (``smiles[3]`` when ``indexed``)."""
    errors = []
    for k, s in enumerate(smiles):
        problem = molecule_problem(s, stereo=stereo)
        if problem is not None:
            loc: list[str | int] = ["body", field, k] if indexed else ["body", field]
            name = f"{field}[{k}]" if indexed else field
            errors.append(FieldError(field=name, loc=loc, msg=problem, type="molecule"))
    return errors


def energy_model_error(name: str | None, allowed: Sequence[str]) -> FieldError | None:
    if name is None or name in allowed:
        return None
    return FieldError(
        field="energy_model",
        loc=["body", "energy_model"],
        msg=f"unknown energy model {name!r}; choose one of {', '.join(allowed)}",
        type="energy_model",
    )
