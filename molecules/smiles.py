"""SMILES → RDKit molecule with explicit hydrogens, failing with a message a chemist understands.

The one entry point for user SMILES: the benchmarks, the energy models and the sampler all start
from :func:`mol_from_smiles`, so every consumer sees the same atom order (RDKit's
``AddHs(MolFromSmiles(smiles))``: heavy atoms in SMILES order, then hydrogens).
"""

from __future__ import annotations

import logging

from rdkit import Chem, rdBase
from rdkit.Chem import rdmolops

__all__ = ["FRAGMENT_POLICIES", "SmilesError", "largest_fragment", "mol_from_smiles"]

log = logging.getLogger(__name__)

FRAGMENT_POLICIES = ("reject", "largest")


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


def largest_fragment(mol: Chem.Mol) -> tuple[Chem.Mol, list[str]]:
    """The fragment with the most heavy atoms (ties: most atoms, then first in the SMILES) and the SMILES of
    the dropped ones."""
    frags = list(rdmolops.GetMolFrags(mol, asMols=True, sanitizeFrags=False))
    keep = max(range(len(frags)), key=lambda i: (frags[i].GetNumHeavyAtoms(), frags[i].GetNumAtoms(), -i))
    return frags[keep], [Chem.MolToSmiles(f) for i, f in enumerate(frags) if i != keep]


def mol_from_smiles(smiles: str, *, add_hs: bool = True, fragments: str = "reject") -> Chem.Mol:
    """Parse and sanitize ``smiles``; add explicit hydrogens unless ``add_hs=False``.

    ``fragments`` says what to do with several disconnected fragments (salts, solvent): ``"reject"`` (the
    default: a conformer ensemble is defined for one molecule) or ``"largest"`` (keep the fragment with the
    most heavy atoms; the dropped ones are logged and stored in the molecule's ``dropped_fragments`` property).

    Raises:
        SmilesError: empty input, a syntax error, a valence/aromaticity problem, or (with
            ``fragments="reject"``) several disconnected fragments.

    Example:
        >>> mol_from_smiles("CCO").GetNumAtoms()
        9
    """
    if fragments not in FRAGMENT_POLICIES:
        raise ValueError(f"fragments must be one of {FRAGMENT_POLICIES}, got {fragments!r}")
    if not isinstance(smiles, str) or not smiles.strip():
        raise SmilesError("empty SMILES")
    smiles = smiles.strip()
    if any(ch.isspace() for ch in smiles):
        raise SmilesError(f"SMILES contains whitespace: {smiles!r} (one molecule per string, no name field)")
    if not smiles.isascii():
        k, ch = next((k, ch) for k, ch in enumerate(smiles) if not ch.isascii())
        raise SmilesError(f"SMILES {smiles!r} has a non-ASCII character {ch!r} at position {k}; SMILES is plain ASCII")
    params = Chem.SmilesParserParams()
    setattr(params, "sanitize", False)  # noqa: B010 (RDKit's stubs mistype the attribute)
    with rdBase.CaptureErrorLog() as capture:
        raw = Chem.MolFromSmiles(smiles, params)
    if raw is None:
        try:
            detail = _parse_error_detail(capture.messages)
        except UnicodeDecodeError:  # RDKit can cut a message inside a multi-byte character
            detail = ""
        raise SmilesError(f"cannot parse SMILES {smiles!r}: {detail or 'syntax error'}")
    if raw.GetNumAtoms() == 0:
        raise SmilesError(f"SMILES {smiles!r} has no atoms")
    try:
        with rdBase.CaptureErrorLog():
            Chem.SanitizeMol(raw)
    except Exception as exc:  # RDKit's MolSanitizeException subclasses: valence, kekulization
        raise SmilesError(f"invalid chemistry in SMILES {smiles!r}: {exc}") from None
    count = len(rdmolops.GetMolFrags(raw))
    dropped: list[str] = []
    if count > 1 and fragments == "reject":
        raise SmilesError(
            f"SMILES {smiles!r} has {count} disconnected fragments; give one molecule (no salts, no solvent) "
            "or keep the largest fragment (fragments='largest', CLI --largest-fragment)"
        )
    if count > 1:
        raw, dropped = largest_fragment(raw)
        log.warning("SMILES %r: kept the largest fragment %s, dropped %s", smiles, Chem.MolToSmiles(raw), dropped)
    mol = Chem.AddHs(raw) if add_hs else raw
    if dropped:
        mol.SetProp("dropped_fragments", ".".join(dropped))
    return mol
