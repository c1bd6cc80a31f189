"""Batch inputs: ``.smi``, ``.sdf`` and ``.csv`` files (plain or gzipped), read record by record.

A batch of thousands of molecules should not die on molecule 812: every reader yields, in file order, an
:class:`InputRecord` for each molecule it could read and an :class:`InputError` (line number, ID, what is
wrong) for each it could not, and goes on. Problems with the file as a whole (missing file, unknown
format, a CSV without a SMILES column) raise at once, before any record is read.

Formats:

- ``.smi`` (also ``.smiles``, ``.ism``, ``.can``): ``SMILES [ID]`` per line, whitespace-separated, the
  ID being the rest of the line (OpenEye's and RDKit's convention). Blank lines and ``#`` comments are
  skipped, and so is a first line whose first word is ``smiles`` (a header).
- ``.sdf`` (also ``.sd``, ``.mol``): each ``$$$$``-terminated record, 2D or 3D; the title line is the
  ID; SD data fields become properties; stereochemistry comes from the coordinates (3D) or wedge bonds
  (2D). A record RDKit cannot read (bad counts line, impossible valence, …) becomes an error.
- ``.csv`` (``.tsv``: tab-separated): a header row; the SMILES column is ``smiles_column`` (any case) or
  the one column whose name ends in ``smiles`` in any case (``SMILES``, ``corrected_smiles``,
  ``Canonical_SMILES``). Several such columns (GEOM's ``smiles`` and ``corrected_smiles``) are ambiguous
  and raise: which one holds the molecules is the user's call, not a guess. The ID column is
  ``id_column`` or the first of :data:`ID_COLUMNS` present; every other column becomes a property.

A record without an ID gets ``mol<k>``, ``k`` its 1-based position among the file's records (errors
included; comments, blank lines and headers not counted). IDs are not made unique; repeats are logged.

Salts and mixtures: a SMILES (or SDF record) with several disconnected fragments is an error with
``fragments="reject"`` (the default: a conformer ensemble is one molecule) and is reduced to its largest
fragment with ``fragments="largest"``, the dropped fragments recorded in :attr:`InputRecord.dropped_fragments`
(see :func:`molecules.smiles.mol_from_smiles`).

Example:
    >>> for item in input_records("batch.smi"):                      # doctest: +SKIP
    ...     if isinstance(item, InputError):
    ...         log.error("batch.smi: %s", item)
    ...     else:
    ...         generate(item.id, item.mol)
"""

from __future__ import annotations

import csv
import gzip
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rdkit import Chem, rdBase
from rdkit.Chem import rdmolops

from molecules.smiles import FRAGMENT_POLICIES, SmilesError, largest_fragment, mol_from_smiles

__all__ = [
    "ID_COLUMNS",
    "INPUT_FORMATS",
    "InputError",
    "InputItem",
    "InputRecord",
    "csv_records",
    "input_format",
    "input_records",
    "sdf_records",
    "smi_records",
]

log = logging.getLogger(__name__)

INPUT_FORMATS = ("smi", "sdf", "csv")
_SUFFIXES = {
    ".smi": "smi",
    ".smiles": "smi",
    ".ism": "smi",
    ".can": "smi",
    ".sdf": "sdf",
    ".sd": "sdf",
    ".mol": "sdf",
    ".csv": "csv",
    ".tsv": "csv",
}
ID_COLUMNS = ("id", "name", "title", "mol_id", "molecule_id", "compound_id", "mol_name", "molecule_name")
"""CSV column names (any case) taken as the record ID, first present wins."""


@dataclass(frozen=True)
class InputRecord:
    """A molecule read from a batch file.

    Attributes:
        id: the input's name for it (generated ``mol<k>`` when it has none).
        line: 1-based line where the record starts.
        smiles: the SMILES as given (``.smi``, ``.csv``) or written from the record (``.sdf``).
        mol: sanitized, explicit hydrogens. From SMILES: :func:`molecules.smiles.mol_from_smiles`'s atom
            order; from an SDF: the record's atom order (added hydrogens last) and its coordinates.
        properties: the input's own data (SD fields, other CSV columns), as text.
        dropped_fragments: SMILES of fragments removed with ``fragments="largest"``.
    """

    id: str
    line: int
    smiles: str
    mol: Chem.Mol
    properties: Mapping[str, str] = field(default_factory=dict)
    dropped_fragments: tuple[str, ...] = ()


@dataclass(frozen=True)
class InputError:
    """A record that could not be read; ``str()`` gives ``line 12 (aspirin): <what is wrong>``."""

    id: str | None
    line: int
    message: str

    def __str__(self) -> str:
        name = f" ({self.id})" if self.id else ""
        return f"line {self.line}{name}: {self.message}"


InputItem = InputRecord | InputError


def input_format(path: str | Path) -> str:
    """``"smi"``, ``"sdf"`` or ``"csv"`` from the file name (a ``.gz`` suffix is looked through)."""
    name = Path(path).name.lower().removesuffix(".gz")
    fmt = _SUFFIXES.get(Path(name).suffix)
    if fmt is None:
        known = ", ".join(sorted(_SUFFIXES))
        raise ValueError(f"{path}: unknown input format (expected one of {known}, optionally .gz)")
    return fmt


def _open_text(path: Path, newline: str | None = None) -> IO[str]:
    """Text, UTF-8 (a byte-order mark, as Excel writes, is dropped; undecodable bytes become U+FFFD)."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline=newline)
    return open(path, encoding="utf-8-sig", errors="replace", newline=newline)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    return path


def _check_fragments(fragments: str) -> None:
    if fragments not in FRAGMENT_POLICIES:
        raise ValueError(f"fragments must be one of {FRAGMENT_POLICIES}, got {fragments!r}")


def _logged_repeats(items: Iterator[InputItem], path: Path) -> Iterator[InputItem]:
    seen: set[str] = set()
    for item in items:
        if isinstance(item, InputRecord):
            if item.id in seen:
                log.warning(
                    "%s: line %d: ID %r used before; outputs named by ID will collide", path, item.line, item.id
                )
            seen.add(item.id)
        yield item


def _from_smiles(smiles: str, record_id: str, line: int, properties: dict[str, str], fragments: str) -> InputItem:
    try:
        mol = mol_from_smiles(smiles, fragments=fragments)
    except SmilesError as exc:
        return InputError(record_id, line, str(exc))
    dropped = tuple(mol.GetProp("dropped_fragments").split(".")) if mol.HasProp("dropped_fragments") else ()
    return InputRecord(record_id, line, smiles.strip(), mol, properties, dropped)


# --- .smi -------------------------------------------------------------------------------------------------


def smi_records(path: str | Path, *, fragments: str = "reject") -> Iterator[InputItem]:
    """Records of a SMILES file (``SMILES [ID]`` per line); see the module docstring."""
    path = _existing(path)
    _check_fragments(fragments)
    return _logged_repeats(_smi_items(path, fragments), path)


def _smi_items(path: Path, fragments: str) -> Iterator[InputItem]:
    ordinal = 0
    with _open_text(path) as fh:
        for number, raw in enumerate(fh, 1):
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split(None, 1)
            if ordinal == 0 and parts[0].lower() == "smiles":
                continue
            ordinal += 1
            record_id = parts[1].strip() if len(parts) > 1 else f"mol{ordinal}"
            yield _from_smiles(parts[0], record_id, number, {}, fragments)


# --- .sdf -------------------------------------------------------------------------------------------------


def sdf_records(path: str | Path, *, fragments: str = "reject") -> Iterator[InputItem]:
    """Records of an SD file, each read on its own (a bad one is an :class:`InputError`, the next is read)."""
    path = _existing(path)
    _check_fragments(fragments)
    return _logged_repeats(_sdf_items(path, fragments), path)


def _sdf_blocks(lines: Iterator[str]) -> Iterator[tuple[int, str]]:
    """``(first line number, text)`` of each ``$$$$``-terminated record; a last unterminated one too;
    whitespace-only records skipped."""
    start, buf = 1, list[str]()
    for number, line in enumerate(lines, 1):
        if not buf:
            start = number
        buf.append(line)
        if line.rstrip("\r\n") == "$$$$":
            if "".join(buf[:-1]).strip():
                yield start, "".join(buf)
            buf = []
    if "".join(buf).strip():
        last = "".join(buf)
        yield start, last + ("" if last.endswith("\n") else "\n") + "$$$$\n"


def _supply(block: str, sanitize: bool) -> tuple[Chem.Mol | None, str]:
    supplier = Chem.SDMolSupplier()
    supplier.SetData(block, sanitize=sanitize, removeHs=False)
    with rdBase.CaptureErrorLog() as capture:
        mol = supplier[0] if len(supplier) else None
    try:
        messages = [m.split("] ", 1)[-1].strip() for m in capture.messages.splitlines()]
    except UnicodeDecodeError:  # RDKit can cut a message inside a multi-byte character
        messages = []
    detail = "; ".join(m for m in dict.fromkeys(messages) if m and not m.startswith("ERROR: Could not sanitize"))
    return mol, detail


def _sdf_item(block: str, ordinal: int, line: int, fragments: str) -> InputItem:
    title = block.splitlines()[0].strip()
    record_id = title or f"mol{ordinal}"
    raw, detail = _supply(block, sanitize=False)
    if raw is None:
        reason = f": {detail}" if detail else ""
        return InputError(
            record_id, line, f"not a valid MDL mol block (header, counts line, atom or bond block){reason}"
        )
    if raw.GetNumAtoms() == 0:
        return InputError(record_id, line, "the record has no atoms")
    problems = Chem.DetectChemistryProblems(raw)
    if problems:
        return InputError(record_id, line, "invalid chemistry: " + "; ".join(p.Message() for p in problems[:3]))
    mol, detail = _supply(block, sanitize=True)  # RDKit's own stereo perception from 3D or wedges
    if mol is None:
        return InputError(record_id, line, f"invalid chemistry: {detail or 'RDKit cannot sanitize the record'}")
    properties = {name: mol.GetProp(name) for name in mol.GetPropNames()}
    count = len(rdmolops.GetMolFrags(mol))
    dropped: list[str] = []
    if count > 1 and fragments == "reject":
        return InputError(
            record_id,
            line,
            f"the record has {count} disconnected fragments ({Chem.MolToSmiles(mol)}); give one molecule "
            "(no salts, no solvent) or keep the largest fragment (fragments='largest', CLI --largest-fragment)",
        )
    if count > 1:
        mol, dropped = largest_fragment(mol)
        Chem.SanitizeMol(mol)
        log.warning("record %r (line %d): kept the largest fragment, dropped %s", record_id, line, dropped)
    mol = Chem.AddHs(mol, addCoords=mol.GetNumConformers() > 0)
    smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
    return InputRecord(record_id, line, smiles, mol, properties, tuple(dropped))


def _sdf_items(path: Path, fragments: str) -> Iterator[InputItem]:
    with _open_text(path) as fh:
        for ordinal, (line, block) in enumerate(_sdf_blocks(iter(fh)), 1):
            yield _sdf_item(block, ordinal, line, fragments)


# --- .csv -------------------------------------------------------------------------------------------------


def _find_column(header: list[str], wanted: str, path: Path, what: str) -> int:
    lowered = [h.lower() for h in header]
    if wanted.lower() not in lowered:
        raise ValueError(f"{path}: no {what} column {wanted!r}; the columns are {header}")
    return lowered.index(wanted.lower())


def _smiles_column(header: list[str], path: Path) -> int:
    candidates = [k for k, h in enumerate(header) if h.lower().endswith("smiles")]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(f"{path}: no SMILES column (a column named 'smiles' or '…smiles'); the columns are {header}")
    names = [header[k] for k in candidates]
    raise ValueError(
        f"{path}: several columns look like SMILES: {names}; choose one (smiles_column=…, CLI --smiles-column)"
    )


def _csv_columns(
    path: Path, delimiter: str, smiles_column: str | None, id_column: str | None
) -> tuple[list[str], int, int | None]:
    with _open_text(path, newline="") as fh:
        header = next(csv.reader(fh, delimiter=delimiter), None)
    if not header:
        raise ValueError(f"{path}: empty CSV file (no header row)")
    header = [h.strip() for h in header]
    smiles_idx = _find_column(header, smiles_column, path, "SMILES") if smiles_column else _smiles_column(header, path)
    if id_column:
        id_idx: int | None = _find_column(header, id_column, path, "ID")
    else:
        lowered = [h.lower() for h in header]
        id_idx = next((lowered.index(name) for name in ID_COLUMNS if name in lowered), None)
    if id_idx == smiles_idx:
        raise ValueError(f"{path}: column {header[smiles_idx]!r} cannot be both the SMILES and the ID")
    return header, smiles_idx, id_idx


def csv_records(
    path: str | Path,
    *,
    smiles_column: str | None = None,
    id_column: str | None = None,
    fragments: str = "reject",
) -> Iterator[InputItem]:
    """Records of a CSV (``.tsv``: tab-separated) file with a header row; see the module docstring.

    Raises (at once, not while iterating):
        FileNotFoundError: no such file.
        ValueError: no header, no SMILES column, several candidate SMILES columns, or a named column missing.
    """
    path = _existing(path)
    _check_fragments(fragments)
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    header, smiles_idx, id_idx = _csv_columns(path, delimiter, smiles_column, id_column)
    return _logged_repeats(_csv_items(path, delimiter, header, smiles_idx, id_idx, fragments), path)


def _csv_items(
    path: Path, delimiter: str, header: list[str], smiles_idx: int, id_idx: int | None, fragments: str
) -> Iterator[InputItem]:
    with _open_text(path, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        next(reader)
        ordinal, previous = 0, reader.line_num
        while True:
            line = previous + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                ordinal += 1
                yield InputError(None, line, f"unreadable CSV row: {exc}")
                if reader.line_num == previous:
                    return
                previous = reader.line_num
                continue
            previous = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            ordinal += 1
            cell_id = row[id_idx].strip() if id_idx is not None and id_idx < len(row) else ""
            record_id = cell_id or f"mol{ordinal}"
            if len(row) != len(header):
                yield InputError(record_id, line, f"{len(row)} fields, but the header has {len(header)}")
                continue
            smiles = row[smiles_idx].strip()
            if not smiles:
                yield InputError(record_id, line, f"empty SMILES (column {header[smiles_idx]!r})")
                continue
            properties = {
                h: v for k, (h, v) in enumerate(zip(header, row, strict=True)) if k not in (smiles_idx, id_idx)
            }
            yield _from_smiles(smiles, record_id, line, properties, fragments)


# --- any --------------------------------------------------------------------------------------------------


def input_records(
    path: str | Path,
    *,
    fmt: str | None = None,
    fragments: str = "reject",
    smiles_column: str | None = None,
    id_column: str | None = None,
) -> Iterator[InputItem]:
    """Records of a ``.smi``, ``.sdf`` or ``.csv`` file (``fmt`` overrides the guess from the name).

    ``smiles_column`` and ``id_column`` apply to CSV input only.
    """
    fmt = fmt or input_format(path)
    if fmt not in INPUT_FORMATS:
        raise ValueError(f"input format must be one of {INPUT_FORMATS}, got {fmt!r}")
    if fmt != "csv" and (smiles_column or id_column):
        raise ValueError(f"smiles_column and id_column apply to CSV input, not {fmt}")
    if fmt == "smi":
        return smi_records(path, fragments=fragments)
    if fmt == "sdf":
        return sdf_records(path, fragments=fragments)
    return csv_records(path, smiles_column=smiles_column, id_column=id_column, fragments=fragments)
