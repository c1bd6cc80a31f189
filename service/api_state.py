"""What the HTTP handlers share, living on the app (never in module globals): the engine, the job store,
the metrics, the in-process workers, the model watch. Handlers receive it through the :data:`StateDep` dependency."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from service.engine import SamplingEngine
from service.jobs import AsyncJobStore
from service.metrics import ServiceMetrics
from service.model_watch import ModelWatch
from service.settings import ServiceSettings

__all__ = ["ServiceState", "StateDep", "get_state"]


@dataclass
class ServiceState:
    """Attributes:
    redis_where: the Redis URL without password, for messages.
    workers: the in-process sampling-worker threads (``stop`` ends them).
    model_watch: follows the training run's published checkpoints (``settings.watch_run``), else ``None``.
    """

    settings: ServiceSettings
    metrics: ServiceMetrics
    engine: SamplingEngine
    jobs: AsyncJobStore
    redis_where: str
    workers: list[threading.Thread] = field(default_factory=list)
    model_watch: ModelWatch | None = None
    stop: threading.Event = field(default_factory=threading.Event)


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]
