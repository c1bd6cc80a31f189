import pytest
import torch

from sampler.egnn import EGNNConfig, EGNNControl
from sampler.state import collate
from tests.helpers import assert_equivariant, particle_batch


def _net(cutoff: float | None, dtype: torch.dtype) -> EGNNControl:
    torch.manual_seed(0)
    net = EGNNControl(EGNNConfig(node_features=1, edge_features=2, num_layers=3, hidden=16, cutoff=cutoff)).to(dtype)
    with torch.no_grad():  # the coordinate heads start at zero; make them non-trivial
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("cutoff", [None, 1.8])
@pytest.mark.parametrize("dim", [2, 3])
def test_egnn_is_e3_and_permutation_equivariant(
    dtype: torch.dtype, atol: float, cutoff: float | None, dim: int
) -> None:
    g = torch.Generator().manual_seed(1)
    batch = particle_batch([3, 7, 5], dim, g, dtype=dtype)
    net = _net(cutoff, dtype)
    t = torch.rand(batch.num_graphs, generator=g, dtype=dtype)
    assert_equivariant(lambda b: net(t, b), batch, g, atol=atol)


def test_egnn_output_is_com_free_and_nonzero() -> None:
    g = torch.Generator().manual_seed(2)
    batch = particle_batch([4, 6], 3, g)
    net = _net(None, torch.float64)
    out = net(torch.rand(2, dtype=torch.float64), batch)
    assert out.abs().max().item() > 1e-3
    assert batch.graph_sum(out).abs().max().item() < 1e-10


def test_egnn_is_zero_when_all_atoms_coincide() -> None:
    g = torch.Generator().manual_seed(3)
    batch = particle_batch([4, 6], 3, g)
    net = _net(None, torch.float64)
    start = batch.replace(positions=torch.zeros_like(batch.positions))
    assert net(torch.zeros(2, dtype=torch.float64), start).abs().max().item() == 0.0


def test_graphs_in_a_batch_do_not_talk_to_each_other() -> None:
    g = torch.Generator().manual_seed(4)
    batch = particle_batch([4, 6], 3, g)
    net = _net(None, torch.float64)
    t = torch.rand(2, dtype=torch.float64)
    both = net(t, batch)
    # moving graph 1's atoms must not change graph 0's output
    moved = batch.positions.clone()
    moved[4:] += torch.randn(6, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(net(t, batch.replace(positions=moved))[:4], both[:4])


def test_cutoff_removes_far_interactions() -> None:
    g = torch.Generator().manual_seed(5)
    batch = particle_batch([2], 3, g)
    net = _net(1.0, torch.float64)
    far = batch.replace(positions=torch.tensor([[0.0, 0, 0], [5.0, 0, 0]], dtype=torch.float64))
    assert net(torch.zeros(1, dtype=torch.float64), far).abs().max().item() == 0.0


@pytest.mark.gpu
def test_egnn_on_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(6)
    batch = particle_batch([5, 8], 3, g, dtype=torch.float32)
    net = _net(None, torch.float32)
    t = torch.rand(2, generator=g)
    cpu = net(t, batch)
    gpu = net.to("cuda")(t.to("cuda"), batch.to("cuda"))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


def test_collate_rejects_mixed_dimensions() -> None:
    from sampler.state import SystemGraph

    with pytest.raises(ValueError, match="spatial dimension"):
        collate(
            [SystemGraph.fully_connected(torch.ones(2, 1), dim=2), SystemGraph.fully_connected(torch.ones(2, 1), dim=3)]
        )
