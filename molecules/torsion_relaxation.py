"""Torsion-space relaxation: MMFF94 minimized over the rotatable torsions first, then a short Cartesian polish.

A Cartesian minimizer turns a molecule's torsions slowly: rotating a fragment is a collective motion of many
atoms, poorly conditioned in Cartesian coordinates, so RDKit's BFGS started from a torsion draw rarely converges
within 200 iterations (each about two force-field evaluations) and its torsions are still moving there. In torsion
space the same clash is a handful of coordinates. Here the MMFF94 energy of ``x(phi)``
(:func:`sampler.torsion_geometry.torsion_positions`: the draw's own bond lengths and angles, every rotatable
torsion including the methyl tops set to ``phi``) is minimized over ``phi`` by BFGS, all conformers of a molecule
at once, with the torsion gradient ``dE/dphi`` the torque of RDKit's Cartesian gradient about each bond
(:func:`~sampler.torsion_geometry.torsion_torque`); then RDKit's own Cartesian minimizer relaxes bond lengths,
angles and rings for ``polish_iters`` iterations.

BFGS step, per conformer (``H`` the inverse-Hessian estimate, ``H_0 = I`` rad² mol/kcal)::

    p = -H g,  p <- p * min(1, max_step / max_i |p_i|)
    backtrack t = 1, 1/4, 1/16, ... until E(phi + t p) <= E(phi) + 1e-4 t g.p   (Armijo)
    s = t p,  y = g(phi + s) - g(phi),  if s.y > 0:  H <- (I - r s y^T) H (I - r y s^T) + r s s^T,  r = 1 / s.y

stopping where ``max_i |g_i| < grad_tol`` or after ``max_evals`` evaluations of the energy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdForceFieldHelpers

from energy.mmff import mmff_optimize, mmff_properties
from energy.validation import conformer_array
from molecules.rmsd import conformer_coordinates
from molecules.structures import with_conformers
from molecules.torsions import HydrogenRotors, TorsionRules, torsion_system
from sampler.torsion_geometry import collate_torsion_systems, dihedral, torsion_positions, torsion_torque

__all__ = ["TorsionRelaxation", "torsion_descent", "torsion_first_relax"]

#: every rotatable torsion, the methyl tops included: they are cheap coordinates that relieve clashes
RELAXATION_RULES = TorsionRules(hydrogen_rotors=HydrogenRotors.ALL)


@dataclass(frozen=True, kw_only=True)
class TorsionRelaxation:
    """``max_evals`` MMFF94 evaluations of torsion-space BFGS (``max_step`` rad per torsion and step, stopping
    below ``grad_tol`` kcal/mol/rad), then ``polish_iters`` iterations of RDKit's Cartesian MMFF94 minimizer."""

    max_evals: int = 40
    polish_iters: int = 30
    max_step: float = 0.5
    grad_tol: float = 0.05

    @property
    def description(self) -> str:
        """How the draws are relaxed, in words (method descriptions, reports)."""
        return (
            f"MMFF94 in torsion space first (at most {self.max_evals} evaluations), then {self.polish_iters} "
            "Cartesian iterations"
        )

    def descend(self, mol: Chem.Mol, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first stage alone: :func:`torsion_descent` with these settings."""
        return torsion_descent(mol, positions, max_evals=self.max_evals, max_step=self.max_step, grad_tol=self.grad_tol)

    def polish(self, mol: Chem.Mol, x: np.ndarray, energies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The second stage alone: ``polish_iters`` Cartesian MMFF94 iterations on descended positions
        ``x [G, n, 3]`` (their ``energies`` come back unchanged when ``polish_iters`` is 0)."""
        if self.polish_iters == 0:
            return x, energies
        polished = with_conformers(mol, x)
        relaxed = np.array([e for _, e in mmff_optimize(polished, max_iters=self.polish_iters)])
        return conformer_coordinates(polished), relaxed

    def __post_init__(self) -> None:
        if self.max_evals < 1 or self.polish_iters < 0 or not self.max_step > 0 or not self.grad_tol > 0:
            raise ValueError(
                "max_evals must be >= 1, polish_iters >= 0 and max_step, grad_tol > 0, got "
                f"{self.max_evals}, {self.polish_iters}, {self.max_step}, {self.grad_tol}"
            )


def torsion_descent(
    mol: Chem.Mol, positions: np.ndarray, *, max_evals: int = 40, max_step: float = 0.5, grad_tol: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Minimize MMFF94 over the rotatable torsions of every conformer ``positions [G, n, 3]`` (Å; ``mol`` with
    explicit hydrogens), bond lengths and angles held at each conformer's own. Returns the positions
    ``[G, n, 3]`` (centred on the unweighted mean, as :func:`~sampler.torsion_geometry.torsion_positions`) and
    their MMFF94 energies (kcal/mol). A molecule without rotatable torsions comes back as it was, not centred.

    Raises:
        ValueError: MMFF94 cannot type ``mol``, or the positions do not fit it or are not finite.
    """
    n = mol.GetNumAtoms()
    x0, _ = conformer_array(positions, n, axis="G", single=False, empty=False)
    props = mmff_properties(mol)
    work = Chem.Mol(mol)
    work.RemoveAllConformers()
    work.AddConformer(Chem.Conformer(n), assignId=True)
    work.GetConformer().SetPositions(x0[0])
    with rdBase.BlockLogs():
        field = rdForceFieldHelpers.MMFFGetMoleculeForceField(work, props)
    if field is None:
        raise ValueError("RDKit returned no MMFF94 force field for this molecule")
    system = torsion_system(mol, x0, rules=RELAXATION_RULES)
    g_count, m = len(x0), system.num_torsions
    if m == 0:
        return x0.copy(), np.array([field.CalcEnergy(p.ravel().tolist()) for p in x0])
    batch = collate_torsion_systems([system], torch.arange(g_count), samples_per_system=g_count)

    def evaluate(phi: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Energies ``[R]``, torsion gradients ``[R, m]`` and positions ``[G, n, 3]`` at ``phi [G, m]``."""
        x = torsion_positions(batch, torch.from_numpy(phi.reshape(-1)))
        xs = x.numpy().reshape(g_count, n, 3)
        energies = np.empty(len(rows))
        grad_x = np.zeros((g_count, n, 3))
        for r, g in enumerate(rows):
            flat = xs[g].ravel().tolist()
            # keep the pair together: RDKit's MMFF94 CalcGrad reads state its last CalcEnergy left (measured: a
            # gradient after another conformer's energy is off by 24 kcal/mol/Å), so no gradient without its energy
            energies[r] = field.CalcEnergy(flat)
            grad_x[g] = np.asarray(field.CalcGrad(flat)).reshape(n, 3)
        torque = torsion_torque(batch, x, torch.from_numpy(grad_x.reshape(-1, 3))).numpy().reshape(g_count, m)
        return energies, torque[rows], xs

    phi = dihedral(batch.positions, batch.torsion_atoms).numpy().reshape(g_count, m)
    everyone = np.arange(g_count)
    energy, grad, xs = evaluate(phi, everyone)
    best_x = xs.copy()
    inverse_hessian = np.broadcast_to(np.eye(m), (g_count, m, m)).copy()
    step_size = np.ones(g_count)
    direction = np.zeros((g_count, m))
    active = np.abs(grad).max(axis=1) >= grad_tol
    fresh = np.ones(g_count, dtype=bool)  # a new direction is due
    for _ in range(max_evals - 1):
        rows = np.flatnonzero(active)
        if len(rows) == 0:
            break
        new = rows[fresh[rows]]
        if len(new):
            p = -np.einsum("gij,gj->gi", inverse_hessian[new], grad[new])
            p *= np.minimum(1.0, max_step / np.maximum(np.abs(p).max(axis=1), 1e-12))[:, None]
            direction[new], step_size[new], fresh[new] = p, 1.0, False
        trial = phi.copy()
        trial[rows] += step_size[rows, None] * direction[rows]
        e_new, g_new, x_new = evaluate(trial, rows)
        slope = (grad[rows] * direction[rows]).sum(axis=1)
        accepted = e_new <= energy[rows] + 1e-4 * step_size[rows] * slope
        for r, g in enumerate(rows):
            if not accepted[r]:
                step_size[g] *= 0.25
                if step_size[g] < 1e-4:  # no descent along this direction: start again from steepest descent
                    inverse_hessian[g] = np.eye(m)
                    fresh[g] = True
                    if slope[r] > -1e-10:
                        active[g] = False
                continue
            s, y = trial[g] - phi[g], g_new[r] - grad[g]
            sy = float(s @ y)
            if sy > 1e-10:
                rho = 1.0 / sy
                left = np.eye(m) - rho * np.outer(s, y)
                inverse_hessian[g] = left @ inverse_hessian[g] @ left.T + rho * np.outer(s, s)
            phi[g], energy[g], grad[g], best_x[g] = trial[g], e_new[r], g_new[r], x_new[g]
            fresh[g] = True
            active[g] = np.abs(g_new[r]).max() >= grad_tol
    return best_x, energy


def torsion_first_relax(
    mol: Chem.Mol, positions: np.ndarray, relaxation: TorsionRelaxation
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`torsion_descent`, then ``relaxation.polish_iters`` iterations of RDKit's MMFF94 minimizer: the relaxed
    positions ``[G, n, 3]`` and MMFF94 energies (kcal/mol) of ``positions [G, n, 3]``.

    Raises:
        ValueError: as :func:`torsion_descent`.
    """
    x, energies = relaxation.descend(mol, positions)
    return relaxation.polish(mol, x, energies)
