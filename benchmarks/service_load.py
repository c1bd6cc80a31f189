"""Load test of the HTTP service: the embedded shape (``adjoint-sampling serve``: embedded Redis, in-process
worker, one process) started as a subprocess on localhost, hammered by ``--clients`` concurrent clients
for ``--seconds``, each asking ``POST /v1/conformers`` for ``--conformers`` conformers of a drug-sized
molecule (GEOM-DRUGS test SMILES, 15–35 heavy atoms, elements the model knows).

Reported: requests/s, latency p50/p95/p99/max, errors by status, lost requests (sent, never answered),
and a cross-check against the server's own ``/metrics`` (every answer the clients counted must be counted
there). Results: ``benchmarks/results/service_load.{md,json}``.

Reproduce: ``adjoint-sampling bench service --clients 20 --seconds 60`` (the shipped checkpoint), or with
``--checkpoint PATH`` / ``--tiny`` (trains a seconds-old plumbing-only model first).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.options import add_service_load_arguments as add_arguments
from training.paths import REPO_ROOT, RESULTS_DIR, SHIPPED_CONFORMER_CHECKPOINT

__all__ = ["add_arguments", "pick_smiles", "run", "run_from_args", "tiny_conformer_config"]

log = logging.getLogger(__name__)

DEFAULT_OUT_DIR = RESULTS_DIR
SHIPPED_CHECKPOINT = SHIPPED_CONFORMER_CHECKPOINT


def tiny_conformer_config() -> Any:
    """A conformer run that trains in seconds (4 molecules, 2 layers of 16, 10 steps, MMFF): plumbing only —
    its conformers mostly fail the validity checks. Tests and ``--tiny`` use it."""
    import dataclasses

    from molecules.dataset import MoleculeFilter
    from sampler.egnn import EGNNConfig
    from training.conformer_training import ConformerRunConfig

    base = ConformerRunConfig()
    assert isinstance(base.network, EGNNConfig)  # the default network
    return dataclasses.replace(
        base,
        energy_model="mmff",
        num_molecules=4,
        selection=MoleculeFilter(max_atoms=20),
        network=dataclasses.replace(base.network, num_layers=2, hidden=16),
        trainer=dataclasses.replace(base.trainer, samples_per_round=4, initial_samples=4, grad_steps_per_round=2),
        train_grid=dataclasses.replace(base.train_grid, num_steps=10),
        eval_grid=dataclasses.replace(base.eval_grid, num_steps=10),
        warmup_conformers=2,
        warmup_steps=4,
        warmup_batch=4,
        max_rounds=1,
    )


def pick_smiles(data_dir: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` drug-sized GEOM-DRUGS test SMILES (15–35 heavy atoms) the sampler accepts."""
    from rdkit import Chem

    from service.validation import molecule_problem

    path = data_dir / "geom" / "DRUGS_test_smiles_corrected.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the load test takes its molecules from ../shared/data")
    with open(path) as f:
        rows = [r["corrected_smiles"] or r["smiles"] for r in csv.DictReader(f)]
    random.Random(seed).shuffle(rows)
    chosen = []
    for smiles in rows:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None or not 15 <= mol.GetNumHeavyAtoms() <= 35 or molecule_problem(smiles) is not None:
            continue
        chosen.append(smiles)
        if len(chosen) == count:
            break
    return chosen


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    returned: list[int] = field(default_factory=list)
    sent: int = 0
    lost: int = 0
    examples: list[str] = field(default_factory=list)


async def _client(
    k: int, base: str, smiles: list[str], conformers: int, deadline: float, tally: _Tally, timeout_s: float
) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=timeout_s) as client:
        i = k
        while time.perf_counter() < deadline:
            body = {"smiles": smiles[i % len(smiles)], "num_conformers": conformers, "seed": i}
            i += 1
            tally.sent += 1
            start = time.perf_counter()
            try:
                r = await client.post("/v1/conformers", json=body)
            except httpx.HTTPError as exc:  # no answer at all: lost
                tally.lost += 1
                if len(tally.examples) < 5:
                    tally.examples.append(f"{type(exc).__name__}: {exc}")
                continue
            tally.latencies.append(time.perf_counter() - start)
            code = str(r.status_code)
            tally.statuses[code] = tally.statuses.get(code, 0) + 1
            if r.status_code == 200:
                tally.returned.append(int(r.json()["checks"]["returned"]))
            elif len(tally.examples) < 5:
                tally.examples.append(f"{code}: {r.text[:300]}")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _served_by_server(metrics_text: str) -> dict[str, float]:
    """``POST /v1/conformers`` answers by status, as the server counted them."""
    out: dict[str, float] = {}
    pattern = r'adjoint_sampling_http_requests_total\{method="POST",route="/v1/conformers",status="(\d+)"\} (\S+)'
    for status, value in re.findall(pattern, metrics_text):
        out[status] = float(value)
    return out


class _Service:
    """``adjoint-sampling serve`` in a subprocess on a free port, with its own embedded Redis."""

    def __init__(self, argv: list[str], timeout_s: float = 300.0) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=REPO_ROOT
        )
        self.lines: list[str] = []
        ready = threading.Event()
        self.base = ""

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                m = re.search(r"service ready at (http://\S+)", line)
                if m:
                    self.base = m.group(1)
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the service did not start:\n" + "\n".join(self.lines[-30:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def run(
    *,
    checkpoint: Path,
    clients: int,
    seconds: float,
    conformers: int,
    energy_model: str,
    sampling_threads: int,
    threads: int,
    molecules: int,
    data_dir: Path,
    out_dir: Path,
    command: str,
    label: str,
    tag: str = "",
    request_timeout_s: float = 600.0,
) -> dict[str, Any]:
    import httpx

    from training.checkpoint import file_sha256

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the report
    smiles = pick_smiles(data_dir, molecules)
    scratch = Path(tempfile.mkdtemp(prefix="as-load-"))
    argv = [
        sys.executable, "-m", "cli.main", "serve", "--port", "0", "--checkpoint", str(checkpoint),
        "--redis-dir", str(scratch / "redis"), "--energy-model", energy_model,
        "--sampling-threads", str(sampling_threads), "--threads", str(threads),
        "--sync-timeout", str(request_timeout_s),
    ]  # fmt: skip
    load_before = os.getloadavg()
    service = _Service(argv)
    try:
        warm = httpx.post(f"{service.base}/v1/conformers", json={"smiles": smiles[0], "num_conformers": 2}, timeout=300)
        warm.raise_for_status()
        tally = _Tally()
        start = time.perf_counter()

        async def main() -> None:
            deadline = start + seconds
            await asyncio.gather(
                *[
                    _client(k, service.base, smiles, conformers, deadline, tally, request_timeout_s)
                    for k in range(clients)
                ]
            )

        asyncio.run(main())
        wall = time.perf_counter() - start
        server_counts = _served_by_server(httpx.get(f"{service.base}/metrics", timeout=30).text)
        model = httpx.get(f"{service.base}/v1/model", timeout=30).json()["model"]
    finally:
        service.stop()
        subprocess.run(
            [sys.executable, "-m", "cli.main", "redis", "stop", "--redis-dir", str(scratch / "redis")],
            capture_output=True,
            cwd=REPO_ROOT,
        )
    answered = len(tally.latencies)
    ok = tally.statuses.get("200", 0)
    client_counts = {k: float(v) for k, v in tally.statuses.items()}
    server_counts_less_warmup = {**server_counts, "200": server_counts.get("200", 0.0) - 1}
    result = {
        "label": label,
        "command": command,
        "config": {
            "clients": clients,
            "seconds": seconds,
            "conformers_per_request": conformers,
            "energy_model": energy_model,
            "sampling_threads": sampling_threads,
            "torch_threads": threads,
            "molecules": len(smiles),
            "checkpoint": checkpoint.name,
            "checkpoint_sha256": file_sha256(checkpoint),
            "integration_steps": model["integration_steps"],
            "sync_timeout_s": request_timeout_s,
        },
        "environment": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "results": {
            "wall_seconds": round(wall, 2),
            "sent": tally.sent,
            "answered": answered,
            "ok": ok,
            "errors": {k: v for k, v in tally.statuses.items() if k != "200"},
            "lost": tally.lost,
            "requests_per_second": round(answered / wall, 3),
            "latency_s": {
                "p50": round(_percentile(tally.latencies, 0.50), 3),
                "p95": round(_percentile(tally.latencies, 0.95), 3),
                "p99": round(_percentile(tally.latencies, 0.99), 3),
                "max": round(max(tally.latencies, default=float("nan")), 3),
                "mean": round(sum(tally.latencies) / max(1, answered), 3),
            },
            "conformers_returned_mean": round(sum(tally.returned) / max(1, len(tally.returned)), 2),
            "conformers_served_per_second": round(sum(tally.returned) / wall, 2),
            "server_counted": server_counts,
            "server_matches_clients": server_counts_less_warmup == client_counts,
            "examples_of_failures": tally.examples,
        },
        "smiles": smiles,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{_stem(tag)}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{_stem(tag)}.md").write_text(markdown(result))
    return result


def _stem(tag: str) -> str:
    return f"service_load_{tag}" if tag else "service_load"


def markdown(result: dict[str, Any]) -> str:
    c, e, r = result["config"], result["environment"], result["results"]
    lat = r["latency_s"]
    errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
    lines = [
        "# HTTP service load test",
        "",
        f"`{result['command']}`",
        "",
        f"The embedded service (`adjoint-sampling serve`: embedded Redis, in-process worker) on localhost; "
        f"{c['clients']} concurrent clients for {c['seconds']:g} s, each request `POST /v1/conformers` for "
        f"{c['conformers_per_request']} conformers of one of {c['molecules']} drug-sized GEOM-DRUGS test molecules "
        f"(15–35 heavy atoms), scored with {c['energy_model']}.",
        "",
        f"Model: **{result['label']}** (`{c['checkpoint']}`, sha256 {c['checkpoint_sha256'][:12]}…, "
        f"{c['integration_steps']} integration steps); {c['sampling_threads']} sampling thread(s) × "
        f"{c['torch_threads']} torch thread(s); sync timeout {c['sync_timeout_s']:g} s (the service's default is "
        "120 s: a request waiting longer would be a 504 there, and belongs in a job).",
        "",
        "| requests/s | p50 | p95 | p99 | max | answered | errors | lost | conformers returned / request |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {r['requests_per_second']:.2f} | {lat['p50']:.2f} s | {lat['p95']:.2f} s | {lat['p99']:.2f} s | "
        f"{lat['max']:.2f} s | {r['answered']} of {r['sent']} | {errors} | {r['lost']} | "
        f"{r['conformers_returned_mean']:.1f} of {c['conformers_per_request']} |",
        "",
        "The server's own count of `POST /v1/conformers` answers (`/metrics`, the warm-up request excluded) "
        + (
            "matches the clients' count: nothing was lost between them."
            if r["server_matches_clients"]
            else "does NOT match the clients' count (see the JSON)."
        ),
        "",
        f"Machine: {e['cpus']} CPUs ({e['platform']}), load average before {e['load_average_before']}, "
        f"after {e['load_average_after']} (shared with other jobs). Latency here is queueing: one sampling "
        "thread per core, requests wait their turn; requests/s is the throughput the cores allow.",
        "",
    ]
    if r["examples_of_failures"]:
        lines += ["Examples of failures:", "", *[f"- `{x}`" for x in r["examples_of_failures"]], ""]
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace, command: str) -> list[str]:
    if args.tiny:
        from training.conformer_training import train_conformers

        checkpoint = Path(tempfile.mkdtemp(prefix="as-tiny-")) / "tiny.pt"
        train_conformers(tiny_conformer_config(), data_dir=args.data_dir, seed=0, out=checkpoint, show_progress=False)
        label = "tiny plumbing-only model (trained in seconds; most conformers fail the checks)"
    else:
        checkpoint = args.checkpoint or SHIPPED_CHECKPOINT
        if not checkpoint.is_file():
            raise FileNotFoundError(f"no checkpoint at {checkpoint}: pass --checkpoint PATH, or --tiny")
        label = "shipped model" if checkpoint.resolve() == SHIPPED_CHECKPOINT.resolve() else f"{checkpoint}"
    label = args.label or label
    result = run(
        checkpoint=checkpoint,
        clients=args.clients,
        seconds=args.seconds,
        conformers=args.conformers,
        energy_model=args.energy_model,
        sampling_threads=args.sampling_threads,
        threads=args.threads,
        molecules=args.molecules,
        data_dir=args.data_dir,
        out_dir=args.out_dir,
        command=command,
        label=label,
        tag=args.tag,
    )
    r, lat = result["results"], result["results"]["latency_s"]
    return [
        f"{result['label']}: {r['requests_per_second']:.2f} requests/s, p50 {lat['p50']:.2f} s, "
        f"p95 {lat['p95']:.2f} s, p99 {lat['p99']:.2f} s; {r['answered']} answered of {r['sent']} sent, "
        f"errors {r['errors'] or 'none'}, lost {r['lost']}; server count matches: {r['server_matches_clients']}",
        f"wrote {args.out_dir / (_stem(args.tag) + '.md')}",
        f"reproduce: {command}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = " ".join(["python -m benchmarks.service_load", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    for line in run_from_args(args, command):
        log.info("%s", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
