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
