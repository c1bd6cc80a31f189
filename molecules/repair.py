"""Repair of sampled conformers: MMFF94 from the input's bond graph, with the input's stereochemistry enforced.

A raw sample can have a stretched bond (MMFF94 built from the molecule's own bonds pulls it back) or a
stereocentre or double bond in the wrong configuration (no local minimization undoes that: the wrong
configuration is a minimum too). Repair, per conformer:

1. plain MMFF94 minimization from the input's bond graph;
2. if some specified configurations are still wrong: reflect the conformer first when more than half the
   specified centres are inverted (a reflection keeps every distance and E/Z, and leaves fewer centres
   to invert), then minimize again with flat-bottomed torsion restraints that hold every specified
   configuration that is right and invert every one that is wrong, and finish with a plain minimization;
   repeated up to ``passes`` times while something is still wrong.

Restraints (RDKit ``MMFFAddTorsionConstraint``, zero inside the range):

- a tetrahedral centre with four neighbours ``a, b, c, d``: the dihedral ``a-b-c-d`` of its substituents,
  about ±70° in a tetrahedron, its sign the centre's handedness; held in ``±[45°, 95°]``. Inverting drives
  it through 0 (the substituents' plane), the path of a real inversion;
- a centre with three neighbours (N, S, P with a lone pair): the dihedral ``a-b-c-X`` (``X`` the centre),
  about ±35°; held in ``±[15°, 60°]``;
- a double bond ``b=c`` with substituents ``a`` on ``b`` and ``d`` on ``c``: ``a-b-c-d`` held in
  ``[-30°, 30°]`` (cis) or ``[150°, 210°]`` (trans).

The sampler's stereo checks (:func:`molecules.validity.check_conformer`) still judge the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdForceFieldHelpers
from rdkit.Chem import rdMolTransforms as transforms

from molecules.structures import with_conformers
from molecules.validity import StereoSpec, mirror_image, stereo_mismatch, stereo_spec

__all__ = ["RepairConfig", "RepairResult", "repair_conformers"]


@dataclass(frozen=True, kw_only=True)
class RepairConfig:
    """``max_iters``: MMFF94 minimizer iterations per minimization; ``passes``: restrained minimizations at
    most per conformer; ``force_constant``: of the torsion restraints (kcal/mol/rad²)."""

    max_iters: int = 200
    passes: int = 2
    force_constant: float = 1000.0
    variant: str = "MMFF94"

    def __post_init__(self) -> None:
        if self.max_iters < 1 or self.passes < 0:
            raise ValueError(f"max_iters must be >= 1 and passes >= 0, got {self.max_iters}, {self.passes}")
        if self.force_constant <= 0:
            raise ValueError(f"force_constant must be positive, got {self.force_constant}")


@dataclass(frozen=True)
class RepairResult:
    """``positions`` ``[C, n, 3]`` Å; ``stereo_attempted`` conformers had a wrong configuration after the plain
    minimization, ``stereo_fixed`` of them have none left; ``reflected`` of them were mirrored on the way;
    ``not_converged`` conformers ended their last minimization at ``max_iters``."""

    positions: np.ndarray
    stereo_attempted: int = 0
    stereo_fixed: int = 0
    reflected: int = 0
    not_converged: int = 0


def repair_conformers(
    mol: Chem.Mol, positions: np.ndarray, config: RepairConfig | None = None, spec: StereoSpec | None = None
) -> RepairResult:
    """Repair each conformer ``positions[k]`` (``[C, n, 3]`` Å) of ``mol`` (explicit hydrogens, same atom order).

    Raises:
        ValueError: MMFF94 cannot type ``mol`` (the message names the atoms).
    """
    from energy.mmff import mmff_properties

    config = config or RepairConfig()
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1:] != (mol.GetNumAtoms(), 3):
        raise ValueError(f"positions shape {positions.shape} does not match {mol.GetNumAtoms()} atoms")
    props = mmff_properties(mol, config.variant)
    spec = stereo_spec(mol) if spec is None else spec
    out = np.empty_like(positions)
    attempted = fixed = reflected = not_converged = 0
    for k, start in enumerate(positions):
        pos, converged = _minimize(mol, props, start, config.max_iters)
        bad_centres, bad_bonds = stereo_mismatch(mol, pos, spec) if np.isfinite(pos).all() else ([], [])
        if bad_centres or bad_bonds:
            attempted += 1
            mirrored = False
            if 2 * len(bad_centres) > len(spec.centres):
                pos, mirrored = mirror_image(pos), True
                bad_centres, bad_bonds = stereo_mismatch(mol, pos, spec)
            for _ in range(config.passes):
                if not bad_centres and not bad_bonds:
                    break
                restrained, _ = _minimize(mol, props, pos, config.max_iters, (spec, bad_centres, bad_bonds, config))
                pos, converged = _minimize(mol, props, restrained, config.max_iters)
                bad_centres, bad_bonds = stereo_mismatch(mol, pos, spec)
            if not bad_centres and not bad_bonds:
                fixed += 1
                reflected += int(mirrored)
        out[k] = pos
        not_converged += int(not converged)
    return RepairResult(out, attempted, fixed, reflected, not_converged)


def _minimize(
    mol: Chem.Mol,
    props: Any,  # rdForceFieldHelpers.MMFFGetMoleculeProperties(mol)
    pos: np.ndarray,
    max_iters: int,
    restraints: tuple[StereoSpec, list[int], list[int], RepairConfig] | None = None,
) -> tuple[np.ndarray, bool]:
    """Minimized positions, and whether the minimizer converged within ``max_iters``."""
    one = with_conformers(mol, [pos])
    with rdBase.BlockLogs():
        ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(one, props)
    if ff is None:  # props came from this molecule: only a changed molecule gets here
        raise ValueError("MMFF94 could not build a force field for this molecule")
    if restraints is not None:
        spec, bad_centres, bad_bonds, config = restraints
        conf = one.GetConformer()
        for atoms, low, high in _restraints(one, conf, spec, set(bad_centres), set(bad_bonds)):
            ff.MMFFAddTorsionConstraint(*atoms, False, low, high, config.force_constant)
    ff.Initialize()
    status = ff.Minimize(maxIts=max_iters)
    return np.asarray(ff.Positions(), dtype=np.float64).reshape(-1, 3), status == 0


def _restraints(
    mol: Chem.Mol, conf: Chem.Conformer, spec: StereoSpec, bad_centres: set[int], bad_bonds: set[int]
) -> list[tuple[tuple[int, int, int, int], float, float]]:
    """``(atoms, low, high)`` torsion ranges in degrees: the current configuration where it is right, the
    opposite one where it is wrong."""
    out: list[tuple[tuple[int, int, int, int], float, float]] = []
    for centre in spec.centres:
        neighbours = [n.GetIdx() for n in mol.GetAtomWithIdx(centre).GetNeighbors()]
        if len(neighbours) >= 4:
            atoms, (low, high) = (neighbours[0], neighbours[1], neighbours[2], neighbours[3]), (45.0, 95.0)
        elif len(neighbours) == 3:
            atoms, (low, high) = (neighbours[0], neighbours[1], neighbours[2], centre), (15.0, 60.0)
        else:
            continue
        sign = 1.0 if transforms.GetDihedralDeg(conf, *atoms) > 0 else -1.0
        if centre in bad_centres:
            sign = -sign
        out.append((atoms, low, high) if sign > 0 else (atoms, -high, -low))
    for index in spec.double_bonds:
        bond = mol.GetBondWithIdx(index)
        b, c = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        a = next((n.GetIdx() for n in mol.GetAtomWithIdx(b).GetNeighbors() if n.GetIdx() != c), None)
        d = next((n.GetIdx() for n in mol.GetAtomWithIdx(c).GetNeighbors() if n.GetIdx() != b), None)
        if a is None or d is None:
            continue
        cis = abs(transforms.GetDihedralDeg(conf, a, b, c, d)) < 90.0
        if index in bad_bonds:
            cis = not cis
        out.append(((a, b, c, d), -30.0, 30.0) if cis else ((a, b, c, d), 150.0, 210.0))
    return out
