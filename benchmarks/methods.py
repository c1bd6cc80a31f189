"""Conformer-generation methods of the benchmark: a generator, optionally followed by a refiner.

A :class:`Method` pairs a :class:`ConformerGenerator` (ETKDG; the Adjoint Sampling model once it exists)
with an optional :class:`Refiner` (RDKit's MMFF94 optimizer, or a local relaxation with any energy
model of :mod:`energy.registry`). Methods sharing a generator share its conformers within a run (the
benchmark runner generates once per molecule and generator), so "RDKit" and "RDKit + relax" are
scored on the same starting conformers and the relaxed method's time includes the generation.

New methods register a factory by name::

    register_method("adjoint", lambda s: Method("adjoint", AdjointGenerator(...)))
    register_method("adjoint+relax", lambda s: Method("adjoint+relax", AdjointGenerator(...), relaxation(s)))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rdkit import Chem

from molecules.etkdg import embed
from molecules.rmsd import conformer_coordinates
from molecules.selection import RelaxedSelection, select_relaxed
from molecules.structures import with_conformers
from molecules.torsion_relaxation import TorsionRelaxation, torsion_first_relax
from molecules.validity import check_conformer, stereo_spec

__all__ = [
    "BUILT_IN_METHODS",
    "METHODS",
    "Chained",
    "ConforgeGenerator",
    "ConformerGenerator",
    "EnergyRelaxation",
    "EtkdgGenerator",
    "GenerationError",
    "Method",
    "MethodSettings",
    "RandomTorsionGenerator",
    "RdkitMmffOptimizer",
    "Refined",
    "Refiner",
    "StereoRepair",
    "TorsionalGenerator",
    "build_methods",
    "register_method",
    "relaxation",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class MethodSettings:
    """Everything the built-in method factories need.

    Attributes:
        threads: RDKit ``numThreads`` for embedding and MMFF optimization.
        relax_model: :func:`energy.registry.build_energy_model` name for ``*+relax`` methods.
        relax_options: extra keyword options for that model (e.g. ``(("workers", 2),)`` for xtb).
        relax_fmax: convergence threshold (eV/Å) of the relaxation.
        relax_max_steps: step cap of the relaxation.
        relax_optimizer: ``"lbfgs"`` or ``"fire"``.
        mmff_max_iters: RDKit ``MMFFOptimizeMoleculeConfs`` iterations (RDKit's default 200).
        mmff_variant: ``"MMFF94"`` or ``"MMFF94s"``.
        checkpoint: the conformer-sampler checkpoint of the ``adjoint*`` methods.
        sampling_steps: integration steps of the ``adjoint*`` methods (default: the checkpoint's evaluation grid).
        torsional_checkpoint, torsional_steps: the same for the ``torsional*`` methods; the checkpoint's seed
            count is also the random-torsion control's (the same seeds, so that seeds alone make no difference).
    """

    threads: int = 1
    relax_model: str = "xtb"
    relax_options: tuple[tuple[str, Any], ...] = ()
    relax_fmax: float = 0.05
    relax_max_steps: int = 500
    relax_optimizer: str = "lbfgs"
    mmff_max_iters: int = 200
    mmff_variant: str = "MMFF94"
    checkpoint: str | None = None
    sampling_steps: int | None = None
    torsional_checkpoint: str | None = None
    torsional_steps: int | None = None

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.mmff_max_iters < 1:
            raise ValueError(f"mmff_max_iters must be at least 1, got {self.mmff_max_iters}")


class GenerationError(RuntimeError):
    """A generator could not produce conformers for a molecule (the message says why)."""


class ConformerGenerator(Protocol):
    """Makes conformers of one molecule (explicit hydrogens, atom order kept)."""

    @property
    def name(self) -> str: ...

    def generate(self, mol: Chem.Mol, num_conformers: int, seed: int) -> Chem.Mol:
        """A copy of ``mol`` with up to ``num_conformers`` conformers (ids ``0 …``); may raise
        :class:`GenerationError`. Fewer (or none) are allowed and are counted by the benchmark."""
        ...


@dataclass(frozen=True)
class Refined:
    """A refiner's output: ``mol`` holds only the conformers that stayed valid (ids ``0 …``);
    ``reasons`` has one entry per dropped conformer; ``not_converged`` counts valid but unconverged ones;
    ``steps`` is the total number of optimizer steps (energy evaluations after the first) over all conformers."""

    mol: Chem.Mol
    reasons: tuple[str, ...] = ()
    not_converged: int = 0
    steps: int = 0


class Refiner(Protocol):
    """Post-processes generated conformers (local optimization)."""

    @property
    def name(self) -> str: ...

    def refine(self, mol: Chem.Mol) -> Refined: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Method:
    """A named benchmark method: ``generator``, then ``refiner`` if any."""

    name: str
    generator: ConformerGenerator
    refiner: Refiner | None = None
    description: str = ""


@dataclass(frozen=True)
class EtkdgGenerator:
    """RDKit ETKDGv3: ``EmbedMultipleConfs(numConfs=K, randomSeed=seed, pruneRmsThresh=-1,
    enforceChirality=True)`` (the published baseline)."""

    threads: int = 1

    @property
    def name(self) -> str:
        return "etkdg"

    def generate(self, mol: Chem.Mol, num_conformers: int, seed: int) -> Chem.Mol:
        return with_conformers(mol, embed(mol, num_conformers, seed, self.threads))


@dataclass
class AdjointGenerator:
    """The trained Adjoint Sampling model (:class:`inference.conformer_sampling.ConformerSampler`): terminal
    states of the controlled SDE, loaded on first use. Nothing is dropped (the benchmark counts invalid
    ones); a mirror image is reflected as the product does (an E(3)-equivariant network samples a chiral
    molecule and its mirror image alike, so ``x -> -x`` is part of the method, not a repair)."""

    checkpoint: str | None
    steps: int | None = None
    _sampler: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"adjoint[{Path(self.checkpoint).name if self.checkpoint else '?'}]"

    def generate(self, mol: Chem.Mol, num_conformers: int, seed: int) -> Chem.Mol:
        if self._sampler is None:
            if self.checkpoint is None:
                raise ValueError("the adjoint methods need a conformer-sampler checkpoint (--checkpoint PATH)")
            from inference.conformer_sampling import ConformerSampler

            self._sampler = ConformerSampler(self.checkpoint)
        try:
            positions = self._sampler.sample_positions(mol, num_conformers, seed=seed, steps=self.steps)
        except ValueError as exc:  # unsupported element, too many atoms
            raise GenerationError(str(exc)) from exc
        spec = stereo_spec(mol)
        return with_conformers(mol, [check_conformer(mol, p, spec).positions for p in positions])


@dataclass
class TorsionalGenerator:
    """The torsional model (:class:`inference.torsional_sampling.TorsionalSampler`): batched integration on the
    torus of the molecule's rotatable torsions from MMFF94-relaxed ETKDG seeds; valid by construction, so
    nothing is reflected or repaired."""

    checkpoint: str | None
    steps: int | None = None
    #: draw more, relax each by MMFF94, keep distinct basins by their Boltzmann law (:mod:`molecules.selection`)
    selection: RelaxedSelection | None = None
    _sampler: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        selected = "" if self.selection is None else f", relaxed selection {self.selection}"
        return f"torsional[{Path(self.checkpoint).name if self.checkpoint else '?'}{selected}]"

    def num_seeds(self) -> int:
        return int(self._load().config.num_seeds)

    def _load(self) -> Any:
        if self._sampler is None:
            if self.checkpoint is None:
                raise ValueError("the torsional methods need a torsional checkpoint (--checkpoint PATH)")
            from inference.torsional_sampling import TorsionalSampler

            self._sampler = TorsionalSampler(self.checkpoint)
        return self._sampler

    def generate(self, mol: Chem.Mol, num_conformers: int, seed: int) -> Chem.Mol:
        sampler = self._load()
        try:
            if self.selection is None:
                positions = sampler.sample_positions(mol, num_conformers, seed=seed, steps=self.steps)
            else:
                positions = sampler.selection_draws(mol, num_conformers, self.selection, seed=seed, steps=self.steps)
                rng = np.random.default_rng(seed + 11)
                positions, _ = select_relaxed(mol, positions, num_conformers, self.selection, rng)
        except ValueError as exc:  # unsupported element, ETKDG failure, MMFF94 cannot type it
            raise GenerationError(str(exc)) from exc
        return with_conformers(mol, positions)


@dataclass(frozen=True)
class RandomTorsionGenerator:
    """The control without learning: the product's seeds (``num_seeds`` MMFF94-relaxed ETKDG embeddings, kept
    where ring shapes or an acyclic nitrogen's invertomer differ), every rotatable torsion drawn uniformly."""

    num_seeds: int = 1
    isomer_floor: float | None = None  # an ablation: acyl isomers at room temperature as the product's
    stratified: bool = False  # an ablation: each torsion's angles a Latin hypercube over the conformers

    @property
    def name(self) -> str:
        isomers = "" if self.isomer_floor is None else f", acyl isomers {self.isomer_floor}"
        return f"random-torsions[{self.num_seeds} seeds{isomers}{', stratified' if self.stratified else ''}]"

    def generate(self, mol: Chem.Mol, num_conformers: int, seed: int) -> Chem.Mol:
        from inference.torsional_sampling import uniform_torsions

        try:
            positions = uniform_torsions(
                mol,
                num_conformers,
                seed=seed,
                num_seeds=self.num_seeds,
                isomer_floor=self.isomer_floor,
                stratified=self.stratified,
            )
        except ValueError as exc:
            raise GenerationError(str(exc)) from exc
        return with_conformers(mol, positions)


@dataclass(frozen=True)
class ConforgeGenerator:
    """CONFORGE (CDPKit's ``CDPL.ConfGen.ConformerGenerator``) with its default settings and at most
    ``num_conformers`` outputs. It prunes its own output, so it may return fewer than asked (scored as returned).

    The molecule travels as a non-canonical SMILES with explicit hydrogens (stereo included); RDKit's
    ``_smilesAtomOutputOrder`` maps CONFORGE's atoms back to the input's order. CONFORGE is deterministic:
    ``seed`` is ignored.
    """

    timeout_s: float = 3600.0

    @property
    def name(self) -> str:
        return "conforge"

    def generate(self, mol: Chem.Mol, num_conformers: int, seed: int) -> Chem.Mol:
        import CDPL.Base as CBase
        import CDPL.Chem as CChem
        import CDPL.ConfGen as ConfGen

        smiles = Chem.MolToSmiles(mol, canonical=False)
        order = [int(i) for i in mol.GetProp("_smilesAtomOutputOrder").strip("[],").split(",")]
        cmol = CChem.BasicMolecule()
        if not CChem.SMILESMoleculeReader(CBase.StringIOStream(smiles)).read(cmol):
            raise GenerationError(f"CDPKit could not read {smiles}")
        ConfGen.prepareForConformerGeneration(cmol)
        n = mol.GetNumAtoms()
        if cmol.numAtoms != n or len(order) != n:
            raise GenerationError(f"CDPKit changed the atom count ({n} -> {cmol.numAtoms})")
        generator = ConfGen.ConformerGenerator()
        generator.settings.setMaxNumOutputConformers(num_conformers)
        generator.settings.setTimeout(int(self.timeout_s * 1000))
        status = generator.generate(cmol)
        if status not in (ConfGen.ReturnCode.SUCCESS, ConfGen.ReturnCode.TOO_MUCH_SYMMETRY):
            raise GenerationError(f"CONFORGE failed with return code {status}")
        out = np.zeros((generator.getNumConformers(), n, 3))
        for k in range(out.shape[0]):
            coords = generator.getConformer(k)
            out[k, order] = np.array([[coords[i][0], coords[i][1], coords[i][2]] for i in range(n)])
        return with_conformers(mol, out)


@dataclass(frozen=True)
class RdkitMmffOptimizer:
    """RDKit's own ``MMFFOptimizeMoleculeConfs`` (the usual "ETKDG + MMFF" baseline)."""

    max_iters: int = 200
    variant: str = "MMFF94"
    threads: int = 1

    @property
    def name(self) -> str:
        return self.variant.lower()

    def refine(self, mol: Chem.Mol) -> Refined:
        from energy.mmff import mmff_optimize

        out = Chem.Mol(mol)
        try:
            results = mmff_optimize(out, max_iters=self.max_iters, variant=self.variant, threads=self.threads)
        except ValueError:
            return Refined(
                with_conformers(mol, np.zeros((0, mol.GetNumAtoms(), 3))),
                (f"no {self.variant} parameters",) * mol.GetNumConformers(),
            )
        return Refined(out, (), sum(1 for converged, _ in results if not converged))

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class TorsionFirstMmffOptimizer:
    """MMFF94 relaxed in torsion space first, then a Cartesian polish (:mod:`molecules.torsion_relaxation`): the
    relaxation of relaxed selection's draws, for a control that must be relaxed as the product is."""

    relaxation: TorsionRelaxation = field(default_factory=TorsionRelaxation)

    @property
    def name(self) -> str:
        r = self.relaxation
        return f"mmff94[torsions {r.max_evals} + {r.polish_iters}]"

    def refine(self, mol: Chem.Mol) -> Refined:
        try:
            x, _ = torsion_first_relax(mol, conformer_coordinates(mol), self.relaxation)
        except ValueError:
            return Refined(
                with_conformers(mol, np.zeros((0, mol.GetNumAtoms(), 3))),
                ("no MMFF94 parameters",) * mol.GetNumConformers(),
            )
        return Refined(with_conformers(mol, x), ())

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class StereoRepair:
    """:func:`molecules.repair.repair_conformers`: MMFF94 from the input's bond graph with the input's
    stereochemistry enforced (the product's ``--repair``). A molecule MMFF94 cannot type drops every conformer."""

    max_iters: int = 200

    @property
    def name(self) -> str:
        return "repair[mmff94+stereo]"

    def refine(self, mol: Chem.Mol) -> Refined:
        from molecules.repair import RepairConfig, repair_conformers

        positions = np.stack([c.GetPositions() for c in mol.GetConformers()])
        try:
            result = repair_conformers(mol, positions, RepairConfig(max_iters=self.max_iters))
        except ValueError as exc:
            return Refined(with_conformers(mol, positions[:0]), (str(exc),) * len(positions))
        return Refined(with_conformers(mol, list(result.positions)), (), result.not_converged)

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class Chained:
    """``first``, then ``second`` on what ``first`` kept (drop reasons and counts add up)."""

    first: Refiner
    second: Refiner

    @property
    def name(self) -> str:
        return f"{self.first.name}+{self.second.name}"

    def refine(self, mol: Chem.Mol) -> Refined:
        a = self.first.refine(mol)
        if a.mol.GetNumConformers() == 0:
            return a
        b = self.second.refine(a.mol)
        return Refined(b.mol, a.reasons + b.reasons, b.not_converged, a.steps + b.steps)

    def close(self) -> None:
        self.first.close()
        self.second.close()


@dataclass
class EnergyRelaxation:
    """Local relaxation of every conformer with an energy model of :mod:`energy.registry`:
    ``relax(build_energy_model(model), conformer_structures(mol), RelaxConfig(...))``.

    The model is built on first use and kept (worker processes, caches) until :meth:`close`."""

    model: str = "xtb"
    options: tuple[tuple[str, Any], ...] = ()
    fmax: float = 0.05
    max_steps: int = 500
    optimizer: str = "lbfgs"
    _built: Any = field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        return f"relax[{self.model}]"

    def _energy_model(self) -> Any:
        if self._built is None:
            from energy.registry import build_energy_model

            try:
                self._built = build_energy_model(self.model, **dict(self.options))
            except TypeError as exc:
                raise ValueError(f"energy model {self.model!r} does not accept {dict(self.options)}: {exc}") from exc
        return self._built

    def refine(self, mol: Chem.Mol) -> Refined:
        from energy.relax import RelaxConfig, relax
        from molecules.structures import conformer_structures

        if mol.GetNumConformers() == 0:
            return Refined(Chem.Mol(mol))
        config = RelaxConfig(fmax=self.fmax, max_steps=self.max_steps, optimizer=self.optimizer)
        result = relax(self._energy_model(), conformer_structures(mol), config)
        n = mol.GetNumAtoms()
        positions = result.positions.detach().cpu().double().numpy().reshape(-1, n, 3)
        valid = result.valid.cpu().numpy().astype(bool)
        converged = result.converged.cpu().numpy().astype(bool)
        reasons = tuple(str(r or "invalid") for r, ok in zip(result.reasons, valid, strict=True) if not ok)
        return Refined(
            with_conformers(mol, positions[valid]),
            reasons,
            int((valid & ~converged).sum()),
            int(result.steps.sum()),
        )

    def close(self) -> None:
        close = getattr(self._built, "close", None)
        if callable(close):
            close()
        self._built = None


def relaxation(settings: MethodSettings) -> EnergyRelaxation:
    """The ``+relax`` refiner every method shares (same model, optimizer and steps)."""
    return EnergyRelaxation(
        model=settings.relax_model,
        options=settings.relax_options,
        fmax=settings.relax_fmax,
        max_steps=settings.relax_max_steps,
        optimizer=settings.relax_optimizer,
    )


MethodFactory = Callable[[MethodSettings], Method]

METHODS: dict[str, MethodFactory] = {
    "rdkit": lambda s: Method("rdkit", EtkdgGenerator(s.threads), None, "RDKit ETKDGv3"),
    "rdkit+mmff": lambda s: Method(
        "rdkit+mmff",
        EtkdgGenerator(s.threads),
        RdkitMmffOptimizer(s.mmff_max_iters, s.mmff_variant, s.threads),
        f"RDKit ETKDGv3 + RDKit {s.mmff_variant} (maxIters {s.mmff_max_iters})",
    ),
    "rdkit+relax": lambda s: Method(
        "rdkit+relax", EtkdgGenerator(s.threads), relaxation(s), f"RDKit ETKDGv3 + {_relax_label(s)}"
    ),
    "rdkit+mmff+relax": lambda s: Method(
        "rdkit+mmff+relax",
        EtkdgGenerator(s.threads),
        Chained(RdkitMmffOptimizer(s.mmff_max_iters, s.mmff_variant, s.threads), relaxation(s)),
        f"RDKit ETKDGv3 + RDKit {s.mmff_variant} (maxIters {s.mmff_max_iters}) + {_relax_label(s)}",
    ),
    "torsional": lambda s: Method(
        "torsional", _torsional(s), None, f"torsional Adjoint Sampling ({s.torsional_checkpoint})"
    ),
    "torsional+mmff": lambda s: Method(
        "torsional+mmff",
        _torsional(s),
        RdkitMmffOptimizer(s.mmff_max_iters, s.mmff_variant, s.threads),
        f"torsional Adjoint Sampling + RDKit {s.mmff_variant} (maxIters {s.mmff_max_iters})",
    ),
    "torsional+select": lambda s: _selected(s, RelaxedSelection()),
    "torsional+mmff+relax": lambda s: Method(
        "torsional+mmff+relax",
        _torsional(s),
        Chained(RdkitMmffOptimizer(s.mmff_max_iters, s.mmff_variant, s.threads), relaxation(s)),
        f"torsional Adjoint Sampling + RDKit {s.mmff_variant} (maxIters {s.mmff_max_iters}) + {_relax_label(s)}",
    ),
    "torsion-control": lambda s: Method(
        "torsion-control", _control(s), None, f"random torsions from the product's seeds ({_control(s).num_seeds})"
    ),
    "torsion-control+mmff": lambda s: Method(
        "torsion-control+mmff",
        _control(s),
        RdkitMmffOptimizer(s.mmff_max_iters, s.mmff_variant, s.threads),
        f"random torsions from the product's seeds + RDKit {s.mmff_variant} (maxIters {s.mmff_max_iters})",
    ),
    "torsion-control+tfr": lambda s: _control_relaxed_as_selection(s),
    "torsion-control+isomers+mmff": lambda s: Method(
        "torsion-control+isomers+mmff",
        _control(s, acyl_isomers=True),
        RdkitMmffOptimizer(s.mmff_max_iters, s.mmff_variant, s.threads),
        f"random torsions from the product's seeds, acyl isomers at 298 K as the product's (an ablation) + RDKit "
        f"{s.mmff_variant} (maxIters {s.mmff_max_iters})",
    ),
    "conforge": lambda s: Method("conforge", ConforgeGenerator(), None, "CONFORGE (CDPKit 1.3, default settings)"),
    "adjoint": lambda s: Method("adjoint", _adjoint(s), None, f"Adjoint Sampling ({s.checkpoint})"),
    "adjoint+mmff": lambda s: Method(
        "adjoint+mmff",
        _adjoint(s),
        RdkitMmffOptimizer(s.mmff_max_iters, s.mmff_variant, s.threads),
        f"Adjoint Sampling + RDKit {s.mmff_variant} (maxIters {s.mmff_max_iters})",
    ),
    "adjoint+repair": lambda s: Method(
        "adjoint+repair",
        _adjoint(s),
        StereoRepair(s.mmff_max_iters),
        f"Adjoint Sampling + MMFF94 repair with the input's stereochemistry enforced (maxIters {s.mmff_max_iters})",
    ),
    "adjoint+repair+relax": lambda s: Method(
        "adjoint+repair+relax",
        _adjoint(s),
        Chained(StereoRepair(s.mmff_max_iters), relaxation(s)),
        f"Adjoint Sampling + stereo-enforcing MMFF94 repair + {_relax_label(s)}",
    ),
    "adjoint+relax": lambda s: Method(
        "adjoint+relax",
        _adjoint(s),
        relaxation(s),
        f"Adjoint Sampling + {_relax_label(s)}",
    ),
}

BUILT_IN_METHODS: frozenset[str] = frozenset(METHODS)
"""The methods defined here; :func:`register_method` adds others (e.g. ``benchmarks.torsional_knobs``'s)."""


def _relax_label(s: MethodSettings) -> str:
    """How the shared ``+relax`` refiner is described in reports."""
    return (
        f"{s.relax_optimizer.upper()} relaxation with {s.relax_model}"
        + "".join(f" {k}={v}" for k, v in s.relax_options if k != "workers")
        + f" (fmax {s.relax_fmax} eV/Å, ≤ {s.relax_max_steps} steps)"
    )


def _adjoint(settings: MethodSettings) -> AdjointGenerator:
    return AdjointGenerator(settings.checkpoint, settings.sampling_steps)


def _torsional(settings: MethodSettings) -> TorsionalGenerator:
    """Equal generators (same checkpoint and steps) share their conformers within a run."""
    return TorsionalGenerator(settings.torsional_checkpoint, settings.torsional_steps)


def _selected(settings: MethodSettings, selection: RelaxedSelection) -> Method:
    """The torsional model with relaxed selection (:mod:`molecules.selection`); the kept conformers are relaxed
    again only where the draws were screened by a shorter relaxation."""
    screened = selection.screen_iters is not None
    iters = selection.screen_iters if screened else selection.max_iters
    first = selection.torsion_first
    relaxed = f"RDKit MMFF94 (maxIters {iters})" if first is None else first.description
    if selection.polishes_distinct_only:
        relaxed += " (the Cartesian polish for distinct basins only)"
    return Method(
        "torsional+select",
        TorsionalGenerator(settings.torsional_checkpoint, settings.torsional_steps, selection),
        RdkitMmffOptimizer(settings.mmff_max_iters, settings.mmff_variant, settings.threads) if screened else None,
        f"torsional Adjoint Sampling, relaxed selection: {selection.oversample:g} K draws "
        f"({selection.uniform_share:.0%} with uniform torsions), each relaxed by {relaxed}, duplicate basins "
        f"removed, K drawn by their Boltzmann law at {selection.kt_kcal_mol:g} kcal/mol"
        + (", then relaxed as torsional+mmff" if screened else ""),
    )


def _control_relaxed_as_selection(settings: MethodSettings) -> Method:
    """The control relaxed as the product's relaxed selection relaxes its draws (its default relaxation)."""
    relaxation = RelaxedSelection().torsion_first or TorsionRelaxation()
    return Method(
        "torsion-control+tfr",
        _control(settings),
        TorsionFirstMmffOptimizer(relaxation),
        f"random torsions from the product's seeds, relaxed as relaxed selection relaxes its draws: "
        f"{relaxation.description}",
    )


def _control(settings: MethodSettings, *, acyl_isomers: bool = False) -> RandomTorsionGenerator:
    """The control gets the torsional checkpoint's seed count when one is given (same seeds as the product);
    ``acyl_isomers``: and the product's acyl isomers at room temperature (an ablation: the rule without the
    network)."""
    floor = None
    if acyl_isomers:
        from inference.torsional_sampling import ISOMER_FLOOR

        floor = 0.0 if ISOMER_FLOOR is None else ISOMER_FLOOR
    if settings.torsional_checkpoint is None or not Path(settings.torsional_checkpoint).is_file():
        return RandomTorsionGenerator(1, isomer_floor=floor)
    from training.checkpoint import load_checkpoint

    payload = load_checkpoint(settings.torsional_checkpoint)
    seeds = int(payload["config"].get("num_seeds", 1)) if payload.get("kind") == "torsional-conformers" else 1
    return RandomTorsionGenerator(seeds, isomer_floor=floor)


def register_method(name: str, factory: MethodFactory) -> None:
    """Add a method (e.g. the Adjoint Sampling model); names are unique."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    METHODS[name] = factory


def build_methods(names: Sequence[str], settings: MethodSettings) -> list[Method]:
    """The named methods; an unknown name lists the known ones."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"methods listed twice: {list(names)}")
    return [METHODS[n](settings) for n in names]
