"""``adjoint-sampling sample -i FILE -o OUT``: conformers of every molecule of a ``.smi``/``.sdf``/``.csv`` file.

One output file holds every molecule's conformers (SDF records titled with the input's ID and carrying its SD
properties / CSV columns, or CREST-layout XYZ frames named after the ID); a per-molecule report (CSV) says
what happened to each and a failures file (CSV) gives the reason for each molecule without conformers. A line
that cannot be read, a salt, a refused stereocentre, an element the model does not know: each is one failure
with its reason, never the end of the run. ``--jobs N`` samples N molecules at a time in N processes (one
torch thread each); the output keeps the input's order. A progress bar with an ETA runs over the molecules.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import logging
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from inference.api import ConformerGenerator, Ensemble, conformer_records
from inference.options import PostProcessing
from molecules.inputs import InputError, InputItem, InputRecord
from molecules.rmsd import conformer_coordinates
from molecules.sdf import sdf_text
from molecules.stereo import UnassignedStereoError
from molecules.tags import crest_xyz_text
from molecules.xyz import XyzFrame, xyz_text

__all__ = [
    "BATCH_SUFFIXES",
    "BatchJob",
    "BatchSummary",
    "Outcome",
    "default_side_files",
    "open_output",
    "print_summary",
    "render_ensembles",
    "run_batch",
    "sample_record",
]

log = logging.getLogger("adjoint_sampling")

BATCH_SUFFIXES = (".sdf", ".xyz")
REPORT_COLUMNS = (
    "id",
    "line",
    "smiles",
    "status",
    "stereoisomers",
    "conformers_returned",
    "rejected",
    "duplicates_removed",
    "outside_energy_window",
    "seconds",
    "energy_model",
    "message",
)
FAILURE_COLUMNS = ("id", "line", "smiles", "reason")
STEREO_HINT = " (--stereo enumerate samples each stereoisomer)"


@dataclass(frozen=True, kw_only=True)
class BatchJob:
    """What every worker needs to sample one molecule the way the command line asked (picklable)."""

    checkpoint: Path
    energy_model: str | None
    num_conformers: int
    options: PostProcessing
    seed: int = 0
    steps: int | None = None
    fragments: str = "reject"
    fmax: float = 0.05
    refine_rounds: int = 0
    output: str = "sdf"  # or "xyz"
    device: str = "cpu"


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One input molecule's row of the report, and its conformers rendered in the output format."""

    index: int
    id: str
    line: int
    smiles: str
    status: str  # "ok", "no_conformers" or "failed"
    stereoisomers: int = 0
    returned: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates_removed: int = 0
    outside_energy_window: int = 0
    seconds: float = 0.0
    energy_model: str = ""
    message: str = ""
    text: str = ""

    def report_row(self) -> list[str]:
        rejected = "; ".join(f"{reason}={n}" for reason, n in sorted(self.rejected.items()))
        return [
            self.id,
            str(self.line),
            self.smiles,
            self.status,
            str(self.stereoisomers),
            str(self.returned),
            rejected,
            str(self.duplicates_removed),
            str(self.outside_energy_window),
            f"{self.seconds:.2f}",
            self.energy_model,
            self.message,
        ]


@dataclass(frozen=True)
class BatchSummary:
    molecules: int
    ok: int
    no_conformers: int
    failed: int
    conformers: int
    seconds: float


def default_side_files(out: Path) -> tuple[Path, Path]:
    """``out.sdf`` → ``out.report.csv``, ``out.failures.csv`` (beside the output)."""
    stem = out.name.removesuffix(".gz")
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix else stem
    return out.with_name(f"{stem}.report.csv"), out.with_name(f"{stem}.failures.csv")


def render_ensembles(ensembles: Sequence[Ensemble], output: str) -> str:
    """``sdf``: every conformer's tagged record; ``xyz``: CREST-layout frames named after their molecule."""
    if output == "sdf":
        return sdf_text([record for e in ensembles for record in conformer_records(e.mol)])
    parts = []
    for e in ensembles:
        if not e.num_conformers:
            continue
        symbols = [a.GetSymbol() for a in e.mol.GetAtoms()]
        positions = conformer_coordinates(e.mol)
        if e.energies_ev:
            parts.append(crest_xyz_text(symbols, positions, e.energies_ev, title=e.name))
        else:
            parts.append(xyz_text([XyzFrame(tuple(symbols), p, e.name) for p in positions]))
    return "".join(parts)


def sample_record(generator: ConformerGenerator, job: BatchJob, index: int, item: InputItem, sdf: bool) -> Outcome:
    """One input molecule, never raising: its conformers, or the reason there are none."""
    if isinstance(item, InputError):
        return Outcome(
            index=index,
            id=item.id or f"mol{index + 1}",
            line=item.line,
            smiles="",
            status="failed",
            message=item.message,
        )
    energy_name = job.energy_model or "none"
    base = Outcome(
        index=index, id=item.id, line=item.line, smiles=item.smiles, status="failed", energy_model=energy_name
    )
    start = time.perf_counter()
    try:
        ensembles = generator.generate(
            item.mol if sdf else item.smiles,
            num_conformers=job.num_conformers,
            energy_model=job.energy_model,
            options=job.options,
            seed=job.seed,
            steps=job.steps,
            fragments=job.fragments,
            name=item.id,
            properties=item.properties,
            fmax=job.fmax,
            refine_rounds=job.refine_rounds,
        )
    except Exception as exc:  # one molecule never stops the run: its reason goes to the report
        if isinstance(exc, UnassignedStereoError):
            message = str(exc) + STEREO_HINT
        else:
            message = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        return dataclasses.replace(base, message=message, seconds=time.perf_counter() - start)
    rejected: dict[str, int] = {}
    for e in ensembles:
        for reason, n in e.checks.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + n
    returned = sum(e.num_conformers for e in ensembles)
    message = ""
    if not returned:
        reasons = "; ".join(f"{r} {n}" for r, n in sorted(rejected.items())) or "none scored"
        message = f"no conformer passed the checks ({reasons})"
    return dataclasses.replace(
        base,
        status="ok" if returned else "no_conformers",
        stereoisomers=len(ensembles),
        returned=returned,
        rejected=rejected,
        duplicates_removed=sum(e.checks.duplicates_removed for e in ensembles),
        outside_energy_window=sum(e.checks.outside_energy_window for e in ensembles),
        seconds=time.perf_counter() - start,
        message=message,
        text=render_ensembles(ensembles, job.output),
    )


class _Worker:
    """The per-process state of a ``--jobs`` worker: its generator (models loaded once per process)."""

    generator: ConformerGenerator | None = None
    job: BatchJob | None = None
    sdf: bool = False


def _init_worker(job: BatchJob, sdf: bool) -> None:
    import torch

    torch.set_num_threads(1)
    _Worker.generator = ConformerGenerator(checkpoint=job.checkpoint, device=job.device)
    _Worker.job, _Worker.sdf = job, sdf


def _work(index: int, item: InputItem) -> Outcome:
    assert _Worker.generator is not None and _Worker.job is not None, "worker not initialized"
    return sample_record(_Worker.generator, _Worker.job, index, item, _Worker.sdf)


def _in_process(job: BatchJob, items: Sequence[InputItem], sdf: bool) -> Iterator[Outcome]:
    import torch

    torch.set_num_threads(1)
    with ConformerGenerator(checkpoint=job.checkpoint, device=job.device) as generator:
        for index, item in enumerate(items):
            yield sample_record(generator, job, index, item, sdf)


def _in_pool(job: BatchJob, items: Sequence[InputItem], sdf: bool, jobs: int) -> Iterator[Outcome]:
    """Outcomes as they finish, from ``jobs`` processes (spawned: no torch state is forked)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(job, sdf)) as pool:
        pending: dict[Future[Outcome], int] = {pool.submit(_work, k, item): k for k, item in enumerate(items)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool as exc:
                    item = items[index]
                    yield Outcome(
                        index=index,
                        id=item.id or f"mol{index + 1}",
                        line=item.line,
                        smiles=item.smiles if isinstance(item, InputRecord) else "",
                        status="failed",
                        message=f"the worker process died ({exc}); run this molecule again with --jobs 1",
                    )


def open_output(path: Path) -> IO[str]:
    """A text file for writing, gzip-compressed when the name ends in ``.gz``."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")


def run_batch(
    items: Sequence[InputItem],
    job: BatchJob,
    *,
    out: Path,
    report: Path,
    failures: Path,
    jobs: int = 1,
    sdf_input: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """Sample every item, writing ``out`` (in input order), the report and the failures file as results come."""
    from tqdm import tqdm

    start = time.perf_counter()
    counts = {"ok": 0, "no_conformers": 0, "failed": 0}
    conformers = 0
    waiting: dict[int, Outcome] = {}
    next_index = 0
    outcomes = _in_process(job, items, sdf_input) if jobs <= 1 else _in_pool(job, items, sdf_input, jobs)
    with ExitStack() as stack:
        out_fh = stack.enter_context(open_output(out))
        report_writer = csv.writer(stack.enter_context(open(report, "w", newline="", encoding="utf-8")))
        failure_writer = csv.writer(stack.enter_context(open(failures, "w", newline="", encoding="utf-8")))
        report_writer.writerow(REPORT_COLUMNS)
        failure_writer.writerow(FAILURE_COLUMNS)
        bar = stack.enter_context(tqdm(total=len(items), unit="mol", desc="molecules", disable=not progress))
        for outcome in outcomes:
            counts[outcome.status] += 1
            conformers += outcome.returned
            bar.set_postfix(ok=counts["ok"], failed=counts["failed"] + counts["no_conformers"], refresh=False)
            bar.update(1)
            waiting[outcome.index] = outcome
            while next_index in waiting:  # keep the input's order in every file
                done = waiting.pop(next_index)
                next_index += 1
                out_fh.write(done.text)
                report_writer.writerow(done.report_row())
                if done.status != "ok":
                    failure_writer.writerow([done.id, str(done.line), done.smiles, done.message])
                    log.debug("%s (line %d): %s", done.id, done.line, done.message)
    return BatchSummary(
        molecules=len(items),
        ok=counts["ok"],
        no_conformers=counts["no_conformers"],
        failed=counts["failed"],
        conformers=conformers,
        seconds=time.perf_counter() - start,
    )


def print_summary(summary: BatchSummary, out: Path, report: Path, failures: Path) -> None:
    s = summary
    print(
        f"{s.molecules} molecules in {s.seconds:.1f} s: {s.ok} with conformers ({s.conformers} conformers), "
        f"{s.no_conformers} without a conformer passing the checks, {s.failed} failed",
    )
    print(f"wrote {out}, {report} (per molecule) and {failures} (reasons)")
