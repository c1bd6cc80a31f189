from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server (the embedded one) for the requesting module's tests."""
    from buffer.redis_server import EmbeddedRedis, EmbeddedRedisConfig

    server = EmbeddedRedis(EmbeddedRedisConfig(data_dir=Path(tmp_path_factory.mktemp("redis"))))
    yield server.start()
    server.stop()


@pytest.fixture
def client(redis_url: str) -> Any:
    """A ``redis.Redis`` connected to :func:`redis_url`."""
    from buffer.connection import RedisSettings, connect

    return connect(RedisSettings(url=redis_url))


@pytest.fixture(scope="session")
def tiny_conformer_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conformer-sampler checkpoint trained in seconds (see ``tests.helpers.train_tiny_conformer_checkpoint``)."""
    from tests.helpers import train_tiny_conformer_checkpoint
    from training.paths import DEFAULT_DATA

    if not (DEFAULT_DATA / "spice").is_dir():
        pytest.skip("needs ../shared/data")
    return train_tiny_conformer_checkpoint(tmp_path_factory.mktemp("tiny-conformers") / "tiny.pt")


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without running the C++ static destructors: in this torch build each registered library's
    teardown recomputes dispatch tables for every operator, and after a full run (e3nn, torch-geometric,
    fairchem, torchani, gloo loaded) the interpreter's exit took minutes of CPU after the last test had
    passed. Everything pytest reports is written by now; only the process's own teardown is skipped."""
    import os
    import sys

    if not _EXIT_STATUS or os.environ.get("ADJOINT_SAMPLING_SLOW_EXIT"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])
