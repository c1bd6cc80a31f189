"""MMFF94 / MMFF94s through RDKit: fast classical energies and forces for relaxation and cheap training.

The covalent topology (bonds, bond orders, formal charges) comes from each structure's connection table
(:attr:`energy.protocol.Structures.connection_tables`, an MDL mol block with explicit hydrogens, atoms in
the order of the positions). RDKit reports kcal/mol and kcal/mol/Å; both are converted here, once, to eV
and eV/Å with the exact SI factor :data:`KCAL_PER_MOL_IN_EV`.

A structure the force field cannot describe is marked invalid with a reason that names the problem (and
the atoms, where they can be told): no connection table, a table that disagrees with the structure
(atom count, elements, total charge), implicit hydrogens, a radical (MMFF94 is closed-shell), atoms MMFF94
has no types for, non-finite or coincident coordinates. The rest of the batch is unaffected.

Example::

    >>> from rdkit import Chem
    >>> from rdkit.Chem import AllChem
    >>> from molecules.structures import conformer_structures
    >>> mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    >>> _ = AllChem.EmbedMultipleConfs(mol, 2, randomSeed=7)
    >>> result = MmffEnergy().evaluate(conformer_structures(mol))
    >>> bool(result.valid.all())
    True
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdForceFieldHelpers

from energy.protocol import EnergyResult, Structures
from energy.units import KCAL_PER_MOL_IN_EV
from energy.validation import (
    Evaluated,
    StructureLimits,
    assemble_result,
    atom_slices,
    conformer_array,
    structure_problems,
)

__all__ = [
    "KCAL_PER_MOL_IN_EV",
    "MMFF_ELEMENTS",
    "MmffEnergy",
    "mmff_energies",
    "mmff_optimize",
    "mmff_properties",
    "mmff_torsion_relax",
    "mmff_typing_problem",
]

#: 1 kcal/mol in eV: 4184 J / (N_A e), exact with the 2019 SI constants.

#: Elements MMFF94 has atom types for (the ions only in their common charge states).
MMFF_ELEMENTS = frozenset({1, 3, 6, 7, 8, 9, 11, 12, 14, 15, 16, 17, 19, 20, 26, 29, 30, 35, 53})

# RDKit's non-bonded threshold when no cutoff is asked for: larger than any molecule, so the term list
# does not depend on the geometry the force field was built at (and the force field can be reused).
_NO_CUTOFF = 1.0e9
_VARIANTS = ("MMFF94", "MMFF94s")
#: MMFF's electrostatic term: ``vacuum`` (its own, dielectric constant 1), ``screened`` (a distance-dependent
#: dielectric 4r, the usual damping of intramolecular hydrogen bonds and salt bridges in the gas phase) or ``off``
ELECTROSTATICS = ("vacuum", "screened", "off")


def _symbol(z: int) -> str:
    return Chem.GetPeriodicTable().GetElementSymbol(int(z)) if 0 < z < 119 else f"Z={z}"


def _atom_list(mol: Chem.Mol, indices: list[int], limit: int = 8) -> str:
    named = [f"{i} ({mol.GetAtomWithIdx(i).GetSymbol()})" for i in indices[:limit]]
    more = f" and {len(indices) - limit} more" if len(indices) > limit else ""
    return ", ".join(named) + more


def mmff_typing_problem(mol: Chem.Mol, variant: str = "MMFF94") -> str | None:
    """Why MMFF cannot describe ``mol`` (naming the atoms where possible), or ``None`` if it can."""
    implicit = [a.GetIdx() for a in mol.GetAtoms() if a.GetNumImplicitHs() > 0]
    if implicit:
        return (
            f"implicit hydrogens on atoms {_atom_list(mol, implicit)}: MMFF needs every hydrogen as an atom "
            "(Chem.AddHs before embedding)"
        )
    radicals = [a.GetIdx() for a in mol.GetAtoms() if a.GetNumRadicalElectrons() > 0]
    if radicals:
        return f"radical electrons on atoms {_atom_list(mol, radicals)}: {variant} describes closed-shell molecules"
    if rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
        return None
    foreign = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() not in MMFF_ELEMENTS]
    if foreign:
        return f"{variant} has no atom types for atoms {_atom_list(mol, foreign)}"
    return f"{variant} could not assign atom types (an unusual valence, charge or hybridization)"


@dataclass
class _Typed:
    """A parsed connection table: the molecule and its MMFF properties, or why they are missing."""

    mol: Chem.Mol | None
    atomic_numbers: np.ndarray | None = None
    formal_charge: int = 0
    properties: Any = None
    force_field: Any = None  # reused when there is no cutoff (the term list is geometry-independent)
    problem: str | None = None


class MmffEnergy:
    """Batched MMFF94 energies (eV) and forces (eV/Å) through RDKit.

    Args:
        variant: ``"MMFF94"`` or ``"MMFF94s"`` (the static variant, planar delocalized nitrogens).
        nonbonded_cutoff: exclude non-bonded pairs farther apart than this (Å) at the evaluated geometry;
            ``None`` keeps all pairs (exact, and the force field is then built once per molecule).
        ignore_interfragment_interactions: drop non-bonded terms between disconnected fragments (salts,
            complexes), as RDKit's ``MMFFOptimizeMolecule`` does by default. Off here: a sampler must
            feel every atom.
        cache_size: parsed molecules (and force fields) kept per connection table; 0 disables reuse.
    """

    def __init__(
        self,
        variant: str = "MMFF94",
        nonbonded_cutoff: float | None = None,
        *,
        ignore_interfragment_interactions: bool = False,
        cache_size: int = 1024,
    ) -> None:
        if variant not in _VARIANTS:
            raise ValueError(f"unknown MMFF variant {variant!r}; choose one of {_VARIANTS}")
        if nonbonded_cutoff is not None and not nonbonded_cutoff > 0:
            raise ValueError(f"nonbonded_cutoff must be positive (Å), got {nonbonded_cutoff}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._variant = variant
        self._cutoff = nonbonded_cutoff
        self._ignore_interfrag = ignore_interfragment_interactions
        self._cache_size = cache_size
        self._cache: OrderedDict[str, _Typed] = OrderedDict()
        self._limits = StructureLimits(model=variant, supported_elements=MMFF_ELEMENTS)

    @property
    def name(self) -> str:
        return self._variant.lower()

    @property
    def variant(self) -> str:
        return self._variant

    # -- topology ------------------------------------------------------------------------------------
    def _parse(self, table: str) -> _Typed:
        try:
            mol = Chem.MolFromMolBlock(table, removeHs=False)
        except Exception as exc:  # RDKit raises on some malformed blocks instead of returning None
            return _Typed(None, problem=f"connection table could not be parsed: {exc}")
        if mol is None:
            return _Typed(None, problem="connection table could not be parsed (RDKit rejected the mol block)")
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
        typed = _Typed(mol, z, sum(a.GetFormalCharge() for a in mol.GetAtoms()))
        typed.problem = mmff_typing_problem(mol, self._variant)
        if typed.problem is None:
            typed.properties = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol, mmffVariant=self._variant)
            if typed.properties is None:
                typed.problem = f"{self._variant} could not assign atom types"
        return typed

    def _typed(self, table: str) -> _Typed:
        hit = self._cache.get(table)
        if hit is not None:
            self._cache.move_to_end(table)
            return hit
        typed = self._parse(table)
        if self._cache_size:
            self._cache[table] = typed
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return typed

    def _force_field(self, typed: _Typed, positions: np.ndarray) -> Any:
        if self._cutoff is None and typed.force_field is not None:
            return typed.force_field
        mol = typed.mol
        assert mol is not None
        if self._cutoff is not None:  # the term list depends on the geometry: build it at this one
            mol.GetConformer().SetPositions(positions)
        ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(
            mol,
            typed.properties,
            nonBondedThresh=_NO_CUTOFF if self._cutoff is None else self._cutoff,
            ignoreInterfragInteractions=self._ignore_interfrag,
        )
        if ff is None:
            raise RuntimeError("RDKit returned no force field")
        if self._cutoff is None and self._cache_size:
            typed.force_field = ff  # holds a reference into typed.mol, which the cache entry keeps alive
        return ff

    # -- evaluation ----------------------------------------------------------------------------------
    def _mismatch(self, typed: _Typed, z: np.ndarray, charge: int, multiplicity: int) -> str | None:
        table_z = typed.atomic_numbers
        assert table_z is not None
        if table_z.size != z.size:
            return f"connection table has {table_z.size} atoms, the structure {z.size}"
        if not np.array_equal(table_z, z):
            differ = np.flatnonzero(table_z != z)
            i = int(differ[0])
            return (
                f"elements differ from the connection table at {differ.size} atoms, first atom {i}: "
                f"table {_symbol(int(table_z[i]))}, structure {_symbol(int(z[i]))}"
            )
        if typed.formal_charge != charge:
            return (
                f"total charge {charge} differs from the connection table's formal charges (sum {typed.formal_charge})"
            )
        if multiplicity != 1:
            return f"multiplicity {multiplicity}: {self._variant} describes closed-shell molecules (singlets)"
        return typed.problem

    def _one(self, table: str | None, z: np.ndarray, x: np.ndarray, charge: int, mult: int) -> Evaluated | str:
        """Energy and forces of one structure that passed the shared checks, or why it is invalid."""
        if table is None:
            return "no connection table: MMFF needs bonds (read an SDF, or perceive bonds from XYZ)"
        typed = self._typed(table)
        if typed.mol is None:
            return typed.problem or "connection table could not be parsed"
        problem = self._mismatch(typed, z, charge, mult)
        if problem is not None:
            return problem
        ff = self._force_field(typed, x)
        flat = x.ravel().tolist()
        energy = ff.CalcEnergy(flat) * KCAL_PER_MOL_IN_EV
        forces = np.asarray(ff.CalcGrad(flat), dtype=np.float64).reshape(-1, 3) * -KCAL_PER_MOL_IN_EV
        return Evaluated(energy, forces)

    def evaluate(self, structures: Structures) -> EnergyResult:
        """Energies ``[G]`` (eV) and forces ``[N, 3]`` (eV/Å); invalid entries: nan energy, zero forces."""
        problems = structure_problems(structures, self._limits)
        x = structures.positions.detach().to("cpu", torch.float64).numpy()
        z = structures.atomic_numbers.cpu().numpy()
        tables = structures.connection_tables or (None,) * structures.num_structures
        charges = structures.total_charge.tolist()
        mults = structures.multiplicity.tolist()
        outcomes: list[Evaluated | str] = []
        for k, rows in enumerate(atom_slices(structures)):
            problem = problems[k]
            if problem is not None:
                outcomes.append(problem)
                continue
            try:
                outcomes.append(self._one(tables[k], z[rows], x[rows], int(charges[k]), int(mults[k])))
            except (RuntimeError, ValueError) as exc:  # an RDKit failure on one molecule spares the others
                outcomes.append(f"RDKit failed: {exc}")
        return assemble_result(structures, outcomes)


def mmff_properties(mol: Chem.Mol, variant: str = "MMFF94", *, electrostatics: str = "vacuum") -> Any:
    """RDKit's MMFF typing of ``mol`` (``MMFFGetMoleculeProperties``, quiet), its electrostatic term as
    ``electrostatics`` says (:data:`ELECTROSTATICS`).

    Raises:
        ValueError: an unknown variant or electrostatics, or atoms MMFF cannot type (the message names them).
    """
    if variant not in _VARIANTS:
        raise ValueError(f"unknown MMFF variant {variant!r}; choose one of {_VARIANTS}")
    if electrostatics not in ELECTROSTATICS:
        raise ValueError(f"unknown electrostatics {electrostatics!r}; choose one of {ELECTROSTATICS}")
    with rdBase.BlockLogs():
        props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
    if props is None:
        raise ValueError(f"{variant} cannot type this molecule: {mmff_typing_problem(mol, variant) or 'no parameters'}")
    props.SetMMFFVerbosity(0)
    if electrostatics == "screened":
        props.SetMMFFDielectricModel(2)  # 1: constant, 2: distance-dependent
        props.SetMMFFDielectricConstant(4.0)
    elif electrostatics == "off":
        props.SetMMFFEleTerm(False)
    return props


def mmff_energies(mol: Chem.Mol, positions: npt.ArrayLike, *, properties: Any = None) -> np.ndarray:
    """``[C]`` MMFF94 single-point energies (kcal/mol) of ``positions [C, n, 3]`` (Å) in ``mol``'s bond graph:
    one force field, evaluated at every row. ``properties``: :func:`mmff_properties` of ``mol``, reused when given.

    Raises:
        ValueError: misshapen positions, or atoms MMFF cannot type (the message names them).
    """
    x, _ = conformer_array(positions, mol.GetNumAtoms(), single=False, finite=False)
    if len(x) == 0:
        return np.zeros(0)
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    conf = Chem.Conformer(m.GetNumAtoms())
    conf.SetPositions(x[0])
    m.AddConformer(conf, assignId=True)
    props = properties if properties is not None else mmff_properties(m)
    field = rdForceFieldHelpers.MMFFGetMoleculeForceField(m, props, confId=0)
    return np.array([field.CalcEnergy(p.ravel().tolist()) for p in x])


def mmff_optimize(
    mol: Chem.Mol, *, max_iters: int = 200, variant: str = "MMFF94", threads: int = 1
) -> list[tuple[bool, float]]:
    """RDKit's ``MMFFOptimizeMoleculeConfs`` on every conformer of ``mol``, in place: the force field is
    built from ``mol``'s own bond graph, so it pulls each conformer towards that connectivity (bond
    lengths and angles) whatever its starting geometry. Returns ``(converged, energy in kcal/mol)`` per
    conformer.

    Raises:
        ValueError: ``mol`` has atoms MMFF cannot type (the message names them).
    """
    if variant not in _VARIANTS:
        raise ValueError(f"unknown MMFF variant {variant!r}; choose one of {_VARIANTS}")
    if mol.GetNumConformers() == 0:
        return []
    mmff_properties(mol, variant)  # a clear error where RDKit's optimizer would fail silently
    with rdBase.BlockLogs():
        results = rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(
            mol, numThreads=threads, maxIters=max_iters, mmffVariant=variant
        )
    return [(flag == 0, float(energy)) for flag, energy in results]


def mmff_torsion_relax(
    mol: Chem.Mol,
    positions: npt.ArrayLike,
    dihedrals: npt.ArrayLike,
    *,
    max_iters: int = 100,
    properties: Any = None,
    variant: str = "MMFF94",
    force_constant: float = 1.0e3,
) -> np.ndarray:
    """Minimize MMFF94 over everything but the listed dihedrals: the relaxed torsional surface
    ``E_relax(phi) = min { E(x) : the dihedrals of x are phi }``, approximated by ``max_iters`` steps of
    RDKit's minimizer with each dihedral held at its starting value by a stiff harmonic restraint
    (``force_constant`` kcal/mol/rad²: a torque of 10 kcal/mol/rad moves the dihedral by 0.6°; at 1e4 RDKit's
    BFGS often stops at its first step, the Hessian being too ill-conditioned).

    At a constrained minimum, ``dE_relax/dphi`` is the torque of the unrestrained force field's gradient
    about each bond at the relaxed geometry (the envelope theorem), so a caller evaluates the energy model
    there. Bond lengths, angles and ring shapes give way a little where rigid rotation makes two atoms
    clash, as they do in a relaxed torsion scan.

    Args:
        mol: the molecule, explicit hydrogens (its conformers are not touched).
        positions: ``[G, n, 3]`` Å (or ``[n, 3]``), one structure per row.
        dihedrals: ``[T, 4]`` atom indices of the dihedrals to hold (``T`` may be 0).
        max_iters: minimizer iterations per structure.
        properties: :func:`mmff_properties` of ``mol``, reused when given (then ``variant`` is its own).
        variant: ``"MMFF94"`` or ``"MMFF94s"``, the force field to relax in (the energy model's own).

    Returns:
        ``[G, n, 3]`` (or ``[n, 3]``) relaxed positions, float64.

    Raises:
        ValueError: shapes that do not fit ``mol``, non-finite positions, or atoms MMFF cannot type.
    """
    n = mol.GetNumAtoms()
    x, single = conformer_array(positions, n, axis="G")
    d = np.asarray(dihedrals, dtype=np.int64).reshape(-1, 4)
    if d.size and (d.min() < 0 or d.max() >= n):
        raise ValueError(f"a dihedral refers to an atom outside 0..{n - 1}")
    if max_iters < 1:
        raise ValueError(f"max_iters must be at least 1, got {max_iters}")
    props = mmff_properties(mol, variant) if properties is None else properties
    work = Chem.Mol(mol)
    work.RemoveAllConformers()
    conf = Chem.Conformer(n)
    work.AddConformer(conf, assignId=True)
    out = np.empty_like(x)
    with rdBase.BlockLogs():
        for g in range(x.shape[0]):
            work.GetConformer().SetPositions(x[g])
            ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(work, props, nonBondedThresh=_NO_CUTOFF)
            if ff is None:
                raise ValueError("RDKit returned no MMFF94 force field for this molecule")
            for i, j, k, m in d.tolist():
                ff.MMFFAddTorsionConstraint(i, j, k, m, True, 0.0, 0.0, force_constant)
            ff.Minimize(maxIts=max_iters)
            out[g] = np.asarray(ff.Positions(), dtype=np.float64).reshape(n, 3)
    return out[0] if single else out
