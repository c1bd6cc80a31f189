"""Published checkpoints: the training worker announces each checkpoint it writes under one Redis key
(run name -> path, round, SHA-256); sampling processes poll it and load new weights without restarting.

Example:
    >>> watcher = CheckpointWatcher(client, run="dw4")  # doctest: +SKIP
    >>> new = watcher.poll()   # a PublishedCheckpoint the first time and after each new one, else None
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import redis

from buffer.keys import RedisKeys

__all__ = ["CheckpointWatcher", "PublishedCheckpoint", "latest_checkpoint", "publish_checkpoint"]


@dataclass(frozen=True, kw_only=True)
class PublishedCheckpoint:
    """Attributes: run name, absolute file path, training round, file SHA-256, unix time written."""

    run: str
    path: str
    round: int
    sha256: str
    written_at: float


def publish_checkpoint(
    client: redis.Redis, *, run: str, path: str, round: int, sha256: str, keys: RedisKeys | None = None
) -> PublishedCheckpoint:
    info = PublishedCheckpoint(run=run, path=path, round=round, sha256=sha256, written_at=time.time())
    client.set((keys or RedisKeys()).checkpoint(run), json.dumps(asdict(info)))
    return info


def latest_checkpoint(client: redis.Redis, run: str, keys: RedisKeys | None = None) -> PublishedCheckpoint | None:
    raw = client.get((keys or RedisKeys()).checkpoint(run))
    return None if raw is None else PublishedCheckpoint(**json.loads(raw))


class CheckpointWatcher:
    """Remembers the last checkpoint seen; :meth:`poll` returns the next one that differs."""

    def __init__(self, client: redis.Redis, run: str, keys: RedisKeys | None = None) -> None:
        self.client = client
        self.run = run
        self.keys = keys
        self.current: PublishedCheckpoint | None = None

    def poll(self) -> PublishedCheckpoint | None:
        latest = latest_checkpoint(self.client, self.run, self.keys)
        if latest is None or (self.current is not None and latest.sha256 == self.current.sha256):
            return None
        self.current = latest
        return latest
