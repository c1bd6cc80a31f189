"""Torsion control networks: cost per training step, and how well each fits a known per-torsion target.

Molecule: a 50-atom chiral ester-amide (``SMILES`` below, explicit hydrogens), torsions by the local rule of
ALGORITHM.md section 6b (single acyclic bonds whose atoms each have another neighbour: methyl rotors count).
Geometries: the ETKDG seed conformer with every torsion set to a uniform random angle (rotating the atoms on
``c``'s side of ``b-c``). Target: the derivative with respect to each torsion of a toy energy

    E(x) = k sum_tau (1 + cos 3 phi_tau) + eps sum_{i,j >= 4 bonds apart} exp(-d_ij^2 / (2 s^2)),

``dE/dphi_tau = sum_{j on c's side} (e_tau x (x_j - x_b)) . grad_j E``; the pair term couples torsions through
space, and makes the target chiral. Timing: one CPU thread, a batch of 64 samples, MSE loss forward + backward,
median of ``--repeats`` after two warm-up calls, in process CPU time (the machine is shared: wall time is not
reliable; with one thread CPU time is the uncontended wall time). Fit: each network from the same seed, Adam,
the same batches and times; the held-out error is the MSE over the target variance (1 = predicting zero), after
``--steps`` steps for every network and after ``--long-steps`` for the cheap ones.

Variants: the harmonic bond-centred head of :mod:`sampler.torsion_network` (default: ``k <= 3``, width 32, head
radius 12 Å), with width 64, with width 64 and a 5 Å head radius, and with ``k = 1`` only; and a prototype of
the Torsional-Diffusion design, benchmark-only: e3nn gated interaction blocks, then a bond-centred tensor
product of the node irreps with ``Y(r_i) x Y^2(e)`` onto parity-odd scalars.

Variants with a heavy-atom space graph join only heavy atoms through space (hydrogens over their bond). The
inference column is a forward pass without gradient, with the graph index built once, as the sampler calls it.

Reproduce: ``nice -n 10 python -m benchmarks.torsion_network`` (writes ``benchmarks/results/torsion_network.md``
and ``.json``)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from e3nn import o3
from rdkit import Chem
from torch import nn

from molecules.etkdg import embed
from molecules.features import ATOM_FEATURES, ELEMENTS, PAIR_FEATURES, atom_features, pair_features
from molecules.smiles import mol_from_smiles
from sampler.tensor_product import TensorProductConfig, TensorProductControl
from sampler.torsion_graph import cosine_cutoff, pairs_within_graphs, torsion_atom_pairs
from sampler.torsion_network import TorsionControlConfig, TorsionControlNetwork

__all__ = ["main"]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SMILES = "CCCCOC(=O)[C@@H](C)NC(=O)CCc1ccc(OCC)cc1"
Network = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Molecule:
    positions: torch.Tensor  # [n, 3] seed conformer
    node_attr: torch.Tensor
    edge_index: torch.Tensor  # covalent bonds, both directions
    edge_attr: torch.Tensor
    torsions: torch.Tensor  # [T, 4]
    sides: torch.Tensor  # [T, n] bool: the atoms on c's side of b-c
    far_pairs: torch.Tensor  # [2, P] atom pairs >= 4 bonds apart


def load_molecule(smiles: str) -> Molecule:
    mol = mol_from_smiles(smiles)
    edge_index, edge_attr = pair_features(mol)
    bonded = edge_attr[:, 0] == 0
    torsions, sides = [], []
    for bond in mol.GetBonds():
        b, c = bond.GetBeginAtom(), bond.GetEndAtom()
        if bond.GetBondType() != Chem.BondType.SINGLE or bond.IsInRing():
            continue
        a = [x.GetIdx() for x in b.GetNeighbors() if x.GetIdx() != c.GetIdx()]
        d = [x.GetIdx() for x in c.GetNeighbors() if x.GetIdx() != b.GetIdx()]
        if a and d:
            torsions.append((a[0], b.GetIdx(), c.GetIdx(), d[0]))
            cut = Chem.RWMol(mol)
            cut.RemoveBond(b.GetIdx(), c.GetIdx())
            side = next(f for f in Chem.GetMolFrags(cut) if c.GetIdx() in f)
            sides.append([i in side for i in range(mol.GetNumAtoms())])
    hops = torch.from_numpy(Chem.GetDistanceMatrix(mol))
    far = torch.triu(hops >= 4, diagonal=1).nonzero().T
    return Molecule(
        positions=torch.from_numpy(embed(mol, 1, seed=1)[0]),
        node_attr=atom_features(mol),
        edge_index=edge_index[:, bonded],
        edge_attr=edge_attr[bonded],
        torsions=torch.tensor(torsions),
        sides=torch.tensor(sides),
        far_pairs=far,
    )


def _rotate(x: torch.Tensor, mol: Molecule, angles: torch.Tensor) -> torch.Tensor:
    """Set every torsion in turn: rotate c's side about b -> c by ``angles [S, T]`` (Rodrigues)."""
    for k, (_, b, c, _) in enumerate(mol.torsions.tolist()):
        e = x[:, c] - x[:, b]
        e = e / e.norm(dim=-1, keepdim=True)
        r = x[:, mol.sides[k]] - x[:, b : b + 1]
        cos, sin = angles[:, k, None, None].cos(), angles[:, k, None, None].sin()
        e_ = e[:, None]
        rot = r * cos + torch.linalg.cross(e_.expand_as(r), r, dim=-1) * sin + e_ * (r * e_).sum(-1, True) * (1 - cos)
        x = x.clone()
        x[:, mol.sides[k]] = rot + x[:, b : b + 1]
    return x


def _dihedral(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    p0, p1, p2, p3 = (x[:, idx[:, i]] for i in range(4))
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    n1, n2 = torch.linalg.cross(b0, b1, dim=-1), torch.linalg.cross(b1, b2, dim=-1)
    m1 = torch.linalg.cross(n1, b1 / b1.norm(dim=-1, keepdim=True), dim=-1)
    return torch.atan2((m1 * n2).sum(-1), (n1 * n2).sum(-1))


def toy_energy(x: torch.Tensor, mol: Molecule, k: float = 1.0, eps: float = 1.0, s: float = 1.5) -> torch.Tensor:
    d2 = ((x[:, mol.far_pairs[0]] - x[:, mol.far_pairs[1]]) ** 2).sum(-1)
    return k * (1 + torch.cos(3 * _dihedral(x, mol.torsions))).sum(-1) + eps * torch.exp(-d2 / (2 * s * s)).sum(-1)


def torsion_gradient(x: torch.Tensor, mol: Molecule) -> torch.Tensor:
    """``[S, T]`` ``dE/dphi`` of the toy energy (the Jacobian-transpose of the side rotations)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(toy_energy(x, mol).sum(), x)
    b, c = mol.torsions[:, 1], mol.torsions[:, 2]
    e = x[:, c] - x[:, b]
    e = (e / e.norm(dim=-1, keepdim=True)).detach()
    lever = torch.linalg.cross(
        e[:, :, None].expand(-1, -1, x.shape[1], -1), x.detach()[:, None] - x.detach()[:, b, None], dim=-1
    )
    return ((lever * grad[:, None]).sum(-1) * mol.sides).sum(-1)


class BondConvTP(nn.Module):
    """Option (b) prototype: e3nn interaction blocks on the radius graph, then a bond-centred tensor product."""

    def __init__(self, channels: int = 16, cutoff: float = 5.0) -> None:
        super().__init__()
        self.cutoff = cutoff
        tp_config = TensorProductConfig(node_features=ATOM_FEATURES, edge_features=PAIR_FEATURES, lmax=2)
        self.nodes = TensorProductControl(tp_config)  # its embed / layers; its vector output is unused
        irreps_h = self.nodes.layers[-1].irreps_out
        self.irreps_sh = o3.Irreps.spherical_harmonics(2)
        self.geometry = o3.FullTensorProduct(self.irreps_sh, o3.Irreps("1x2e"))
        self.tp = o3.FullyConnectedTensorProduct(
            irreps_h, self.geometry.irreps_out, o3.Irreps(f"{channels}x0o"), shared_weights=False
        )
        s = tp_config.scalars
        self.radial = nn.Sequential(
            nn.Linear(tp_config.radial_basis + 2 * s, 64), nn.SiLU(), nn.Linear(64, self.tp.weight_numel)
        )
        self.out = nn.Linear(channels, 1, bias=False)  # odd scalars: no bias

    def forward(self, t: torch.Tensor, x: torch.Tensor, node_attr: torch.Tensor, edge_index: torch.Tensor,
                edge_attr: torch.Tensor, node_batch: torch.Tensor, torsion_atoms: torch.Tensor,
                torsion_batch: torch.Tensor) -> torch.Tensor:  # fmt: skip
        net, dtype, n = self.nodes, x.dtype, x.shape[0]
        pairs = pairs_within_graphs(node_batch, t.shape[0])
        pairs = pairs[:, (x[pairs[0]] - x[pairs[1]]).norm(dim=-1) < self.cutoff]
        bond_table = torch.zeros(n, n, edge_attr.shape[1], dtype=dtype)
        bond_table[edge_index[0], edge_index[1]] = edge_attr.to(dtype)
        h = net.embed(torch.cat([node_attr.to(dtype), net.time(t[node_batch], dtype)], dim=-1))
        r = x[pairs[0]] - x[pairs[1]]
        soft = torch.sqrt((r * r).sum(-1, keepdim=True) + net.config.softening_angstrom**2)
        sh = o3.spherical_harmonics(net.irreps_sh, r / soft, normalize=False, normalization="component")
        basis = torch.exp(-0.5 * ((soft - net.centres.to(dtype)) / net.width) ** 2)
        pair = torch.cat([basis * cosine_cutoff(soft, self.cutoff), bond_table[pairs[0], pairs[1]]], dim=-1)
        degree = torch.zeros(n, dtype=dtype).index_add_(0, pairs[1], torch.ones(pairs.shape[1], dtype=dtype))
        for layer in net.layers:
            h = layer(h, pairs, sh, pair, degree.clamp_min(1.0).rsqrt().unsqueeze(-1))
        b, c = torsion_atoms[:, 1], torsion_atoms[:, 2]
        tau, atom = torsion_atom_pairs(torsion_batch, node_batch, t.shape[0])
        mid = 0.5 * (x[b] + x[c])
        rel = x[atom] - mid[tau]
        dist = rel.norm(dim=-1)
        keep = dist < self.cutoff
        tau, atom, rel, dist = tau[keep], atom[keep], rel[keep], dist[keep]
        axis = o3.spherical_harmonics("2e", x[c] - x[b], normalize=True, normalization="component")
        soft_rel = rel / torch.sqrt((rel * rel).sum(-1, keepdim=True) + net.config.softening_angstrom**2)
        y = o3.spherical_harmonics(self.irreps_sh, soft_rel, normalize=False, normalization="component")
        geometry = self.geometry(y, axis[tau])
        s = net.config.scalars
        scalars = h[:, :s]
        radial = torch.exp(-0.5 * ((dist[:, None] - net.centres.to(dtype)) / net.width) ** 2)
        features = torch.cat([radial, scalars[atom], (scalars[b] + scalars[c])[tau]], dim=-1)
        weights = self.radial(features) * cosine_cutoff(dist, self.cutoff)[:, None]
        per_pair = self.tp(h[atom], geometry, weights)
        total = per_pair.new_zeros(torsion_atoms.shape[0], per_pair.shape[1]).index_add_(0, tau, per_pair)
        return self.out(total / 10.0).squeeze(-1)


def variants() -> dict[str, tuple[Callable[[], nn.Module], bool]]:
    """name -> (builder, cheap enough for the long fit?)."""

    def harmonic(**changes: Any) -> Callable[[], nn.Module]:
        config = TorsionControlConfig(node_features=ATOM_FEATURES, edge_features=PAIR_FEATURES)
        return lambda: TorsionControlNetwork(dataclasses.replace(config, **changes))

    return {
        "harmonic (a): k<=3, width 32, head 12 Å (default)": (harmonic(harmonics=3, hidden=32), True),
        "harmonic (a): k<=3, width 64, head 12 Å": (harmonic(harmonics=3, hidden=64), True),
        "harmonic (a): k<=3, width 64, head 5 Å": (harmonic(hidden=64, head_cutoff_angstrom=5.0), True),
        "harmonic (a): k=1, width 32, head 12 Å": (harmonic(harmonics=1, hidden=32), True),
        "harmonic (a): k<=3, width 32, 2 layers, head 5 Å (tors_a)": (
            harmonic(num_layers=2, head_cutoff_angstrom=5.0),
            True,
        ),
        "harmonic (a): k<=3, width 32, 2 layers, head 5 Å, heavy-atom space graph": (
            harmonic(num_layers=2, head_cutoff_angstrom=5.0, hydrogen_feature=ELEMENTS.index(1)),
            True,
        ),
        "harmonic (a): k<=3, width 32, head 12 Å, heavy-atom space graph": (
            harmonic(hydrogen_feature=ELEMENTS.index(1)),
            True,
        ),
        "e3nn bond conv (b)": (BondConvTP, False),
    }


def _inputs(mol: Molecule, x: torch.Tensor, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    s, n = x.shape[0], x.shape[1]
    offsets = torch.arange(s) * n
    tors = (mol.torsions[None] + offsets[:, None, None]).reshape(-1, 4)
    edges = (mol.edge_index[:, None] + offsets[None, :, None]).reshape(2, -1)
    return (
        t.to(dtype),
        x.reshape(-1, 3).to(dtype),
        mol.node_attr.repeat(s, 1).to(dtype),
        edges,
        mol.edge_attr.repeat(s, 1).to(dtype),
        torch.arange(s).repeat_interleave(n),
        tors,
        torch.arange(s).repeat_interleave(mol.torsions.shape[0]),
    )


def _prepare(net: nn.Module) -> nn.Module:
    """Fresh networks start at zero output; give every variant the same small random start instead."""
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim and not p.any():
                p.normal_(0.0, 0.01)
    return net


def timing(make: Callable[[], nn.Module], mol: Molecule, x: torch.Tensor, y: torch.Tensor,
           dtype: torch.dtype, repeats: int) -> float:  # fmt: skip
    torch.manual_seed(0)
    net = _prepare(make()).to(dtype)
    args = _inputs(mol, x, torch.full((x.shape[0],), 0.5), dtype)
    ms = []
    for k in range(repeats + 2):
        start = time.process_time()
        loss = (net(*args) - y.reshape(-1).to(dtype)).pow(2).mean()
        loss.backward()
        if k >= 2:
            ms.append(1e3 * (time.process_time() - start))
    return statistics.median(ms)


def inference_timing(make: Callable[[], nn.Module], mol: Molecule, x: torch.Tensor, repeats: int) -> float:
    """Forward only, no gradient, float32, the graph index built once (as an integration reuses it)."""
    torch.manual_seed(0)
    net = _prepare(make()).float()
    t, pos, node_attr, edges, edge_attr, node_batch, tors, tors_batch = _inputs(
        mol, x, torch.full((x.shape[0],), 0.5), torch.float32
    )
    extra: tuple[Any, ...] = ()
    if isinstance(net, TorsionControlNetwork):
        extra = (net.graph_index(node_attr, node_batch, x.shape[0], edges, tors, tors_batch),)
    ms = []
    with torch.no_grad():
        for k in range(repeats + 2):
            start = time.process_time()
            net(t, pos, node_attr, edges, edge_attr, node_batch, tors, tors_batch, *extra)
            if k >= 2:
                ms.append(1e3 * (time.process_time() - start))
    return statistics.median(ms)


def _held_out(net: nn.Module, mol: Molecule, data: dict[str, torch.Tensor], batch: int, scale: torch.Tensor) -> float:
    with torch.no_grad():
        errors = []
        for i in range(0, data["x_test"].shape[0], batch):
            xs, ys = data["x_test"][i : i + batch], data["y_test"][i : i + batch]
            pred = net(*_inputs(mol, xs, torch.full((xs.shape[0],), 0.5), torch.float32)) * scale
            errors.append((pred - ys.reshape(-1)).pow(2))
    return float(torch.cat(errors).mean() / data["y_test"].var())


def fit(make: Callable[[], nn.Module], mol: Molecule, data: dict[str, torch.Tensor], checkpoints: Sequence[int],
        batch: int, lr: float) -> dict[str, float]:  # fmt: skip
    """Held-out relative MSE after each number of steps in ``checkpoints``, and the CPU seconds spent training."""
    torch.manual_seed(0)
    net = _prepare(make())
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    scale = data["y_train"].std()
    out, cpu_s = {}, 0.0
    for step in range(1, max(checkpoints) + 1):
        start = time.process_time()
        idx = torch.randint(0, data["x_train"].shape[0], (batch,), generator=g)
        t = torch.rand(batch, generator=g)
        loss = net(*_inputs(mol, data["x_train"][idx], t, torch.float32)) - data["y_train"][idx].reshape(-1) / scale
        loss = loss.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        cpu_s += time.process_time() - start
        if step in checkpoints:
            out[f"relative_mse_{step}"] = _held_out(net, mol, data, batch, scale)
            out[f"train_cpu_s_{step}"] = cpu_s
    return out


def run(args: argparse.Namespace) -> dict[str, object]:
    torch.set_num_threads(1)
    mol = load_molecule(SMILES)
    g = torch.Generator().manual_seed(0)
    total = args.train + args.test
    angles = (2 * torch.rand(total, mol.torsions.shape[0], generator=g, dtype=torch.float64) - 1) * torch.pi
    x = _rotate(mol.positions[None].expand(total, -1, -1), mol, angles)
    y = torsion_gradient(x, mol)
    data = {"x_train": x[: args.train].float(), "y_train": y[: args.train].float(),
            "x_test": x[args.train :].float(), "y_test": y[args.train :].float()}  # fmt: skip
    rows: dict[str, dict[str, float]] = {}
    for name, (make, cheap) in variants().items():
        if args.variants and not any(v in name for v in args.variants):
            continue
        row = {f"step_ms_{d}": timing(make, mol, x[:64], y[:64], getattr(torch, d), args.repeats)
               for d in ("float32", "float64")}  # fmt: skip
        row["inference_ms"] = inference_timing(make, mol, x[:64], args.repeats)
        row["parameters"] = float(sum(p.numel() for p in make().parameters()))
        checkpoints = (args.steps, args.long_steps) if cheap else (args.steps,)
        row.update(fit(make, mol, data, checkpoints, args.batch, args.lr))
        rows[name] = row
        log.info("%s: %s", name, row)
    return {"atoms": mol.positions.shape[0], "torsions": mol.torsions.shape[0], "smiles": SMILES,
            "target_std": float(y.std()), "settings": vars(args), "results": rows}  # fmt: skip


def report(result: dict[str, object]) -> str:
    rows = result["results"]
    assert isinstance(rows, dict)
    settings = result["settings"]
    assert isinstance(settings, dict)
    short, long = settings["steps"], settings["long_steps"]
    lines = [
        f"# Torsion control networks: {result['atoms']} atoms, {result['torsions']} torsions, `{result['smiles']}`",
        "",
        f"Settings: {settings}; target std {result['target_std']:.3g}. Times are CPU time, one thread.",
        "",
        f"| network | parameters | fwd+bwd ms (64 samples, f32) | (f64) | inference fwd ms (64, f32) "
        f"| held-out MSE / var after {short} steps | after {long} | train CPU s ({short} steps) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        longer = f"{r[f'relative_mse_{long}']:.3f}" if f"relative_mse_{long}" in r else "-"
        lines.append(
            f"| {name} | {int(r['parameters'])} | {r['step_ms_float32']:.0f} | {r['step_ms_float64']:.0f} "
            f"| {r['inference_ms']:.0f} | {r[f'relative_mse_{short}']:.3f} | {longer} "
            f"| {r[f'train_cpu_s_{short}']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--test", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--long-steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "torsion_network")
    parser.add_argument("--variants", nargs="*", default=None, help="only the variants whose name contains one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    args.out.with_suffix(".md").write_text(report(result))
    sys.stdout.write(report(result))


if __name__ == "__main__":
    main()
