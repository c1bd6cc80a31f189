"""The synthetic benchmark's report: merge one run's results with those already on disk and write
``synthetic.json`` and ``synthetic.md`` (the table beside the published rows).

Light on purpose (json, numpy): seeds run as processes side by side each merge their rows in here, under a file
lock, without importing torch or the training code again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PUBLISHED", "markdown", "summarize", "write_results"]

PUBLISHED = {  # ALGORITHM.md section 8, mean over 3 seeds
    "PIS": {"dw4": (0.68, 0.65), "lj13": (1.93, 18.02)},
    "DDS": {"dw4": (0.92, 0.90), "lj13": (1.99, 24.61)},
    "iDEM": {"dw4": (0.70, 0.55), "lj13": (1.61, 30.78)},
    "Adjoint Sampling": {"dw4": (0.62, 0.55), "lj13": (1.67, 2.40)},
}


def write_results(results: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Merge with the results of other systems already on disk, then write JSON and markdown, under an
    exclusive lock: seeds run as processes side by side may finish at the same moment."""
    import fcntl

    with open(out_dir / ".synthetic.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _merge_and_write(results, out_dir)


def _merge_and_write(results: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    path = out_dir / "synthetic.json"
    merged = dict(results)
    commands = [results["command"]]
    if path.is_file():
        old = json.loads(path.read_text())
        mine = {(r["system"], r["seed"]) for r in results["runs"]}
        merged["runs"] = [r for r in old.get("runs", []) if (r["system"], r["seed"]) not in mine] + results["runs"]
        merged["runs"].sort(key=lambda r: (r["system"], r["seed"]))
        merged["floors"] = old.get("floors", {}) | results["floors"]
        commands = [c for c in old.get("commands", []) if c != results["command"]] + commands
    behind_rows = {r["command"] for r in merged.get("runs", []) if r.get("command")}
    if behind_rows and all(r.get("command") for r in merged.get("runs", [])):
        commands = [c for c in commands if c in behind_rows]  # only the commands behind the rows shown
    merged["commands"] = commands
    path.write_text(json.dumps(merged, indent=1))
    (out_dir / "synthetic.md").write_text(markdown(merged))
    return merged


def summarize(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for system in sorted({r["system"] for r in results["runs"]}):
        rows = [r for r in results["runs"] if r["system"] == system]
        out[system] = {
            "x_w2": float(np.mean([r["x_w2"] for r in rows])),
            "x_w2_std": float(np.std([r["x_w2"] for r in rows])),
            "x_w2_plain": float(np.mean([r["x_w2_plain"] for r in rows])),
            "x_w2_plain_std": float(np.std([r["x_w2_plain"] for r in rows])),
            "e_w2": float(np.mean([r["e_w2"] for r in rows])),
            "e_w2_std": float(np.std([r["e_w2"] for r in rows])),
            "train_seconds": float(np.mean([r["train_seconds"] for r in rows])),
            "seeds": len(rows),
        }
    return out


def markdown(results: dict[str, Any]) -> str:
    summary = summarize(results)
    lines = [
        "# Synthetic benchmark (DW-4, LJ-13)",
        "",
        "Reproduce: " + " and ".join(f"`{c}`" for c in results.get("commands", [results.get("command", "")])),
        "",
        "x-W2: W2 with the permutation- and rotation-aligned point-cloud distance of the code behind the "
        "published table (`benchmarks/metrics.py`); x-W2 plain: exact OT on COM-free flattened coordinates "
        "(the literal ALGORITHM.md definition, whose floor is above the published rows); E-W2: exact 1-D OT "
        "cost on energies (squared cost, no root). 2000 generated vs 2000 reference samples (`*_test.npy`); "
        "the floor row scores 2000 `*_val.npy` samples against the same reference: a perfect sampler's score.",
        "",
        "| method | DW-4 x-W2 | DW-4 E-W2 | LJ-13 x-W2 | LJ-13 E-W2 | DW-4 x-W2 plain | LJ-13 x-W2 plain |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, vals in PUBLISHED.items():
        lines.append(
            f"| {name} (published) | {vals['dw4'][0]} | {vals['dw4'][1]} | {vals['lj13'][0]} | "
            f"{vals['lj13'][1]} | – | – |"
        )
    floors = results.get("floors", {})

    def floor(system: str, key: str) -> str:
        return f"{floors[system][key]:.2f}" if system in floors else "–"

    lines.append(
        f"| MCMC vs MCMC (floor, measured) | {floor('dw4', 'x_w2')} | {floor('dw4', 'e_w2')} | "
        f"{floor('lj13', 'x_w2')} | {floor('lj13', 'e_w2')} | {floor('dw4', 'x_w2_plain')} | "
        f"{floor('lj13', 'x_w2_plain')} |"
    )

    def cell(system: str, key: str) -> str:
        s = summary.get(system)
        return "–" if s is None else f"{s[key]:.2f} ± {s[key + '_std']:.2f}"

    lines.append(
        f"| **this repo** (mean ± std over seeds) | {cell('dw4', 'x_w2')} | {cell('dw4', 'e_w2')} | "
        f"{cell('lj13', 'x_w2')} | {cell('lj13', 'e_w2')} | {cell('dw4', 'x_w2_plain')} | "
        f"{cell('lj13', 'x_w2_plain')} |"
    )
    lines += [
        "",
        "Per seed:",
        "",
        "| system | seed | x-W2 | E-W2 | mean E (gen / ref) | rounds | energy calls | "
        "train s | of which sampling s / gradient s | eval sampling s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['system']} | {r['seed']} | {r['x_w2']:.3f} | {r['e_w2']:.3f} | {r['mean_energy']:.2f} / "
            f"{r['reference_mean_energy']:.2f} | {r['rounds']} | {r['energy_calls']} | {r['train_seconds']:.0f} | "
            f"{r['refresh_seconds']:.0f} / {r['gradient_seconds']:.0f} | {r['sample_seconds']:.1f} |"
        )
    for note in results.get("notes", []):
        lines += ["", note]
    lines += ["", f"Versions: {results['versions']}", ""]
    return "\n".join(lines)
