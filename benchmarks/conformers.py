"""Conformer-ensemble benchmark against reference ensembles (the published Adjoint Sampling protocol).

For every molecule with ``L`` reference conformers (at most ``max_refs``), every method makes
``K = 2L`` conformers in the same run on the same machine; each is scored from the ``L × K`` heavy-atom
RMSD matrix (:mod:`molecules.rmsd`) by COV-R/COV-P over the threshold grid and AMR-R/AMR-P
(:mod:`benchmarks.coverage`). Methods sharing a generator share its conformers (generated once per
molecule), and a method's wall time includes its generator's. Alongside, the RMSD engine is checked
against RDKit's ``GetBestRMS`` on sampled pairs and their speeds compared.

``--corpus`` runs the generators over the GEOM-DRUGS test SMILES instead (no references): failures,
invalid outputs and time only.

Reproduce: ``adjoint-sampling bench conformers --quick --relax-workers 2`` (a minute on an idle 2-core machine)
or ``adjoint-sampling bench conformers`` (the full protocol: with GFN2-xTB relaxation about two days on two idle
cores; ``--max-refs 32`` about eight hours; see ``benchmarks/results/conformers_summary.md``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdMolAlign
from tqdm import tqdm

from benchmarks.coverage import THRESHOLDS, EnsembleScore, failed_score, recall_by_group, score_matrix
from benchmarks.methods import Method, MethodSettings, build_methods
from benchmarks.options import QUICK_MAX_REFS, QUICK_NUM_MOLECULES
from molecules.references import CORPUS_FILE, DATASETS, ReferenceEnsemble, load_references, read_corpus, read_index
from molecules.rmsd import HeavyAtomRmsd, RmsdConfig, conformer_coordinates, warm_up
from molecules.shape import radius_of_gyration, rg_terciles
from molecules.smiles import SmilesError, mol_from_smiles
from molecules.validity import check_conformer, stereo_spec

__all__ = ["QUICK", "BenchConfig", "CorpusConfig", "run", "run_corpus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One benchmark run.

    Attributes:
        datasets: ``spice_test`` and/or ``drugs_dev``.
        methods: names in :data:`benchmarks.methods.METHODS`.
        max_refs: at most this many reference conformers per molecule (the published protocol: 512).
        num_molecules: keep the ``N`` smallest molecules (by atom count) per dataset; ``None``: all.
        molecules: keep only these names (file stems); ``None``: all.
        seed: RDKit ``randomSeed`` (and every generator's seed); 0 is refused (identical conformers).
        gen_factor: ``K = gen_factor × L`` (2 in the protocol).
        rmsd_check_pairs: pairs per molecule re-computed with ``GetBestRMS`` (agreement and speed).
        settings: method options (threads, relaxation).
        rmsd: RMSD engine options.
        tag: output file stem suffix (``conformers_<tag>.md`` …).
    """

    datasets: tuple[str, ...] = ("drugs_dev", "spice_test")
    methods: tuple[str, ...] = ("rdkit", "rdkit+mmff", "rdkit+relax")
    max_refs: int = 512
    num_molecules: int | None = None
    molecules: tuple[str, ...] | None = None
    seed: int = 42
    gen_factor: int = 2
    rmsd_check_pairs: int = 100
    settings: MethodSettings = field(default_factory=MethodSettings)
    rmsd: RmsdConfig = field(default_factory=RmsdConfig)
    tag: str = "full"

    def __post_init__(self) -> None:
        if self.max_refs < 1:
            raise ValueError(f"max_refs must be at least 1, got {self.max_refs}")
        if self.num_molecules is not None and self.num_molecules < 1:
            raise ValueError(f"num_molecules must be at least 1, got {self.num_molecules}")
        if self.seed == 0:
            raise ValueError("seed 0 makes RDKit's EmbedMultipleConfs return identical conformers; use another")
        if self.gen_factor < 1:
            raise ValueError(f"gen_factor must be at least 1, got {self.gen_factor}")
        if not self.methods:
            raise ValueError("no methods given")


QUICK = BenchConfig(num_molecules=QUICK_NUM_MOLECULES, max_refs=QUICK_MAX_REFS, rmsd_check_pairs=50, tag="quick")


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    """The robustness run over the GEOM-DRUGS test SMILES: ``num_conformers`` per molecule per method,
    the first ``limit`` SMILES (``None``: all 1000)."""

    methods: tuple[str, ...] = ("rdkit", "rdkit+mmff")
    num_conformers: int = 10
    limit: int | None = None
    seed: int = 42
    settings: MethodSettings = field(default_factory=MethodSettings)
    tag: str = "corpus"

    def __post_init__(self) -> None:
        if self.num_conformers < 1:
            raise ValueError(f"num_conformers must be at least 1, got {self.num_conformers}")
        if self.seed == 0:
            raise ValueError("seed 0 makes RDKit's EmbedMultipleConfs return identical conformers; use another")


@dataclass(frozen=True)
class _Output:
    """One method's conformers for one molecule, with the counts the report needs."""

    mol: Chem.Mol
    requested: int
    generated: int
    seconds: float
    generate_seconds: float
    refine_seconds: float
    dropped: tuple[str, ...]
    not_converged: int
    error: str | None
    refine_steps: int = 0


def _generate_all(methods: Sequence[Method], mol: Chem.Mol, k: int, seed: int) -> dict[str, _Output]:
    """Run every method on one molecule; equal generators (``==``) run once and share their conformers."""
    cache: list[tuple[Any, tuple[Chem.Mol | None, float, str | None]]] = []
    empty = Chem.Mol(mol)
    empty.RemoveAllConformers()
    out: dict[str, _Output] = {}
    for method in methods:
        hit = [value for gen, value in cache if gen == method.generator]
        if hit:
            generated, gen_s, error = hit[0]
        else:
            start = time.perf_counter()
            try:
                generated, error = method.generator.generate(mol, k, seed), None
            except Exception as exc:  # a generator failing on one molecule must not stop the run
                log.warning("%s failed: %s", method.name, exc)
                generated, error = None, f"{type(exc).__name__}: {exc}"
            gen_s = time.perf_counter() - start
            cache.append((method.generator, (generated, gen_s, error)))
        if generated is None:
            out[method.name] = _Output(empty, k, 0, gen_s, gen_s, 0.0, (), 0, error)
            continue
        n_gen = generated.GetNumConformers()
        result, refine_s, not_conv, steps = generated, 0.0, 0, 0
        dropped: tuple[str, ...] = ()
        if method.refiner is not None and n_gen:
            start = time.perf_counter()
            try:
                refined = method.refiner.refine(generated)
                result, dropped, not_conv, steps = refined.mol, refined.reasons, refined.not_converged, refined.steps
            except Exception as exc:  # e.g. the energy model cannot treat this molecule
                log.warning("%s failed: %s", method.name, exc)
                result, error = empty, f"{type(exc).__name__}: {exc}"
                dropped = (error,) * n_gen
            refine_s = time.perf_counter() - start
        if n_gen == 0 and error is None:
            error = "the generator produced no conformers"
        out[method.name] = _Output(result, k, n_gen, gen_s + refine_s, gen_s, refine_s, dropped, not_conv, error, steps)
    return out


def _rg_percentiles(rg: np.ndarray) -> list[float]:
    """10th, 50th and 90th percentiles of radii of gyration (Å); ``nan`` for none."""
    return np.percentile(rg, [10, 50, 90]).tolist() if len(rg) else [math.nan] * 3


def _check(mol: Chem.Mol) -> tuple[list[str], int]:
    """Reasons (connectivity, stereo) for the conformers that are not the molecule asked for, and how many of
    the others have a steric clash (every covalent bond intact, two non-bonded atoms within bonding distance)."""
    spec = stereo_spec(mol)
    reasons = []
    clashes = 0
    for conf in mol.GetConformers():
        c = check_conformer(mol, conf.GetPositions(), spec, allow_clashes=True)
        if c.reflected:
            reasons.append("stereo: the mirror image (every stereocentre inverted)")
        elif not c.ok:
            reasons.append(c.reason or "invalid")
        elif c.clash is not None:
            clashes += 1
    return reasons, clashes


def _reason_kind(reason: str) -> str:
    """The kind of a :func:`_check` reason, for counting."""
    if reason.startswith("stereo: the mirror image"):
        return "stereo: mirror image"
    if reason.startswith("stereo"):
        centres, bonds = "stereocentres" in reason, "double bonds" in reason
        both = "centres and double bonds"
        return "stereo: " + (both if centres and bonds else "centres" if centres else "double bonds")
    return reason.split(":")[0]


def _record(out: _Output, score: EnsembleScore, check: tuple[list[str], int]) -> dict[str, Any]:
    wrong, clashes = check
    produced = out.mol.GetNumConformers()
    return {
        "requested": out.requested,
        "generated": out.generated,
        "scored": produced,
        "dropped": len(out.dropped),
        "dropped_reasons": sorted(set(out.dropped))[:5],
        "not_converged": out.not_converged,
        "refine_steps": out.refine_steps,
        "invalid_structures": len(wrong),
        "invalid_reasons": sorted(set(wrong))[:5],
        "clashes": clashes,
        "seconds": out.seconds,
        "generate_seconds": out.generate_seconds,
        "refine_seconds": out.refine_seconds,
        "conformers_per_s": produced / out.seconds if out.seconds > 0 else math.nan,
        "failed": score.failed,
        "error": out.error,
        "cov_r": score.cov_r.tolist(),
        "cov_p": score.cov_p.tolist(),
        "amr_r": score.amr_r,
        "amr_p": score.amr_p,
    }


def _rdkit_check(
    engine: HeavyAtomRmsd, ref: Chem.Mol, gen: Chem.Mol, d: np.ndarray, pairs: int, rng: np.random.Generator
) -> dict[str, Any]:
    """``GetBestRMS`` on sampled pairs (hydrogen-free copies, as the protocol): agreement and time per pair."""
    num_ref, num_gen = d.shape
    if pairs <= 0 or num_gen == 0:
        return {"pairs": 0}
    ref_h, gen_h = Chem.RemoveHs(ref), Chem.RemoveHs(gen)
    ref_ids = [c.GetId() for c in ref_h.GetConformers()]
    gen_ids = [c.GetId() for c in gen_h.GetConformers()]
    flat = rng.choice(num_ref * num_gen, size=min(pairs, num_ref * num_gen), replace=False)
    ls, ks = np.divmod(flat, num_gen)
    start = time.perf_counter()
    values = [
        rdMolAlign.GetBestRMS(gen_h, ref_h, gen_ids[k], ref_ids[r], maxMatches=engine.config.max_mappings)
        for r, k in zip(ls.tolist(), ks.tolist(), strict=True)
    ]
    seconds = time.perf_counter() - start
    return {
        "pairs": len(values),
        "seconds_per_pair": seconds / len(values),
        "max_abs_diff": float(np.max(np.abs(np.array(values) - d[ls, ks]))),
    }


def _select(ensembles: Sequence[ReferenceEnsemble], config: BenchConfig) -> list[ReferenceEnsemble]:
    chosen = list(ensembles)
    if config.num_molecules is not None:
        chosen = sorted(chosen, key=lambda e: (e.mol.GetNumAtoms(), e.name))[: config.num_molecules]
    return chosen


def _names_by_dataset(config: BenchConfig, data_dir: Path) -> dict[str, tuple[str, ...] | None]:
    """``--molecules`` split over the datasets (names are file stems); a name found in none is an error."""
    if config.molecules is None:
        return dict.fromkeys(config.datasets)
    found: dict[str, tuple[str, ...] | None] = {}
    for ds in config.datasets:
        index = {row.name for row in read_index(Path(data_dir) / DATASETS[ds][0])}
        found[ds] = tuple(n for n in config.molecules if n in index)
    missing = set(config.molecules) - {n for names in found.values() for n in names or ()}
    if missing:
        raise ValueError(f"molecules not in {list(config.datasets)}: {sorted(missing)}")
    return found


def _run_dataset(
    dataset: str, methods: Sequence[Method], config: BenchConfig, data_dir: Path, names: tuple[str, ...] | None
) -> dict[str, Any]:
    refs = load_references(dataset, data_dir, max_refs=config.max_refs, names=names)
    chosen = _select(refs.ensembles, config)
    rng = np.random.default_rng(config.seed)
    molecules: list[dict[str, Any]] = []
    engine_seconds = 0.0
    rdkit_seconds_estimate = 0.0
    checks: list[dict[str, Any]] = []
    for ens in tqdm(chosen, desc=dataset, unit="mol"):
        num_ref = ens.num_conformers
        k = config.gen_factor * num_ref
        outputs = _generate_all(methods, ens.mol, k, config.seed)
        start = time.perf_counter()
        engine = HeavyAtomRmsd(ens.mol, config.rmsd)
        engine_seconds += time.perf_counter() - start
        ref_xyz = conformer_coordinates(ens.mol)
        ref_rg = radius_of_gyration(ens.mol, ref_xyz)
        compactness = rg_terciles(ref_rg)
        record: dict[str, Any] = {
            "name": ens.name,
            "smiles": ens.smiles,
            "rotatable_bonds": ens.rotatable_bonds,
            "num_atoms": ens.mol.GetNumAtoms(),
            "num_heavy_atoms": ens.num_heavy_atoms,
            "num_refs": num_ref,
            "frames_in_file": ens.frames_in_file,
            "num_mappings": engine.num_mappings,
            "reference_rg": _rg_percentiles(ref_rg),
            "notes": list(ens.notes),
            "methods": {},
        }
        check: dict[str, Any] = {"pairs": 0}
        pairs_scored = 0
        for method in methods:
            out = outputs[method.name]
            start = time.perf_counter()
            gen_xyz = conformer_coordinates(out.mol)
            d = engine.matrix(ref_xyz, gen_xyz)
            engine_seconds += time.perf_counter() - start
            pairs_scored += d.size
            if not check["pairs"] and d.size:
                check = _rdkit_check(engine, ens.mol, out.mol, d, config.rmsd_check_pairs, rng)
                if check["pairs"]:
                    checks.append({"molecule": ens.name, "method": method.name, **check})
            score = score_matrix(d) if d.shape[1] else failed_score(num_ref)
            record["methods"][method.name] = _record(out, score, _check(out.mol))
            record["methods"][method.name]["rg"] = _rg_percentiles(radius_of_gyration(ens.mol, gen_xyz))
            record["methods"][method.name]["cov_r_by_rg"] = recall_by_group(d, compactness, 3)
        if check["pairs"]:
            rdkit_seconds_estimate += check["seconds_per_pair"] * pairs_scored
        molecules.append(record)
    return {
        "dataset": dataset,
        "reference_failures": [{"name": f.name, "smiles": f.smiles, "reason": f.reason} for f in refs.failures],
        "molecules_available": len(refs.ensembles),
        "molecules": molecules,
        "rmsd_engine": {
            "seconds": engine_seconds,
            "getbestrms_seconds_estimate": rdkit_seconds_estimate,
            "speedup": rdkit_seconds_estimate / engine_seconds if engine_seconds > 0 else math.nan,
            "max_abs_diff": max((c["max_abs_diff"] for c in checks), default=math.nan),
            "pairs_checked": sum(c["pairs"] for c in checks),
            "checks": checks,
        },
    }


def run(config: BenchConfig, data_dir: Path) -> dict[str, Any]:
    """Score every method on every dataset; returns the JSON-ready results (see :mod:`benchmarks.report`)."""
    methods = build_methods(config.methods, config.settings)
    warm_up(config.rmsd.backend)
    started = time.time()
    load_start = os.getloadavg()
    try:
        names = _names_by_dataset(config, data_dir)
        datasets = [
            _run_dataset(ds, methods, config, data_dir, names[ds])
            for ds in config.datasets
            if names[ds] is None or names[ds]  # skip a dataset none of --molecules belongs to
        ]
    finally:
        for m in methods:
            if m.refiner is not None:
                m.refiner.close()
    return {
        "config": _config_dict(config),
        "methods": {m.name: m.description for m in methods},
        "thresholds": list(THRESHOLDS),
        "started_unix": started,
        "wall_seconds": time.time() - started,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "datasets": datasets,
    }


def run_corpus(config: CorpusConfig, data_dir: Path) -> dict[str, Any]:
    """Generators over the GEOM-DRUGS test SMILES: SMILES errors, failures, invalid outputs, time."""
    entries = read_corpus(Path(data_dir) / CORPUS_FILE)
    if config.limit is not None:
        entries = entries[: config.limit]
    methods = build_methods(config.methods, config.settings)
    totals = {
        m.name: {
            "molecules": 0,
            "failures": 0,
            "partial": 0,
            "conformers": 0,
            "dropped": 0,
            "invalid": 0,
            "seconds": 0.0,
        }
        for m in methods
    }
    smiles_errors: list[dict[str, str]] = []
    failures: dict[str, list[dict[str, str]]] = {m.name: [] for m in methods}
    reasons: dict[str, dict[str, int]] = {m.name: {} for m in methods}
    invalid: dict[str, list[dict[str, Any]]] = {m.name: [] for m in methods}
    started = time.time()
    load_start = os.getloadavg()
    try:
        for entry in tqdm(entries, desc="corpus", unit="mol"):
            try:
                mol = mol_from_smiles(entry.smiles)
            except SmilesError as exc:
                smiles_errors.append({"name": entry.name, "smiles": entry.smiles, "reason": str(exc)})
                continue
            outputs = _generate_all(methods, mol, config.num_conformers, config.seed)
            for m in methods:
                out, t = outputs[m.name], totals[m.name]
                produced = out.mol.GetNumConformers()
                t["molecules"] += 1
                t["seconds"] += out.seconds
                t["conformers"] += produced
                t["dropped"] += len(out.dropped)
                wrong, clashes = _check(out.mol)
                t["invalid"] += len(wrong)
                t["clashes"] = t.get("clashes", 0) + clashes
                for why in wrong:
                    kind = _reason_kind(why)
                    reasons[m.name][kind] = reasons[m.name].get(kind, 0) + 1
                if wrong:
                    invalid[m.name].append({"name": entry.name, "smiles": entry.smiles, "reasons": wrong})
                if produced == 0:
                    t["failures"] += 1
                    failures[m.name].append(
                        {"name": entry.name, "smiles": entry.smiles, "reason": out.error or "all dropped"}
                    )
                elif produced < config.num_conformers:
                    t["partial"] += 1
    finally:
        for m in methods:
            if m.refiner is not None:
                m.refiner.close()
    for t in totals.values():
        t["conformers_per_s"] = t["conformers"] / t["seconds"] if t["seconds"] > 0 else math.nan
    return {
        "config": _config_dict(config),
        "methods": {m.name: m.description for m in methods},
        "molecules": len(entries),
        "smiles_errors": smiles_errors,
        "totals": totals,
        "failures": failures,
        "invalid_reasons": reasons,
        "invalid": invalid,
        "wall_seconds": time.time() - started,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
    }


def _config_dict(config: Any) -> dict[str, Any]:
    import dataclasses

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(config)
