"""Symmetry-aware heavy-atom RMSD between two sets of conformers of one molecule, all pairs at once.

The value for a pair is RDKit's ``rdMolAlign.GetBestRMS`` on hydrogen-free copies:

.. math::

    \\mathrm{RMSD}(x, y) = \\min_{\\pi \\in \\mathrm{Aut}(G)} \\min_{R \\in SO(3),\\, t}
        \\sqrt{\\tfrac1n \\textstyle\\sum_i \\lVert y_i - (R\\, x_{\\pi(i)} + t) \\rVert^2}

over the automorphisms ``π`` of the heavy-atom graph (found the way ``GetBestRMS`` finds them:
substructure matches of the molecule onto itself, chirality ignored, conjugated terminal groups such
as carboxylate and nitro made symmetric) and proper rotations only (mirror images do not match).

The automorphisms are computed once per molecule (:class:`HeavyAtomRmsd`); the inner minimum is the
quaternion characteristic polynomial method (QCP; Theobald, Acta Cryst. A 61, 478 (2005); Liu et al.,
J. Comput. Chem. 31, 1561 (2010)): with the ``3 × 3`` correlation matrix ``S = Σ_i y_i x_{π(i)}^T``
of centred coordinates, ``n · RMSD² = G_x + G_y − 2 λ_max`` where ``λ_max`` is the largest eigenvalue
of Horn's symmetric ``4 × 4`` key matrix of ``S`` (the optimal rotation is a unit quaternion, so it
is proper by construction). All correlation matrices of a chunk come from one matrix product and
``λ_max`` from a vectorized Newton iteration on the characteristic polynomial, chunked so memory
stays bounded for ``L × K × M`` (references × generated × mappings).

Example:
    >>> engine = HeavyAtomRmsd(mol)                       # mol with Hs and conformers
    >>> d = engine.matrix(conformer_coordinates(ref_mol), conformer_coordinates(gen_mol))  # [L, K] Å
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rdkit import Chem

__all__ = [
    "HeavyAtomRmsd",
    "RmsdConfig",
    "best_rmsd_matrix",
    "conformer_coordinates",
    "heavy_atom_mappings",
    "kabsch_rmsd",
    "qcp_rmsd",
    "warm_up",
]

log = logging.getLogger(__name__)

# RDKit MolAlign::details::symmetrizeTerminalAtoms: terminal O/N pairs on one atom, one single- and
# one double-bonded (carboxylate, nitro, amidine-like ends), match either way round.
_TERMINAL_GROUP = "[O,N;D1;$([O,N;D1]-[*]=[O,N;D1]),$([O,N;D1]=[*]-[O,N;D1])]~[*]"
_NEWTON_TOL = 1e-11  # relative step at which Newton stops (quadratic convergence: the error is far smaller)


@dataclass(frozen=True, kw_only=True)
class RmsdConfig:
    """How the RMSD engine enumerates mappings and bounds memory.

    Attributes:
        max_mappings: cap on heavy-atom automorphisms (RDKit's ``GetBestRMS`` default is 10⁶); a
            molecule at the cap is logged, its RMSDs are then upper bounds.
        symmetrize_terminal_groups: treat conjugated terminal groups symmetrically, as
            ``GetBestRMS(symmetrizeConjugatedTerminalGroups=True)`` (its default) does.
        chunk_elements: pair-mapping combinations per vectorized chunk (memory ≈ 400 bytes each).
        blas_threads: BLAS threads for the correlation matrix products (``None``: leave the library's
            setting). One by default: the products are small, and a multi-threaded BLAS spinning on a
            busy machine makes them ten times slower.
        backend: ``"numba"`` (a compiled loop per pair and mapping, ~5× faster), ``"numpy"`` (vectorized
            array expressions), or ``"auto"`` (numba where it is installed).
    """

    max_mappings: int = 1_000_000
    symmetrize_terminal_groups: bool = True
    chunk_elements: int = 1 << 18
    blas_threads: int | None = 1
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.max_mappings < 1:
            raise ValueError(f"max_mappings must be at least 1, got {self.max_mappings}")
        if self.chunk_elements < 1:
            raise ValueError(f"chunk_elements must be at least 1, got {self.chunk_elements}")
        if self.backend not in ("auto", "numba", "numpy"):
            raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {self.backend!r}")


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's controller (inspecting the loaded libraries takes ~10 ms: once per process), or
    ``None`` where threadpoolctl is not installed (the BLAS then keeps its own thread count)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        log.debug("threadpoolctl not installed: BLAS thread count left as it is")
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def _blas_limit(threads: int | None) -> Iterator[None]:
    controller = _blas_controller() if threads is not None else None
    if controller is None:
        yield
        return
    with controller.limit(limits=threads, user_api="blas"):
        yield


def _symmetrized(mol: Chem.Mol) -> Chem.Mol:
    """The query side of ``GetBestRMS``'s self-match: terminal-group bonds become single-or-double
    queries and their terminal atoms lose the formal charge."""
    pattern = Chem.MolFromSmarts(_TERMINAL_GROUP)
    either = Chem.MolFromSmarts("*-,=*").GetBondWithIdx(0)
    matches = mol.GetSubstructMatches(pattern)
    if not matches:
        return mol
    rw = Chem.RWMol(mol)
    for terminal, neighbour in matches:
        rw.GetAtomWithIdx(terminal).SetFormalCharge(0)
        rw.ReplaceBond(rw.GetBondBetweenAtoms(terminal, neighbour).GetIdx(), either)
    return rw.GetMol()


def heavy_atom_mappings(mol: Chem.Mol, config: RmsdConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The heavy atoms that ``Chem.RemoveHs`` keeps and the self-mappings ``GetBestRMS`` enumerates.

    Returns:
        ``(heavy [n], mappings [M, n])``: ``heavy`` indexes ``mol``'s atoms; ``mappings[m, i] = j``
        pairs heavy atom ``i`` of one conformer with heavy atom ``j`` of the other (indices into
        ``heavy``). The identity is always included.
    """
    config = config or RmsdConfig()
    tagged = Chem.Mol(mol)
    for atom in tagged.GetAtoms():
        atom.SetIntProp("_rmsd_index", atom.GetIdx())
    stripped = Chem.RemoveHs(tagged)
    heavy = np.array([a.GetIntProp("_rmsd_index") for a in stripped.GetAtoms()], dtype=np.int64)
    query = _symmetrized(stripped) if config.symmetrize_terminal_groups else stripped
    params = Chem.SubstructMatchParameters()
    settings = {"uniquify": False, "useChirality": False, "recursionPossible": False, "maxMatches": config.max_mappings}
    for key, value in settings.items():  # (attribute assignment: RDKit's stubs mistype these)
        setattr(params, key, value)
    matches = stripped.GetSubstructMatches(query, params)
    if len(matches) >= config.max_mappings:
        log.warning(
            "%s: %d heavy-atom mappings reached the cap; RMSDs are upper bounds",
            Chem.MolToSmiles(stripped),
            len(matches),
        )
    maps = np.array(matches, dtype=np.int64).reshape(len(matches), stripped.GetNumAtoms())
    identity = np.arange(stripped.GetNumAtoms())
    if not (maps == identity).all(axis=1).any():
        maps = np.concatenate([identity[None], maps])
    return heavy, maps


def conformer_coordinates(mol: Chem.Mol, conf_ids: Sequence[int] | None = None) -> np.ndarray:
    """``[C, n_atoms, 3]`` float64 positions of the given conformers (all by default, in order)."""
    confs = mol.GetConformers() if conf_ids is None else [mol.GetConformer(int(c)) for c in conf_ids]
    if not confs:
        return np.zeros((0, mol.GetNumAtoms(), 3))
    return np.stack([c.GetPositions() for c in confs]).astype(np.float64)


def qcp_rmsd(s: np.ndarray, gx: np.ndarray, gy: np.ndarray, n: int) -> np.ndarray:
    """RMSD after the optimal proper rotation from correlation matrices of centred coordinates.

    Args:
        s: ``[..., 3, 3]``, ``s[..., a, b] = Σ_i y_{i,a} x_{i,b}``.
        gx, gy: ``Σ_i |x_i|²`` and ``Σ_i |y_i|²``, broadcastable to ``s.shape[:-2]``.
        n: number of atoms.

    ``λ_max`` is the largest root of ``P(λ) = λ⁴ + c₂λ² + c₁λ + c₀`` (the key matrix is traceless),
    found by Newton's method from ``(G_x + G_y)/2 ≥ λ_max``, which converges monotonically.
    """
    comps = [s[..., a, b] for a in range(3) for b in range(3)]
    return _qcp(comps, gx, gy, n)


def _qcp(comps: list[np.ndarray], gx: np.ndarray, gy: np.ndarray, n: int, tol: float = _NEWTON_TOL) -> np.ndarray:
    sxx, sxy, sxz, syx, syy, syz, szx, szy, szz = comps
    sxx2, syy2, szz2 = sxx * sxx, syy * syy, szz * szz
    sxy2, syz2, sxz2 = sxy * sxy, syz * syz, sxz * sxz
    syx2, szy2, szx2 = syx * syx, szy * szy, szx * szx
    syzszy_syyszz2 = 2.0 * (syz * szy - syy * szz)
    sxx2syy2szz2syz2szy2 = syy2 + szz2 - sxx2 + syz2 + szy2
    sxy2sxz2syx2szx2 = sxy2 + sxz2 - syx2 - szx2
    c2 = -2.0 * (sxx2 + syy2 + szz2 + sxy2 + syx2 + sxz2 + szx2 + syz2 + szy2)
    c1 = 8.0 * (
        sxx * syz * szy + syy * szx * sxz + szz * sxy * syx - sxx * syy * szz - syz * szx * sxy - szy * syx * sxz
    )
    sxzpszx, syzpszy, sxypsyx = sxz + szx, syz + szy, sxy + syx
    syzmszy, sxzmszx, sxymsyx = syz - szy, sxz - szx, sxy - syx
    sxxpsyy, sxxmsyy = sxx + syy, sxx - syy
    c0 = (
        sxy2sxz2syx2szx2 * sxy2sxz2syx2szx2
        + (sxx2syy2szz2syz2szy2 + syzszy_syyszz2) * (sxx2syy2szz2syz2szy2 - syzszy_syyszz2)
        + (-sxzpszx * syzmszy + sxymsyx * (sxxmsyy - szz)) * (-sxzmszx * syzpszy + sxymsyx * (sxxmsyy + szz))
        + (-sxzpszx * syzpszy - sxypsyx * (sxxpsyy - szz)) * (-sxzmszx * syzmszy - sxypsyx * (sxxpsyy + szz))
        + (sxypsyx * syzpszy + sxzpszx * (sxxmsyy + szz)) * (-sxymsyx * syzmszy + sxzpszx * (sxxpsyy + szz))
        + (sxypsyx * syzmszy + sxzmszx * (sxxmsyy - szz)) * (-sxymsyx * syzpszy + sxzmszx * (sxxpsyy - szz))
    )
    shape = c0.shape
    e0 = np.broadcast_to(0.5 * (np.asarray(gx) + np.asarray(gy)), shape).ravel()
    lam = _largest_root(e0.copy(), c0.ravel(), c1.ravel(), c2.ravel(), tol)
    return np.sqrt(np.maximum(2.0 * (e0 - lam) / n, 0.0)).reshape(shape)


def _largest_root(lam: np.ndarray, c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, tol: float) -> np.ndarray:
    """Newton on ``λ⁴ + c₂λ² + c₁λ + c₀`` from above (``P`` and ``P'`` are positive right of the largest
    root of a real-rooted polynomial, so the iterates fall monotonically onto it), all entries at once; converged
    entries are dropped from the working set whenever half of it has converged (gathers stay ``O(N)`` in total)."""
    out = lam
    idx: np.ndarray | None = None  # positions of the working set in ``out`` (None: all)
    x, k0, k1, k2 = lam.copy(), c0, c1, c2
    for _ in range(100):
        x2 = x * x
        b = (x2 + k2) * x
        a = b + k1
        denom = 2.0 * x2 * x + b + a
        step = (a * x + k0) / np.where(denom == 0.0, 1.0, denom)
        x = x - step
        # from above the largest root every exact step is positive: a step <= 0 is rounding noise
        still = step > tol * np.abs(x)
        num_still = int(np.count_nonzero(still))
        if num_still == 0:
            break
        if 2 * num_still < len(x):
            if idx is None:
                out[:] = x
                idx = np.flatnonzero(still)
            else:
                out[idx] = x
                idx = idx[still]
            x, k0, k1, k2 = x[still], k0[still], k1[still], k2[still]
    if idx is None:
        out[:] = x
    else:
        out[idx] = x
    return out


def kabsch_rmsd(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Reference implementation (slow path, for tests): RMSD of ``[..., n, 3]`` pairs in the given atom
    order after the optimal proper rotation (SVD with the determinant sign correction)."""
    x = x - x.mean(axis=-2, keepdims=True)
    y = y - y.mean(axis=-2, keepdims=True)
    h = np.swapaxes(x, -1, -2) @ y
    u, sig, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(u @ vt))
    sig = sig.copy()
    sig[..., 2] *= d
    n = x.shape[-2]
    msd = ((x**2).sum((-1, -2)) + (y**2).sum((-1, -2)) - 2.0 * sig.sum(-1)) / n
    return np.sqrt(np.maximum(msd, 0.0))


def _qcp_min_loop(s: np.ndarray, g_gen: np.ndarray, g_ref: np.ndarray, n: int, out: np.ndarray, k0: int) -> None:
    """Compiled by numba (:func:`_numba_kernel`): the QCP RMSD of every ``(l, k, m)`` of
    ``s [3, Kc, 3, L, M]`` (``s[a, k, b, l, m] = Σ_i gen[k0 + k, i, a] ref[l, maps[m, i], b]``), minimized
    over ``m`` into ``out[:, k0 : k0 + Kc]`` (``out [L, K]`` holds the running minimum; whole arrays are
    passed so that one compiled signature serves every chunk). Same arithmetic as :func:`_qcp`."""
    for k in range(s.shape[1]):
        for r in range(s.shape[3]):
            best = out[r, k0 + k]
            e0 = 0.5 * (g_gen[k0 + k] + g_ref[r])
            for m in range(s.shape[4]):
                sxx, sxy, sxz = s[0, k, 0, r, m], s[0, k, 1, r, m], s[0, k, 2, r, m]
                syx, syy, syz = s[1, k, 0, r, m], s[1, k, 1, r, m], s[1, k, 2, r, m]
                szx, szy, szz = s[2, k, 0, r, m], s[2, k, 1, r, m], s[2, k, 2, r, m]
                sxx2, syy2, szz2 = sxx * sxx, syy * syy, szz * szz
                sxy2, syz2, sxz2 = sxy * sxy, syz * syz, sxz * sxz
                syx2, szy2, szx2 = syx * syx, szy * szy, szx * szx
                syzszy_syyszz2 = 2.0 * (syz * szy - syy * szz)
                sxx2syy2szz2syz2szy2 = syy2 + szz2 - sxx2 + syz2 + szy2
                sxy2sxz2syx2szx2 = sxy2 + sxz2 - syx2 - szx2
                c2 = -2.0 * (sxx2 + syy2 + szz2 + sxy2 + syx2 + sxz2 + szx2 + syz2 + szy2)
                c1 = 8.0 * (
                    sxx * syz * szy
                    + syy * szx * sxz
                    + szz * sxy * syx
                    - sxx * syy * szz
                    - syz * szx * sxy
                    - szy * syx * sxz
                )
                sxzpszx, syzpszy, sxypsyx = sxz + szx, syz + szy, sxy + syx
                syzmszy, sxzmszx, sxymsyx = syz - szy, sxz - szx, sxy - syx
                sxxpsyy, sxxmsyy = sxx + syy, sxx - syy
                c0 = (
                    sxy2sxz2syx2szx2 * sxy2sxz2syx2szx2
                    + (sxx2syy2szz2syz2szy2 + syzszy_syyszz2) * (sxx2syy2szz2syz2szy2 - syzszy_syyszz2)
                    + (-sxzpszx * syzmszy + sxymsyx * (sxxmsyy - szz))
                    * (-sxzmszx * syzpszy + sxymsyx * (sxxmsyy + szz))
                    + (-sxzpszx * syzpszy - sxypsyx * (sxxpsyy - szz))
                    * (-sxzmszx * syzmszy - sxypsyx * (sxxpsyy + szz))
                    + (sxypsyx * syzpszy + sxzpszx * (sxxmsyy + szz)) * (-sxymsyx * syzmszy + sxzpszx * (sxxpsyy + szz))
                    + (sxypsyx * syzmszy + sxzmszx * (sxxmsyy - szz)) * (-sxymsyx * syzpszy + sxzmszx * (sxxpsyy - szz))
                )
                x = e0
                for _ in range(100):
                    x2 = x * x
                    b = (x2 + c2) * x
                    a = b + c1
                    denom = 2.0 * x2 * x + b + a
                    if denom == 0.0:
                        break
                    step = (a * x + c0) / denom
                    x -= step
                    if not step > _NEWTON_TOL * abs(x):
                        break
                msd = 2.0 * (e0 - x) / n
                rmsd = np.sqrt(msd) if msd > 0.0 else 0.0
                if rmsd < best:
                    best = rmsd
            out[r, k0 + k] = best


@functools.cache
def _numba_kernel() -> Any:
    """The compiled :func:`_qcp_min_loop` (compiled once, cached on disk), or ``None`` without numba."""
    try:
        import numba
    except ImportError:
        return None
    return numba.njit(cache=True, nogil=True)(_qcp_min_loop)


def warm_up(backend: str = "auto") -> float:
    """Compile (or load from the on-disk cache) the numba kernel now, so that timings exclude it; seconds taken."""
    import time

    start = time.perf_counter()
    x = np.random.default_rng(0).normal(size=(2, 3, 3))
    with _blas_limit(1):  # also loads the BLAS controller
        best_rmsd_matrix(x, x, np.arange(3)[None], backend=backend)
    return time.perf_counter() - start


def _use_numba(backend: str) -> bool:
    if backend == "numpy":
        return False
    if _numba_kernel() is None:
        if backend == "numba":
            raise ImportError("RmsdConfig(backend='numba') needs numba installed")
        return False
    return True


def best_rmsd_matrix(
    ref: np.ndarray, gen: np.ndarray, mappings: np.ndarray, *, chunk_elements: int = 1 << 18, backend: str = "auto"
) -> np.ndarray:
    """``[L, K]`` minimum over mappings and proper rotations of the RMSD between ``ref [L, n, 3]`` and
    ``gen [K, n, 3]`` (heavy atoms, same order); ``mappings [M, n]`` pairs ``gen`` atom ``i`` with
    ``ref`` atom ``mappings[m, i]``."""
    ref = np.asarray(ref, dtype=np.float64)
    gen = np.asarray(gen, dtype=np.float64)
    if ref.ndim != 3 or gen.ndim != 3 or ref.shape[1:] != gen.shape[1:] or ref.shape[2] != 3:
        raise ValueError(f"ref [L, n, 3] and gen [K, n, 3] must agree, got {ref.shape} and {gen.shape}")
    num_ref, n, _ = ref.shape
    num_gen = gen.shape[0]
    mappings = np.asarray(mappings, dtype=np.int64)
    if mappings.ndim != 2 or mappings.shape[1] != n:
        raise ValueError(f"mappings must be [M, {n}], got {mappings.shape}")
    out = np.full((num_ref, num_gen), np.inf)
    if num_ref == 0 or num_gen == 0:
        return out
    kernel = _numba_kernel() if _use_numba(backend) else None
    ref = ref - ref.mean(axis=1, keepdims=True)
    gen = gen - gen.mean(axis=1, keepdims=True)
    g_ref = (ref**2).sum(axis=(1, 2))  # [L]
    g_gen = (gen**2).sum(axis=(1, 2))  # [K]
    gen_t = gen.transpose(1, 2, 0).reshape(n, 3 * num_gen)  # [n, (a, k)]
    per_mapping = num_ref * num_gen
    if per_mapping <= chunk_elements:
        m_chunk, k_chunk = max(1, min(len(mappings), chunk_elements // per_mapping)), num_gen
    else:
        m_chunk, k_chunk = 1, max(1, chunk_elements // num_ref)
    for m0 in range(0, len(mappings), m_chunk):
        maps = mappings[m0 : m0 + m_chunk]  # [Mc, n]
        mc = len(maps)
        # permuted references, atom-major: [n, (b, l, m)] with entry ref[l, maps[m, i], b]
        ref_p = ref[:, maps, :].transpose(2, 3, 0, 1).reshape(n, 3 * num_ref * mc)
        for k0 in range(0, num_gen, k_chunk):
            kc = min(k_chunk, num_gen - k0)
            gen_c = gen_t.reshape(n, 3, num_gen)[:, :, k0 : k0 + kc].reshape(n, 3 * kc)
            s = (gen_c.T @ ref_p).reshape(3, kc, 3, num_ref, mc)  # [a, k, b, l, m]
            if kernel is not None:
                kernel(s, g_gen, g_ref, n, out, k0)
                continue
            comps = [s[a, :, b] for a in range(3) for b in range(3)]  # each [kc, L, Mc]
            rmsd = _qcp(comps, g_gen[k0 : k0 + kc, None, None], g_ref[None, :, None], n)
            np.minimum(out[:, k0 : k0 + kc], rmsd.min(axis=2).T, out=out[:, k0 : k0 + kc])
    return out


class HeavyAtomRmsd:
    """The RMSD engine of one molecule: heavy atoms and their automorphisms, computed once.

    ``matrix(ref, gen)`` takes all-atom ``[C, n_atoms, 3]`` coordinates in ``mol``'s atom order (or
    heavy-atom-only ``[C, n_heavy, 3]``) and returns the ``[L, K]`` RMSD matrix in Å.
    """

    def __init__(self, mol: Chem.Mol, config: RmsdConfig | None = None) -> None:
        self.config = config or RmsdConfig()
        self.num_atoms = mol.GetNumAtoms()
        self.heavy, self.mappings = heavy_atom_mappings(mol, self.config)

    @property
    def num_mappings(self) -> int:
        return int(self.mappings.shape[0])

    def _heavy(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64)
        if coords.ndim != 3 or coords.shape[2] != 3:
            raise ValueError(f"coordinates must be [C, atoms, 3], got {coords.shape}")
        if coords.shape[1] == self.num_atoms:
            return coords[:, self.heavy]
        if coords.shape[1] == len(self.heavy):
            return coords
        raise ValueError(f"expected {self.num_atoms} (all) or {len(self.heavy)} (heavy) atoms, got {coords.shape[1]}")

    def matrix(self, ref: np.ndarray, gen: np.ndarray) -> np.ndarray:
        with _blas_limit(self.config.blas_threads):
            return best_rmsd_matrix(
                self._heavy(ref),
                self._heavy(gen),
                self.mappings,
                chunk_elements=self.config.chunk_elements,
                backend=self.config.backend,
            )
