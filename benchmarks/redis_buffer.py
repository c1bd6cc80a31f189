"""Redis in the training loop: energy evaluations per second with 1 and 2 energy-worker processes against
one Redis, and the replay buffer's push/sample latency for batches of 64 (Redis vs in memory).

Throughput. Evaluation jobs (``--job-size`` structures each) are posted to an embedded Redis; ``N``
``adjoint-sampling worker energy`` processes (started, then warmed up with one job each, before the
clock starts) evaluate them and push the results into a replay buffer; the time from posting
``--jobs`` jobs to the last one done gives structures per second. The default model is GFN2-xTB
(tblite, one single-threaded tblite process per worker) on ETKDG conformers of ibuprofen (33 atoms) —
a realistic cost. ``--model dw4`` (microseconds per structure) measures the queue's own overhead
instead; ``--artificial-cost-ms`` adds a sleep per structure and is labelled as such. The CPU time of
the worker processes (with their children) is recorded too: on a shared machine, structures per
CPU-second and cores used say whether a missing speedup is contention.

Latency. Buffers hold 10,000 molecule-sized entries (33 atoms x 3, float32); ``push`` of 64 new
entries (each evicting the oldest) and ``sample(64)`` are timed ``--repeats`` times: median and 95th
percentile, for the in-memory buffer and the Redis buffer over a unix socket and over TCP (localhost).

Reproduce: ``adjoint-sampling bench redis`` (or ``python -m benchmarks.redis_buffer``).
Results: ``benchmarks/results/redis_buffer.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from buffer.connection import RedisSettings, connect
from buffer.jobs import AdjointSpec, EvaluationJob, EvaluationQueue
from buffer.keys import RedisKeys
from buffer.memory import InMemoryReplayBuffer
from buffer.redis import RedisReplayBuffer
from buffer.redis_server import EmbeddedRedis, EmbeddedRedisConfig
from energy.protocol import Structures
from sampler.replay import ReplayBuffer, ReplaySamples
from sampler.schedule import GeometricNoiseSchedule

__all__ = ["main", "run"]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"
SPEC = AdjointSpec(tau=1.0, max_grad_norm=100.0, schedule=GeometricNoiseSchedule(sigma_max=2.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _molecule_structures(count: int) -> tuple[Structures, str]:
    from rdkit import Chem

    from molecules.etkdg import embed
    from molecules.smiles import mol_from_smiles
    from molecules.structures import spin_multiplicity, total_charge

    mol = mol_from_smiles(IBUPROFEN)
    conformers = embed(mol, count, seed=1)
    if len(conformers) < count:
        raise RuntimeError(f"ETKDG embedded only {len(conformers)} of {count} conformers")
    n = mol.GetNumAtoms()
    z = torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=torch.long)
    structures = Structures(
        positions=torch.from_numpy(conformers.reshape(-1, 3)).double(),
        num_atoms=torch.full((count,), n, dtype=torch.long),
        atomic_numbers=z.repeat(count),
        total_charge=torch.full((count,), total_charge(mol), dtype=torch.long),
        multiplicity=torch.full((count,), spin_multiplicity(mol), dtype=torch.long),
        connection_tables=(Chem.MolToMolBlock(mol),) * count,
    )
    return structures, f"ibuprofen ({n} atoms), ETKDG conformers"


def _particle_structures(count: int, model: str) -> tuple[Structures, str]:
    n, d = (4, 2) if model == "dw4" else (13, 3)
    g = torch.Generator().manual_seed(0)
    return Structures.uniform(torch.randn(count, n, d, generator=g)), f"{model} random configurations"


def _jobs(structures: Structures, job_size: int, tag: str) -> list[EvaluationJob]:
    from training.trainer_worker import _slice

    out = []
    for k, start in enumerate(range(0, structures.num_structures, job_size)):
        stop = min(start + job_size, structures.num_structures)
        out.append(
            EvaluationJob(
                job_id=f"bench:{tag}:{k}", buffer="bench", structures=_slice(structures, start, stop),
                system_ids=torch.zeros(stop - start, dtype=torch.long), model_version=0, adjoint=SPEC,
            )
        )  # fmt: skip
    return out


def _tree_cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        for q in [p, *p.children(recursive=True)]:
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def _wait_done(queue: EvaluationQueue, ids: list[str], timeout_s: float = 1800.0) -> dict[str, int]:
    """Wait for every job (polling only the unfinished ones, lightly); returns jobs per consumer."""
    deadline = time.monotonic() + timeout_s
    left = list(ids)
    per_consumer: dict[str, int] = {}
    while left:
        statuses = queue.statuses(left)
        for s in statuses:
            if s is not None and s.state.finished:
                if s.state.value != "done":
                    raise RuntimeError(f"a benchmark job failed: {s.error}")
                per_consumer[str(s.consumer)] = per_consumer.get(str(s.consumer), 0) + 1
        left = [j for j, s in zip(left, statuses, strict=True) if s is None or not s.state.finished]
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark jobs did not finish")
        if left:
            time.sleep(0.02)
    return per_consumer


def measure_throughput(
    url: str, model: str, workers: int, structures: Structures, job_size: int, artificial_cost_ms: float
) -> dict[str, Any]:
    """Wall time and worker CPU time for ``workers`` processes to evaluate ``structures``."""
    from training.energy_worker import build_worker_energy

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    keys = RedisKeys(prefix)
    client = connect(RedisSettings(url=url))
    queue_name = build_worker_energy(model).name
    queue = EvaluationQueue(client, model=queue_name, keys=keys)
    RedisReplayBuffer(client, capacity=100_000, name="bench", keys=keys)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "cli.main", "worker", "energy", "--model", model, "--redis-url", url,
        "--redis-prefix", prefix, "--threads", "1", "--artificial-cost-ms", str(artificial_cost_ms),
    ]  # fmt: skip
    procs = [
        subprocess.Popen([*command, "--consumer", f"w{k}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        for k in range(workers)
    ]  # fmt: skip
    try:
        warm = _jobs(structures, job_size, "warm")[:workers]  # one job each: start tblite, load the model
        for job in warm:
            queue.enqueue(job)
        _wait_done(queue, [j.job_id for j in warm])
        handles = [psutil.Process(p.pid) for p in procs]
        jobs = _jobs(structures, job_size, "timed")
        cpu0 = _tree_cpu_seconds(handles)
        start = time.perf_counter()
        for job in jobs:
            queue.enqueue(job)
        per_consumer = _wait_done(queue, [j.job_id for j in jobs])
        wall = time.perf_counter() - start
        cpu = _tree_cpu_seconds(handles) - cpu0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    n = structures.num_structures
    log.info("jobs per worker: %s", per_consumer)
    return {"wall_s": wall, "worker_cpu_s": cpu, "structures": n, "per_s": n / wall, "cores_used": cpu / wall,
            "jobs_per_worker": sorted(per_consumer.values())}  # fmt: skip


def _entries(count: int, atoms: int, seed: int) -> ReplaySamples:
    g = torch.Generator().manual_seed(seed)
    return ReplaySamples(
        system_ids=torch.zeros(count, dtype=torch.long),
        num_nodes=torch.full((count,), atoms, dtype=torch.long),
        positions=torch.randn(count * atoms, 3, generator=g),
        adjoint=torch.randn(count * atoms, 3, generator=g),
        energies=torch.randn(count, generator=g),
        model_version=torch.zeros(count, dtype=torch.long),
    )


def _timed_ms(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - start))
    return {"median_ms": statistics.median(times), "p95_ms": float(np.percentile(times, 95)), "repeats": repeats}


def measure_latency(buffers: dict[str, ReplayBuffer], repeats: int, atoms: int = 33) -> dict[str, Any]:
    batch = _entries(64, atoms, seed=1)
    out: dict[str, Any] = {}
    for label, buf in buffers.items():
        for k in range(0, buf.capacity, 1000):
            buf.push(_entries(1000, atoms, seed=100 + k))
        gen = torch.Generator().manual_seed(0)
        out[label] = {
            "push_64": _timed_ms(lambda b=buf: b.push(batch), repeats),  # type: ignore[misc]
            "sample_64": _timed_ms(lambda b=buf, g=gen: b.sample(64, g), repeats),  # type: ignore[misc]
        }
    return out


_RAW_EVAL = """
import sys
from benchmarks.redis_buffer import payload
from training.energy_worker import DelayedEnergy, build_worker_energy
model = build_worker_energy(sys.argv[1])
if float(sys.argv[2]) > 0:
    model = DelayedEnergy(model, float(sys.argv[2]) / 1000.0)
structures = payload(sys.argv[1], int(sys.argv[3]))[0]
model.evaluate(structures)
print("ready", flush=True)
sys.stdin.readline()
model.evaluate(structures)
print("done", flush=True)
"""


def measure_raw(model: str, processes: int, count: int, artificial_cost_ms: float) -> float:
    """The machine's own parallelism, no Redis: ``processes`` processes each evaluate ``count /
    processes`` structures with the model as the workers build it, all started on one signal
    (after a warm-up); returns structures per second."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = [model, str(artificial_cost_ms), str(count // processes)]
    procs = [
        subprocess.Popen([sys.executable, "-c", _RAW_EVAL, *args], cwd=REPO, env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]  # fmt: skip
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "done"
        wall = time.perf_counter() - start
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return processes * (count // processes) / wall


def _default_model() -> str:
    try:
        import tblite  # noqa: F401
    except ImportError:
        return "dw4"
    return "xtb"


def payload(model: str, count: int) -> tuple[Structures, str]:
    """What the benchmark evaluates: particles for the synthetic models, ibuprofen conformers otherwise."""
    if model in ("dw4", "lj13"):
        return _particle_structures(count, model)
    return _molecule_structures(count)


def _machine(loads: list[float]) -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "load_average_1min": loads}  # fmt: skip


def run(
    *,
    model: str | None,
    jobs: int,
    job_size: int,
    repeats: int,
    out_dir: Path,
    command: str,
    artificial_cost_ms: float = 0.0,
    throughput_repeats: int = 2,
) -> dict[str, Any]:
    """Measure, merge into ``out_dir/redis_buffer.json`` (throughput kept per model label, latency
    replaced) and rewrite ``redis_buffer.md``; returns this run's numbers."""
    model = model or _default_model()
    count = jobs * job_size
    structures, what = payload(model, count)
    label = model + (f" + artificial {artificial_cost_ms:g} ms/structure (sleep)" if artificial_cost_ms else "")
    loads = [os.getloadavg()[0]]
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    raw: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="asr-bench-", dir="/tmp") as tmp:
        port = _free_port()
        server = EmbeddedRedis(EmbeddedRedisConfig(data_dir=Path(tmp), port=port))
        url = server.start()
        try:
            for _ in range(throughput_repeats):
                for workers in (1, 2):
                    log.info("throughput: %d worker(s), %d structures of %s", workers, count, what)
                    runs[workers].append(
                        measure_throughput(url, model, workers, structures, job_size, artificial_cost_ms)
                    )
                    raw[workers].append(measure_raw(model, workers, count, artificial_cost_ms))
                    loads.append(os.getloadavg()[0])
            client_unix = connect(RedisSettings(url=url))
            client_tcp = connect(RedisSettings(url=f"redis://127.0.0.1:{port}/0"))
            buffers: dict[str, ReplayBuffer] = {
                "in-memory": InMemoryReplayBuffer(10_000),
                "Redis (unix socket)": RedisReplayBuffer(client_unix, capacity=10_000, name="lat-unix"),
                "Redis (TCP localhost)": RedisReplayBuffer(client_tcp, capacity=10_000, name="lat-tcp"),
            }
            latency = measure_latency(buffers, repeats)
            loads.append(os.getloadavg()[0])
        finally:
            server.stop()
    per_workers: dict[str, dict[str, Any]] = {
        str(w): {
            "runs": r,
            "median_per_s": statistics.median(x["per_s"] for x in r),
            "median_per_cpu_s": statistics.median(x["structures"] / x["worker_cpu_s"] for x in r),
            "median_cores_used": statistics.median(x["cores_used"] for x in r),
            "raw_per_s": raw[w],
            "median_raw_per_s": statistics.median(raw[w]),
        }
        for w, r in runs.items()
    }
    this = {
        "command": command,
        "payload": what,
        "jobs": jobs,
        "job_size": job_size,
        "workers": per_workers,
        "speedup_2_over_1": per_workers["2"]["median_per_s"] / per_workers["1"]["median_per_s"],
        "raw_speedup_2_over_1": per_workers["2"]["median_raw_per_s"] / per_workers["1"]["median_raw_per_s"],
        "machine": _machine(loads),
    }
    path = out_dir / "redis_buffer.json"
    merged: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    merged.setdefault("throughput", {})[label] = this
    merged["latency"] = {"command": command, "results": latency, "machine": _machine(loads)}
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    (out_dir / "redis_buffer.md").write_text(_markdown(merged))
    return {"model": label, "throughput": this, "latency": latency}


def _load_range(machine: dict[str, Any]) -> str:
    loads = machine["load_average_1min"]
    return f"{machine['cpus']} CPUs, 1-min load average {min(loads):.1f}–{max(loads):.1f}"


def _markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Redis buffer and energy-worker pool",
        "",
        "Produced by `benchmarks/redis_buffer.py` (`adjoint-sampling bench redis`); each section names the "
        "command that reproduces it. Machine: "
        f"{r['latency']['machine']['platform']}, torch {r['latency']['machine']['torch']}.",
        "",
        "## Energy evaluations per second, 1 and 2 energy workers against one Redis",
        "",
        "Jobs are posted to one (embedded) Redis; N `adjoint-sampling worker energy` processes (single-threaded) "
        "evaluate them and push the results into the replay buffer. Wall time from posting to the last job "
        "done, after a warm-up job per worker; medians over runs. *Raw model* is the machine's own "
        "parallelism for the same work without Redis (N processes evaluating a share each): the ceiling "
        "the worker pool can reach here. CPU columns: structures per CPU-second of the worker processes "
        "(with their children) and the cores they got.",
        "",
    ]
    for label, t in r["throughput"].items():
        lines += [
            f"### {label}: {t['payload']}, {t['jobs']} jobs x {t['job_size']} structures",
            "",
            f"`{t['command']}` — {_load_range(t['machine'])}",
            "",
            "| workers | structures/s via Redis | raw model, no Redis | structures per worker CPU-s | cores used |",
            "|---:|---:|---:|---:|---:|",
        ]
        for w, v in t["workers"].items():
            lines.append(
                f"| {w} | {v['median_per_s']:.1f} | {v['median_raw_per_s']:.1f} | {v['median_per_cpu_s']:.1f} | "
                f"{v['median_cores_used']:.2f} |"
            )
        lines += [
            "",
            f"Speedup of 2 workers over 1: **{t['speedup_2_over_1']:.2f}x** via Redis, "
            f"{t['raw_speedup_2_over_1']:.2f}x for the raw model.",
            "",
        ]
    lat = r["latency"]
    lines += [
        "## Replay buffer latency, batches of 64 (10,000 entries of 33 atoms held)",
        "",
        f"`{lat['command']}` — {_load_range(lat['machine'])}",
        "",
        "| buffer | push 64: median ms | p95 ms | sample 64: median ms | p95 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, v in lat["results"].items():
        p, s_ = v["push_64"], v["sample_64"]
        lines.append(
            f"| {label} | {p['median_ms']:.3f} | {p['p95_ms']:.3f} | {s_['median_ms']:.3f} | {s_['p95_ms']:.3f} |"
        )
    repeats = next(iter(lat["results"].values()))["push_64"]["repeats"]
    lines += ["", f"{repeats} repetitions each; push evicts 64 old entries (the buffer is full).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model", default=None)
    p.add_argument("--jobs", type=int, default=24)
    p.add_argument("--job-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--artificial-cost-ms", type=float, default=0.0)
    p.add_argument("--throughput-repeats", type=int, default=2)
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = "python -m benchmarks.redis_buffer " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    result = run(
        model=args.model, jobs=args.jobs, job_size=args.job_size, repeats=args.repeats, out_dir=args.out_dir,
        command=command.strip(), artificial_cost_ms=args.artificial_cost_ms,
        throughput_repeats=args.throughput_repeats,
    )  # fmt: skip
    sys.stdout.write(json.dumps(result["throughput"]["workers"], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
