"""Replay buffers: the protocol (defined next to the algorithm in ``sampler.replay``) and implementations."""

from buffer.memory import InMemoryReplayBuffer
from sampler.replay import ReplayBuffer, ReplaySamples

__all__ = ["InMemoryReplayBuffer", "ReplayBuffer", "ReplaySamples"]
