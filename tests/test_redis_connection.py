"""Redis unreachable: a clear error naming the URL after bounded retries, never a hang; the embedded
default starts a real server when no URL is configured."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from buffer.connection import RedisSettings, RedisUnavailable, connect, redact_url
from buffer.redis import RedisReplayBuffer
from buffer.redis_server import EmbeddedRedis, EmbeddedRedisConfig, resolve_redis_url
from cli.main import main

pytestmark = pytest.mark.redis


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections (the kernel's backlog) but never answers: only timeouts end a wait."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def test_refused_connection_retries_with_backoff_then_names_the_url(closed_port: int) -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{closed_port}/0", max_attempts=3, backoff_initial_s=0.1)
    start = time.monotonic()
    with pytest.raises(RedisUnavailable, match=rf"redis://127.0.0.1:{closed_port}/0 after 3 attempts"):
        connect(settings)
    elapsed = time.monotonic() - start
    assert 0.1 + 0.2 <= elapsed < settings.max_wait_s()  # it waited between attempts, and not forever


def test_silent_server_times_out_instead_of_hanging(silent_server: int) -> None:
    settings = RedisSettings(
        url=f"redis://127.0.0.1:{silent_server}", max_attempts=2, socket_timeout_s=0.2, connect_timeout_s=0.2,
        backoff_initial_s=0.05,
    )  # fmt: skip
    start = time.monotonic()
    with pytest.raises(RedisUnavailable, match="after 2 attempts"):
        connect(settings)
    assert time.monotonic() - start < settings.max_wait_s()


def test_missing_unix_socket_and_password_redaction(tmp_path: Path) -> None:
    with pytest.raises(RedisUnavailable, match="unix://"):
        connect(RedisSettings(url=f"unix://{tmp_path}/nothing.sock", max_attempts=1))
    assert redact_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    with pytest.raises(RedisUnavailable) as info:
        connect(RedisSettings(url="redis://:secret@127.0.0.1:1/0", max_attempts=1))
    assert "secret" not in str(info.value)
    with pytest.raises(ValueError, match="not a Redis URL"):
        RedisSettings(url="http://localhost:6379")


def test_cli_reports_unreachable_redis_with_exit_code_2(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{closed_port}/0"
    code = main(["worker", "energy", "--model", "dw4", "--redis-url", url, "--redis-attempts", "2"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"cannot reach Redis at {url} after 2 attempts" in err


def test_server_lost_mid_run_raises_after_bounded_retries(tmp_path: Path) -> None:
    server = EmbeddedRedis(EmbeddedRedisConfig(data_dir=tmp_path / "r"))
    settings = RedisSettings(url=server.start(), max_attempts=3, backoff_initial_s=0.05)
    client = connect(settings)
    buf = RedisReplayBuffer(client, capacity=10, name="b")
    assert len(buf) == 0
    server.stop()
    start = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        len(buf)
    assert time.monotonic() - start < settings.max_wait_s()


def test_embedded_default_starts_once_and_persists_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "emb"
    url = resolve_redis_url(None, data)  # no URL configured: start the embedded server
    server = EmbeddedRedis(EmbeddedRedisConfig(data_dir=data))
    try:
        assert url == f"unix://{data.absolute()}/redis.sock" and server.is_running()
        pid = server.pid()
        assert resolve_redis_url(None, data) == url and server.pid() == pid  # reused, not restarted
        client = connect(RedisSettings(url=url))
        client.set("k", "v")
        assert server.stop()
        assert main(["redis", "start", "--redis-dir", str(data)]) == 0
        assert connect(RedisSettings(url=url)).get("k") == b"v"  # append-only file replayed
    finally:
        assert main(["redis", "stop", "--redis-dir", str(data)]) == 0
    assert not server.is_running()
