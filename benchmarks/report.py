"""Tables, JSON and plots of the conformer benchmark (``benchmarks/results/conformers_<tag>.*``)."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.coverage import REPORT_THRESHOLDS, SummaryScore, record_score, summarize
from benchmarks.paired import default_pairs, paired_lines, scores_by_dataset

__all__ = ["PUBLISHED", "conformers_per_second", "method_timing", "summaries", "write_corpus_report", "write_report"]

DATASET_TITLES = {"spice_test": "SPICE", "drugs_dev": "GEOM-DRUGS"}

# BENCHMARKS.md, mean over 80 molecules per dataset: recall coverage % / AMR-R Å
# {delta: {method: {column: (cov %, amr)}}}, columns: dataset or dataset + "+relax"
PUBLISHED: dict[float, dict[str, dict[str, tuple[float, float]]]] = {
    1.0: {
        "RDKit ETKDG": {
            "spice_test": (56.9, 1.04),
            "drugs_dev": (50.8, 1.15),
            "spice_test+relax": (70.2, 0.79),
            "drugs_dev+relax": (62.6, 0.93),
        },
        "Adjoint Sampling": {
            "spice_test": (56.8, 0.96),
            "drugs_dev": (36.2, 1.20),
            "spice_test+relax": (82.4, 0.68),
            "drugs_dev+relax": (64.3, 0.89),
        },
        "Adjoint Sampling + RDKit warm-up": {
            "spice_test": (72.2, 0.84),
            "drugs_dev": (52.2, 1.02),
            "spice_test+relax": (87.8, 0.60),
            "drugs_dev+relax": (73.9, 0.76),
        },
    },
    1.25: {
        "RDKit ETKDG": {
            "spice_test": (72.7, 1.04),
            "drugs_dev": (63.5, 1.15),
            "spice_test+relax": (81.6, 0.79),
            "drugs_dev+relax": (71.7, 0.93),
        },
        "Adjoint Sampling": {
            "spice_test": (82.2, 0.96),
            "drugs_dev": (60.9, 1.20),
            "spice_test+relax": (94.1, 0.68),
            "drugs_dev+relax": (79.1, 0.89),
        },
        "Adjoint Sampling + RDKit warm-up": {
            "spice_test": (89.4, 0.84),
            "drugs_dev": (73.0, 1.02),
            "spice_test+relax": (96.7, 0.60),
            "drugs_dev+relax": (87.0, 0.76),
        },
    },
}


def summaries(results: dict[str, Any]) -> dict[str, dict[str, SummaryScore]]:
    """``{dataset: {method: SummaryScore}}`` from :func:`benchmarks.conformers.run`'s results."""
    out: dict[str, dict[str, SummaryScore]] = {}
    for ds in results["datasets"]:
        per_method: dict[str, SummaryScore] = {}
        for name in results["methods"]:
            scores = [record_score(m["methods"][name], results["thresholds"], m["num_refs"]) for m in ds["molecules"]]
            if scores:
                per_method[name] = summarize(scores)
        out[ds["dataset"]] = per_method
    return out


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}"


def _ang(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.2f}"


def method_timing(ds: Mapping[str, Any], name: str) -> dict[str, float]:
    """One method's totals over a dataset's molecules: seconds, conformers scored / generated / requested, ..."""
    recs = [m["methods"][name] for m in ds["molecules"]]
    total = {
        key: float(sum(r.get(key, 0) for r in recs))
        for key in (
            "seconds",
            "refine_seconds",
            "scored",
            "generated",
            "requested",
            "dropped",
            "invalid_structures",
            "not_converged",
            "refine_steps",
        )
    }
    total["failed"] = float(sum(1 for r in recs if r["failed"]))
    return total


def _published_layout(results: dict[str, Any], summ: dict[str, dict[str, SummaryScore]]) -> list[str]:
    """Our rows beside the published table: plain methods in the dataset columns, their ``+relax``
    partners in the ``+relax`` columns."""
    datasets = [d for d in ("spice_test", "drugs_dev") if d in summ]
    cols = [*datasets, *(f"{d}+relax" for d in datasets)]
    head = [DATASET_TITLES[d] for d in datasets] + [f"{DATASET_TITLES[d]} +relax" for d in datasets]
    lines = [
        "| δ | method | " + " | ".join(head) + " |",
        "|---|---|" + "---|" * len(head),
    ]
    names = list(results["methods"])
    bases = [n for n in names if not n.endswith("+relax")]
    for delta in (1.0, 1.25):
        for base in bases:
            cells = []
            for col in cols:
                ds, relax = (col.removesuffix("+relax"), col.endswith("+relax"))
                name = f"{base}+relax" if relax else base
                s = summ.get(ds, {}).get(name)
                cells.append("–" if s is None else f"{_pct(s.at('cov_r_mean', delta))} / {_ang(s.amr_r_mean)}")
            lines.append(f"| {delta} Å | **{base}** (this run) | " + " | ".join(cells) + " |")
        for method, row in PUBLISHED[delta].items():
            cells = [f"{row[c][0]:.1f} / {row[c][1]:.2f}" if c in row else "–" for c in cols]
            lines.append(f"| {delta} Å | {method} (published) | " + " | ".join(cells) + " |")
    return lines


def _dataset_tables(ds: dict[str, Any], summ: dict[str, SummaryScore], methods: dict[str, str]) -> list[str]:
    title = DATASET_TITLES.get(ds["dataset"], ds["dataset"])
    n = len(ds["molecules"])
    lines = [f"### {title} (`{ds['dataset']}`): {n} molecules", ""]
    lines.append("Coverage in % as mean (median) over molecules; AMR in Å over molecules with output.")
    lines.append("")
    head = ["method"]
    head += [f"COV-R {d}" for d in REPORT_THRESHOLDS] + ["AMR-R"]
    head += [f"COV-P {d}" for d in REPORT_THRESHOLDS] + ["AMR-P", "failed"]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name in methods:
        s = summ.get(name)
        if s is None:
            continue
        cells = [name]
        cells += [f"{_pct(s.at('cov_r_mean', d))} ({_pct(s.at('cov_r_median', d))})" for d in REPORT_THRESHOLDS]
        cells.append(f"{_ang(s.amr_r_mean)} ({_ang(s.amr_r_median)})")
        cells += [f"{_pct(s.at('cov_p_mean', d))} ({_pct(s.at('cov_p_median', d))})" for d in REPORT_THRESHOLDS]
        cells.append(f"{_ang(s.amr_p_mean)} ({_ang(s.amr_p_median)})")
        cells.append(f"{s.num_failed}/{s.num_molecules}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += _compactness_lines(ds, methods)
    lines += ["", "Time and output (same run, same machine):", ""]
    lines += [
        "| method | wall s | conformers scored / requested | conformers/s | refine s per conformer "
        "| refine steps per conformer | dropped by refiner | not converged | wrong bonds or stereo "
        "| failed molecules |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        t = method_timing(ds, name)
        rate = conformers_per_second(ds, name)
        per_conf = t["refine_seconds"] / t["generated"] if t["generated"] and t["refine_seconds"] else math.nan
        steps = t["refine_steps"] / t["generated"] if t["generated"] and t["refine_steps"] else math.nan
        lines.append(
            f"| {name} | {t['seconds']:.1f} | {t['scored']:.0f} / {t['requested']:.0f} | {rate:.1f} "
            f"| {'–' if math.isnan(per_conf) else f'{per_conf:.2f}'} | {'–' if math.isnan(steps) else f'{steps:.0f}'} "
            f"| {t['dropped']:.0f} | {t['not_converged']:.0f} | {t['invalid_structures']:.0f} | {t['failed']:.0f} |"
        )
    failures = [
        f"- {m['name']} ({name}): {m['methods'][name]['error'] or 'every conformer dropped'}"
        for m in ds["molecules"]
        for name in methods
        if m["methods"][name]["failed"]
    ]
    if failures:
        lines += ["", "Failures (zero coverage):", "", *failures]
    if ds["reference_failures"]:
        lines += ["", "Reference molecules that could not be read or mapped (not scored):", ""]
        lines += [f"- {f['name']} `{f['smiles']}`: {f['reason']}" for f in ds["reference_failures"]]
    notes = [f"- {m['name']}: {'; '.join(m['notes'])}" for m in ds["molecules"] if m["notes"]]
    if notes:
        lines += ["", "Reference notes:", "", *notes]
    lines.append("")
    return lines


def conformers_per_second(ds: Mapping[str, Any], name: str) -> float:
    """One method's conformers returned per second of its own time over a dataset (``nan`` without time)."""
    t = method_timing(ds, name)
    return t["scored"] / t["seconds"] if t["seconds"] > 0 else math.nan


def _compactness_lines(ds: dict[str, Any], methods: dict[str, str]) -> list[str]:
    """Recall in each third of every reference ensemble by radius of gyration (runs since the fourteenth
    session record it; none for older results)."""
    names = [n for n in methods if all("cov_r_by_rg" in m["methods"].get(n, {}) for m in ds["molecules"])]
    if not names or not ds["molecules"]:
        return []
    lines = [
        "",
        "Recall by compactness: COV-R@1.0 % among each molecule's reference conformers in the most compact, the "
        "middle and the most extended third by heavy-atom radius of gyration (mean over molecules), and the "
        "median over molecules of the method's median R_g minus the references' (Å; > 0: more extended).",
        "",
        "| method | compact third | middle third | extended third | R_g shift |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        by_rg = np.array([m["methods"][name]["cov_r_by_rg"] for m in ds["molecules"]], dtype=np.float64)
        shift = [m["methods"][name]["rg"][1] - m["reference_rg"][1] for m in ds["molecules"]]
        means = np.nanmean(by_rg, axis=0)
        lines.append(
            f"| {name} | {100 * means[0]:.1f} | {100 * means[1]:.1f} | {100 * means[2]:.1f} "
            f"| {np.nanmedian(shift):+.2f} |"
        )
    return lines


def _rmsd_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "## RMSD engine vs RDKit `GetBestRMS`",
        "",
        "Sampled pairs re-computed with `rdMolAlign.GetBestRMS` on hydrogen-free copies in this process; "
        "`GetBestRMS` time for all pairs scored is extrapolated from its time per sampled pair of each molecule; "
        "engine time includes finding the automorphisms. With few reference conformers (quick runs) per-call "
        "overheads dominate both; `conformers_rmsd_speed.md` (`--rmsd-speed`) has the engine's speed figure.",
        "",
        "| dataset | pairs checked | max abs diff (Å) | engine s | GetBestRMS s (est.) | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for ds in results["datasets"]:
        e = ds["rmsd_engine"]
        lines.append(
            f"| {ds['dataset']} | {e['pairs_checked']} | {e['max_abs_diff']:.1e} | {e['seconds']:.2f} "
            f"| {e['getbestrms_seconds_estimate']:.2f} | {e['speedup']:.0f}× |"
        )
    lines.append("")
    return lines


def _plot(results: dict[str, Any], summ: dict[str, dict[str, SummaryScore]], out_dir: Path, tag: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    t = np.asarray(results["thresholds"])
    for ds, per_method in summ.items():
        fig, ax = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for i, (name, s) in enumerate(per_method.items()):
            color = f"C{i}"
            ax[0].plot(t, 100 * s.cov_r_mean, color=color, label=name)
            ax[1].plot(t, 100 * s.cov_p_mean, color=color, label=name)
        published = {"RDKit ETKDG": "k", "Adjoint Sampling": "r"}
        for method, color in published.items():
            for suffix, marker in (("", "o"), ("+relax", "s")):
                xs = [d for d in (1.0, 1.25) if f"{ds}{suffix}" in PUBLISHED[d][method]]
                ys = [PUBLISHED[d][method][f"{ds}{suffix}"][0] for d in xs]
                label = f"{method}{' +relax' if suffix else ''} (published)"
                ax[0].plot(xs, ys, marker, color=color, mfc="none", label=label)
        for a, title in zip(ax, ("COV-R (recall)", "COV-P (precision)"), strict=True):
            a.set_xlabel("RMSD threshold δ (Å)")
            a.set_title(title)
            a.grid(alpha=0.3)
        ax[0].set_ylabel("coverage, mean over molecules (%)")
        ax[0].legend(fontsize=7)
        n = sum(len(d["molecules"]) for d in results["datasets"] if d["dataset"] == ds)
        fig.suptitle(f"{DATASET_TITLES.get(ds, ds)} ({ds}), run '{tag}'" + (f", {n} molecules" if n else ""))
        fig.tight_layout()
        path = out_dir / f"conformers_{tag}_{ds}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _load_note(results: dict[str, Any]) -> str:
    """The machine's 1-minute load average at start and end: timings on a shared machine need it."""
    load = results.get("load_average")
    if not load:
        return ""
    return (
        f" (load average {load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end: "
        "other work shared the cores, so absolute times are pessimistic; methods share the same conditions)"
    )


def _environment() -> dict[str, Any]:
    import os

    import rdkit

    return {
        "python": platform.python_version(),
        "rdkit": rdkit.__version__,
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.uname().machine,
    }


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x)}")


def _paired_section(results: dict[str, Any]) -> list[str]:
    table = paired_lines(scores_by_dataset(results), default_pairs(list(results["methods"])))
    if not table:
        return []
    return [
        "## Paired comparison with the RDKit baselines",
        "",
        "Per molecule, method − baseline (COV-R in percentage points: positive is better; AMR-R in Å: negative is "
        "better), mean over molecules with a 95 % bootstrap interval, and the molecules where the method is better / "
        "equal / worse (`benchmarks/paired.py`).",
        "",
        *table,
        "",
    ]


def write_report(results: dict[str, Any], out_dir: Path, tag: str, command: str) -> list[Path]:
    """Write ``conformers_<tag>.md``, ``.json`` and one ``conformers_<tag>_<dataset>.png`` per dataset."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {**results, "command": command, "environment": _environment()}
    summ = summaries(results)
    cfg = results["config"]
    settings = cfg["settings"]
    lines = [
        f"# Conformer-ensemble benchmark: run '{tag}'",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Protocol: `../shared/docs/BENCHMARKS.md`. At most {cfg['max_refs']} reference conformers per molecule "
        f"(SPICE: the lowest in energy; GEOM-DRUGS: the first in file order), K = {cfg['gen_factor']}·L generated "
        f"per method, heavy-atom RMSD with symmetry, no mirror images, seed {cfg['seed']}, "
        f"{settings['threads']} RDKit thread(s). "
        + (
            f"Molecules: the {cfg['num_molecules']} smallest (atom count) per dataset. "
            if cfg["num_molecules"] is not None
            else ""
        )
        + f"Wall time of the whole run: {results['wall_seconds']:.0f} s on {results['environment']['cpus']} CPUs"
        + _load_note(results)
        + ".",
        "",
        "Methods:",
        "",
        *[f"- `{name}`: {desc}" for name, desc in results["methods"].items()],
        "",
        "## Recall coverage / AMR-R beside the published rows",
        "",
        "COV-R (%) / AMR-R (Å), mean over molecules. Published: 80 molecules per dataset, an eSEN model for "
        "'+relax'; here the datasets of `../shared/data` and the energy model named above.",
        "",
        *_published_layout(results, summ),
        "",
        *_paired_section(results),
        "## All metrics",
        "",
    ]
    for ds in results["datasets"]:
        lines += _dataset_tables(ds, summ.get(ds["dataset"], {}), results["methods"])
    lines += _rmsd_lines(results)
    pngs = _plot(results, summ, out_dir, tag)
    lines += ["Plots: " + ", ".join(f"`{p.name}`" for p in pngs), ""]
    md = out_dir / f"conformers_{tag}.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    js = out_dir / f"conformers_{tag}.json"
    js.write_text(json.dumps(results, indent=1, default=_json_default), encoding="utf-8")
    return [md, js, *pngs]


def write_corpus_report(results: dict[str, Any], out_dir: Path, tag: str, command: str) -> list[Path]:
    """``conformers_<tag>.md`` and ``.json`` for the robustness corpus."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {**results, "command": command, "environment": _environment()}
    cfg = results["config"]
    lines = [
        f"# Conformer generators on the GEOM-DRUGS test SMILES: run '{tag}'",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{results['molecules']} SMILES, {cfg['num_conformers']} conformers requested per molecule and method, "
        f"seed {cfg['seed']}{_load_note(results)}. SMILES that do not parse: {len(results['smiles_errors'])}. "
        "'wrong bonds or stereo': conformers whose perceived bonds or specified stereo differ from the SMILES; "
        "'steric clash': the others with every covalent bond intact but two non-bonded atoms within bonding "
        "distance (returned, and counted here).",
        "",
        "| method | molecules | failed (no conformer) | fewer than requested | conformers | dropped by refiner "
        "| wrong bonds or stereo | steric clash | wall s | conformers/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in results["totals"].items():
        lines.append(
            f"| {name} | {t['molecules']} | {t['failures']} | {t['partial']} | {t['conformers']} | {t['dropped']} "
            f"| {t['invalid']} | {t.get('clashes', 0)} | {t['seconds']:.1f} | {t['conformers_per_s']:.1f} |"
        )
    kinds = results.get("invalid_reasons", {})
    if any(kinds.values()):
        lines += ["", "Wrong bonds or stereo, by kind:", "", "| method | kind | conformers |", "|---|---|---|"]
        for n, by in kinds.items():
            lines += [f"| {n} | {k} | {c} |" for k, c in sorted(by.items(), key=lambda kv: -kv[1])]
    for name, items in results.get("invalid", {}).items():
        if items:
            lines += ["", f"Molecules with wrong conformers, {name} (first 30 of {len(items)}; all in the JSON):", ""]
            lines += [f"- {i['name']} `{i['smiles']}`: " + "; ".join(i["reasons"]) for i in items[:30]]
    for name, fails in results["failures"].items():
        if fails:
            lines += ["", f"Failures of {name}:", ""] + [f"- {f['name']} `{f['smiles']}`: {f['reason']}" for f in fails]
    if results["smiles_errors"]:
        lines += ["", "SMILES errors:", ""] + [f"- {e['name']}: {e['reason']}" for e in results["smiles_errors"]]
    md = out_dir / f"conformers_{tag}.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    js = out_dir / f"conformers_{tag}.json"
    js.write_text(json.dumps(results, indent=1, default=_json_default), encoding="utf-8")
    return [md, js]
