"""Checkpoints: weights, the full run configuration, versions, training statistics, and the state
needed to resume exactly (optimizer, replay buffer, random generators)."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch

from sampler.trainer import AdjointSamplingTrainer

__all__ = [
    "FORMAT_VERSION",
    "Checkpointable",
    "export_weights",
    "file_sha256",
    "load_checkpoint",
    "restore_trainer",
    "save_checkpoint",
    "versions",
]

log = logging.getLogger(__name__)


class Checkpointable(Protocol):
    """What a checkpoint stores of a trainer: ``state_dict()`` (control, optimizer, generator, round,
    energy_calls, wall_seconds, history) and its replay buffer's state."""

    buffer: Any

    def state_dict(self) -> dict[str, Any]: ...


FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": str(torch.__version__)}
    try:
        out["adjoint-sampling"] = version("adjoint-sampling")
    except PackageNotFoundError:
        out["adjoint-sampling"] = "unknown"
    return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    path: str | Path,
    trainer: Checkpointable,
    config: dict[str, Any],
    *,
    kind: str,
    include_resume_state: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a torn checkpoint.

    ``include_resume_state=False`` keeps only what sampling needs (weights, config, stats): small
    enough to ship in the repository.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = trainer.state_dict()
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "versions": versions(),
        "control": state["control"],
        "round": state["round"],
        "energy_calls": state["energy_calls"],
        "wall_seconds": state["wall_seconds"],
        "history": state["history"],
        "extra": extra or {},
    }
    if include_resume_state:
        payload["resume"] = {
            "optimizer": state["optimizer"],
            "generator": state["generator"],
            "torch_rng": torch.get_rng_state(),
            "buffer": trainer.buffer.state_dict(),
        }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("checkpoint written: %s (round %d)", path, payload["round"])
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint, with a clear error for a missing, unreadable or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not an adjoint-sampling checkpoint (format {FORMAT_VERSION})")
    return payload


def export_weights(src: str | Path, dst: str | Path) -> Path:
    """Copy a checkpoint without its resume state (optimizer, buffer, RNG): what sampling needs."""
    payload = load_checkpoint(src)
    payload.pop("resume", None)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, dst)
    return dst


def restore_trainer(trainer: AdjointSamplingTrainer, payload: dict[str, Any]) -> None:
    """Restore weights, and (if present) optimizer, buffer and RNG state for an exact resume."""
    resume = payload.get("resume")
    if resume is None:
        raise ValueError("this checkpoint holds weights only (no optimizer/buffer state); it cannot be resumed")
    trainer.load_state_dict(
        {
            "control": payload["control"],
            "optimizer": resume["optimizer"],
            "generator": resume["generator"],
            "round": payload["round"],
            "energy_calls": payload["energy_calls"],
            "wall_seconds": payload["wall_seconds"],
            "history": payload["history"],
        }
    )
    trainer.buffer.load_state_dict(resume["buffer"])
    torch.set_rng_state(resume["torch_rng"])
