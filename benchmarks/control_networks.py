"""EGNN against the e3nn tensor-product control network at a similar parameter count: cost per step, and a
smoke comparison of the bridge-matching warm-up loss after the same wall-time budget.

Data: SPICE training molecules (the default filter, seed 0) with ETKDG conformers, shuffled into batches of
16 graphs exactly as the warm-up does (:func:`training.conformer_training.warmup_batches`); a disjoint set of
molecules gives the held-out batches. Timing: the first training batch, one CPU thread, median of
``--repeats`` steps after two warm-up steps; "train step" is loss forward + backward + Adam (the warm-up's
step), "forward" is one network call under ``torch.inference_mode`` (the sampler's cost per SDE step).
Training: each network from the same seed, Adam at the default run's learning rate and weight clip, cycling
over the same batches for ``--budget-s`` seconds of wall time; the loss is the normalized bridge-matching
loss (:func:`sampler.loss.bridge_matching_loss`), on held-out batches with the same fixed times and noise for
every network, at the start, after ``--compare-steps`` steps (same data seen) and at the end (same time spent);
held-out evaluations are not counted in the budget.

Reproduce: ``nice -n 10 python -m benchmarks.control_networks`` (writes
``benchmarks/results/control_networks.md`` and ``.json``)
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from molecules.dataset import MoleculeFilter, load_training_molecules
from molecules.etkdg import embed_many
from molecules.graph import molecular_system
from molecules.smiles import mol_from_smiles
from sampler.loss import bridge_matching_loss
from sampler.networks import ControlConfig, build_control, describe_network
from sampler.state import SystemBatch
from sampler.tensor_product import TensorProductConfig
from training.conformer_training import ConformerRunConfig, tensor_product_network, warmup_batches

__all__ = ["BenchConfig", "candidate_networks", "main", "run"]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    data_dir: Path
    train_molecules: int = 64
    held_out_molecules: int = 32
    conformers: int = 4
    batch_graphs: int = 16
    repeats: int = 10
    budget_s: float = 120.0
    compare_steps: int = 100
    seed: int = 0
    out_dir: Path = REPO / "benchmarks" / "results"
    cache_dir: Path | None = REPO / ".cache"


def candidate_networks() -> dict[str, tuple[ControlConfig, bool]]:
    """name -> (config, trained in the wall-time comparison?)."""
    default = ConformerRunConfig().network
    tp = tensor_product_network()
    tp2 = TensorProductConfig(
        node_features=tp.node_features,
        edge_features=tp.edge_features,
        num_layers=4,
        scalars=48,
        vectors=8,
        lmax=2,
        radial_hidden=40,
    )
    return {"egnn": (default, True), "tensor-product": (tp, True), "tensor-product-l2": (tp2, False)}


def _batches(config: BenchConfig) -> tuple[list[SystemBatch], list[SystemBatch]]:
    total = config.train_molecules + config.held_out_molecules
    molecules = load_training_molecules(
        config.data_dir / "spice" / "spice_train.txt",
        data_dir=config.data_dir,
        selection=MoleculeFilter(),
        limit=total,
        seed=config.seed,
    )
    systems = [molecular_system(mol_from_smiles(m.smiles), system_id=i) for i, m in enumerate(molecules)]
    confs = embed_many(
        [s.mol for s in systems],
        config.conformers,
        seed=config.seed + 1,
        cache_dir=config.cache_dir,
        show_progress=False,
    )
    n = config.train_molecules
    train = warmup_batches(systems[:n], confs[:n], config.batch_graphs, config.seed)
    held = warmup_batches(systems[n:], confs[n:], config.batch_graphs, config.seed + 1)
    return train, held


def _adam(net: nn.Module) -> tuple[torch.optim.Optimizer, float | None]:
    trainer = ConformerRunConfig().trainer
    return torch.optim.Adam(net.parameters(), lr=trainer.learning_rate), trainer.weight_clip_norm


def _train_step(
    net: nn.Module, opt: torch.optim.Optimizer, clip: float | None, batch: SystemBatch, g: torch.Generator
) -> float:
    schedule = ConformerRunConfig().schedule
    loss = bridge_matching_loss(net, batch, schedule=schedule, generator=g, normalized=True).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(net.parameters(), clip)
    opt.step()
    return float(loss.detach())


def _timing(config: ControlConfig, batch: SystemBatch, repeats: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    net = build_control(config)
    opt, clip = _adam(net)
    g = torch.Generator().manual_seed(seed)
    step_ms = []
    for k in range(repeats + 2):
        start = time.perf_counter()
        _train_step(net, opt, clip, batch, g)
        if k >= 2:
            step_ms.append(1e3 * (time.perf_counter() - start))
    t = torch.full((batch.num_graphs,), 0.5)
    forward_ms = []
    with torch.inference_mode():
        for k in range(repeats + 2):
            start = time.perf_counter()
            net(t, batch)
            if k >= 2:
                forward_ms.append(1e3 * (time.perf_counter() - start))
    return {"train_step_ms": statistics.median(step_ms), "forward_ms": statistics.median(forward_ms)}


def _held_out_loss(net: nn.Module, batches: Sequence[SystemBatch], seed: int, draws: int = 4) -> float:
    """Mean normalized bridge-matching loss over ``draws`` fixed (t, noise) draws per held-out batch."""
    schedule = ConformerRunConfig().schedule
    g = torch.Generator().manual_seed(seed)
    net.eval()
    with torch.no_grad():
        losses = [
            float(bridge_matching_loss(net, b, schedule=schedule, generator=g, normalized=True).loss)
            for _ in range(draws)
            for b in batches
        ]
    net.train()
    return statistics.fmean(losses)


def _train(
    config: ControlConfig,
    train: Sequence[SystemBatch],
    held: Sequence[SystemBatch],
    budget_s: float,
    compare_steps: int,
    seed: int,
) -> dict[str, Any]:
    """Train for ``budget_s`` seconds (held-out evaluations not counted); the held-out loss at the start, after
    ``compare_steps`` steps (if reached) and at the end."""
    torch.manual_seed(seed)
    net = build_control(config)
    opt, clip = _adam(net)
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"held_out_loss_initial": _held_out_loss(net, held, seed + 7)}
    losses: list[float] = []
    seconds = 0.0
    while seconds < budget_s:
        start = time.perf_counter()
        losses.append(_train_step(net, opt, clip, train[len(losses) % len(train)], g))
        seconds += time.perf_counter() - start
        if len(losses) == compare_steps:
            out[f"held_out_loss_at_{compare_steps}_steps"] = _held_out_loss(net, held, seed + 7)
    tail = losses[-min(50, len(losses)) :]
    return {
        "steps": len(losses),
        "seconds": seconds,
        "epochs": len(losses) / len(train),
        "train_loss_last50": statistics.fmean(tail),
        **out,
        "held_out_loss": _held_out_loss(net, held, seed + 7),
        "train_loss_every_25": [statistics.fmean(losses[i : i + 25]) for i in range(0, len(losses), 25)],
    }


def run(config: BenchConfig, command: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    train, held = _batches(config)
    first = train[0]
    results: dict[str, Any] = {
        "command": command,
        "threads": 1,
        "batch": {
            "graphs": first.num_graphs,
            "atoms": int(first.positions.shape[0]),
            "edges": int(first.edge_index.shape[1]),
        },
        "train_batches": len(train),
        "held_out_batches": len(held),
        "budget_s": config.budget_s,
        "compare_steps": config.compare_steps,
        "networks": {},
    }
    for name, (net_config, trained) in candidate_networks().items():
        entry: dict[str, Any] = {
            "description": describe_network(net_config),
            "parameters": build_control(net_config).num_parameters(),
            **_timing(net_config, first, config.repeats, config.seed),
        }
        log.info("%s: %s", name, entry)
        if trained and config.budget_s > 0:
            entry["training"] = _train(net_config, train, held, config.budget_s, config.compare_steps, config.seed)
            log.info("%s training: %s", name, entry["training"])
        results["networks"][name] = entry
    config.out_dir.mkdir(parents=True, exist_ok=True)
    (config.out_dir / "control_networks.json").write_text(json.dumps(results, indent=2))
    md = config.out_dir / "control_networks.md"
    md.write_text(report(results) + _kept_reading(md))
    return results


def _kept_reading(path: Path) -> str:
    """The hand-written ``## Reading`` section of an earlier report, kept across re-runs."""
    text = path.read_text() if path.is_file() else ""
    at = text.find("\n## Reading")
    return text[at:] if at >= 0 else ""


def report(results: dict[str, Any]) -> str:
    b = results["batch"]
    lines = [
        "# Control networks: EGNN vs e3nn tensor product",
        "",
        f"Reproduce: `{results['command']}` (1 CPU thread).",
        "",
        f"Timing batch: {b['graphs']} SPICE training molecules with ETKDG conformers, {b['atoms']} atoms, "
        f"{b['edges']} edges (fully connected per molecule).",
        "",
        "| network | description | parameters | train step, ms | forward, ms |",
        "|---|---|---:|---:|---:|",
    ]
    for name, e in results["networks"].items():
        lines.append(
            f"| {name} | {e['description']} | {e['parameters']:,} | {e['train_step_ms']:.0f} | {e['forward_ms']:.0f} |"
        )
    trained = {k: e["training"] for k, e in results["networks"].items() if "training" in e}
    n = results["compare_steps"]
    if trained:
        lines += [
            "",
            f"Warm-up from scratch, {results['budget_s']:.0f} s of wall time each, on the same "
            f"{results['train_batches']} training batches; held-out loss on {results['held_out_batches']} batches "
            "of other molecules (normalized bridge-matching loss, same fixed draws for every network).",
            "",
            f"| network | steps | epochs | train loss (last 50) | held-out loss: at init | "
            f"after {n} steps | at the end |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in trained.items():
            at_n = r.get(f"held_out_loss_at_{n}_steps")
            lines.append(
                f"| {name} | {r['steps']} | {r['epochs']:.1f} | {r['train_loss_last50']:.3f} | "
                f"{r['held_out_loss_initial']:.3f} | {'—' if at_n is None else f'{at_n:.3f}'} | "
                f"{r['held_out_loss']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from training.paths import DEFAULT_DATA

    parser = argparse.ArgumentParser(prog="python -m benchmarks.control_networks", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budget-s", type=float, default=120.0, help="training seconds per network (0: timing only)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compare-steps", type=int, default=100, help="also compare held-out losses at this step")
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = " ".join(["python -m benchmarks.control_networks", *(shlex.quote(a) for a in argv)])
    config = BenchConfig(
        data_dir=args.data_dir,
        budget_s=args.budget_s,
        repeats=args.repeats,
        compare_steps=args.compare_steps,
        out_dir=args.out_dir,
    )
    run(config, command)
    log.info("wrote %s and .json", config.out_dir / "control_networks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
