"""Multi-frame XYZ files (plain or gzipped): the interchange format of the reference ensembles."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["XyzFrame", "read_xyz", "write_xyz", "xyz_text"]


@dataclass(frozen=True)
class XyzFrame:
    """One frame: element symbols, ``[n, 3]`` float64 positions (Å) and the comment line."""

    symbols: tuple[str, ...]
    positions: np.ndarray
    comment: str = ""


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def _frames(lines: Iterator[str], path: Path) -> Iterator[XyzFrame]:
    lineno = 0
    for header in lines:
        lineno += 1
        if not header.strip():
            continue
        try:
            n = int(header.split()[0])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected an atom count, got {header.strip()[:40]!r}") from None
        comment = next(lines, "").rstrip("\n")
        lineno += 1
        symbols: list[str] = []
        pos = np.empty((n, 3), dtype=np.float64)
        for i in range(n):
            line = next(lines, None)
            lineno += 1
            if line is None:
                raise ValueError(f"{path}: truncated frame, expected {n} atoms, got {i}")
            parts = line.split()
            if len(parts) < 4:
                raise ValueError(f"{path}:{lineno}: expected 'symbol x y z', got {line.strip()[:60]!r}")
            symbols.append(parts[0].capitalize())
            try:
                pos[i] = [float(v) for v in parts[1:4]]
            except ValueError:
                raise ValueError(f"{path}:{lineno}: bad coordinates {line.strip()[:60]!r}") from None
        yield XyzFrame(tuple(symbols), pos, comment)


def read_xyz(path: str | Path) -> list[XyzFrame]:
    """All frames of an XYZ file; ``.gz`` is decompressed transparently. Errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"XYZ file not found: {path}")
    with _open(path, "r") as fh:
        return list(_frames(iter(fh), path))


def write_xyz(path: str | Path, frames: Sequence[XyzFrame]) -> Path:
    """Write frames (``.gz`` compresses)."""
    path = Path(path)
    with _open(path, "w") as fh:
        fh.write(xyz_text(frames))
    return path


def xyz_text(frames: Sequence[XyzFrame]) -> str:
    """The multi-frame XYZ :func:`write_xyz` writes, as a string."""
    lines: list[str] = []
    for f in frames:
        lines.append(f"{len(f.symbols)}\n{f.comment.replace(chr(10), ' ')}\n")
        lines.extend(
            f"{s:<2s} {x:14.8f} {y:14.8f} {z:14.8f}\n" for s, (x, y, z) in zip(f.symbols, f.positions, strict=True)
        )
    return "".join(lines)
