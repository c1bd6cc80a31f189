"""In-memory FIFO replay buffer (the single-process twin of the Redis buffer)."""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

from sampler.replay import ReplaySamples

__all__ = ["InMemoryReplayBuffer"]


class InMemoryReplayBuffer:
    """FIFO of single-entry :class:`ReplaySamples`, sampled uniformly with replacement.

    Example:
        >>> buf = InMemoryReplayBuffer(capacity=10_000)
        >>> # buf.push(samples); batch = buf.sample(64, generator)
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: deque[ReplaySamples] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, samples: ReplaySamples) -> None:
        self._entries.extend(samples.split())

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> ReplaySamples:
        if not self._entries:
            raise LookupError("the replay buffer is empty: push samples before drawing from it")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        idx = torch.randint(len(self._entries), (num_samples,), generator=generator)
        return ReplaySamples.concat([self._entries[i] for i in idx.tolist()])

    def state_dict(self) -> dict[str, Any]:
        if not self._entries:
            return {"capacity": self.capacity, "entries": None}
        all_entries = ReplaySamples.concat(list(self._entries))
        return {"capacity": self.capacity, "entries": vars(all_entries).copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self._entries = deque(maxlen=self.capacity)
        if state["entries"] is not None:
            self.push(ReplaySamples(**state["entries"]))
