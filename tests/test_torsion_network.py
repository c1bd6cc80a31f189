"""The torsional control network: symmetries (rotation, translation, reflection, renumbering, torsion reversal),
batching, and its config round trip. Molecules are RDKit/ETKDG; torsions come from a simple local rule."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pytest
import torch
from rdkit import Chem

from molecules.etkdg import embed
from molecules.features import ATOM_FEATURES, ELEMENTS, PAIR_FEATURES, atom_features, pair_features
from molecules.smiles import mol_from_smiles
from sampler.torsion_graph import pairs_within_graphs, torsion_atom_pairs, torsion_sides
from sampler.torsion_network import (
    TorsionControlConfig,
    TorsionControlNetwork,
    build_torsion_control,
    describe_torsion_network,
    torsion_network_from_dict,
    torsion_network_to_dict,
)
from tests.helpers import random_rotation

SMILES = ("C[C@H](O)C(=O)NCc1ccccc1", "CCOC(=O)CC#N")


@dataclass(frozen=True)
class Inputs:
    """The network's inputs, in the order of its ``forward`` after ``t``."""

    positions: torch.Tensor
    node_attr: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    node_batch: torch.Tensor
    torsion_atoms: torch.Tensor
    torsion_batch: torch.Tensor

    def args(self) -> tuple[torch.Tensor, ...]:
        return (
            self.positions,
            self.node_attr,
            self.edge_index,
            self.edge_attr,
            self.node_batch,
            self.torsion_atoms,
            self.torsion_batch,
        )


def simple_torsions(mol: Chem.Mol) -> list[tuple[int, int, int, int]]:
    """One torsion per single acyclic bond whose atoms each have another neighbour (first such neighbour)."""
    out = []
    for bond in mol.GetBonds():
        if bond.GetBondType() != Chem.BondType.SINGLE or bond.IsInRing():
            continue
        b, c = bond.GetBeginAtom(), bond.GetEndAtom()
        a = [n.GetIdx() for n in b.GetNeighbors() if n.GetIdx() != c.GetIdx()]
        d = [n.GetIdx() for n in c.GetNeighbors() if n.GetIdx() != b.GetIdx()]
        if a and d:
            out.append((a[0], b.GetIdx(), c.GetIdx(), d[0]))
    return out


@cache
def molecule(smiles: str, seed: int, dtype: torch.dtype) -> Inputs:
    """One sample (cached: the tests never modify inputs in place)."""
    mol = mol_from_smiles(smiles)
    positions = torch.from_numpy(embed(mol, 1, seed=seed)[0]).to(dtype)
    edge_index, edge_attr = pair_features(mol)
    bonded = edge_attr[:, 0] == 0  # column 0 is "no bond"
    torsions = torch.tensor(simple_torsions(mol), dtype=torch.long).reshape(-1, 4)
    return Inputs(
        positions=positions,
        node_attr=atom_features(mol).to(dtype),
        edge_index=edge_index[:, bonded],
        edge_attr=edge_attr[bonded].to(dtype),
        node_batch=torch.zeros(mol.GetNumAtoms(), dtype=torch.long),
        torsion_atoms=torsions,
        torsion_batch=torch.zeros(torsions.shape[0], dtype=torch.long),
    )


def concat(parts: list[Inputs]) -> Inputs:
    offsets = [0]
    for p in parts:
        offsets.append(offsets[-1] + p.positions.shape[0])
    return Inputs(
        positions=torch.cat([p.positions for p in parts]),
        node_attr=torch.cat([p.node_attr for p in parts]),
        edge_index=torch.cat([p.edge_index + o for p, o in zip(parts, offsets, strict=False)], dim=1),
        edge_attr=torch.cat([p.edge_attr for p in parts]),
        node_batch=torch.cat([p.node_batch + g for g, p in enumerate(parts)]),
        torsion_atoms=torch.cat([p.torsion_atoms + o for p, o in zip(parts, offsets, strict=False)]),
        torsion_batch=torch.cat([p.torsion_batch + g for g, p in enumerate(parts)]),
    )


def batch(dtype: torch.dtype = torch.float64) -> Inputs:
    """Three samples: the chiral amide twice (different conformers) and the ester."""
    return concat([molecule(SMILES[0], 1, dtype), molecule(SMILES[1], 2, dtype), molecule(SMILES[0], 3, dtype)])


def network(dtype: torch.dtype = torch.float64, *, heavy_space: bool = False) -> TorsionControlNetwork:
    torch.manual_seed(0)
    config = TorsionControlConfig(
        node_features=ATOM_FEATURES,
        edge_features=PAIR_FEATURES,
        num_layers=2,
        hidden=16,
        head_channels=4,
        hydrogen_feature=ELEMENTS.index(1) if heavy_space else None,
    )
    net = build_torsion_control(config).to(dtype)
    with torch.no_grad():  # the gate's last layer starts at zero; make the output non-trivial
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def times(num_graphs: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.linspace(0.1, 0.9, num_graphs, dtype=dtype)


@pytest.mark.parametrize("heavy_space", [False, True])
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_rotations_and_translations_leave_the_output_unchanged_and_reflections_flip_it(
    dtype: torch.dtype, atol: float, heavy_space: bool
) -> None:
    g = torch.Generator().manual_seed(0)
    x, net = batch(dtype), network(dtype, heavy_space=heavy_space)
    t = times(3, dtype)
    out = net(t, *x.args())
    assert out.shape == (x.torsion_atoms.shape[0],)
    assert out.abs().max() > 1e-2
    shift = 10 * torch.randn(3, 3, generator=g, dtype=torch.float64).to(dtype)[x.node_batch]
    rot = random_rotation(3, g).to(dtype)
    moved = Inputs(**{**x.__dict__, "positions": x.positions @ rot.T + shift})
    torch.testing.assert_close(net(t, *moved.args()), out, atol=atol, rtol=0)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=dtype)) @ rot
    mirrored = Inputs(**{**x.__dict__, "positions": x.positions @ mirror.T + shift})
    torch.testing.assert_close(net(t, *mirrored.args()), -out, atol=atol, rtol=0)


@pytest.mark.parametrize("heavy_space", [False, True])
def test_renumbering_atoms_and_torsions_permutes_the_output(heavy_space: bool) -> None:
    g = torch.Generator().manual_seed(1)
    x, net = batch(), network(heavy_space=heavy_space)
    t = times(3, torch.float64)
    out = net(t, *x.args())
    n, num_torsions = x.positions.shape[0], x.torsion_atoms.shape[0]
    new_of_old = torch.randperm(n, generator=g)  # across samples too: the atoms of a sample end up interleaved
    old_of_new = torch.argsort(new_of_old)
    torsion_order = torch.randperm(num_torsions, generator=g)  # new torsion k is old torsion torsion_order[k]
    edge_order = torch.randperm(x.edge_index.shape[1], generator=g)
    permuted = Inputs(
        positions=x.positions[old_of_new],
        node_attr=x.node_attr[old_of_new],
        edge_index=new_of_old[x.edge_index][:, edge_order],
        edge_attr=x.edge_attr[edge_order],
        node_batch=x.node_batch[old_of_new],
        torsion_atoms=new_of_old[x.torsion_atoms][torsion_order],
        torsion_batch=x.torsion_batch[torsion_order],
    )
    torch.testing.assert_close(net(t, *permuted.args()), out[torsion_order], atol=1e-10, rtol=0)


def test_a_reversed_torsion_or_other_outer_atoms_give_the_same_output() -> None:
    x, net = batch(), network()
    t = times(3, torch.float64)
    out = net(t, *x.args())
    reversed_ = Inputs(**{**x.__dict__, "torsion_atoms": x.torsion_atoms.flip(1)})
    torch.testing.assert_close(net(t, *reversed_.args()), out, atol=1e-10, rtol=0)
    # half reversed: a mix of both orderings in one batch
    mixed_atoms = torch.where((torch.arange(len(out)) % 2 == 0)[:, None], x.torsion_atoms, x.torsion_atoms.flip(1))
    mixed = Inputs(**{**x.__dict__, "torsion_atoms": mixed_atoms})
    torch.testing.assert_close(net(t, *mixed.args()), out, atol=1e-10, rtol=0)
    # a and d only name the dihedral: the rotation is about b-c whatever they are (here: not even atoms)
    other = x.torsion_atoms.clone()
    other[:, 0], other[:, 3] = -1, -1
    torch.testing.assert_close(net(t, *Inputs(**{**x.__dict__, "torsion_atoms": other}).args()), out)


def test_batched_equals_one_by_one() -> None:
    parts = [molecule(SMILES[0], 1, torch.float64), molecule(SMILES[1], 2, torch.float64)]
    net = network()
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    together = net(t, *concat(parts).args())
    alone = torch.cat([net(t[i : i + 1], *p.args()) for i, p in enumerate(parts)])
    torch.testing.assert_close(together, alone, atol=1e-10, rtol=0)


def test_the_output_depends_on_the_dihedral_and_on_time() -> None:
    x, net = molecule(SMILES[0], 1, torch.float64), network()
    t = torch.tensor([0.5], dtype=torch.float64)
    out = net(t, *x.args())
    assert not torch.allclose(net(torch.tensor([0.2], dtype=torch.float64), *x.args()), out)
    # rotate the atoms on c's side of the first torsion's bond b-c about its axis: a new conformer
    mol = mol_from_smiles(SMILES[0])
    b, c = (int(i) for i in x.torsion_atoms[0, 1:3])
    graph = Chem.RWMol(mol)
    graph.RemoveBond(b, c)
    side = next(f for f in Chem.GetMolFrags(graph) if c in f)
    axis = x.positions[c] - x.positions[b]
    axis = axis / axis.norm()
    angle = torch.tensor(0.7, dtype=torch.float64)
    k = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = torch.eye(3, dtype=torch.float64) + angle.sin() * k + (1 - angle.cos()) * k @ k
    moved = x.positions.clone()
    idx = torch.tensor(side)
    moved[idx] = (x.positions[idx] - x.positions[c]) @ rot.T + x.positions[c]
    changed = net(t, *Inputs(**{**x.__dict__, "positions": moved}).args())
    assert (changed[0] - out[0]).abs() > 1e-4


def test_a_fresh_network_is_the_base_process_and_trains() -> None:
    x = batch()
    torch.manual_seed(0)
    net = build_torsion_control(TorsionControlConfig(node_features=ATOM_FEATURES, edge_features=PAIR_FEATURES)).double()
    t = times(3, torch.float64)
    out = net(t, *x.args())
    assert torch.equal(out, torch.zeros_like(out))
    out.pow(2).sum().add((out - 1).pow(2).sum()).backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert any(gr.abs().max() > 0 for gr in grads)


def test_a_molecule_without_torsions_gives_an_empty_output() -> None:
    x = molecule("C1CCCCC1", 1, torch.float64)
    assert x.torsion_atoms.shape == (0, 4)
    out = network()(torch.tensor([0.5], dtype=torch.float64), *x.args())
    assert out.shape == (0,)


def test_pair_helpers_stay_inside_each_sample() -> None:
    node_batch = torch.tensor([1, 0, 1, 1, 0])
    pairs = pairs_within_graphs(node_batch, 2)
    assert pairs.shape[1] == 2 + 6
    assert torch.equal(node_batch[pairs[0]], node_batch[pairs[1]]) and bool((pairs[0] != pairs[1]).all())
    torsion_batch = torch.tensor([1, 0])
    tp = torsion_atom_pairs(torsion_batch, node_batch, 2)
    assert sorted(tp[1, tp[0] == 0].tolist()) == [0, 2, 3] and sorted(tp[1, tp[0] == 1].tolist()) == [1, 4]


def test_heavy_space_graph_joins_heavy_atoms_only_and_a_passed_index_changes_nothing() -> None:
    x = batch()
    t = times(3, torch.float64)
    for heavy_space in (False, True):
        net = network(heavy_space=heavy_space)
        index = net.graph_index(x.node_attr, x.node_batch, 3, x.edge_index, x.torsion_atoms, x.torsion_batch)
        heavy = x.node_attr[:, ELEMENTS.index(1)] == 0
        per_graph = torch.bincount(x.node_batch[heavy] if heavy_space else x.node_batch, minlength=3)
        assert index.atom_pairs.shape[1] == int((per_graph * (per_graph - 1)).sum())
        assert bool(heavy[index.atom_pairs].all()) == heavy_space
        torch.testing.assert_close(net(t, *x.args(), index), net(t, *x.args()), atol=0, rtol=0)
    with pytest.raises(ValueError, match="hydrogen_feature"):
        TorsionControlConfig(node_features=4, hydrogen_feature=4)


def test_sides_are_the_fragments_left_when_the_bond_is_cut() -> None:
    x = batch()
    sides = torsion_sides(x.torsion_atoms, x.torsion_batch, x.edge_index, x.node_batch, 3)
    pairs = torsion_atom_pairs(x.torsion_batch, x.node_batch, 3)
    offsets = [int((x.node_batch < g).sum()) for g in range(3)]
    smiles = (SMILES[0], SMILES[1], SMILES[0])  # the samples of batch()
    for tau, (_, b, c, _) in enumerate(x.torsion_atoms.tolist()):
        g = int(x.torsion_batch[tau])
        mol = Chem.RWMol(mol_from_smiles(smiles[g]))
        mol.RemoveBond(b - offsets[g], c - offsets[g])
        c_side = next(f for f in Chem.GetMolFrags(mol) if c - offsets[g] in f)
        mine = pairs[1, pairs[0] == tau]
        expected = torch.tensor([1 if int(i) - offsets[g] in c_side else -1 for i in mine])
        assert torch.equal(sides[pairs[0] == tau], expected)
    flipped = torsion_sides(x.torsion_atoms.flip(1), x.torsion_batch, x.edge_index, x.node_batch, 3)
    assert torch.equal(flipped, -sides)


def test_config_round_trip_and_validation() -> None:
    config = TorsionControlConfig(node_features=4, edge_features=2, harmonics=2)
    stored = torsion_network_to_dict(config)
    assert stored["kind"] == "torsion"
    assert torsion_network_from_dict(stored) == config
    assert describe_torsion_network(config) == "torsion 3x32, harmonics 1-2"
    with pytest.raises(ValueError, match="kind"):
        torsion_network_from_dict({"kind": "egnn", "node_features": 4})
    with pytest.raises(ValueError, match="harmonics"):
        TorsionControlConfig(node_features=4, harmonics=0)
    net = build_torsion_control(config)
    with pytest.raises(ValueError, match="torsion_atoms"):
        net(torch.zeros(1), torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 0, dtype=torch.long),
            torch.zeros(0, 2), torch.zeros(2, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long),
            torch.zeros(1, dtype=torch.long))  # fmt: skip


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    x, net = batch(torch.float32), network(torch.float32)
    t = times(3, torch.float32)
    cpu = net(t, *x.args())
    gpu = net.to("cuda")(t.to("cuda"), *(a.to("cuda") for a in x.args()))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
