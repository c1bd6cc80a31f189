"""RDKit ETKDGv3 conformers: the baseline, and the warm-up data of the sampler (generated in parallel,
cached on disk)."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdDistGeom
from tqdm import tqdm

__all__ = ["embed", "embed_many"]

log = logging.getLogger(__name__)


def _embed_once(mol: Chem.Mol, num_conformers: int, seed: int, threads: int, random_coords: bool) -> np.ndarray:
    mol = Chem.Mol(mol)
    mol.RemoveAllConformers()
    with rdBase.BlockLogs():
        params = rdDistGeom.ETKDGv3()
        settings = {
            "randomSeed": seed,
            "pruneRmsThresh": -1.0,
            "enforceChirality": True,
            "numThreads": threads,
            "useRandomCoords": random_coords,
        }
        for name, value in settings.items():  # (RDKit's stubs mistype these attributes)
            setattr(params, name, value)
        ids = list(rdDistGeom.EmbedMultipleConfs(mol, numConfs=num_conformers, params=params))
    if not ids:
        return np.zeros((0, mol.GetNumAtoms(), 3))
    return np.stack([mol.GetConformer(i).GetPositions() for i in ids])


def embed(
    mol: Chem.Mol, num_conformers: int, seed: int = 0, threads: int = 1, *, random_coords_fallback: bool = False
) -> np.ndarray:
    """``[k, n, 3]`` float64 ETKDGv3 conformers of ``mol`` (explicit hydrogens, atom order kept;
    ``k <= num_conformers``, 0 when embedding fails). ``seed`` must not be 0: RDKit 2026.9 then returns
    identical conformers.

    RDKit starts each embedding from the eigenvectors of a random distance matrix, which fails more often the
    larger and floppier the molecule (a 60-carbon chain: 1 or 0 of 4 embedded, depending on the seed).
    ``random_coords_fallback`` embeds the missing ones again from random coordinates (RDKit's
    ``useRandomCoords``, its advice for large molecules); off by default, so the ETKDG baseline stays RDKit's
    own method, and where every embedding succeeds the result is the same either way.
    """
    if seed == 0:
        raise ValueError("ETKDG randomSeed 0 gives identical conformers in RDKit 2026.9; use a non-zero seed")
    out = _embed_once(mol, num_conformers, seed, threads, random_coords=False)
    missing = num_conformers - len(out)
    if random_coords_fallback and missing > 0:
        extra = _embed_once(mol, missing, seed, threads, random_coords=True)
        log.info(
            "ETKDG embedded %d of %d from eigenvectors, %d more from random coordinates",
            len(out),
            num_conformers,
            len(extra),
        )
        out = np.concatenate([out, extra])
    return out


def _job(args: tuple[Chem.Mol, int, int]) -> np.ndarray:
    return embed(*args).astype(np.float32)  # warm-up data: float32 is plenty and halves the cache


def embed_many(
    mols: Sequence[Chem.Mol],
    num_conformers: int,
    *,
    seed: int = 0,
    workers: int = 1,
    cache_dir: Path | None = None,
    show_progress: bool = True,
) -> list[np.ndarray]:
    """ETKDG conformers for many molecules, over ``workers`` processes, cached under ``cache_dir`` by a hash
    of the inputs (and the RDKit version)."""
    key = hashlib.sha256(
        "\n".join(
            ["etkdg-v2", rdBase.rdkitVersion, str(num_conformers), str(seed), *map(Chem.MolToMolBlock, mols)]
        ).encode()
    ).hexdigest()[:16]
    path = cache_dir / f"etkdg_{key}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            log.info("ETKDG conformers from cache %s", path)
            return [data[f"m{i}"] for i in range(len(mols))]
    # one distinct, non-zero seed per molecule: RDKit 2026.9 returns identical conformers for randomSeed=0
    jobs = [(m, num_conformers, 1 + seed * 1_000_003 + i) for i, m in enumerate(mols)]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            out = list(
                tqdm(pool.imap(_job, jobs, chunksize=8), total=len(jobs), desc="ETKDG", disable=not show_progress)
            )
    else:
        out = [_job(j) for j in tqdm(jobs, desc="ETKDG", disable=not show_progress)]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **{f"m{i}": x for i, x in enumerate(out)})
    failed = sum(1 for x in out if len(x) == 0)
    if failed:
        log.warning("ETKDG failed to embed %d of %d molecules", failed, len(out))
    return out
