"""The e3nn tensor-product control network: O(3) x translations x permutations equivariance, the zero start,
batching, and selection by config through a conformer checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from molecules.features import ATOM_FEATURES, PAIR_FEATURES
from molecules.graph import molecular_system
from molecules.smiles import mol_from_smiles
from sampler.egnn import EGNNConfig, EGNNControl
from sampler.networks import build_control, describe_network, network_from_dict, network_to_dict
from sampler.state import SystemBatch, collate
from sampler.tensor_product import TensorProductConfig, TensorProductControl
from tests.helpers import assert_equivariant, particle_batch
from training.paths import DEFAULT_DATA


def _net(dtype: torch.dtype = torch.float64, **changes: Any) -> TensorProductControl:
    torch.manual_seed(0)
    config = TensorProductConfig(node_features=1, edge_features=2, num_layers=2, scalars=8, vectors=4, **changes)
    net = TensorProductControl(config).to(dtype)
    with torch.no_grad():  # the output head starts at zero; make it non-trivial
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def _molecules(generator: torch.Generator) -> tuple[list[Any], torch.Tensor]:
    graphs = [molecular_system(mol_from_smiles(s), system_id=i).graph for i, s in enumerate(["CCO", "Oc1ccccc1"])]
    n = sum(g.num_nodes for g in graphs)
    return graphs, torch.randn(n, 3, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize(
    ("dtype", "atol", "changes"),
    [
        (torch.float64, 1e-10, {}),
        (torch.float64, 1e-10, {"lmax": 2}),
        (torch.float64, 1e-10, {"pseudo_tensors": False}),
        (torch.float32, 2e-4, {}),
    ],
)
def test_tensor_product_is_o3_translation_and_permutation_equivariant(
    dtype: torch.dtype, atol: float, changes: dict[str, Any]
) -> None:
    """Rotations and reflections rotate the output (a true vector, 1o), translations and relabelling do not
    change it beyond the relabelling: the energy and the base process are O(3)-invariant, so is the optimal
    control."""
    g = torch.Generator().manual_seed(1)
    batch = particle_batch([3, 7, 5], 3, g, dtype=dtype)
    net = _net(dtype, **changes)
    t = torch.rand(batch.num_graphs, generator=g, dtype=dtype)
    assert_equivariant(lambda b: net(t, b), batch, g, atol=atol)


def test_output_is_com_free_and_nonzero() -> None:
    g = torch.Generator().manual_seed(2)
    batch = particle_batch([4, 6], 3, g)
    out = _net()(torch.rand(2, dtype=torch.float64), batch)
    assert out.shape == (10, 3)
    assert out.abs().max().item() > 1e-3
    assert batch.graph_sum(out).abs().max().item() < 1e-12


def test_zero_and_finite_when_all_atoms_coincide() -> None:
    """The SDE start: every l >= 1 harmonic of a zero vector vanishes, so the output is exactly zero, and the
    softening keeps the gradients (positions and weights) finite."""
    g = torch.Generator().manual_seed(3)
    batch = particle_batch([4, 6], 3, g)
    net = _net(lmax=2)
    positions = torch.zeros_like(batch.positions, requires_grad=True)
    out = net(torch.rand(2, dtype=torch.float64), batch.replace(positions=positions))
    assert out.abs().max().item() == 0.0
    (out * torch.randn_like(out)).sum().backward()
    assert positions.grad is not None and torch.isfinite(positions.grad).all()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


def test_fresh_network_is_the_zero_control() -> None:
    g = torch.Generator().manual_seed(4)
    batch = particle_batch([5], 3, g)
    net = TensorProductControl(TensorProductConfig(node_features=1, edge_features=2)).double()
    assert net(torch.rand(1, dtype=torch.float64), batch).abs().max().item() == 0.0


def test_two_molecules_in_a_batch_equal_each_run_alone() -> None:
    g = torch.Generator().manual_seed(5)
    graphs, positions = _molecules(g)
    torch.manual_seed(0)
    net = TensorProductControl(
        TensorProductConfig(node_features=ATOM_FEATURES, edge_features=PAIR_FEATURES, num_layers=2, scalars=8)
    ).double()
    with torch.no_grad():
        net.output.weight.normal_()
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)

    def batch_of(gs: list[Any], x: torch.Tensor) -> SystemBatch:
        return collate(gs, x).to(dtype=torch.float64)

    both = net(t, batch_of(graphs, positions))
    n0 = graphs[0].num_nodes
    torch.testing.assert_close(net(t[:1], batch_of(graphs[:1], positions[:n0])), both[:n0], atol=1e-12, rtol=0)
    torch.testing.assert_close(net(t[1:], batch_of(graphs[1:], positions[n0:])), both[n0:], atol=1e-12, rtol=0)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="lmax"):
        TensorProductConfig(node_features=1, lmax=3)
    with pytest.raises(ValueError, match="scalars"):
        TensorProductConfig(node_features=1, scalars=0)
    g = torch.Generator().manual_seed(6)
    with pytest.raises(ValueError, match="3-D"):
        _net()(torch.zeros(1, dtype=torch.float64), particle_batch([3], 2, g))


def test_networks_dispatch_and_round_trip() -> None:
    tp = TensorProductConfig(node_features=3, lmax=2)
    egnn = EGNNConfig(node_features=3)
    assert isinstance(build_control(tp), TensorProductControl)
    assert isinstance(build_control(egnn), EGNNControl)
    assert network_to_dict(tp)["kind"] == "tensor-product" and network_from_dict(network_to_dict(tp)) == tp
    assert "kind" not in network_to_dict(egnn)  # untagged: old checkpoints and their readers keep working
    assert network_from_dict(dataclasses.asdict(egnn)) == egnn
    assert network_from_dict({"kind": "egnn", **dataclasses.asdict(egnn)}) == egnn
    with pytest.raises(ValueError, match="unknown control network"):
        network_from_dict({"kind": "transformer"})
    assert describe_network(egnn) == "EGNN 5x128"
    assert describe_network(tp).startswith("tensor product 3 layers, 32x0e+8x1o")


@pytest.mark.skipif(not (DEFAULT_DATA / "spice").is_dir(), reason="needs ../shared/data")
def test_tensor_product_checkpoint_round_trip(tmp_path: Path) -> None:
    from benchmarks.service_load import tiny_conformer_config
    from inference.conformer_sampling import ConformerSampler
    from training.conformer_training import ConformerRunConfig, train_conformers

    network = TensorProductConfig(
        node_features=ATOM_FEATURES, edge_features=PAIR_FEATURES, num_layers=1, scalars=4, vectors=2, radial_hidden=8
    )
    config = dataclasses.replace(tiny_conformer_config(), network=network, max_rounds=0)  # warm-up steps only
    out = tmp_path / "tp.pt"
    train_conformers(config, data_dir=DEFAULT_DATA, seed=0, out=out, show_progress=False)
    payload = torch.load(out, weights_only=True)
    assert payload["config"]["network"]["kind"] == "tensor-product"
    assert ConformerRunConfig.from_dict(payload["config"]) == config
    sampler = ConformerSampler(out)
    assert isinstance(sampler.control, TensorProductControl) and sampler.config.network == network
    x = sampler.sample_positions(mol_from_smiles("CCO"), 2, seed=1, steps=5)
    assert x.shape == (2, 9, 3) and bool((abs(x) < 1e3).all())


def test_cli_train_conformers_selects_the_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import training.conformer_training as training
    from cli.conformers import add_train_parser, cmd_train_conformers

    seen: list[Any] = []

    def fake_train(config: Any, **kwargs: Any) -> Any:
        seen.append(config)
        return argparse.Namespace(round=0, energy_calls=0)

    monkeypatch.setattr(training, "train_conformers", fake_train)
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(), DEFAULT_DATA, tmp_path)
    for argv in (["--network", "tensor-product", "--hidden", "24", "--layers", "2"], ["--hidden", "24"]):
        cmd_train_conformers(parser.parse_args(["train-conformers", "--out", str(tmp_path / "x.pt"), *argv]))
    tp, egnn = (c.network for c in seen)
    assert isinstance(tp, TensorProductConfig) and (tp.scalars, tp.num_layers) == (24, 2)
    assert isinstance(egnn, EGNNConfig) and egnn.hidden == 24
