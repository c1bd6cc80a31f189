"""SDF files (plain or gzipped): conformers with their topology, in and out.

Reading keeps every record and every explicit hydrogen, and fails on the first bad record with its
number (1-based), its first line and what RDKit found wrong, instead of skipping it: a skipped record
would shift every index after it. Records must carry 3D coordinates.

Writing stores each molecule's first conformer with per-record properties (numbers, flags, text).

Example::

    >>> import tempfile, pathlib
    >>> from rdkit import Chem
    >>> from rdkit.Chem import AllChem
    >>> mol = Chem.AddHs(Chem.MolFromSmiles("CO"))
    >>> _ = AllChem.EmbedMolecule(mol, randomSeed=7)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.sdf"
    >>> _ = write_sdf(path, [mol], [{"energy_eV": -1.5, "converged": True}])
    >>> back = read_sdf(path)
    >>> back[0].GetNumAtoms(), back[0].GetProp("energy_eV"), back[0].GetProp("converged")
    (6, '-1.5', '1')
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from rdkit import Chem, rdBase

__all__ = ["read_sdf", "sdf_text", "write_sdf"]


def _is_gzip(path: Path) -> bool:
    return path.suffix == ".gz"


def _read_text(path: Path) -> str:
    try:
        if _is_gzip(path):
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
                return fh.read()
        return path.read_text(encoding="utf-8", errors="replace")
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None


def _records(text: str) -> list[tuple[int, str]]:
    """``(first line number, text)`` of each ``$$$$``-terminated record (a last unterminated one too)."""
    out: list[tuple[int, str]] = []
    lines = text.splitlines(keepends=True)
    start, buf = 1, []
    for number, line in enumerate(lines, 1):
        buf.append(line)
        if line.rstrip("\r\n") == "$$$$":
            out.append((start, "".join(buf)))
            start, buf = number + 1, []
    if "".join(buf).strip():
        out.append((start, "".join(buf) + ("\n" if not buf[-1].endswith("\n") else "") + "$$$$\n"))
    return out


def _parse(block: str, where: str) -> Chem.Mol:
    supplier = Chem.SDMolSupplier()
    supplier.SetData(block, sanitize=False, removeHs=False)
    mol = supplier[0] if len(supplier) else None
    if mol is None:
        raise ValueError(f"{where}: not a valid MDL mol block (header, counts line, atom or bond block)")
    problems = Chem.DetectChemistryProblems(mol)
    if problems:
        messages = "; ".join(p.Message() for p in problems[:3])
        raise ValueError(f"{where}: {messages}")
    Chem.SanitizeMol(mol)
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        raise ValueError(f"{where}: no 3D coordinates (the record is 2D; conformers need x, y and z)")
    return mol


def read_sdf(path: str | Path) -> list[Chem.Mol]:
    """Every record of an SDF (``.sdf`` or ``.sdf.gz``) with explicit hydrogens and its data fields.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an empty file, or a record that is not a valid 3D molecule (record number and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SDF file not found: {path}")
    records = _records(_read_text(path))
    if not records:
        raise ValueError(f"{path}: no molecules (an empty SDF)")
    mols = []
    blocker = rdBase.BlockLogs()  # RDKit's own messages would repeat ours on stderr
    try:
        for k, (line, block) in enumerate(records, 1):
            mols.append(_parse(block, f"{path}: record {k} (line {line})"))
    finally:
        del blocker
    return mols


def _set_prop(mol: Chem.Mol, key: str, value: object) -> None:
    if isinstance(value, bool):
        mol.SetIntProp(key, int(value))
    elif isinstance(value, int):
        mol.SetIntProp(key, value)
    elif isinstance(value, float):
        mol.SetDoubleProp(key, value)
    elif value is not None:
        mol.SetProp(key, str(value))


def write_sdf(
    path: str | Path, mols: Sequence[Chem.Mol], properties: Sequence[Mapping[str, object]] | None = None
) -> Path:
    """Write each molecule's first conformer (``.gz`` compresses) with its properties (``None`` skipped).

    The molecules are copied; their own properties are written too, the given ones win.
    """
    path = Path(path)
    text = sdf_text(mols, properties)
    fh = gzip.open(path, "wt", encoding="utf-8") if _is_gzip(path) else open(path, "w", encoding="utf-8")
    with fh:
        fh.write(text)
    return path


def sdf_text(mols: Sequence[Chem.Mol], properties: Sequence[Mapping[str, object]] | None = None) -> str:
    """The SDF :func:`write_sdf` writes, as a string (e.g. an HTTP response body)."""
    if properties is not None and len(properties) != len(mols):
        raise ValueError(f"{len(properties)} property sets for {len(mols)} molecules")
    buffer = io.StringIO()
    writer = Chem.SDWriter(buffer)
    for k, mol in enumerate(mols):
        out = Chem.Mol(mol)
        for key, value in (properties[k] if properties is not None else {}).items():
            _set_prop(out, key, value)
        writer.write(out)
    writer.close()
    return buffer.getvalue()
