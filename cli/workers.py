"""CLI subcommands of the distributed shape: ``worker energy``, ``worker train`` (``worker sample`` lives in
:mod:`cli.serve`), ``redis`` and
``bench redis`` (registered by :mod:`cli.main`).

Redis: ``--redis-url`` (default ``$REDIS_URL``); with neither, an embedded server is started (or
reused) in ``--redis-dir`` (default ``$ADJOINT_SAMPLING_REDIS_DIR`` or ``~/.local/state/adjoint-sampling/redis``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import CliError, reproduce_command

if TYPE_CHECKING:
    import redis

__all__ = ["add_bench_redis_parser", "add_parsers", "cmd_bench_redis", "cmd_redis", "cmd_worker"]

log = logging.getLogger(__name__)


def _add_redis_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Redis")
    g.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="redis://host:port/db or unix:///path (default: $REDIS_URL; unset: the embedded server)",
    )
    g.add_argument("--redis-dir", type=Path, default=None, help="embedded server's data directory")
    g.add_argument("--redis-prefix", default="adjoint-sampling", help="prefix of every key (isolates deployments)")
    g.add_argument("--redis-attempts", type=int, default=5, help="connection attempts before giving up")


def add_parsers(sub: Any) -> None:
    """``worker energy``, ``worker train`` and ``redis``."""
    w = sub.add_parser("worker", help="energy and training workers (Redis)", description="Distributed workers.")
    wsub = w.add_subparsers(dest="worker", required=True, metavar="WORKER")

    e = wsub.add_parser(
        "energy",
        help="evaluate energies of posted samples, push them into the replay buffer",
        description="Serve one energy model: claim evaluation jobs, evaluate, push results (exactly once).",
    )
    e.add_argument("--model", required=True, help="dw4, lj13, or a registered model (xtb, mmff, ...)")
    e.add_argument("--consumer", default=None, help="name in the consumer group (default: HOST-PID)")
    e.add_argument("--jobs-per-claim", type=int, default=1)
    e.add_argument("--reclaim-idle-s", type=float, default=60.0, help="take over jobs a dead worker held this long")
    e.add_argument("--max-attempts", type=int, default=3, help="deliveries before a job is parked")
    e.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    e.add_argument("--exit-when-idle", type=float, default=None, metavar="S", help="exit after S seconds without work")
    e.add_argument(
        "--artificial-cost-ms",
        type=float,
        default=0.0,
        help="TESTS/BENCHMARKS ONLY: sleep this long per structure to imitate an expensive model",
    )
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    _add_redis_options(e)

    t = wsub.add_parser(
        "train",
        help="the training loop against Redis (energy workers evaluate); resumes from --out",
        description=(
            "Adjoint Sampling with energies from `worker energy` processes: the torsional conformer model "
            "(--config torsional, energy workers serving its energy model, e.g. `worker energy --model mmff`), the "
            "Cartesian conformer model (--config conformers: train-conformers' configuration and checkpoint kind) or "
            "DW-4/LJ-13 (--system). The torsional model and DW-4/LJ-13 run data-parallel under torchrun "
            "(`torchrun --nproc-per-node 2 -m cli.main worker train --config torsional --run-name RUN ...`). "
            "Each checkpoint is announced under --run for `serve --watch-run RUN` and `worker sample --watch-run RUN`."
        ),
    )
    what = t.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--config",
        choices=["torsional", "conformers", "dw4", "lj13"],
        help="torsional: the conformer run configuration (the product's model); conformers: the Cartesian conformer "
        "model (as train-conformers); dw4, lj13: as --system",
    )
    what.add_argument("--system", choices=["dw4", "lj13"], help="a synthetic system")
    t.add_argument(
        "--run",
        "--run-name",
        dest="run",
        default=None,
        help="run name: buffer, job ids, checkpoint key (default: the system; 'conformers' for --config torsional, "
        "'cartesian-conformers' for --config conformers); under torchrun "
        "write --run-name (torchrun's own parser takes --run for its --run-path)",
    )
    t.add_argument("--out", type=Path, required=True, help="checkpoint path; an existing one is resumed")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--rounds", type=int, default=None, help="stop after this many rounds (default: preset)")
    t.add_argument("--checkpoint-every", type=int, default=25, metavar="N")
    t.add_argument("--job-size", type=int, default=16, help="structures per evaluation job")
    t.add_argument("--max-lag", type=int, default=0, help="rounds gradient steps may run ahead of evaluations")
    t.add_argument("--wait-timeout", type=float, default=600.0, metavar="S", help="error if jobs stay unfinished")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--reset-buffer", action="store_true", help="empty a replay buffer another run left under --run")
    c = t.add_argument_group("conformer run configuration (--config torsional or conformers; stored in the checkpoint)")
    c.add_argument(
        "--config-file",
        type=lambda text: Path(text) if text else None,
        default=None,
        help="JSON of run-configuration fields over the product's defaults (empty: none); for --config conformers "
        "the fields of train-conformers' checkpoints (`config`)",
    )
    c.add_argument("--energy-model", default=None, help="training energy (default mmff); serve it with worker energy")
    c.add_argument("--molecules", type=int, default=None, help="number of training molecules")
    c.add_argument("--warmup-steps", type=int, default=None, help="bridge-matching warm-up steps")
    c.add_argument("--data-dir", type=Path, default=None, help="the shared data (default: ../shared/data)")
    c.add_argument("--cache-dir", type=Path, default=None, help="--config conformers: ETKDG cache (default: .cache)")
    c.add_argument(
        "--stop-grace", type=float, default=60.0, metavar="S", help="on SIGTERM, wait S for the round's evaluations"
    )
    o = t.add_argument_group("run configuration (--system; stored in the checkpoint; default: the system's preset)")
    for flag, help_ in [
        ("--samples-per-round", "M: new samples (energy calls) per round"),
        ("--initial-samples", "base-process samples seeding the buffer"),
        ("--grad-steps", "K: Adam steps per round"),
        ("--batch-size", "buffer entries per gradient step (per process under torchrun)"),
        ("--buffer-capacity", "replay buffer entries"),
        ("--hidden", "EGNN width"),
        ("--layers", "EGNN depth"),
        ("--integration-steps", "Euler steps when sampling for the buffer"),
    ]:
        o.add_argument(flag, type=int, default=None, help=help_)
    _add_redis_options(t)

    from cli.serve import add_worker_sample_parser

    add_worker_sample_parser(wsub)

    r = sub.add_parser(
        "redis",
        help="start/stop/inspect the embedded Redis server",
        description="The embedded Redis server used when no REDIS_URL is set.",
    )
    r.add_argument("action", choices=["start", "stop", "status"])
    r.add_argument("--redis-dir", type=Path, default=None, help="data directory (default: see `worker --help`)")
    r.add_argument("--port", type=int, default=None, help="start: also listen on 127.0.0.1:PORT")


def add_bench_redis_parser(bsub: Any) -> None:
    b = bsub.add_parser("redis", help="energy evaluations/s with 1 and 2 workers; buffer push/sample latency")
    b.add_argument("--model", default=None, help="energy model for throughput (default: xtb if available)")
    b.add_argument("--jobs", type=int, default=24, help="evaluation jobs per throughput measurement")
    b.add_argument("--job-size", type=int, default=4, help="structures per job")
    b.add_argument("--repeats", type=int, default=200, help="push/sample repetitions (batches of 64)")
    b.add_argument("--throughput-repeats", type=int, default=2, help="runs per worker count")
    b.add_argument(
        "--artificial-cost-ms", type=float, default=0.0, help="sleep per structure in the workers (labelled)"
    )
    b.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent.parent / "benchmarks" / "results")


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT set the event (graceful stop) instead of killing the process."""
    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: stopping after the current step", signal.Signals(signum).name)
        stop.set()

    for s in previous:
        signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _connect(args: argparse.Namespace) -> tuple[redis.Redis, Any]:
    from buffer.connection import RedisSettings, RedisUnavailable, connect
    from buffer.keys import RedisKeys
    from buffer.redis_server import resolve_redis_url

    try:
        url = resolve_redis_url(args.redis_url, args.redis_dir)
        client = connect(RedisSettings(url=url, max_attempts=args.redis_attempts))
        return client, RedisKeys(args.redis_prefix)
    except (RedisUnavailable, ValueError, RuntimeError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc


@contextmanager
def _redis_errors(args: argparse.Namespace) -> Iterator[None]:
    """A connection lost mid-run (after the client's retries) becomes one clear message."""
    import redis

    from buffer.connection import redact_url

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        where = redact_url(args.redis_url) if args.redis_url else "the embedded server"
        raise CliError(f"lost Redis at {where} (after retries): {exc}") from exc


def _worker_energy(args: argparse.Namespace) -> None:
    from buffer.jobs import EvaluationQueue
    from training.energy_worker import DelayedEnergy, EnergyWorker, EnergyWorkerConfig, build_worker_energy

    try:
        model: Any = build_worker_energy(args.model)
    except (ValueError, ImportError) as exc:
        raise CliError(str(exc)) from exc
    if args.artificial_cost_ms > 0:
        log.warning("artificial cost of %.0f ms per structure (tests/benchmarks only)", args.artificial_cost_ms)
        model = DelayedEnergy(model, args.artificial_cost_ms / 1000.0)
    client, keys = _connect(args)
    config = EnergyWorkerConfig(
        jobs_per_claim=args.jobs_per_claim,
        reclaim_idle_ms=int(1000 * args.reclaim_idle_s),
        **({"consumer": args.consumer} if args.consumer else {}),
    )
    try:
        with _redis_errors(args), _stop_on_signals() as stop:
            queue = EvaluationQueue(client, model=model.name, keys=keys, max_attempts=args.max_attempts)
            stats = EnergyWorker(queue, model, config, stop=stop).run(
                max_jobs=args.max_jobs, exit_when_idle_s=args.exit_when_idle
            )
    finally:
        close = getattr(getattr(model, "model", model), "close", None)  # e.g. xtb's worker processes
        if callable(close):
            close()
    print(
        f"jobs done {stats.jobs_done}, duplicates dropped {stats.jobs_duplicate}, failed {stats.jobs_failed}, "
        f"structures {stats.structures}, {stats.evaluate_seconds:.1f} s evaluating"
    )


def _run_config(args: argparse.Namespace) -> Any:
    from training.synthetic import PRESETS

    cfg = PRESETS[args.system]
    trainer = {
        k: v
        for k, v in {
            "samples_per_round": args.samples_per_round,
            "initial_samples": args.initial_samples,
            "grad_steps_per_round": args.grad_steps,
            "batch_size": args.batch_size,
        }.items()
        if v is not None
    }
    network = {k: v for k, v in {"hidden": args.hidden, "num_layers": args.layers}.items() if v is not None}
    changes: dict[str, Any] = {
        "trainer": dataclasses.replace(cfg.trainer, **trainer),
        "network": dataclasses.replace(cfg.network, **network),
    }
    if args.buffer_capacity is not None:
        changes["buffer_capacity"] = args.buffer_capacity
    if args.integration_steps is not None:
        changes["train_grid"] = dataclasses.replace(cfg.train_grid, num_steps=args.integration_steps)
    return dataclasses.replace(cfg, **changes)


def _conformer_configs(
    args: argparse.Namespace, load_config: Callable[..., Any], default_run: str, **worker_fields: Any
) -> tuple[Any, Any]:
    """The run configuration (``load_config``: the ``--config-file`` with the flags over it) and the
    ``TrainerWorkerConfig`` of a conformer model's ``worker train``; a bad value is a :class:`CliError`."""
    from training.trainer_worker import TrainerWorkerConfig

    try:
        config = load_config(
            args.config_file,
            energy_model=args.energy_model,
            num_molecules=args.molecules,
            warmup_steps=args.warmup_steps,
        )
        worker = TrainerWorkerConfig(
            run=args.run or default_run,
            job_size=args.job_size,
            checkpoint_every=args.checkpoint_every,
            wait_timeout_s=args.wait_timeout,
            **worker_fields,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return config, worker


def _run_conformer_trainer(
    args: argparse.Namespace, run: Callable[..., Any], config: Any, worker: Any, **options: Any
) -> Any:
    """``run`` (a conformer model's Redis trainer) against ``--redis-url`` with the common flags, SIGTERM/SIGINT
    as a graceful stop; returns its trainer."""
    from training.paths import DEFAULT_DATA

    client, keys = _connect(args)
    with _redis_errors(args), _stop_on_signals() as stop:
        try:
            return run(
                config,
                worker,
                client=client,
                out=args.out,
                data_dir=args.data_dir or DEFAULT_DATA,
                seed=args.seed,
                max_rounds=args.rounds,
                reset_buffer=args.reset_buffer,
                keys=keys,
                stop=stop,
                stop_grace_s=args.stop_grace,
                **options,
            )
        except (FileNotFoundError, ValueError, TimeoutError) as exc:
            raise CliError(str(exc)) from exc


def _worker_train_torsional(args: argparse.Namespace) -> None:
    from training.distributed import DistributedContext, process_group
    from training.torsional_worker import load_run_config, run_torsional_worker

    config, worker = _conformer_configs(args, load_run_config, "conformers")
    try:
        ctx = DistributedContext.from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    with process_group(ctx, backend="gloo"):  # the torsional trainer runs on the CPU
        trainer = _run_conformer_trainer(args, run_torsional_worker, config, worker, ctx=ctx)
    if ctx.is_main:
        print(
            f"round {trainer.round}, warm-up {trainer.warmup_done}/{config.warmup_steps}, "
            f"{trainer.energy_calls} energy calls, checkpoint {args.out} (run {worker.run!r})"
        )


def _worker_train_conformers(args: argparse.Namespace) -> None:
    from training.conformer_worker import load_conformer_run_config, run_conformer_worker
    from training.distributed import DistributedContext
    from training.paths import REPO_ROOT

    if DistributedContext.from_env().is_distributed:
        raise CliError("--config conformers trains in one process; torchrun is for --config torsional and DW-4/LJ-13")
    config, worker = _conformer_configs(
        args, load_conformer_run_config, "cartesian-conformers", max_lag_rounds=args.max_lag
    )
    trainer = _run_conformer_trainer(
        args, run_conformer_worker, config, worker, cache_dir=args.cache_dir or REPO_ROOT / ".cache"
    )
    print(f"round {trainer.round}, {trainer.energy_calls} energy calls, checkpoint {args.out} (run {worker.run!r})")


def _worker_train(args: argparse.Namespace) -> None:
    if args.config == "torsional":
        _worker_train_torsional(args)
        return
    if args.config == "conformers":
        _worker_train_conformers(args)
        return
    args.system = args.system or args.config
    if args.config_file is not None:
        raise CliError("--config-file is for --config torsional; DW-4/LJ-13 take the preset flags")
    from training.distributed import DistributedContext, process_group
    from training.trainer_worker import TrainerWorkerConfig, run_trainer_worker

    try:
        run_config = _run_config(args)
        config = TrainerWorkerConfig(
            run=args.run or args.system,
            job_size=args.job_size,
            max_lag_rounds=args.max_lag,
            checkpoint_every=args.checkpoint_every,
            wait_timeout_s=args.wait_timeout,
        )
        ctx = DistributedContext.from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    client, keys = _connect(args)
    with process_group(ctx), _redis_errors(args), _stop_on_signals() as stop:
        try:
            trainer = run_trainer_worker(
                run_config,
                config,
                client=client,
                out=args.out,
                seed=args.seed,
                max_rounds=args.rounds,
                reset_buffer=args.reset_buffer,
                keys=keys,
                ctx=ctx,
                stop=stop,
            )
        except (ValueError, TimeoutError) as exc:
            raise CliError(str(exc)) from exc
    if ctx.is_main:
        print(f"round {trainer.round}, {trainer.energy_calls} energy calls, checkpoint {args.out}")


def cmd_worker(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    if args.worker == "sample":
        from cli.serve import cmd_worker_sample

        cmd_worker_sample(args)
        return
    {"energy": _worker_energy, "train": _worker_train}[args.worker](args)


def cmd_redis(args: argparse.Namespace) -> None:
    from buffer.redis_server import EmbeddedRedis, EmbeddedRedisConfig, default_redis_dir

    try:
        server = EmbeddedRedis(EmbeddedRedisConfig(data_dir=args.redis_dir or default_redis_dir(), port=args.port))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if args.action == "start":
        print(server.start())
    elif args.action == "stop":
        print("stopped" if server.stop() else f"no embedded Redis running in {server.config.data_dir}")
    elif server.is_running():
        info: Any = server.client().info()
        print(
            f"running: {server.url} (pid {server.pid()}), {info.get('used_memory_human')} used, "
            f"data in {server.config.data_dir}"
        )
    else:
        print(f"not running (data directory {server.config.data_dir})")


def cmd_bench_redis(args: argparse.Namespace) -> None:
    from benchmarks.redis_buffer import run

    command = reproduce_command()
    result = run(
        model=args.model,
        jobs=args.jobs,
        job_size=args.job_size,
        repeats=args.repeats,
        out_dir=args.out_dir,
        command=command,
        artificial_cost_ms=args.artificial_cost_ms,
        throughput_repeats=args.throughput_repeats,
    )
    for workers, t in result["throughput"]["workers"].items():
        print(
            f"{workers} energy worker(s): {t['median_per_s']:.1f} structures/s via Redis, "
            f"{t['median_raw_per_s']:.1f} for the raw model ({result['model']})"
        )
    for label, v in result["latency"].items():
        print(f"{label}: push 64 {v['push_64']['median_ms']:.2f} ms, sample 64 {v['sample_64']['median_ms']:.2f} ms")
    print(f"wrote {args.out_dir / 'redis_buffer.md'}\nreproduce: {command}")
