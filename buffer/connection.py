"""Connecting to Redis: socket timeouts always set, bounded retries with exponential backoff, and one
clear error (:class:`RedisUnavailable`, naming the URL) instead of a hang.

Example:
    >>> client = connect(RedisSettings(url="redis://localhost:6379/0"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

__all__ = ["RedisSettings", "RedisUnavailable", "connect", "redact_url"]

log = logging.getLogger(__name__)

CONNECTION_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)


class RedisUnavailable(RuntimeError):
    """Redis could not be reached (after the configured retries)."""


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, kw_only=True)
class RedisSettings:
    """How to reach Redis.

    Attributes:
        url: ``redis://host:port/db``, ``rediss://`` (TLS) or ``unix:///path/to/redis.sock``.
        socket_timeout_s: bound on any single command (blocking reads use shorter blocks than this).
        connect_timeout_s: bound on opening a connection.
        max_attempts: attempts (first try included) before :class:`RedisUnavailable` is raised.
        backoff_initial_s, backoff_max_s: exponential backoff between attempts.
    """

    url: str
    socket_timeout_s: float = 10.0
    connect_timeout_s: float = 2.0
    max_attempts: int = 5
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 2.0

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL: {redact_url(self.url)!r} (use redis://, rediss:// or unix://)")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if min(self.socket_timeout_s, self.connect_timeout_s) <= 0:
            raise ValueError("socket and connect timeouts must be positive (a missing timeout can hang forever)")

    def backoff_s(self, attempt: int) -> float:
        """Wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1)))

    def max_wait_s(self) -> float:
        """Upper bound of the time :func:`connect` spends before giving up."""
        waits = sum(self.backoff_s(a) for a in range(1, self.max_attempts))
        return waits + self.max_attempts * (self.connect_timeout_s + self.socket_timeout_s)


def connect(settings: RedisSettings) -> redis.Redis:
    """A client whose commands retry on connection errors with backoff (``max_attempts`` in all);
    the server is pinged first, so an unreachable server fails here, in bounded time."""
    retry = Retry(
        ExponentialBackoff(cap=settings.backoff_max_s, base=settings.backoff_initial_s),
        settings.max_attempts - 1,
    )
    client = redis.Redis.from_url(
        settings.url,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
        retry=retry,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    where = redact_url(settings.url)
    # the probe makes exactly one attempt per turn of the loop (the client's own retries would nest)
    probe = redis.Redis.from_url(
        settings.url,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    last: Exception | None = None
    try:
        for attempt in range(1, settings.max_attempts + 1):
            try:
                probe.ping()
                if attempt > 1:
                    log.info("reached Redis at %s on attempt %d", where, attempt)
                return client
            except CONNECTION_ERRORS as exc:
                last = exc
                probe.connection_pool.disconnect()
                if attempt < settings.max_attempts:
                    wait = settings.backoff_s(attempt)
                    log.warning(
                        "Redis at %s unreachable (attempt %d/%d): %s; retrying in %.2f s",
                        where,
                        attempt,
                        settings.max_attempts,
                        exc,
                        wait,
                    )
                    time.sleep(wait)
    finally:
        probe.close()
    raise RedisUnavailable(
        f"cannot reach Redis at {where} after {settings.max_attempts} attempts: {last}. "
        "Is the server running? Set REDIS_URL (or --redis-url), or leave it unset to start the embedded server."
    )
