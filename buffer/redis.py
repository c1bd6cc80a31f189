"""The replay buffer in Redis: the same FIFO semantics as :class:`buffer.memory.InMemoryReplayBuffer`,
shared by every process that can reach the server (trainers, energy workers on other machines).

Storage (keys from :class:`buffer.keys.RedisKeys`): entries live in a hash under consecutive sequence
numbers; a meta hash holds ``capacity``, ``head`` (next sequence number) and ``tail`` (oldest live
one). Every write and every draw is one Lua script, so it is atomic with respect to all other clients:
a push appends at ``head`` and deletes from ``tail`` while ``head - tail > capacity``; a draw maps
uniform numbers ``u in [0, 1)`` from the caller's seeded generator to ``tail + floor(u * len)``.

Checkpoints. :meth:`RedisReplayBuffer.state_dict` copies every entry (portable: the same format as the
in-memory buffer's, so a checkpoint of either loads into either). :class:`ResidentRedisReplayBuffer`
instead records a reference (buffer name and count) and leaves the entries to Redis's own persistence
(append-only file) — what a long-running training worker wants.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
import torch

from buffer.codec import decode_replay_entries, encode_replay_entries
from buffer.keys import RedisKeys
from sampler.replay import ReplaySamples

__all__ = ["LUA_PUSH_ENTRIES", "RedisReplayBuffer", "ResidentRedisReplayBuffer"]

log = logging.getLogger(__name__)

# push_entries(entries_key, meta_key, blobs): append, evict beyond capacity; returns the new length.
# Callers check that meta_key exists *before* writing anything (scripts do not roll back on error).
LUA_PUSH_ENTRIES = """
local function push_entries(entries_key, meta_key, blobs)
  local m = redis.call('HMGET', meta_key, 'capacity', 'head', 'tail')
  local cap, head, tail = tonumber(m[1]), tonumber(m[2] or '0'), tonumber(m[3] or '0')
  for i = 1, #blobs do
    redis.call('HSET', entries_key, head, blobs[i])
    head = head + 1
  end
  while head - tail > cap do
    redis.call('HDEL', entries_key, tail)
    tail = tail + 1
  end
  redis.call('HSET', meta_key, 'head', head, 'tail', tail)
  return head - tail
end
"""

_PUSH = (
    LUA_PUSH_ENTRIES
    + """
if redis.call('HEXISTS', KEYS[2], 'capacity') == 0 then
  return redis.error_reply('no replay buffer at ' .. KEYS[2])
end
local blobs = {}
for i = 1, #ARGV do blobs[i] = ARGV[i] end
return push_entries(KEYS[1], KEYS[2], blobs)
"""
)

# ARGV[1] = capacity, ARGV[2] = 1 to delete every entry first; then optional blobs to push.
_CONFIGURE = (
    LUA_PUSH_ENTRIES
    + """
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'head', 0, 'tail', 0)
end
redis.call('HSET', KEYS[2], 'capacity', ARGV[1])
local blobs = {}
for i = 3, #ARGV do blobs[#blobs + 1] = ARGV[i] end
return push_entries(KEYS[1], KEYS[2], blobs)
"""
)

_BIND_OWNER = """
local prev = redis.call('HGET', KEYS[1], 'owner')
if not prev then redis.call('HSET', KEYS[1], 'owner', ARGV[1]) end
return prev
"""

# ARGV = uniform numbers in [0, 1). Returns {length, offsets, unique sequence numbers, their blobs}.
_SAMPLE = """
local m = redis.call('HMGET', KEYS[2], 'head', 'tail')
local head, tail = tonumber(m[1] or '0'), tonumber(m[2] or '0')
local n = head - tail
if n <= 0 then return {0, {}, {}, {}} end
local seqs, seen, uniq = {}, {}, {}
for i = 1, #ARGV do
  local s = tail + math.floor(tonumber(ARGV[i]) * n)
  seqs[i] = s
  if not seen[s] then seen[s] = true; uniq[#uniq + 1] = s end
end
local blobs = {}
for i = 1, #uniq, 1000 do
  local chunk = redis.call('HMGET', KEYS[1], unpack(uniq, i, math.min(i + 999, #uniq)))
  for j = 1, #chunk do blobs[#blobs + 1] = chunk[j] end
end
return {n, seqs, uniq, blobs}
"""


class RedisReplayBuffer:
    """FIFO replay buffer of capacity ``capacity`` (entries) named ``name`` on a Redis server.

    Opening an existing buffer keeps its entries (the capacity given here applies from now on).

    Example:
        >>> buf = RedisReplayBuffer(client, capacity=10_000, name="dw4-seed0")  # doctest: +SKIP
        >>> buf.push(samples); batch = buf.sample(64, generator)  # doctest: +SKIP
    """

    def __init__(self, client: redis.Redis, *, capacity: int, name: str = "default", keys: RedisKeys | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.client = client
        self.name = name
        self.keys = keys or RedisKeys()
        self._entries_key = self.keys.buffer_entries(name)
        self._meta_key = self.keys.buffer_meta(name)
        self._push = client.register_script(_PUSH)
        self._configure = client.register_script(_CONFIGURE)
        self._sample = client.register_script(_SAMPLE)
        self._bind_owner = client.register_script(_BIND_OWNER)
        self.capacity = capacity
        self._configure(keys=[self._entries_key, self._meta_key], args=[capacity, 0])

    def __len__(self) -> int:
        head, tail = self.client.hmget(self._meta_key, ["head", "tail"])
        return int(head or 0) - int(tail or 0)

    @property
    def total_pushed(self) -> int:
        """Entries ever pushed (the next sequence number); grows monotonically, eviction or not."""
        return int(self.client.hget(self._meta_key, "head") or 0)

    def push(self, samples: ReplaySamples) -> None:
        blobs = encode_replay_entries(samples)[-self.capacity :]
        if blobs:
            self._push(keys=[self._entries_key, self._meta_key], args=blobs)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> ReplaySamples:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        u = torch.rand(num_samples, dtype=torch.float64, generator=generator).tolist()
        n, seqs, uniq, blobs = self._sample(keys=[self._entries_key, self._meta_key], args=[repr(x) for x in u])
        if n == 0:
            raise LookupError("the replay buffer is empty: push samples before drawing from it")
        if any(b is None for b in blobs):  # only if someone deletes keys behind the buffer's back
            raise RuntimeError(f"replay buffer {self.name!r} in Redis is inconsistent: entries are missing")
        index = {s: i for i, s in enumerate(uniq)}
        return decode_replay_entries(blobs, [index[s] for s in seqs])

    def entries(self) -> ReplaySamples | None:
        """Every entry, oldest first (``None`` if empty): one consistent snapshot."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._entries_key)
            pipe.hmget(self._meta_key, ["tail"])
            stored, (tail,) = pipe.execute()
        if not stored:
            return None
        ordered = sorted(stored.items(), key=lambda kv: int(kv[0]))
        first = int(ordered[0][0])
        if first != int(tail or 0) or len(ordered) != int(ordered[-1][0]) - first + 1:
            raise RuntimeError(f"replay buffer {self.name!r} in Redis is inconsistent: sequence numbers have gaps")
        return decode_replay_entries([blob for _, blob in ordered])

    def clear(self, *, owner: str | None = None) -> None:
        """Delete every entry (and make ``owner`` the owner, if given)."""
        self._configure(keys=[self._entries_key, self._meta_key], args=[self.capacity, 1])
        if owner is not None:
            self.client.hset(self._meta_key, "owner", owner)

    def bind_owner(self, owner: str) -> str | None:
        """Make ``owner`` (a training run's identity) the buffer's owner unless it has one already;
        returns the previous owner (``None`` if there was none). Lets a trainer tell its own buffer,
        found again after a restart, from another run's."""
        prev = self._bind_owner(keys=[self._meta_key], args=[owner])
        return None if prev is None else bytes(prev).decode()

    def state_dict(self) -> dict[str, Any]:
        entries = self.entries()
        return {"capacity": self.capacity, "entries": None if entries is None else vars(entries).copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the buffer's contents (atomically) with a snapshot from either implementation."""
        capacity = int(state["capacity"])
        blobs: list[bytes] = []
        if state.get("entries") is not None:
            blobs = encode_replay_entries(ReplaySamples(**state["entries"]))[-capacity:]
        self._configure(keys=[self._entries_key, self._meta_key], args=[capacity, 1, *blobs])
        self.capacity = capacity


class ResidentRedisReplayBuffer(RedisReplayBuffer):
    """A Redis buffer whose checkpoint state is a reference, not a copy: the entries stay in Redis
    (persisted by its append-only file), so checkpoints stay small however large the buffer grows.

    Restoring checks the reference names this buffer and reports how the buffer changed since (energy
    workers keep pushing while a trainer is down). A full snapshot (``entries``) is loaded as such.
    """

    REFERENCE = "redis-buffer-reference"

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.REFERENCE,
            "capacity": self.capacity,
            "name": self.name,
            "length": len(self),
            "total_pushed": self.total_pushed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.REFERENCE:
            super().load_state_dict(state)
            return
        if state["name"] != self.name:
            raise ValueError(
                f"the checkpoint's replay buffer is {state['name']!r} in Redis, but this run uses {self.name!r}"
            )
        if int(state["capacity"]) != self.capacity:
            self._configure(keys=[self._entries_key, self._meta_key], args=[int(state["capacity"]), 0])
            self.capacity = int(state["capacity"])
        now, pushed = len(self), self.total_pushed
        if pushed < int(state["total_pushed"]):
            log.warning(
                "replay buffer %r holds %d entries (%d ever pushed) but the checkpoint saw %d pushed: Redis lost "
                "data (persistence off, or a different server?); training continues and refills it",
                self.name,
                now,
                pushed,
                state["total_pushed"],
            )
        else:
            log.info(
                "replay buffer %r intact in Redis: %d entries (%d pushed since the checkpoint)",
                self.name,
                now,
                pushed - int(state["total_pushed"]),
            )
