"""One suite for every ReplayBuffer implementation (the Redis one joins the parametrization)."""

import uuid
from collections.abc import Callable

import pytest
import torch

from buffer.connection import RedisSettings, connect
from buffer.keys import RedisKeys
from buffer.memory import InMemoryReplayBuffer
from buffer.redis import RedisReplayBuffer
from sampler.replay import ReplayBuffer, ReplaySamples

IMPLEMENTATIONS = [
    pytest.param("memory", id="InMemoryReplayBuffer"),
    pytest.param("redis", id="RedisReplayBuffer", marks=pytest.mark.redis),
]


def make_samples(sizes: list[int], start_id: int = 0, version: int = 0) -> ReplaySamples:
    n = sum(sizes)
    g = torch.Generator().manual_seed(start_id)
    return ReplaySamples(
        system_ids=torch.arange(start_id, start_id + len(sizes)),
        num_nodes=torch.tensor(sizes),
        positions=torch.randn(n, 3, generator=g),
        adjoint=torch.randn(n, 3, generator=g),
        energies=torch.arange(len(sizes), dtype=torch.float32) + start_id,
        model_version=torch.full((len(sizes),), version),
    )


@pytest.fixture(params=IMPLEMENTATIONS)
def make_buffer(request: pytest.FixtureRequest) -> Callable[[int], ReplayBuffer]:
    if request.param == "memory":
        return InMemoryReplayBuffer
    client = connect(RedisSettings(url=request.getfixturevalue("redis_url")))
    keys = RedisKeys("test-buffer")
    return lambda capacity: RedisReplayBuffer(client, capacity=capacity, name=uuid.uuid4().hex, keys=keys)


def test_protocol(make_buffer: Callable[[int], ReplayBuffer]) -> None:
    assert isinstance(make_buffer(4), ReplayBuffer)


def test_fifo_eviction_keeps_newest(make_buffer: Callable[[int], ReplayBuffer]) -> None:
    buf = make_buffer(5)
    buf.push(make_samples([2, 3, 4], start_id=0))
    buf.push(make_samples([5, 6, 7, 8], start_id=10))
    assert len(buf) == 5
    drawn = buf.sample(400, torch.Generator().manual_seed(0))
    assert set(drawn.system_ids.tolist()) == {2, 10, 11, 12, 13}


def test_ragged_round_trip_preserves_rows(make_buffer: Callable[[int], ReplayBuffer]) -> None:
    buf = make_buffer(100)
    original = make_samples([2, 5, 3])
    buf.push(original)
    drawn = buf.sample(50, torch.Generator().manual_seed(1))
    by_id = {int(s.system_ids[0]): s for s in original.split()}
    for entry in drawn.split():
        ref = by_id[int(entry.system_ids[0])]
        torch.testing.assert_close(entry.positions, ref.positions)
        torch.testing.assert_close(entry.adjoint, ref.adjoint)
        assert entry.energies.item() == ref.energies.item()


def test_sampling_is_uniform(make_buffer: Callable[[int], ReplayBuffer]) -> None:
    buf = make_buffer(10)
    buf.push(make_samples([1] * 10))
    counts = torch.bincount(buf.sample(20000, torch.Generator().manual_seed(2)).system_ids, minlength=10)
    assert counts.min().item() > 1800 and counts.max().item() < 2200


def test_seeded_sampling_reproduces(make_buffer: Callable[[int], ReplayBuffer]) -> None:
    buf = make_buffer(10)
    buf.push(make_samples([2] * 10))
    a = buf.sample(7, torch.Generator().manual_seed(3))
    b = buf.sample(7, torch.Generator().manual_seed(3))
    assert a.system_ids.tolist() == b.system_ids.tolist()


def test_state_dict_round_trip(make_buffer: Callable[[int], ReplayBuffer]) -> None:
    buf = make_buffer(6)
    buf.push(make_samples([3, 4, 2]))
    restored = make_buffer(1)
    restored.load_state_dict(buf.state_dict())
    assert len(restored) == 3 and restored.capacity == 6
    x = buf.sample(9, torch.Generator().manual_seed(4))
    y = restored.sample(9, torch.Generator().manual_seed(4))
    torch.testing.assert_close(x.positions, y.positions)


def test_empty_buffer_errors(make_buffer: Callable[[int], ReplayBuffer]) -> None:
    with pytest.raises(LookupError, match="empty"):
        make_buffer(3).sample(1)


def test_samples_validate_shapes_and_finiteness() -> None:
    with pytest.raises(ValueError, match="rows"):
        ReplaySamples(
            system_ids=torch.arange(2),
            num_nodes=torch.tensor([2, 2]),
            positions=torch.zeros(3, 3),
            adjoint=torch.zeros(3, 3),
            energies=torch.zeros(2),
            model_version=torch.zeros(2),
        )
    with pytest.raises(ValueError, match="finite"):
        ReplaySamples(
            system_ids=torch.arange(1),
            num_nodes=torch.tensor([2]),
            positions=torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0]]),
            adjoint=torch.zeros(2, 3),
            energies=torch.zeros(1),
            model_version=torch.zeros(1),
        )


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        InMemoryReplayBuffer(0)
