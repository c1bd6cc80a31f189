"""Energy-model accuracy against DFT on the SPICE test conformers, and throughput on one drug-sized batch.

For every SPICE test molecule (``spice/spice_test.txt`` + ``spice/conformers/<id>.xyz.gz``: DFT-optimized
conformer ensembles, the comment line the DFT energy in Hartree, atoms in RDKit ``AddHs`` order) each model
computes single points at the reference DFT geometries (no relaxation). Per molecule and model, over the
conformers the model evaluates:

- Spearman's rank correlation of the model's energies with DFT's;
- ``MAE (mean-centred)``: mean over conformers of ``|(E_i − ⟨E⟩) − (E_i^DFT − ⟨E^DFT⟩)|`` in kcal/mol, each
  ensemble's energies taken relative to its own mean. This removes the one free constant per molecule
  (the models' absolute energies are on other scales) in the least-squares-fair way;
- ``MAE (vs DFT minimum)``: the same with energies relative to the conformer that is lowest in DFT,
  ``|(E_i − E_0) − (E_i^DFT − E_0^DFT)|`` over the other conformers: what a ranking by the model gets
  wrong relative to the true global minimum (it carries that one conformer's error into every other).

The ``no model`` row predicts every conformer at the same energy (its mean-centred MAE is the mean absolute
deviation of the DFT energies): the scale against which a model's error reads.

Summaries: mean and median over the molecules every model evaluates completely (the fair comparison), and
per model over every molecule it evaluates. ANI-2xt runs in float64 and float32; the cost of float32 is
reported separately (energy differences to float64 over all its conformers).

Throughput: 64 conformers of one drug-sized test molecule, one thread (torch), xTB in one single-threaded
worker process, median of ``--repeats`` calls after a warm-up call, all models in the same run.

``--max-conformers N`` keeps N conformers per molecule evenly spread over the DFT energy ranks (the whole
range, not just the lowest); the default evaluates every conformer.

Results: ``benchmarks/results/energy_accuracy.{md,json}``; energies already computed are kept in
``energy_accuracy_energies.json`` beside them and reused with ``--resume``.

Reproduce: ``python -m benchmarks.energy_accuracy``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AccuracyConfig", "ModelSpec", "main", "molecule_metrics", "run"]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
NO_MODEL = "no model"


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A row of the table: a label, the registry name and its options."""

    label: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class AccuracyConfig:
    """What the benchmark runs.

    Attributes:
        data_dir: the shared data folder (holds ``spice/``).
        max_conformers: per molecule, evenly spread over the DFT energy ranks; ``None`` for all.
        xtb_workers: worker processes of the xTB models (single-threaded each).
        fairchem_checkpoint: a local fairchem checkpoint; ``None`` leaves fairchem out.
        throughput_conformers: batch size of the throughput measurement.
        repeats: timed calls per model in the throughput measurement.
        out_dir: where the results go.
        resume: reuse energies of an earlier run with the same ``max_conformers``.
    """

    data_dir: Path = DEFAULT_DATA
    max_conformers: int | None = None
    xtb_workers: int = 1
    fairchem_checkpoint: Path | None = None
    throughput_conformers: int = 64
    repeats: int = 3
    out_dir: Path = RESULTS_DIR
    resume: bool = False

    def __post_init__(self) -> None:
        if self.max_conformers is not None and self.max_conformers < 2:
            raise ValueError(f"max_conformers must be >= 2 (a ranking needs two), got {self.max_conformers}")
        for name in ("xtb_workers", "throughput_conformers", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def models(self) -> list[ModelSpec]:
        specs = [
            ModelSpec(label="mmff", name="mmff"),
            ModelSpec(label="xtb (GFN2)", name="xtb", options={"workers": self.xtb_workers, "timeout_s": 600.0}),
            ModelSpec(label="gfn1-xtb", name="gfn1-xtb", options={"workers": self.xtb_workers, "timeout_s": 600.0}),
            ModelSpec(label="ani2xt", name="ani2xt", options={"dtype": "float64"}),
            ModelSpec(label="ani2xt (float32)", name="ani2xt", options={"dtype": "float32"}),
        ]
        if self.fairchem_checkpoint is not None:
            specs.append(
                ModelSpec(label="fairchem", name="fairchem", options={"checkpoint": str(self.fairchem_checkpoint)})
            )
        return specs


# --- data ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ensemble:
    """One molecule: the RDKit molecule with the kept conformers and their DFT energies (Hartree)."""

    name: str
    smiles: str
    mol: Any
    dft_hartree: np.ndarray
    conformers_in_file: int


def spread_ranks(count: int, keep: int | None) -> np.ndarray:
    """``keep`` indices of ``0 … count−1`` evenly spread (first and last included); all if ``keep`` is None."""
    if keep is None or keep >= count:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, keep)).astype(int))


def load_ensembles(config: AccuracyConfig) -> tuple[list[Ensemble], list[tuple[str, str]]]:
    """The SPICE test ensembles (conformers sorted by DFT energy) and the molecules that could not be read."""
    from molecules.references import load_references
    from molecules.structures import with_conformers

    refs = load_references("spice_test", config.data_dir, max_refs=10**9)
    ensembles = []
    for e in refs.ensembles:
        assert e.energies_hartree is not None
        keep = spread_ranks(e.num_conformers, config.max_conformers)
        positions = [e.mol.GetConformer(int(k)).GetPositions() for k in keep]
        mol = with_conformers(e.mol, positions)
        ensembles.append(Ensemble(e.name, e.smiles, mol, e.energies_hartree[keep], e.num_conformers))
    return ensembles, [(f.name, f.reason) for f in refs.failures]


# --- metrics -------------------------------------------------------------------------------------------------------


def molecule_metrics(model_kcal: np.ndarray, dft_kcal: np.ndarray) -> dict[str, float]:
    """Spearman ρ and the two relative-energy MAEs (kcal/mol) of one ensemble (see the module docs)."""
    from scipy.stats import spearmanr

    if model_kcal.shape != dft_kcal.shape or model_kcal.size < 2:
        raise ValueError(f"need two or more paired energies, got {model_kcal.shape} and {dft_kcal.shape}")
    centred = (model_kcal - model_kcal.mean()) - (dft_kcal - dft_kcal.mean())
    ref = int(np.argmin(dft_kcal))
    from_min = (model_kcal - model_kcal[ref]) - (dft_kcal - dft_kcal[ref])
    rho = float(spearmanr(model_kcal, dft_kcal).statistic) if np.ptp(model_kcal) > 0 else float("nan")
    return {
        "spearman": rho,
        "mae_mean_centred": float(np.abs(centred).mean()),
        "mae_vs_dft_min": float(np.abs(np.delete(from_min, ref)).mean()),
    }


def _stats(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "median": float("nan"), "n": 0}
    return {"mean": statistics.fmean(finite), "median": statistics.median(finite), "n": len(finite)}


# --- running the models -------------------------------------------------------------------------------------------


def _evaluate(spec: ModelSpec, ensembles: list[Ensemble]) -> dict[str, Any]:
    """Energies (eV, ``None`` where invalid) per molecule, the first invalid reason, and the wall time."""
    from energy.registry import build_energy_model
    from molecules.structures import conformer_structures

    model = build_energy_model(spec.name, **spec.options)
    out: dict[str, Any] = {"energies_ev": {}, "reasons": {}, "seconds": 0.0}
    start = time.perf_counter()
    try:
        for k, e in enumerate(ensembles):
            result = model.evaluate(conformer_structures(e.mol))
            energies = result.energies.detach().cpu().double().numpy()
            valid = result.valid.cpu().numpy()
            out["energies_ev"][e.name] = [float(v) if ok else None for v, ok in zip(energies, valid, strict=True)]
            bad = [r for r in result.reasons if r is not None]
            if bad:
                out["reasons"][e.name] = f"{len(bad)} of {len(bad) + int(valid.sum())} invalid: {bad[0]}"
            log.info(
                "%s: %d/%d %s (%d conformers, %d invalid, %.0f s so far)",
                spec.label,
                k + 1,
                len(ensembles),
                e.name,
                e.mol.GetNumConformers(),
                len(bad),
                time.perf_counter() - start,
            )
    finally:
        close = getattr(model, "close", None)
        if close is not None:
            close()
    out["seconds"] = time.perf_counter() - start
    return out


def _throughput(specs: list[ModelSpec], ensembles: list[Ensemble], config: AccuracyConfig) -> dict[str, Any]:
    """Conformers per second of each model on one batch of one drug-sized molecule, all in this run."""
    import torch
    from rdkit import Chem

    from energy.registry import build_energy_model
    from molecules.references import load_references
    from molecules.structures import conformer_structures

    count = config.throughput_conformers
    organic = {"H", "C", "N", "O", "F", "S", "Cl"}
    candidates = [
        e
        for e in ensembles
        if e.conformers_in_file >= count
        and {a.GetSymbol() for a in e.mol.GetAtoms()} <= organic
        and Chem.GetFormalCharge(e.mol) == 0
    ]
    if not candidates:
        return {"skipped": f"no molecule with {count} conformers"}
    pick = min(candidates, key=lambda e: (abs(e.mol.GetNumHeavyAtoms() - 25), e.name))
    mol = load_references("spice_test", config.data_dir, max_refs=count, names=[pick.name]).ensembles[0].mol
    batch = conformer_structures(mol)
    rates: dict[str, Any] = {}
    for spec in specs:
        model = build_energy_model(spec.name, **spec.options)
        try:
            model.evaluate(batch)  # warm-up: worker start, caches
            times = []
            for _ in range(config.repeats):
                t0 = time.perf_counter()
                result = model.evaluate(batch)
                times.append(time.perf_counter() - t0)
            seconds = statistics.median(times)
            rates[spec.label] = {
                "seconds_per_batch": seconds,
                "conformers_per_s": count / seconds,
                "valid": int(result.valid.sum()),
            }
            log.info("throughput %s: %.1f conformers/s", spec.label, count / seconds)
        finally:
            close = getattr(model, "close", None)
            if close is not None:
                close()
    return {
        "molecule": pick.name,
        "smiles": pick.smiles,
        "atoms": mol.GetNumAtoms(),
        "heavy_atoms": mol.GetNumHeavyAtoms(),
        "conformers": count,
        "torch_threads": torch.get_num_threads(),
        "rates": rates,
    }


def _float32_cost(energies: dict[str, Any], ensembles: list[Ensemble]) -> dict[str, float]:
    """ANI-2xt float32 vs float64 on every conformer both evaluate: absolute and relative energy differences."""
    from energy.units import KCAL_PER_MOL_IN_EV

    f64, f32 = energies["ani2xt"]["energies_ev"], energies["ani2xt (float32)"]["energies_ev"]
    diffs, rel_mae, rel_max = [], [], []
    for e in ensembles:
        pairs = [(a, b) for a, b in zip(f64[e.name], f32[e.name], strict=True) if a is not None and b is not None]
        if len(pairs) < 2:
            continue
        a, b = np.array(pairs).T
        diffs.append(np.abs(b - a))
        rel = np.abs((b - b.mean()) - (a - a.mean())) / KCAL_PER_MOL_IN_EV
        rel_mae.append(float(rel.mean()))
        rel_max.append(float(rel.max()))
    all_diffs = np.concatenate(diffs) if diffs else np.array([np.nan])
    return {
        "conformers": int(all_diffs.size),
        "molecules": len(rel_mae),
        "max_abs_ev": float(all_diffs.max()),
        "mean_abs_ev": float(all_diffs.mean()),
        "relative_mae_kcal": statistics.fmean(rel_mae) if rel_mae else float("nan"),
        "relative_max_kcal": max(rel_max) if rel_max else float("nan"),
    }


def _metrics(energies: dict[str, Any], ensembles: list[Ensemble]) -> dict[str, Any]:
    """Per molecule and model metrics; summaries over the common molecules and per model."""
    from energy.units import HARTREE_EV, KCAL_PER_MOL_IN_EV

    labels = list(energies)
    per_molecule: dict[str, dict[str, Any]] = {}
    complete: dict[str, set[str]] = {label: set() for label in labels}
    for e in ensembles:
        dft = e.dft_hartree * HARTREE_EV / KCAL_PER_MOL_IN_EV
        row: dict[str, Any] = {
            "conformers": int(dft.size),
            "dft_std_kcal": float(dft.std()),
            NO_MODEL: molecule_metrics(np.zeros_like(dft), dft) if dft.size >= 2 else None,
        }
        for label in labels:
            values = energies[label]["energies_ev"][e.name]
            ok = np.array([v is not None for v in values])
            if ok.all():
                complete[label].add(e.name)
            if ok.sum() < 2:
                row[label] = None
                continue
            model = np.array([v for v in values if v is not None]) / KCAL_PER_MOL_IN_EV
            row[label] = {**molecule_metrics(model, dft[ok]), "evaluated": int(ok.sum())}
        per_molecule[e.name] = row
    common = sorted(set.intersection(*complete.values())) if labels else []
    common = [name for name in common if per_molecule[name]["conformers"] >= 2]

    def summary(label: str, names: list[str]) -> dict[str, Any]:
        rows = [per_molecule[n][label] for n in names if per_molecule[n][label] is not None]
        return {key: _stats([r[key] for r in rows]) for key in ("spearman", "mae_mean_centred", "mae_vs_dft_min")}

    own = {label: [n for n in per_molecule if per_molecule[n][label] is not None] for label in labels}
    return {
        "per_molecule": per_molecule,
        "common_molecules": common,
        "summary_common": {label: summary(label, common) for label in [NO_MODEL, *labels]},
        "summary_own": {label: {**summary(label, own[label]), "molecules": len(own[label])} for label in labels},
    }


def run(config: AccuracyConfig, command: str) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    ensembles, failures = load_ensembles(config)
    log.info("%d SPICE test molecules, %d conformers", len(ensembles), sum(e.mol.GetNumConformers() for e in ensembles))
    cache_path = config.out_dir / "energy_accuracy_energies.json"
    cached: dict[str, Any] = {}
    if config.resume and cache_path.is_file():
        stored = json.loads(cache_path.read_text())
        if stored.get("max_conformers") == config.max_conformers:
            cached = stored["models"]
    specs = config.models()
    energies: dict[str, Any] = {}
    for spec in specs:
        key = f"{spec.label}|{json.dumps({k: v for k, v in spec.options.items() if k != 'workers'}, sort_keys=True)}"
        if key in cached:
            log.info("%s: reusing energies from %s", spec.label, cache_path)
            energies[spec.label] = cached[key]
        else:
            energies[spec.label] = cached[key] = _evaluate(spec, ensembles)
            config.out_dir.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps({"max_conformers": config.max_conformers, "models": cached}))
        log.info("%s: all single points in %.0f s", spec.label, energies[spec.label]["seconds"])
    results = {
        "command": command,
        "max_conformers": config.max_conformers,
        "molecules": len(ensembles),
        "conformers": sum(e.mol.GetNumConformers() for e in ensembles),
        "failures": failures,
        "models": [{"label": s.label, "name": s.name, "options": s.options} for s in specs],
        "seconds": {label: v["seconds"] for label, v in energies.items()},
        "reasons": {label: v["reasons"] for label, v in energies.items()},
        **_metrics(energies, ensembles),
        "float32_cost": _float32_cost(energies, ensembles),
        "throughput": _throughput(specs, ensembles, config),
    }
    config.out_dir.mkdir(parents=True, exist_ok=True)
    (config.out_dir / "energy_accuracy.json").write_text(json.dumps(results, indent=1, allow_nan=True))
    (config.out_dir / "energy_accuracy.md").write_text(markdown(results))
    return results


# --- report --------------------------------------------------------------------------------------------------------


def _f(value: float, digits: int = 2) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _summary_table(summary: dict[str, Any], with_count: bool) -> list[str]:
    head = "| model | " + ("molecules | " if with_count else "")
    head += "Spearman ρ mean | ρ median | MAE mean-centred mean | median | MAE vs DFT min mean | median |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for label, s in summary.items():
        count = f"{s['molecules']} | " if with_count else ""
        lines.append(
            f"| {label} | {count}{_f(s['spearman']['mean'], 3)} | {_f(s['spearman']['median'], 3)} | "
            f"{_f(s['mae_mean_centred']['mean'])} | {_f(s['mae_mean_centred']['median'])} | "
            f"{_f(s['mae_vs_dft_min']['mean'])} | {_f(s['mae_vs_dft_min']['median'])} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    sub = results["max_conformers"]
    lines = [
        "# Energy models vs DFT on the SPICE test conformers",
        "",
        f"Reproduce: `{results['command']}`",
        "",
        f"{results['molecules']} molecules, {results['conformers']} DFT conformers"
        + (f" (at most {sub} per molecule, spread over the DFT energy ranks)" if sub else " (all of them)")
        + "; single points at the DFT geometries. Energies relative within each ensemble, kcal/mol. "
        "**MAE mean-centred**: each ensemble relative to its own mean (removes the one free constant "
        "per molecule; the fair number). **MAE vs DFT min**: relative to the conformer lowest in DFT. "
        "`no model` predicts all conformers equal.",
        "",
        f"DFT spread: the median molecule's conformer energies have a standard deviation of "
        f"{statistics.median(r['dft_std_kcal'] for r in results['per_molecule'].values()):.2f} kcal/mol.",
        "",
        f"## Over the {len(results['common_molecules'])} molecules every model evaluates completely",
        "",
        *_summary_table(results["summary_common"], with_count=False),
        "",
        "## Per model, over every molecule it evaluates",
        "",
        *_summary_table(results["summary_own"], with_count=True),
        "",
    ]
    cost = results["float32_cost"]
    lines += [
        "## ANI-2xt: what float32 costs (vs float64, same conformers)",
        "",
        f"{cost['conformers']} conformers of {cost['molecules']} molecules: max |ΔE| {cost['max_abs_ev']:.2e} eV, "
        f"mean |ΔE| {cost['mean_abs_ev']:.2e} eV; relative energies (mean-centred): MAE "
        f"{cost['relative_mae_kcal']:.2e} kcal/mol, max {cost['relative_max_kcal']:.2e} kcal/mol.",
        "",
    ]
    tp = results["throughput"]
    if "skipped" in tp:
        lines += ["## Throughput", "", f"skipped: {tp['skipped']}", ""]
    else:
        lines += [
            "## Throughput (one thread; xTB in one single-threaded worker process)",
            "",
            f"{tp['conformers']} conformers of {tp['molecule']} (`{tp['smiles']}`, {tp['atoms']} atoms, "
            f"{tp['heavy_atoms']} heavy), median of the timed calls after a warm-up call.",
            "",
            "| model | conformers/s | s per batch | whole benchmark (s) |",
            "|---|---|---|---|",
        ]
        for label, r in tp["rates"].items():
            lines.append(
                f"| {label} | {r['conformers_per_s']:.1f} | {r['seconds_per_batch']:.3f} | "
                f"{results['seconds'][label]:.0f} |"
            )
        lines.append("")
    by_reason: dict[tuple[str, str], list[str]] = {}
    for label, rs in results["reasons"].items():
        for name, reason in rs.items():
            by_reason.setdefault((name, reason), []).append(label)
    notes = [f"- {name} ({', '.join(labels)}): {reason}" for (name, reason), labels in by_reason.items()]
    if notes or results["failures"]:
        lines += ["## Invalid structures and unreadable molecules", ""]
        lines += notes + [f"- unreadable {name}: {reason}" for name, reason in results["failures"]]
        lines.append("")
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.energy_accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--max-conformers", type=int, default=None, help="per molecule, spread over the DFT ranks (default: all)"
    )
    parser.add_argument("--xtb-workers", type=int, default=1, help="xTB worker processes (default 1)")
    parser.add_argument("--fairchem-checkpoint", type=Path, default=None, help="local fairchem checkpoint (optional)")
    parser.add_argument("--throughput-conformers", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed throughput calls per model (default 3)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--resume", action="store_true", help="reuse energies cached by an earlier run")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # --resume only reuses energies already computed: the command that reproduces the results leaves it out
    shown = [shlex.quote(a) for a in argv if a != "--resume"]
    command = " ".join(["python -m benchmarks.energy_accuracy", *shown])
    config = AccuracyConfig(
        data_dir=args.data_dir,
        max_conformers=args.max_conformers,
        xtb_workers=args.xtb_workers,
        fairchem_checkpoint=args.fairchem_checkpoint,
        throughput_conformers=args.throughput_conformers,
        repeats=args.repeats,
        out_dir=args.out_dir,
        resume=args.resume,
    )
    results = run(config, command)
    sys.stdout.write(markdown(results) + "\n")  # the table is the output
    return 0


if __name__ == "__main__":
    sys.exit(main())
