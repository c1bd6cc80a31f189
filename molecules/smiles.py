"""SMILES → RDKit molecule with explicit hydrogens, failing with a message a chemist understands.

The one entry point for user SMILES: the benchmarks, the energy models and the sampler all start
from :func:`mol_from_smiles`, so every consumer sees the same atom order (RDKit's
``AddHs(MolFromSmiles(smiles))``: heavy atoms in SMILES order, then hydrogens).
"""

from __future__ import annotations

from rdkit import Chem, rdBase
from rdkit.Chem import rdmolops

__all__ = ["SmilesError", "mol_from_smiles"]


class SmilesError(ValueError):
    """A SMILES string that cannot be turned into a molecule; the message says why."""


def _parse_error_detail(messages: str) -> str:
    """RDKit's parse explanation without timestamps and the ASCII caret art."""
    lines = []
    for line in messages.splitlines():
        text = line.split("] ", 1)[-1].strip()
        if text.startswith("SMILES Parse Error:"):
            lines.append(text.removeprefix("SMILES Parse Error:").strip().rstrip(":"))
    return "; ".join(line for line in dict.fromkeys(lines) if not line.startswith("Failed parsing"))


def mol_from_smiles(smiles: str, *, add_hs: bool = True) -> Chem.Mol:
    """Parse and sanitize ``smiles``; add explicit hydrogens unless ``add_hs=False``.

    Raises:
        SmilesError: empty input, a syntax error, a valence/aromaticity problem, or several
            disconnected fragments (a conformer ensemble is defined for one molecule; strip the
            salt or solvent first).

    Example:
        >>> mol_from_smiles("CCO").GetNumAtoms()
        9
    """
    if not isinstance(smiles, str) or not smiles.strip():
        raise SmilesError("empty SMILES")
    smiles = smiles.strip()
    if any(ch.isspace() for ch in smiles):
        raise SmilesError(f"SMILES contains whitespace: {smiles!r} (one molecule per string, no name field)")
    params = Chem.SmilesParserParams()
    setattr(params, "sanitize", False)  # noqa: B010 (RDKit's stubs mistype the attribute)
    with rdBase.CaptureErrorLog() as capture:
        raw = Chem.MolFromSmiles(smiles, params)
    if raw is None:
        detail = _parse_error_detail(capture.messages)
        raise SmilesError(f"cannot parse SMILES {smiles!r}: {detail or 'syntax error'}")
    if raw.GetNumAtoms() == 0:
        raise SmilesError(f"SMILES {smiles!r} has no atoms")
    try:
        with rdBase.CaptureErrorLog():
            Chem.SanitizeMol(raw)
    except Exception as exc:  # RDKit's MolSanitizeException subclasses: valence, kekulization
        raise SmilesError(f"invalid chemistry in SMILES {smiles!r}: {exc}") from None
    fragments = rdmolops.GetMolFrags(raw)
    if len(fragments) > 1:
        raise SmilesError(
            f"SMILES {smiles!r} has {len(fragments)} disconnected fragments; give one molecule (no salts, no solvent)"
        )
    return Chem.AddHs(raw) if add_hs else raw
