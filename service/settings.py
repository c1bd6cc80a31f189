"""Settings of the HTTP service, from the environment (prefix ``ADJOINT_SAMPLING_``) or keyword arguments.

Every value has one home here; the request limits that the OpenAPI schema advertises live in
:mod:`service.schemas`. Example::

    ADJOINT_SAMPLING_ENERGY_MODEL=mmff ADJOINT_SAMPLING_MAX_QUEUE=50 adjoint-sampling serve

    >>> ServiceSettings(energy_model="mmff", energy_models=("mmff",)).energy_model
    'mmff'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from buffer.keys import validate_name
from inference.options import DEFAULT_ENERGY_MODEL
from training.paths import SHIPPED_CONFORMER_CHECKPOINT

__all__ = ["DEFAULT_CHECKPOINT", "ServiceSettings"]

DEFAULT_CHECKPOINT = SHIPPED_CONFORMER_CHECKPOINT


class ServiceSettings(BaseSettings):
    """How the service runs.

    Attributes:
        host, port: where ``adjoint-sampling serve`` listens (port 0: any free port).
        checkpoint: the conformer-sampler checkpoint (``adjoint-sampling train-conformers`` writes one).
        redis_url: ``redis://``/``unix://`` URL (also read from ``REDIS_URL``, like the other commands); ``None``
            starts (or reuses) the embedded server in ``redis_dir``.
        redis_prefix: prefix of every Redis key (isolates deployments sharing one Redis).
        energy_model: what scores (and relaxes) conformers when a request names none.
        energy_models: the models a request may choose.
        device: where the network runs (``cpu``, ``cuda``, ``cuda:1``).
        sampling_threads: concurrent sampling computations (sync requests and job molecules share them).
        torch_threads: torch intra-op threads per sampling thread (``None``: torch's default, all cores);
            keep ``sampling_threads * torch_threads`` at most the cores: oversubscription is very slow.
        max_sync_waiting: sync requests allowed to wait for a sampling thread; more get 503 + Retry-After.
        sync_timeout_s: a sync request not answered within this gets 504.
        max_queue: unfinished jobs allowed in the queue; more get 429 + Retry-After.
        result_ttl_s: how long a finished job's record and results are kept.
        job_ttl_s: how long an unfinished job's record is kept (a job older than this is forgotten).
        inprocess_workers: sampling-worker threads in this process (0: separate ``worker sample`` processes).
        reclaim_idle_s: a job whose worker has been silent this long is taken over by another worker.
        max_attempts: deliveries of a job before it is marked failed.
        retry_after_s: the ``Retry-After`` value of 429/503 answers.
        redis_timeout_s: bound on one Redis command from the API (it answers 503 instead of hanging).
        web_dir: the browser page (``GET /`` serves ``index.html``, ``/static/*`` the folder).
        watch_run: a training run whose published checkpoints (``worker train --run NAME`` announces each one) are
            served as they appear, without a restart (``ADJOINT_SAMPLING_WATCH_RUN``); ``None``: ``checkpoint``
            only. Until the run publishes, ``checkpoint`` is served.
        watch_interval_s: how often the run's announcement is read (``ADJOINT_SAMPLING_WATCH_INTERVAL_S``).
        api_key: when set (``ADJOINT_SAMPLING_API_KEY``), every ``/v1`` route and ``/metrics`` need it, in the
            ``X-API-Key`` header or as ``Authorization: Bearer <key>`` (401 otherwise); ``/healthz``, ``/readyz``,
            the web page and its static files stay open. Empty: no key.
    """

    model_config = SettingsConfigDict(env_prefix="ADJOINT_SAMPLING_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    checkpoint: Path = DEFAULT_CHECKPOINT
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("redis_url", "ADJOINT_SAMPLING_REDIS_URL", "REDIS_URL")
    )
    redis_dir: Path | None = None
    redis_prefix: str = "adjoint-sampling"
    energy_model: str = DEFAULT_ENERGY_MODEL
    energy_models: tuple[str, ...] = ("auto", "ani2xt", "xtb", "gfn1-xtb", "mmff")
    device: str = "cpu"
    sampling_threads: int = Field(default=2, ge=1, le=64)
    torch_threads: int | None = Field(default=1, ge=1, le=256)
    max_sync_waiting: int = Field(default=64, ge=0)
    sync_timeout_s: float = Field(default=120.0, gt=0)
    max_queue: int = Field(default=100, ge=1)
    result_ttl_s: int = Field(default=24 * 3600, ge=1)
    job_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    inprocess_workers: int = Field(default=1, ge=0, le=16)
    reclaim_idle_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    retry_after_s: int = Field(default=5, ge=1)
    redis_timeout_s: float = Field(default=2.0, gt=0)
    web_dir: Path = Path(__file__).resolve().parent / "web"
    watch_run: str | None = None
    watch_interval_s: float = Field(default=5.0, gt=0)
    api_key: SecretStr | None = None

    @field_validator("watch_run", mode="before")
    @classmethod
    def _run_name(cls, value: Any) -> Any:
        """Empty (docker compose passes unset variables empty) means none; otherwise a valid run name."""
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str):
            validate_name("run name", value)
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        """``ADJOINT_SAMPLING_API_KEY=`` (docker compose passes it empty when unset) means no key."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(text, str) and not text.strip() else value

    @model_validator(mode="after")
    def _default_model_allowed(self) -> ServiceSettings:
        if self.energy_model not in self.energy_models:
            raise ValueError(
                f"energy_model {self.energy_model!r} is not among energy_models {list(self.energy_models)}"
            )
        from energy.registry import ENERGY_MODELS

        unknown = sorted(set(self.energy_models) - set(ENERGY_MODELS))
        if unknown:
            raise ValueError(f"unknown energy models {unknown}; known: {sorted(ENERGY_MODELS)}")
        return self
