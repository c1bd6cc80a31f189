"""The rotatable torsions of a molecule, its seed conformers, and its :class:`TorsionSystem` for the
torsional sampler (ALGORITHM.md section 6b).

A torsion is a dihedral ``a–b–c–d`` about a *rotation axis* ``b–c``:

- a single, acyclic bond ``b–c`` whose atoms both have another neighbour; or
- a linear chain ``b–s1≡s2–c`` (sp atoms ``s``: alkynes, cumulenes), one torsion for the whole chain: the
  dihedral about a bond to a linear atom is undefined when its reference atom is the next linear one, so
  ``a`` is taken beyond the chain, on ``b``, and the torsion is ``a–s2–c–d``: a rotation about the real bond
  ``s2–c`` (bond lengths and angles stay exact), its angle well defined. A chain that ends in a terminal atom
  (nitriles) has no torsion.

Which side moves: the smaller one (atom count; the chain's linear atoms never move), so ``c`` is on it;
ties go to the side whose axis atom has the lower symmetry class, then the lower index. ``a`` and ``d``
are the heaviest neighbours of ``b`` and ``c`` off the axis, then the highest symmetry class (RDKit's
``CanonicalRankAtoms`` without tie breaking), then the lowest index: so renumbering the atoms renumbers the
torsions and, up to symmetry-equivalent reference atoms, keeps every angle's meaning.

Which torsions are sampled (:class:`TorsionRules`), decided by measurement (``benchmarks/torsions.py``,
results in ``benchmarks/results/torsion_choices.md``; MMFF94 energies, 5 meV = 0.115 kcal/mol):

- hydrogen rotors (one side is an atom and its hydrogens): the three-fold tops CH3 and NH3+ are frozen by
  default. Frozen at the seed's angle while every other torsion takes another relaxed conformer's value,
  a methyl costs a median 0.00 kcal/mol against its best angle (5 % of 842 cases above 1 kcal/mol), and
  sampling the tops would add 1.7 dimensions per molecule. OH and NH2 (pyramidal or planar; SH by
  analogy, none in the sets) are sampled: freezing them costs more than 1 kcal/mol in 29-55 % of cases
  (hydrogen bonds; 3 of 16 ETKDG seeds with an aromatic NH2 had it twisted into a local minimum
  10 kcal/mol above the best angle);
- amide C(=O)–N bonds are all sampled: ETKDG puts secondary amides one way (1 % of its conformers
  differ), yet 17 of 52 secondary amide bonds of the SPICE-test/DRUGS-dev molecules have more than 10 % of
  their reference conformers the other way round (ureas, imides, N-heteroaryl amides, acylhydrazones;
  17 % of the reference conformers on average over the 52), which a frozen amide could never reach. Turning a relaxed
  amide costs a median 5 kcal/mol after relaxation (2-18 for most; the energy decides). :class:`AmideRotors`
  offers the alternatives. Which isomer a sample takes is not left to the network's training temperature: the
  product draws it from the isomers' relaxed energies at room temperature (:mod:`molecules.acyl_isomers`).

Seeds (:func:`embed_seeds`): ETKDGv3 conformers, kept only when one of their ring systems differs (RMSD
above 0.3 Å) from every seed already kept, so ring puckers are not frozen to one. Against the reference
ensembles: every reference ring shape of aromatic-only molecules lies within 0.3 Å of the one seed kept;
for molecules with a non-aromatic ring, 28 % do with one seed, 66 % with the 5.0 seeds kept from 10
embeddings, 76 % with the 8.3 kept from 30. A seed is also kept when it puts an acyclic pyramidal nitrogen with three
heavy neighbours (a tertiary amine, an N,N-disubstituted sulfonamide) on the other side of its pyramid
(:func:`nitrogen_invertomers`): no torsion turns one invertomer into the other, so a molecule whose one seed had the
wrong one drew every conformer on it (a sulfonamide of spice_test: 87 % of its references on one invertomer, the
product's conformers 96 % on it at one sampling seed and 2 % at another).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem

from energy.mmff import mmff_optimize
from energy.validation import conformer_array
from molecules.etkdg import embed
from molecules.features import atom_features
from molecules.rmsd import kabsch_rmsd
from molecules.stereo import UnassignedStereo, find_unassigned_stereo
from molecules.structures import with_conformers
from sampler.torsion_geometry import TorsionSystem

__all__ = [
    "BOND_FEATURES",
    "AmideKind",
    "AmideRotors",
    "HydrogenRotors",
    "RotorKind",
    "Torsion",
    "TorsionRules",
    "bond_graph",
    "embed_seeds",
    "find_torsions",
    "invertible_nitrogens",
    "nitrogen_invertomers",
    "ring_rmsd",
    "ring_systems",
    "torsion_system",
]

_BOND_TYPES = (Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE, Chem.BondType.AROMATIC)
#: single, double, triple, aromatic | conjugated | in a ring
BOND_FEATURES = len(_BOND_TYPES) + 2


class RotorKind(enum.Enum):
    """What rotating the torsion moves."""

    HEAVY = "heavy"  # heavy atoms on both sides
    HYDROGEN = "hydrogen"  # one side is an atom and one or two hydrogens (OH, SH, NH2, NH3 ... not XH3)
    SYMMETRIC_HYDROGEN = "symmetric_hydrogen"  # a three-fold top of hydrogens: CH3, NH3+, SiH3


class AmideKind(enum.Enum):
    """Whether the axis is an amide (or thioamide) C(=O)–N bond, and how many hydrogens the N carries."""

    NONE = "none"
    PRIMARY = "primary"  # C(=O)NH2
    SECONDARY = "secondary"  # C(=O)NHR
    TERTIARY = "tertiary"  # C(=O)NR2


class HydrogenRotors(enum.Enum):
    """Which hydrogen rotors to sample."""

    ALL = "all"  # every one (the published torsional model)
    ASYMMETRIC = "asymmetric"  # not the three-fold tops (CH3, NH3+)
    NONE = "none"  # none: only rotations that move heavy atoms

    def keeps(self, kind: RotorKind) -> bool:
        if kind is RotorKind.HEAVY or self is HydrogenRotors.ALL:
            return True
        return self is HydrogenRotors.ASYMMETRIC and kind is RotorKind.HYDROGEN


class AmideRotors(enum.Enum):
    """Which amide C(=O)–N bonds to sample."""

    ALL = "all"  # every one (the published torsional model)
    TERTIARY = "tertiary"  # only C(=O)NR2 (cis and trans both populated); secondary/primary stay as seeded
    NONE = "none"

    def keeps(self, kind: AmideKind) -> bool:
        if kind is AmideKind.NONE or self is AmideRotors.ALL:
            return True
        return self is AmideRotors.TERTIARY and kind is AmideKind.TERTIARY


@dataclass(frozen=True, kw_only=True)
class TorsionRules:
    """Which torsions :func:`find_torsions` returns (the defaults are the measured choice, see the module
    docstring)."""

    hydrogen_rotors: HydrogenRotors = HydrogenRotors.ASYMMETRIC
    amides: AmideRotors = AmideRotors.ALL

    def keeps(self, torsion: Torsion) -> bool:
        return self.hydrogen_rotors.keeps(torsion.rotor) and self.amides.keeps(torsion.amide)


@dataclass(frozen=True)
class Torsion:
    """One torsion: ``atoms = (a, b, c, d)``, the atoms it moves (``moving``, sorted, ``c`` and ``d`` among
    them), the ``chain`` of sp atoms a torsion spans (ending with ``b``; ``a`` is bonded to the non-linear
    atom before the chain; empty for a plain bond), and its classification."""

    atoms: tuple[int, int, int, int]
    moving: tuple[int, ...]
    chain: tuple[int, ...]
    rotor: RotorKind
    amide: AmideKind


def _is_linear(atom: Chem.Atom) -> bool:
    return atom.GetDegree() == 2 and atom.GetHybridization() == Chem.HybridizationType.SP


def _walk(mol: Chem.Mol, start: int, through: int) -> tuple[list[int], int] | None:
    """From ``start`` into ``through`` and on across linear atoms: (linear atoms passed, first non-linear
    atom), or ``None`` when the walk ends at a terminal atom or comes back (a ring)."""
    chain: list[int] = []
    prev, cur = start, through
    while _is_linear(mol.GetAtomWithIdx(cur)):
        chain.append(cur)
        nxt = [n.GetIdx() for n in mol.GetAtomWithIdx(cur).GetNeighbors() if n.GetIdx() != prev]
        prev, cur = cur, nxt[0]
        if cur == start or cur in chain:
            return None
    if mol.GetAtomWithIdx(cur).GetDegree() < 2:
        return None
    return chain, cur


def _axes(mol: Chem.Mol) -> list[tuple[int, int, tuple[int, ...]]]:
    """Rotation axes ``(b, c, chain)``, one per rotatable bond or linear chain (``b < c`` before ordering)."""
    found: dict[tuple[int, int], tuple[int, ...]] = {}
    for bond in mol.GetBonds():
        if bond.GetBondType() != Chem.BondType.SINGLE or bond.IsInRing():
            continue
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        if _is_linear(mol.GetAtomWithIdx(i)):
            i, j = j, i
        if _is_linear(mol.GetAtomWithIdx(i)):
            continue  # both ends linear: reached from the chain's own end bonds
        if mol.GetAtomWithIdx(i).GetDegree() < 2:
            continue
        walked = _walk(mol, i, j)
        if walked is None:
            continue
        chain, c = walked
        chain_bonds = zip([i, *chain], [*chain, c], strict=True)
        if any(mol.GetBondBetweenAtoms(u, v).IsInRing() for u, v in chain_bonds):
            continue
        key = (min(i, c), max(i, c))
        found.setdefault(key, tuple(chain) if key[0] == i else tuple(reversed(chain)))
    return [(b, c, chain) for (b, c), chain in sorted(found.items())]


def _side(mol: Chem.Mol, root: int, blocked: set[int]) -> set[int]:
    """Atoms reachable from ``root`` without entering ``blocked``."""
    seen, stack = {root}, [root]
    while stack:
        for nb in mol.GetAtomWithIdx(stack.pop()).GetNeighbors():
            k = nb.GetIdx()
            if k not in seen and k not in blocked:
                seen.add(k)
                stack.append(k)
    return seen


def _hydrogen_top(mol: Chem.Mol, atom: int, axis_neighbour: int) -> RotorKind:
    """The kind of rotor ``atom`` (seen from ``axis_neighbour``) is: HEAVY unless it carries only hydrogens."""
    a = mol.GetAtomWithIdx(atom)
    others = [n for n in a.GetNeighbors() if n.GetIdx() != axis_neighbour]
    if not others or any(n.GetAtomicNum() != 1 for n in others):
        return RotorKind.HEAVY
    return RotorKind.SYMMETRIC_HYDROGEN if len(others) == 3 else RotorKind.HYDROGEN


def _rotor_kind(mol: Chem.Mol, b: int, c: int, chain: tuple[int, ...]) -> RotorKind:
    kinds = {_hydrogen_top(mol, b, (chain or (c,))[0]), _hydrogen_top(mol, c, (chain or (b,))[-1])}
    for kind in (RotorKind.SYMMETRIC_HYDROGEN, RotorKind.HYDROGEN):
        if kind in kinds:
            return kind
    return RotorKind.HEAVY


def _amide_kind(mol: Chem.Mol, b: int, c: int, chain: tuple[int, ...]) -> AmideKind:
    if chain:
        return AmideKind.NONE
    for carbon, nitrogen in ((b, c), (c, b)):
        ca, n = mol.GetAtomWithIdx(carbon), mol.GetAtomWithIdx(nitrogen)
        if ca.GetAtomicNum() != 6 or n.GetAtomicNum() != 7:
            continue
        carbonyl = any(
            bd.GetBondType() == Chem.BondType.DOUBLE and bd.GetOtherAtom(ca).GetAtomicNum() in (8, 16)
            for bd in ca.GetBonds()
        )
        if carbonyl:
            hs = n.GetTotalNumHs(includeNeighbors=True)
            return AmideKind.PRIMARY if hs >= 2 else AmideKind.SECONDARY if hs == 1 else AmideKind.TERTIARY
    return AmideKind.NONE


def _reference(mol: Chem.Mol, atom: int, exclude: set[int], rank: Sequence[int]) -> int:
    """The heaviest neighbour of ``atom`` not in ``exclude``; then highest symmetry class; then lowest index."""
    options = [n for n in mol.GetAtomWithIdx(atom).GetNeighbors() if n.GetIdx() not in exclude]
    best = max(options, key=lambda n: (n.GetAtomicNum(), rank[n.GetIdx()], -n.GetIdx()))
    return int(best.GetIdx())


def find_torsions(mol: Chem.Mol, rules: TorsionRules | None = None) -> list[Torsion]:
    """The torsions of ``mol`` (explicit hydrogens) that ``rules`` keep (all of them with ``rules=None``),
    in the order of their axes ``(min(b, c), max(b, c))``."""
    _require_explicit_hydrogens(mol)
    rank = list(Chem.CanonicalRankAtoms(mol, breakTies=False))
    out = []
    for b, c, chain in _axes(mol):
        first_b, first_c = (chain or (c,))[0], (chain or (b,))[-1]
        side_b = _side(mol, b, {first_b, *chain})
        side_c = _side(mol, c, {first_c, *chain})
        if (len(side_b), rank[b], b) < (len(side_c), rank[c], c):  # b's side is the one to move: swap names
            b, c, chain, side_c = c, b, tuple(reversed(chain)), side_b
        near_b, near_c = (chain or (c,))[0], (chain or (b,))[-1]
        a = _reference(mol, b, {near_b}, rank)
        d = _reference(mol, c, {near_c}, rank)
        torsion = Torsion(
            atoms=(a, near_c, c, d),
            moving=tuple(sorted(side_c)),
            chain=chain,
            rotor=_rotor_kind(mol, b, c, chain),
            amide=_amide_kind(mol, b, c, chain),
        )
        if rules is None or rules.keeps(torsion):
            out.append(torsion)
    return out


def _require_explicit_hydrogens(mol: Chem.Mol) -> None:
    implicit = [a.GetIdx() for a in mol.GetAtoms() if a.GetNumImplicitHs() > 0]
    if implicit:
        raise ValueError(
            f"atoms {implicit[:8]} carry implicit hydrogens: build the molecule with explicit hydrogens "
            "(molecules.smiles.mol_from_smiles)"
        )


def bond_graph(mol: Chem.Mol) -> tuple[torch.Tensor, torch.Tensor]:
    """Covalent bonds in both directions: ``edge_index`` ``[2, 2B]`` (bond ``k`` gives columns ``2k``, ``2k+1``)
    and ``edge_attr`` ``[2B, BOND_FEATURES]`` float32 (bond type one-hot, conjugated, in a ring)."""
    pairs, rows = [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        row = [float(bond.GetBondType() == t) for t in _BOND_TYPES]
        row += [float(bond.GetIsConjugated()), float(bond.IsInRing())]
        pairs += [(i, j), (j, i)]
        rows += [row, row]
    edge_index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T.contiguous()
    return edge_index, torch.tensor(rows, dtype=torch.float32).reshape(-1, BOND_FEATURES)


def ring_systems(mol: Chem.Mol) -> list[list[int]]:
    """Each fused ring system's heavy atoms plus the heavy atoms bonded to it (sorted), the part of the
    molecule whose shape (pucker, axial or equatorial substituents, ring nitrogen inversion) the
    torsional model freezes from its seed."""
    merged: list[set[int]] = []
    for ring in mol.GetRingInfo().AtomRings():
        block = set(ring)
        for other in [m for m in merged if m & block]:
            block |= other
            merged.remove(other)
        merged.append(block)
    out = []
    for block in merged:
        atoms = {i for i in block if mol.GetAtomWithIdx(i).GetAtomicNum() > 1}
        atoms |= {n.GetIdx() for i in block for n in mol.GetAtomWithIdx(i).GetNeighbors() if n.GetAtomicNum() > 1}
        out.append(sorted(atoms))
    return sorted(out)


def ring_rmsd(mol: Chem.Mol, conformers: np.ndarray) -> np.ndarray:
    """``[C, C]`` the largest, over :func:`ring_systems`, Kabsch RMSD (Å, atom order kept) between conformers
    ``[C, n, 3]``; zeros for a molecule without rings."""
    c = conformers.shape[0]
    out = np.zeros((c, c))
    x = np.asarray(conformers, dtype=np.float64)
    for atoms in ring_systems(mol):
        block = x[:, atoms]
        out = np.maximum(out, kabsch_rmsd(block[:, None], block[None, :]))
    return out


#: ``|n1 x n2 . n3|`` of the unit bond vectors of a nitrogen to its three neighbours above which it counts as
#: pyramidal: MMFF94 puts tertiary amines at 0.67-0.79, N,N-disubstituted sulfonamides at 0.49-0.64, N,N-dialkyl
#: anilines at 0.38, tertiary amides at 0.19 (planar, their sign noise)
PYRAMID_THRESHOLD = 0.25


def invertible_nitrogens(mol: Chem.Mol) -> list[tuple[int, tuple[int, int, int]]]:
    """The nitrogens whose inversion no torsion reaches and a heavy-atom RMSD sees: not aromatic, not in a ring
    (a ring nitrogen's substituent is part of its ring system's shape, :func:`ring_systems`), three heavy
    neighbours of three different symmetry classes (with two alike the invertomers are the same conformer), each
    with its neighbours in ascending index order."""
    rank = list(Chem.CanonicalRankAtoms(mol, breakTies=False))
    out = []
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() != 7 or atom.GetIsAromatic() or atom.IsInRing() or atom.GetDegree() != 3:
            continue
        neighbours = tuple(sorted(n.GetIdx() for n in atom.GetNeighbors()))
        if any(mol.GetAtomWithIdx(n).GetAtomicNum() == 1 for n in neighbours):
            continue
        if len({rank[n] for n in neighbours}) == 3:
            out.append((atom.GetIdx(), (neighbours[0], neighbours[1], neighbours[2])))
    return out


def nitrogen_invertomers(mol: Chem.Mol, conformers: np.ndarray) -> np.ndarray:
    """``[C, M]`` for the ``M`` :func:`invertible_nitrogens` of ``mol`` in each conformer ``[C, n, 3]``: the side
    of its pyramid (+1 or -1: the sign of the triple product of its unit bonds to its neighbours in index order),
    0 where it is flat (below :data:`PYRAMID_THRESHOLD`)."""
    x = np.asarray(conformers, dtype=np.float64)
    sides = []
    for centre, neighbours in invertible_nitrogens(mol):
        bonds = x[:, list(neighbours)] - x[:, [centre]]
        bonds /= np.linalg.norm(bonds, axis=2, keepdims=True)
        volume = np.einsum("ci,ci->c", np.cross(bonds[:, 0], bonds[:, 1]), bonds[:, 2])
        sides.append(np.where(np.abs(volume) > PYRAMID_THRESHOLD, np.sign(volume), 0.0))
    return np.stack(sides, axis=1).astype(np.int8) if sides else np.zeros((len(x), 0), dtype=np.int8)


def embed_seeds(
    mol: Chem.Mol,
    num_seeds: int = 1,
    *,
    seed: int = 1,
    ring_rmsd_threshold: float = 0.3,
    mmff_relax: bool = False,
    invertomers: bool = False,
) -> np.ndarray:
    """``[S, n, 3]`` seed conformers (``1 <= S <= num_seeds`` per stereoisomer): ``num_seeds`` ETKDGv3
    embeddings, each kept only if one of its ring systems (:func:`ring_rmsd`) lies more than
    ``ring_rmsd_threshold`` Å from the same system in every seed kept before it (``invertomers``: or puts an
    acyclic pyramidal nitrogen on the other side of its pyramid, :func:`nitrogen_invertomers`). A molecule without
    rings, or with only aromatic rings (and no such nitrogen), gets one seed (ETKDG varies aromatic systems by at
    most 0.28 Å on the SPICE test set; aliphatic ones by up to 1.6 Å). ``mmff_relax`` first MMFF94-optimizes
    every embedding (bond lengths and angles are then the force field's; they stay frozen in the torsional model).

    A molecule whose stereocentres or stereo double bonds are not all assigned (a SMILES without ``@``/``/``)
    is sampled as ETKDG samples it, with a random configuration per embedding: ``num_seeds × min(2^u, 4)``
    embeddings for ``u`` unassigned elements; the ring-shape rule then applies among the seeds of each
    configuration (read from the 3D geometry), at most ``num_seeds`` each, so that conformers drawn round-robin
    over the seeds do not all share one stereoisomer.

    Raises:
        ValueError: ETKDG could not embed the molecule.
    """
    if num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
    _require_explicit_hydrogens(mol)
    unassigned = find_unassigned_stereo(mol)
    open_elements = len(unassigned.centres) + len(unassigned.bonds)
    confs = embed(mol, num_seeds * min(2**open_elements, 4), seed=seed, random_coords_fallback=True)
    if len(confs) == 0:
        raise ValueError(f"ETKDG could not embed {Chem.MolToSmiles(Chem.RemoveHs(mol))} in 3D")
    if mmff_relax:
        confs = _mmff_relaxed(mol, confs)
    rmsd = ring_rmsd(mol, confs)
    sides = nitrogen_invertomers(mol, confs) if invertomers else np.zeros((len(confs), 0), dtype=np.int8)
    keys = configurations(mol, confs, unassigned)
    kept: list[int] = []
    for k in range(len(confs)):
        same = [j for j in kept if keys[j] == keys[k]]
        differs = [rmsd[k, j] > ring_rmsd_threshold or bool((sides[k] * sides[j] < 0).any()) for j in same]
        if len(same) < num_seeds and all(differs):
            kept.append(k)
    return confs[kept]


def configurations(mol: Chem.Mol, confs: np.ndarray, elements: UnassignedStereo) -> list[tuple[str, ...]]:
    """The configuration each conformer ``[S, n, 3]`` gives the stereo ``elements`` (perceived from 3D: the
    chiral tag of each centre, then the stereo of each double bond); ``()`` for every conformer when there are
    none."""
    if not elements:
        return [()] * len(confs)
    keys = []
    for positions in confs:
        work = with_conformers(mol, [positions])
        Chem.AssignStereochemistryFrom3D(work, confId=0, replaceExistingTags=True)
        centres = tuple(str(work.GetAtomWithIdx(i).GetChiralTag()) for i in elements.centres)
        bonds = tuple(str(work.GetBondBetweenAtoms(i, j).GetStereo()) for i, j in elements.bonds)
        keys.append(centres + bonds)
    return keys


def _mmff_relaxed(mol: Chem.Mol, confs: np.ndarray) -> np.ndarray:
    work = with_conformers(mol, confs)
    try:
        mmff_optimize(work, max_iters=2000)
    except ValueError as exc:  # names the atoms MMFF94 cannot type
        raise ValueError(f"the seeds are MMFF94-relaxed, and {exc}") from None
    return np.stack([work.GetConformer(k).GetPositions() for k in range(len(confs))])


def torsion_system(
    mol: Chem.Mol,
    seed_positions: np.ndarray | torch.Tensor,
    *,
    rules: TorsionRules | None = None,
    system_id: int = 0,
    dtype: torch.dtype = torch.float64,
) -> TorsionSystem:
    """The torsional description of ``mol`` (explicit hydrogens) with seeds ``[S, n, 3]`` (or ``[n, 3]``).

    ``rules`` defaults to :class:`TorsionRules` ``()`` (the measured choice). Node features are
    :func:`molecules.features.atom_features`, edges the covalent bonds (:func:`bond_graph`).

    Raises:
        ValueError: seeds that do not fit ``mol`` (none, another shape, NaN or infinite coordinates).
    """
    rules = TorsionRules() if rules is None else rules
    n = mol.GetNumAtoms()
    seed_array, _ = conformer_array(seed_positions, n, what="seed_positions", axis="S", empty=False)
    seeds = torch.as_tensor(seed_array, dtype=dtype)
    torsions = find_torsions(mol, rules)
    sizes = [len(t.moving) for t in torsions]
    edge_index, edge_attr = bond_graph(mol)
    return TorsionSystem(
        seed_positions=seeds,
        torsion_atoms=torch.tensor([t.atoms for t in torsions], dtype=torch.long).reshape(-1, 4),
        moving_atoms=torch.tensor([i for t in torsions for i in t.moving], dtype=torch.long),
        moving_ptr=torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.long),
        node_attr=atom_features(mol).to(dtype),
        edge_index=edge_index,
        edge_attr=edge_attr.to(dtype),
        system_id=system_id,
    )
