"""CLI of the HTTP service: ``serve``, ``worker sample`` and ``bench service`` (registered by :mod:`cli.main`).

Every option falls back to the environment (``ADJOINT_SAMPLING_*``, see :class:`service.settings.ServiceSettings`),
then to the embedded defaults: the shipped checkpoint, an embedded Redis, one in-process sampling worker.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from pathlib import Path
from typing import Any

from cli.common import CliError, reproduce_command

__all__ = [
    "add_bench_service_parser",
    "add_serve_parser",
    "add_worker_sample_parser",
    "cmd_bench_service",
    "cmd_serve",
    "cmd_worker_sample",
    "example_request",
]

log = logging.getLogger(__name__)

EXAMPLE_SMILES = "CC(=O)Nc1ccc(O)cc1"  # paracetamol


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=None, help="conformer checkpoint (default: the shipped one)")
    p.add_argument("--redis-url", default=None, help="redis://host:port/db or unix:///path (default: embedded server)")
    p.add_argument("--redis-dir", type=Path, default=None, help="embedded server's data directory")
    p.add_argument("--redis-prefix", default=None, help="prefix of every key (isolates deployments)")
    p.add_argument("--energy-model", default=None, help="default energy model for scoring/relaxing (xtb, mmff, ...)")
    p.add_argument("--energy-models", nargs="+", default=None, metavar="NAME", help="energy models requests may choose")
    p.add_argument("--sampling-threads", type=int, default=None, help="concurrent sampling computations")
    p.add_argument("--threads", type=int, default=None, help="torch threads per sampling thread")
    p.add_argument(
        "--watch-run",
        default=None,
        metavar="RUN",
        help="serve each checkpoint training run RUN publishes, as it appears (no restart); until then --checkpoint",
    )
    p.add_argument(
        "--watch-interval", type=float, default=None, metavar="S", help="read the run's announcement every S"
    )


def add_serve_parser(sub: Any) -> None:
    s = sub.add_parser(
        "serve",
        help="the HTTP API (conformers, jobs, metrics, web page)",
        description=(
            "Serve POST /v1/conformers, /v1/jobs, /healthz, /readyz, /metrics, /v1/model and the web page. "
            "Without --redis-url an embedded Redis starts and the queue is worked by in-process sampling threads."
        ),
    )
    s.add_argument("--host", default=None, help="default 127.0.0.1 (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=None, help="default 8000 (0: any free port)")
    s.add_argument("--inprocess-workers", type=int, default=None, help="job workers in this process (0: none)")
    s.add_argument("--max-queue", type=int, default=None, help="unfinished jobs before 429")
    s.add_argument("--sync-timeout", type=float, default=None, metavar="S", help="sync requests answer 504 after S")
    s.add_argument("--result-ttl", type=int, default=None, metavar="S", help="keep finished jobs' results S seconds")
    _add_common(s)


def add_worker_sample_parser(wsub: Any) -> None:
    w = wsub.add_parser(
        "sample",
        help="work the HTTP service's job queue (sampling conformers)",
        description="Take sampling jobs from Redis, store each molecule's conformers, finish the jobs.",
    )
    w.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    w.add_argument("--exit-when-idle", type=float, default=None, metavar="S", help="exit after S seconds without work")
    _add_common(w)


def add_bench_service_parser(bsub: Any) -> None:
    from benchmarks.options import add_service_load_arguments

    add_service_load_arguments(
        bsub.add_parser("service", help="load test of the HTTP service on localhost (requests/s, p50/p95/p99)")
    )


_SETTING_FLAGS = {
    "host": "host",
    "port": "port",
    "checkpoint": "checkpoint",
    "redis_url": "redis_url",
    "redis_dir": "redis_dir",
    "redis_prefix": "redis_prefix",
    "energy_model": "energy_model",
    "energy_models": "energy_models",
    "sampling_threads": "sampling_threads",
    "threads": "torch_threads",
    "inprocess_workers": "inprocess_workers",
    "max_queue": "max_queue",
    "sync_timeout": "sync_timeout_s",
    "result_ttl": "result_ttl_s",
    "watch_run": "watch_run",
    "watch_interval": "watch_interval_s",
}


def settings_from_args(args: argparse.Namespace) -> Any:
    """:class:`ServiceSettings` from the given flags over the environment; a missing checkpoint is an error."""
    from pydantic import ValidationError

    from service.settings import ServiceSettings

    given = {key: getattr(args, flag) for flag, key in _SETTING_FLAGS.items() if getattr(args, flag, None) is not None}
    if "energy_models" in given:
        given["energy_models"] = tuple(given["energy_models"])
    if "energy_model" in given and "energy_models" not in given:
        given["energy_models"] = tuple(dict.fromkeys([given["energy_model"], *ServiceSettings().energy_models]))
    try:
        settings = ServiceSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise CliError(f"invalid service settings: {problems}") from None
    if not Path(settings.checkpoint).is_file():
        raise CliError(
            f"no conformer checkpoint at {settings.checkpoint}. Train one with "
            f"`adjoint-sampling train-conformers --out {settings.checkpoint}`, or pass --checkpoint PATH "
            "(or set ADJOINT_SAMPLING_CHECKPOINT)"
        )
    return settings


def example_request(base_url: str, *, api_key: bool = False) -> str:
    """A ready-to-paste request; with ``api_key`` it sends ``$ADJOINT_SAMPLING_API_KEY`` (never the key itself)."""
    body = json.dumps({"smiles": EXAMPLE_SMILES, "num_conformers": 10})
    key = ' -H "X-API-Key: $ADJOINT_SAMPLING_API_KEY"' if api_key else ""
    return f"curl -s {base_url}/v1/conformers -H 'Content-Type: application/json'{key} -d '{body}'"


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from service.app import create_app

    settings = settings_from_args(args)
    app = create_app(settings)

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if not self.started:
                return
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else settings.port
            host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
            base = f"http://{host}:{port}"
            print(
                f"adjoint-sampling service ready at {base}  (web page {base}/ , API docs {base}/docs)\n"
                f"try:\n  {example_request(base, api_key=settings.api_key is not None)}",
                flush=True,
            )

    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
    server = Server(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when the port is taken or startup fails
        raise CliError(f"the service did not start on {settings.host}:{settings.port} (see the log above)") from exc
    if not server.started:
        raise CliError(f"the service did not start on {settings.host}:{settings.port} (see the log above)")


def cmd_worker_sample(args: argparse.Namespace) -> None:
    import signal

    from buffer.connection import RedisSettings, RedisUnavailable, connect
    from buffer.keys import RedisKeys
    from buffer.redis_server import resolve_redis_url
    from service.app import start_model_watch
    from service.engine import SamplingEngine
    from service.jobs import JobQueue
    from service.sampling_worker import SamplingWorker, WorkerConfig, default_consumer_name

    settings = settings_from_args(args)
    try:
        url = resolve_redis_url(settings.redis_url, settings.redis_dir)
        client = connect(RedisSettings(url=url, socket_timeout_s=30.0))
    except (RedisUnavailable, ValueError, RuntimeError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    engine = SamplingEngine.load(settings)
    queue = JobQueue(
        client,
        RedisKeys(settings.redis_prefix),
        max_attempts=settings.max_attempts,
        result_ttl_s=settings.result_ttl_s,
        job_ttl_s=settings.job_ttl_s,
    )
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: stopping after the current molecule", signal.Signals(signum).name)
        stop.set()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, handler)
    watch = start_model_watch(settings, engine, client)
    watch_thread = watch.start(stop) if watch is not None else None
    worker = SamplingWorker(
        queue,
        engine,
        WorkerConfig(consumer=default_consumer_name(), reclaim_idle_ms=int(1000 * settings.reclaim_idle_s)),
        stop=stop,
    )
    try:
        done = worker.run(max_jobs=args.max_jobs, exit_when_idle_s=args.exit_when_idle)
    finally:
        stop.set()
        if watch_thread is not None:
            watch_thread.join(10.0)
        engine.close()
    print(f"sampling worker finished {done} jobs")


def cmd_bench_service(args: argparse.Namespace) -> None:
    from benchmarks.service_load import run_from_args

    command = reproduce_command()
    try:
        lines = run_from_args(args, command)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc
    print("\n".join(lines))
