"""Prometheus metrics of one app instance (its own registry: no global state, two apps never mix).

Exposed at ``GET /metrics`` in the Prometheus text format: HTTP requests and latencies by route,
sampling time, conformers served and rejected, jobs submitted and finished, published checkpoints loaded or
refused (hot model swap) and the training round of the model served, the job-queue depth and the sampling work
waiting for a thread (read when scraped).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "ServiceMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ServiceMetrics:
    """Counters, histograms and gauges of one service instance (thread-safe: workers update them too)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "adjoint_sampling_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "adjoint_sampling_http_request_duration_seconds",
            "time to answer an HTTP request",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sampling_seconds = Histogram(
            "adjoint_sampling_sampling_duration_seconds",
            "time to sample one molecule (network, checks, energies)",
            ["mode"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.conformers_served = Counter(
            "adjoint_sampling_conformers_served", "conformers returned to clients", ["mode"], registry=r
        )
        self.conformers_rejected = Counter(
            "adjoint_sampling_conformers_rejected", "sampled conformers that failed a check", ["mode"], registry=r
        )
        self.jobs_submitted = Counter("adjoint_sampling_jobs_submitted", "jobs accepted into the queue", registry=r)
        self.jobs_finished = Counter(
            "adjoint_sampling_jobs_finished", "jobs finished by this process's workers", ["status"], registry=r
        )
        self.rejected = Counter(
            "adjoint_sampling_requests_refused",
            "requests refused for load (429/503) or time (504)",
            ["reason"],
            registry=r,
        )
        self.model_loads = Counter(
            "adjoint_sampling_model_loads",
            "published checkpoints of the watched run swapped in (result=loaded) or refused (result=failed)",
            ["result"],
            registry=r,
        )
        for result in ("loaded", "failed"):
            self.model_loads.labels(result)
        self.model_round = Gauge(
            "adjoint_sampling_model_training_round", "training rounds behind the model being served", registry=r
        )
        self.queue_depth = Gauge("adjoint_sampling_queue_depth", "unfinished jobs in the queue", registry=r)
        self.sampling_backlog = Gauge(
            "adjoint_sampling_sampling_backlog", "molecules waiting for or being sampled in this process", registry=r
        )

    def watch_backlog(self, read: Callable[[], float]) -> None:
        self.sampling_backlog.set_function(read)

    def watch_model_round(self, read: Callable[[], float]) -> None:
        self.model_round.set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)
