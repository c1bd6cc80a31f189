"""Hot model swap: follow a training run's published checkpoint (:mod:`buffer.published`) and serve each new one
without a restart.

A thread polls the run's checkpoint key every ``watch_interval_s``; a new announcement (another SHA-256 than
the model being served) is handed to :meth:`service.engine.SamplingEngine.swap`, which copies the file, checks
its SHA-256 against the announcement, loads it and only then swaps it in. A checkpoint that fails (missing,
corrupt, wrong kind, wrong hash) is logged, counted (``on_result("failed")``: the service's
``adjoint_sampling_model_loads_total{result="failed"}``) and described by :meth:`ModelWatch.status` (the
``/readyz`` detail); the model being served stays, and the same announcement is not tried again. Redis being
unreachable is waited out.

Example::

    >>> watch = ModelWatch(engine, client, run="conformers", interval_s=5.0)  # doctest: +SKIP
    >>> watch.check()  # once, now: True if a new model is being served  # doctest: +SKIP
    >>> thread = watch.start(stop)  # then every interval until ``stop`` is set  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import redis

from buffer.keys import RedisKeys
from buffer.published import CheckpointWatcher, PublishedCheckpoint
from service.engine import ModelLoadError, SamplingEngine

__all__ = ["ModelWatch", "WatchStatus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class WatchStatus:
    """What the watch last saw. ``failures``: announcements refused since start; ``last_error``: the latest
    refusal (``None`` once a later one loads)."""

    run: str
    interval_s: float
    loaded: int = 0
    failures: int = 0
    last_error: str | None = None
    redis_error: str | None = None

    def describe(self) -> str:
        text = f"following run {self.run!r} every {self.interval_s:g} s; {self.loaded} published checkpoint(s) loaded"
        if self.failures:
            text += f", {self.failures} refused"
        if self.last_error:
            text += f"; still serving the previous model because the latest failed: {self.last_error}"
        if self.redis_error:
            text += f"; Redis unreachable: {self.redis_error}"
        return text


class ModelWatch:
    """Polls ``run``'s published checkpoint and swaps ``engine``'s model (see the module docstring)."""

    def __init__(
        self,
        engine: SamplingEngine,
        client: redis.Redis,
        *,
        run: str,
        interval_s: float = 5.0,
        keys: RedisKeys | None = None,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.watcher = CheckpointWatcher(client, run, keys)
        self.on_result = on_result
        self._status = WatchStatus(run=run, interval_s=interval_s)
        self._lock = threading.Lock()

    @property
    def status(self) -> WatchStatus:
        with self._lock:
            return self._status

    def _update(self, **changes: object) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)  # type: ignore[arg-type]

    def check(self) -> bool:
        """Poll once; True if a newly published model is now served. Never raises for Redis or a bad file."""
        try:
            published = self.watcher.poll()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if self.status.redis_error is None:
                log.warning("model watch: Redis unreachable (%s); still serving %s", exc, self.engine.info.checkpoint)
            self._update(redis_error=str(exc) or type(exc).__name__)
            return False
        self._update(redis_error=None)
        if published is None or published.sha256 == self.engine.info.sha256:
            return False
        return self._load(published)

    def _load(self, published: PublishedCheckpoint) -> bool:
        try:
            self.engine.swap(Path(published.path), expected_sha256=published.sha256)
        except ModelLoadError as exc:
            message = f"round {published.round} (sha256 {published.sha256[:12]}…): {exc}"
            log.error("model watch: refused the checkpoint published by run %r, %s", published.run, message)
            s = self.status
            self._update(failures=s.failures + 1, last_error=message)
            self._report("failed")
            return False
        self._update(loaded=self.status.loaded + 1, last_error=None)
        self._report("loaded")
        return True

    def _report(self, result: str) -> None:
        if self.on_result is not None:
            self.on_result(result)

    def run(self, stop: threading.Event) -> None:
        """Check every ``interval_s`` until ``stop`` is set."""
        log.info("model watch: following run %r every %g s", self.status.run, self.status.interval_s)
        while not stop.wait(self.status.interval_s):
            try:
                self.check()
            except Exception:  # the watch must outlive anything unexpected; the model being served stays
                log.exception("model watch: unexpected error; trying again in %g s", self.status.interval_s)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name=f"model-watch-{self.status.run}", daemon=True)
        thread.start()
        return thread
