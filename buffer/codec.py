"""Explicit, versioned serialization of what crosses process boundaries through Redis (never pickle).

A record is::

    b"ADJS" | format version (uint16 LE) | header length (uint32 LE) | header (UTF-8 JSON) | array bytes

The JSON header holds ``kind`` (what the record is), ``meta`` (small JSON values) and ``arrays``: one
``[name, dtype, shape]`` per array, whose C-ordered bytes follow the header in that order. Only
numeric and boolean dtypes are accepted, so decoding never constructs objects.

Example:
    >>> blob = encode_record("demo", {"a": 1}, {"x": np.arange(3.0)})
    >>> decode_record(blob, "demo").arrays["x"].tolist()
    [0.0, 1.0, 2.0]
"""

from __future__ import annotations

import itertools
import json
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sampler.replay import ReplaySamples

__all__ = [
    "FORMAT_VERSION",
    "Record",
    "RecordFormatError",
    "decode_record",
    "decode_replay_entries",
    "encode_record",
    "encode_replay_entries",
    "record_kind",
]

MAGIC = b"ADJS"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")
_ALLOWED_KINDS = frozenset("fiub")
REPLAY_ENTRY = "replay-entry"


class RecordFormatError(ValueError):
    """A blob is not a record this version of the code can read."""


@dataclass(frozen=True)
class Record:
    kind: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


def encode_record(kind: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    specs = []
    chunks = []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(f"array {name!r} has dtype {arr.dtype}; only numeric and boolean arrays are stored")
        little = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        arr = arr.astype(little, copy=False)
        specs.append([name, arr.dtype.str, list(arr.shape)])
        chunks.append(arr.tobytes())
    header = json.dumps({"kind": kind, "meta": dict(meta), "arrays": specs}, separators=(",", ":")).encode()
    return b"".join([_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)), header, *chunks])


def _header_length(data: bytes) -> int:
    """Check a record's prefix (length, magic bytes, format version); the length of its JSON header."""
    if len(data) < _PREFIX.size:
        raise RecordFormatError(f"truncated record ({len(data)} bytes)")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise RecordFormatError("not an adjoint-sampling record (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise RecordFormatError(
            f"record format version {version}, but this code reads version {FORMAT_VERSION}: "
            "run the same adjoint-sampling version in every trainer and energy worker"
        )
    return int(header_len)


def decode_record(data: bytes, kind: str) -> Record:
    """Decode a record and check it is a ``kind``; a foreign, newer or truncated blob raises
    :class:`RecordFormatError` saying which."""
    header_len = _header_length(data)
    start = _PREFIX.size
    try:
        header = json.loads(data[start : start + header_len])
    except ValueError as exc:
        raise RecordFormatError(f"unreadable record header: {exc}") from exc
    if header.get("kind") != kind:
        raise RecordFormatError(f"expected a {kind!r} record, got {header.get('kind')!r}")
    offset = start + header_len
    arrays: dict[str, np.ndarray] = {}
    for name, dtype_str, shape in header["arrays"]:
        dtype = np.dtype(dtype_str)
        if dtype.kind not in _ALLOWED_KINDS:
            raise RecordFormatError(f"array {name!r} has unsupported dtype {dtype_str}")
        size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if offset + size > len(data):
            raise RecordFormatError(f"truncated record: array {name!r} needs {size} bytes")
        arrays[name] = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=offset).reshape(shape)
        offset += size
    if offset != len(data):
        raise RecordFormatError(f"record has {len(data) - offset} trailing bytes")
    return Record(kind=kind, meta=header["meta"], arrays=arrays)


def record_kind(data: bytes) -> str:
    """The ``kind`` a record declares (to pick its decoder), without decoding its arrays."""
    header_len = _header_length(data)
    try:
        return str(json.loads(data[_PREFIX.size : _PREFIX.size + header_len])["kind"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordFormatError(f"unreadable record header: {exc}") from exc


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


def encode_replay_entries(
    samples: ReplaySamples, *, written_at: float | None = None, sample_ids: Sequence[str] | None = None
) -> list[bytes]:
    """One record per entry: positions, adjoint target and energy as arrays; ids, version, time (and, when
    given, each entry's ``sample_id``, which lets a buffer be audited for losses and duplicates) as meta."""
    now = time.time() if written_at is None else written_at
    if sample_ids is not None and len(sample_ids) != samples.system_ids.shape[0]:
        raise ValueError(f"{len(sample_ids)} sample ids for {samples.system_ids.shape[0]} entries")
    pos = _numpy(samples.positions)
    adj = _numpy(samples.adjoint)
    energies = _numpy(samples.energies)
    ids = samples.system_ids.tolist()
    versions = samples.model_version.tolist()
    bounds = np.concatenate([[0], np.cumsum(_numpy(samples.num_nodes))]).tolist()
    return [
        encode_record(
            REPLAY_ENTRY,
            {
                "system_id": ids[i],
                "model_version": versions[i],
                "written_at": now,
                **({"sample_id": sample_ids[i]} if sample_ids is not None else {}),
            },
            {"positions": pos[a:b], "adjoint": adj[a:b], "energy": energies[i : i + 1]},
        )
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]


def decode_replay_entries(blobs: Sequence[bytes], order: Sequence[int] | None = None) -> ReplaySamples:
    """Inverse of :func:`encode_replay_entries`: the entries concatenated in order, or in ``order``
    (indices into ``blobs``, repeats allowed: each blob is decoded once)."""
    if not blobs:
        raise ValueError("no replay entries to decode")
    decoded = [decode_record(b, REPLAY_ENTRY) for b in blobs]
    records = decoded if order is None else [decoded[i] for i in order]
    pos = [r.arrays["positions"] for r in records]
    return ReplaySamples(
        system_ids=torch.tensor([r.meta["system_id"] for r in records], dtype=torch.long),
        num_nodes=torch.tensor([p.shape[0] for p in pos], dtype=torch.long),
        positions=torch.from_numpy(np.concatenate(pos)),
        adjoint=torch.from_numpy(np.concatenate([r.arrays["adjoint"] for r in records])),
        energies=torch.from_numpy(np.concatenate([r.arrays["energy"] for r in records])),
        model_version=torch.tensor([r.meta["model_version"] for r in records], dtype=torch.long),
    )
