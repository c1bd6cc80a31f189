"""The Python API: a SMILES (or an RDKit molecule) in, an RDKit molecule with scored conformers out.

>>> from inference.api import generate_conformers
>>> mol = generate_conformers("CC(=O)Nc1ccc(O)cc1", num_conformers=16, energy_model="mmff")  # doctest: +SKIP
>>> for conf in mol.GetConformers():  # doctest: +SKIP
...     print(conf.GetIntProp("conformer_rank"), conf.GetDoubleProp("relative_energy_kcal_mol"),
...           conf.GetDoubleProp("boltzmann_weight"))

The command line and the HTTP service run the same code (:class:`ConformerGenerator`), with the same
defaults (:data:`inference.options.DEFAULTS`), so one request gives the same conformers in all three.

The pipeline for one molecule:

1. the input: a SMILES (parsed with :func:`molecules.smiles.mol_from_smiles`) or a molecule (hydrogens added);
   a salt or mixture is refused unless ``fragments="largest"``;
2. stereochemistry: an unassigned stereocentre or stereo double bond raises
   :class:`~molecules.stereo.UnassignedStereoError` naming the atoms (``stereo="refuse"``, the default), or the
   stereoisomers are enumerated (at most ``max_isomers``) and each is sampled on its own
   (``stereo="enumerate"``);
3. the model (:func:`inference.loading.load_sampler`) draws ``num_conformers`` samples, repaired (MMFF94 from
   the bond graph, the default), checked for connectivity and stereochemistry, optionally relaxed, scored;
4. post-processing (:func:`finish_ensemble`): energy window, near-duplicate removal (0.5 Å heavy-atom RMSD by
   default, :func:`molecules.ensemble.remove_duplicates`), relative energies, Boltzmann weights, ranks.

What comes back is an RDKit molecule with explicit hydrogens, in the input's atom order, one conformer per
kept sample, lowest energy first. Per conformer (``conf.GetDoubleProp`` / ``GetIntProp``): ``energy_eV``,
``relative_energy_kcal_mol``, ``boltzmann_weight``, ``conformer_rank`` (the SD tags of
:mod:`molecules.tags`; absent without an energy model). On the molecule: ``_Name``, ``input_smiles``,
``isomeric_smiles``, ``energy_model``, ``checks_passed``, ``boltzmann_temperature_K``, ``model_checkpoint``,
``model_sha256``, ``pipeline``, ``model_training_round``, ``relaxed``, ``repaired``, ``seed``, ``conformers_requested``,
``conformers_rejected`` (JSON: reason → count), ``duplicates_removed``, and ``provenance`` (JSON: the model,
the energy model, every post-processing setting, the timings); the input molecule's own properties are kept.
:func:`conformer_records` turns it into SD records (``molecules.sdf.write_sdf``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from rdkit import Chem

from energy.protocol import EnergyModel
from energy.registry import build_energy_model
from inference.loading import load_sampler
from inference.model import ConformerModel, ModelProvenance, SampledConformers, SamplingRequest
from inference.options import (
    DEFAULT_ENERGY_MODEL,
    DEFAULT_NUM_CONFORMERS,
    DEFAULTS,
    PostProcessing,
    StereoPolicy,
)
from molecules.ensemble import DEFAULT_TEMPERATURE_K, boltzmann_weights, relative_energies_kcal_mol, remove_duplicates
from molecules.rmsd import conformer_coordinates
from molecules.smiles import FRAGMENT_POLICIES, SmilesError, largest_fragment, mol_from_smiles
from molecules.stereo import UnassignedStereoError, enumerate_stereoisomers, find_unassigned_stereo
from molecules.structures import with_conformers
from molecules.tags import (
    TAG_BOLTZMANN_TEMPERATURE,
    TAG_BOLTZMANN_WEIGHT,
    TAG_CHECKS_PASSED,
    TAG_ENERGY,
    TAG_ENERGY_MODEL,
    TAG_INPUT_SMILES,
    TAG_ISOMERIC_SMILES,
    TAG_MODEL_SHA256,
    TAG_PIPELINE,
    TAG_RANK,
    TAG_RELATIVE_ENERGY,
    pipeline_label,
    tag_conformers,
)
from training.paths import SHIPPED_CONFORMER_CHECKPOINT

__all__ = [
    "DEFAULT_CHECKPOINT",
    "MOLECULE_PROPERTIES",
    "ConformerGenerator",
    "Ensemble",
    "EnsembleChecks",
    "EnsembleProvenance",
    "conformer_records",
    "finish_ensemble",
    "generate_conformers",
]

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = SHIPPED_CONFORMER_CHECKPOINT
NO_ENERGY_MODEL = "none"
ENERGY_DECIMALS = 6
"""Energies are reported to 1 µeV (the SD tag's precision), and relative energies and weights computed from
the reported values, so an SDF, a JSON answer and a molecule's properties carry the same numbers."""

MOLECULE_PROPERTIES = (
    TAG_INPUT_SMILES,
    TAG_ISOMERIC_SMILES,
    TAG_ENERGY_MODEL,
    TAG_CHECKS_PASSED,
    TAG_BOLTZMANN_TEMPERATURE,
    "model_checkpoint",
    TAG_MODEL_SHA256,
    TAG_PIPELINE,
    "model_training_round",
    "relaxed",
    "repaired",
    "seed",
    "conformers_requested",
    "conformers_rejected",
    "duplicates_removed",
    "provenance",
)
"""The molecule-level properties this module sets (every other public property is the input's own)."""


@dataclass(frozen=True, kw_only=True)
class EnsembleChecks:
    """What every returned conformer passed, and what happened to the other samples.

    ``requested == returned + sum(rejected) + duplicates_removed + outside_energy_window``.
    """

    passed: tuple[str, ...]
    requested: int
    returned: int
    rejected: Mapping[str, int]
    reflected: int
    duplicates_removed: int
    outside_energy_window: int
    repaired: int
    stereo_repaired: int
    repair_skipped: str | None = None
    mmff_relaxed: int = 0
    acyl_isomers_turned: int = 0
    clashes: int = 0


@dataclass(frozen=True, kw_only=True)
class EnsembleProvenance:
    """Which model and settings produced an ensemble; ``timings_s`` per stage (sample, repair, check, ...)."""

    model: ModelProvenance
    energy_model: str | None
    post_processing: PostProcessing
    seed: int
    steps: int | None
    timings_s: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "energy_model": self.energy_model,
            "post_processing": self.post_processing.to_dict(),
            "seed": self.seed,
            "steps": self.steps,
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
        }


@dataclass(frozen=True, kw_only=True)
class Ensemble:
    """One molecule's conformers, lowest energy first.

    Attributes:
        mol: explicit hydrogens, the input's atom order, one conformer per entry of the tuples below, carrying
            the properties listed in the module docstring.
        name: the record title (the input's name, or the isomeric SMILES).
        smiles: the isomeric SMILES sampled (the input's own, or one of its stereoisomers).
        input_smiles: the input as given (a molecule's: written by RDKit).
        energies_ev: absolute energies (empty without an energy model).
        relative_energies_kcal_mol: above the lowest.
        boltzmann_weights: at ``provenance.post_processing.temperature_k``; they sum to 1.
        stereoisomer: 1-based index among the input's enumerated stereoisomers (``None``: the input as given).
    """

    mol: Chem.Mol
    name: str
    smiles: str
    input_smiles: str
    stereoisomer: int | None
    energies_ev: tuple[float, ...]
    relative_energies_kcal_mol: tuple[float, ...]
    boltzmann_weights: tuple[float, ...]
    checks: EnsembleChecks
    provenance: EnsembleProvenance

    @property
    def num_conformers(self) -> int:
        return int(self.mol.GetNumConformers())

    def summary(self) -> dict[str, Any]:
        """Counts and timings, as the command line prints them."""
        c = self.checks
        return {
            "returned": c.returned,
            "reflected": c.reflected,
            "rejected": dict(c.rejected),
            "pruned": c.duplicates_removed,
            "outside_energy_window": c.outside_energy_window,
            "repaired": c.repaired,
            "stereo_repaired": c.stereo_repaired,
            **({"repair_skipped": c.repair_skipped} if c.repair_skipped else {}),
            "mmff_relaxed": c.mmff_relaxed,
            "acyl_isomers_turned": c.acyl_isomers_turned,
            "clashes": c.clashes,
            "seconds": {k: round(v, 3) for k, v in self.provenance.timings_s.items()},
        }


def _recorded_energy_model(name: str | None, mol: Chem.Mol) -> str | None:
    """The energy model as recorded in the answer: ``auto`` names the model it chose for this molecule
    (``auto:ani2xt`` or ``auto:xtb``, :func:`energy.auto.choose_energy_model`)."""
    if name != "auto":
        return name
    import torch

    from energy.auto import choose_energy_model
    from molecules.structures import spin_multiplicity, total_charge

    z = torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=torch.long)
    return f"auto:{choose_energy_model(z, total_charge(mol), spin_multiplicity(mol))}"


def _passed_checks(energy_model: str | None, relax: bool) -> tuple[str, ...]:
    passed = ["connectivity", "stereochemistry"]
    if energy_model is not None:
        passed.append("finite_energy")
    if relax:
        passed += ["connectivity_after_relaxation", "stereochemistry_after_relaxation"]
    return tuple(passed)


def finish_ensemble(
    sampled: SampledConformers,
    *,
    requested: int,
    options: PostProcessing,
    provenance: EnsembleProvenance,
    name: str,
    smiles: str,
    input_smiles: str,
    stereoisomer: int | None = None,
    input_properties: Mapping[str, str] | None = None,
) -> Ensemble:
    """Post-processing of one molecule's checked samples, the same for every front end: drop conformers
    outside the energy window, remove near-duplicates (:meth:`PostProcessing.duplicates`), round energies to
    1 µeV, compute relative energies, Boltzmann weights and ranks, and write them, the checks and the
    provenance onto the molecule."""
    t0 = time.perf_counter()
    positions = conformer_coordinates(sampled.mol)
    energies = np.asarray(sampled.energies_ev, dtype=np.float64) if sampled.energies_ev else None
    order = np.arange(len(positions)) if energies is None else np.argsort(energies, kind="stable")
    outside = 0
    if energies is not None and options.energy_window is not None and len(order):
        inside = relative_energies_kcal_mol(energies)[order] <= options.energy_window
        outside = int((~inside).sum())
        order = order[inside]
    duplicates = 0
    criteria = options.duplicates()
    if criteria is not None and len(order) > 1:
        dedup = remove_duplicates(
            sampled.mol, positions[order], None if energies is None else energies[order], criteria=criteria
        )
        duplicates = dedup.num_removed
        order = order[list(dedup.kept)]
    timings = {**provenance.timings_s, **sampled.seconds, "post_process": time.perf_counter() - t0}
    provenance = EnsembleProvenance(
        model=provenance.model,
        energy_model=provenance.energy_model,
        post_processing=provenance.post_processing,
        seed=provenance.seed,
        steps=provenance.steps,
        timings_s=timings,
    )
    kept_e = () if energies is None else tuple(round(float(e), ENERGY_DECIMALS) for e in energies[order])
    relative = tuple(float(x) for x in relative_energies_kcal_mol(kept_e)) if kept_e else ()
    weights = tuple(float(w) for w in boltzmann_weights(kept_e, options.temperature_k)) if kept_e else ()
    checks = EnsembleChecks(
        passed=_passed_checks(provenance.energy_model, options.relax),
        requested=requested,
        returned=len(order),
        rejected=dict(sampled.rejected),
        reflected=sampled.reflected,
        duplicates_removed=duplicates,
        outside_energy_window=outside,
        repaired=sampled.repaired,
        stereo_repaired=sampled.stereo_repaired,
        repair_skipped=sampled.repair_skipped,
        mmff_relaxed=sampled.mmff_relaxed,
        acyl_isomers_turned=sampled.acyl_isomers_turned,
        clashes=sampled.clashes,
    )
    mol = with_conformers(sampled.mol, positions[order])
    for key in list(mol.GetPropNames()):
        mol.ClearProp(key)
    for key, value in (input_properties or {}).items():
        mol.SetProp(str(key), str(value))
    ensemble = Ensemble(
        mol=mol,
        name=name,
        smiles=smiles,
        input_smiles=input_smiles,
        stereoisomer=stereoisomer,
        energies_ev=kept_e,
        relative_energies_kcal_mol=relative,
        boltzmann_weights=weights,
        checks=checks,
        provenance=provenance,
    )
    _annotate(ensemble)
    return ensemble


def _annotate(ensemble: Ensemble) -> None:
    """Write the ensemble's energies, checks and provenance onto its molecule and conformers."""
    mol, checks, prov = ensemble.mol, ensemble.checks, ensemble.provenance
    mol.SetProp("_Name", ensemble.name)
    mol.SetProp(TAG_INPUT_SMILES, ensemble.input_smiles)
    mol.SetProp(TAG_ISOMERIC_SMILES, ensemble.smiles)
    mol.SetProp(TAG_ENERGY_MODEL, prov.energy_model or NO_ENERGY_MODEL)
    mol.SetProp(TAG_CHECKS_PASSED, ",".join(checks.passed) or "none")
    mol.SetProp("model_checkpoint", prov.model.checkpoint)
    mol.SetProp(TAG_MODEL_SHA256, prov.model.sha256)
    mol.SetProp(
        TAG_PIPELINE,
        pipeline_label(
            selected=bool(prov.post_processing.select),
            mmff_relaxed=checks.mmff_relaxed,
            repaired=checks.repaired,
            relaxed_with=prov.energy_model if prov.post_processing.relax else None,
        ),
    )
    if prov.model.training_round is not None:
        mol.SetIntProp("model_training_round", int(prov.model.training_round))
    mol.SetBoolProp("relaxed", prov.post_processing.relax)
    mol.SetBoolProp("repaired", checks.repaired > 0)
    mol.SetIntProp("seed", prov.seed)
    mol.SetIntProp("conformers_requested", checks.requested)
    mol.SetProp("conformers_rejected", json.dumps(dict(checks.rejected), sort_keys=True))
    mol.SetIntProp("duplicates_removed", checks.duplicates_removed)
    mol.SetProp("provenance", json.dumps(prov.to_dict(), sort_keys=True))
    if not ensemble.energies_ev:
        return
    mol.SetDoubleProp(TAG_BOLTZMANN_TEMPERATURE, prov.post_processing.temperature_k)
    for rank, conf in enumerate(mol.GetConformers(), 1):
        k = rank - 1
        conf.SetDoubleProp(TAG_ENERGY, ensemble.energies_ev[k])
        conf.SetDoubleProp(TAG_RELATIVE_ENERGY, ensemble.relative_energies_kcal_mol[k])
        conf.SetDoubleProp(TAG_BOLTZMANN_WEIGHT, ensemble.boltzmann_weights[k])
        conf.SetIntProp(TAG_RANK, rank)


def conformer_records(mol: Chem.Mol) -> list[Chem.Mol]:
    """One SD record per conformer of a molecule from :func:`generate_conformers`, titled with its name and
    tagged by :func:`molecules.tags.tag_conformers` (the one tag schema, ``docs/OUTPUT.md``); the input's own
    properties are carried through."""
    confs = list(mol.GetConformers())
    energies = [c.GetDoubleProp(TAG_ENERGY) for c in confs] if confs and confs[0].HasProp(TAG_ENERGY) else None
    carried = {
        key: mol.GetProp(key)
        for key in mol.GetPropNames()
        if key not in MOLECULE_PROPERTIES and not key.startswith("_")
    }
    energy_model = mol.GetProp(TAG_ENERGY_MODEL) if mol.HasProp(TAG_ENERGY_MODEL) else None
    bare = Chem.Mol(mol)
    for key in list(bare.GetPropNames()):
        bare.ClearProp(key)
    return tag_conformers(
        bare,
        mol.GetProp("_Name") if mol.HasProp("_Name") else "",
        energies_ev=energies,
        energy_model=energy_model,
        checks_passed=mol.GetProp(TAG_CHECKS_PASSED).split(",") if mol.HasProp(TAG_CHECKS_PASSED) else None,
        input_smiles=mol.GetProp(TAG_INPUT_SMILES) if mol.HasProp(TAG_INPUT_SMILES) else None,
        input_properties=carried,
        temperature_k=(
            mol.GetDoubleProp(TAG_BOLTZMANN_TEMPERATURE)
            if mol.HasProp(TAG_BOLTZMANN_TEMPERATURE)
            else DEFAULT_TEMPERATURE_K
        ),
        isomeric_smiles=mol.GetProp(TAG_ISOMERIC_SMILES) if mol.HasProp(TAG_ISOMERIC_SMILES) else None,
        model_sha256=mol.GetProp(TAG_MODEL_SHA256) if mol.HasProp(TAG_MODEL_SHA256) else None,
        pipeline=mol.GetProp(TAG_PIPELINE) if mol.HasProp(TAG_PIPELINE) else None,
    )


@dataclass(frozen=True)
class _Input:
    mol: Chem.Mol  # explicit hydrogens, the atom order of the answer
    smiles: str  # as given (or written from the molecule)
    sample_smiles: str  # what the model is asked for when the input's stereo is complete
    smiles_order: bool  # ``mol`` has the atom order of ``mol_from_smiles(sample_smiles)``
    name: str | None
    properties: Mapping[str, str]


def _prepare(molecule: str | Chem.Mol, fragments: str) -> _Input:
    if isinstance(molecule, str):
        smiles = molecule.strip()
        mol = mol_from_smiles(smiles, fragments=fragments)
        reduced = mol.HasProp("dropped_fragments")
        sample = Chem.MolToSmiles(Chem.RemoveHs(mol)) if reduced else smiles
        return _Input(mol, smiles, sample, not reduced, None, {})
    if not isinstance(molecule, Chem.Mol) or molecule.GetNumAtoms() == 0:
        raise SmilesError(f"expected a SMILES string or a non-empty RDKit molecule, got {molecule!r}")
    if fragments not in FRAGMENT_POLICIES:
        raise ValueError(f"fragments must be one of {FRAGMENT_POLICIES}, got {fragments!r}")
    mol = Chem.Mol(molecule)
    name = mol.GetProp("_Name") if mol.HasProp("_Name") and mol.GetProp("_Name").strip() else None
    properties = {k: mol.GetProp(k) for k in mol.GetPropNames() if not k.startswith("_")}
    smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
    count = len(Chem.GetMolFrags(mol))
    if count > 1 and fragments == "reject":
        raise SmilesError(
            f"the molecule {smiles!r} has {count} disconnected fragments; give one molecule (no salts, no "
            "solvent) or keep the largest fragment (fragments='largest', CLI --largest-fragment)"
        )
    if count > 1:
        mol, dropped = largest_fragment(mol)
        Chem.SanitizeMol(mol)
        log.warning("molecule %r: kept the largest fragment, dropped %s", smiles, dropped)
    mol = Chem.AddHs(mol, addCoords=mol.GetNumConformers() > 0)
    mol.RemoveAllConformers()
    return _Input(mol, smiles, Chem.MolToSmiles(Chem.RemoveHs(mol)), False, name, properties)


def _in_input_order(sampled: Chem.Mol, reference: Chem.Mol) -> Chem.Mol:
    """``sampled`` (from a SMILES of the same molecule, possibly one stereoisomer of it) renumbered into
    ``reference``'s atom order; its own stereochemistry and conformers are kept."""
    match = sampled.GetSubstructMatch(reference, useChirality=True) or sampled.GetSubstructMatch(reference)
    if len(match) != reference.GetNumAtoms() or sampled.GetNumAtoms() != reference.GetNumAtoms():
        log.warning("could not map the sampled atoms onto the input's; keeping the SMILES's atom order")
        return sampled
    return Chem.RenumberAtoms(sampled, list(match))


class ConformerGenerator:
    """Loaded models and energy models, kept for the next call: the object the CLI, the service and a Python
    session pass around (no global state).

    Args:
        checkpoint: the model used when a call names none (default: the shipped torsional model
            ``checkpoints/torsional.pt``).
        device: where models run (``cpu``, ``cuda``, ``cuda:1``).
        energy_models: builds an energy model from its name (default :func:`energy.registry.build_energy_model`);
            the service passes its own (each model used by one thread at a time).

    Thread-safe: the caches are locked, and every call pairs the shared network with its energy model anew.

    Example:
        >>> with ConformerGenerator() as gen:  # doctest: +SKIP
        ...     for smiles in ["CCO", "c1ccccc1O"]:
        ...         (ensemble,) = gen.generate(smiles, energy_model="mmff")
    """

    def __init__(
        self,
        *,
        checkpoint: str | Path | None = None,
        device: str = "cpu",
        energy_models: Callable[[str], EnergyModel] | None = None,
    ) -> None:
        self.default_checkpoint = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
        self.device = device
        self._build_energy = energy_models or build_energy_model
        self._owns_energies = energy_models is None
        self._samplers: dict[Path, ConformerModel] = {}
        self._energies: dict[str, EnergyModel] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> ConformerGenerator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def sampler(self, checkpoint: str | Path | None = None) -> ConformerModel:
        """The model in ``checkpoint`` (default: this generator's), loaded on first use (cached by path)."""
        path = Path(checkpoint) if checkpoint is not None else self.default_checkpoint
        key = path.resolve()
        with self._lock:
            if key not in self._samplers:
                self._samplers[key] = load_sampler(path, device=self.device)
            return self._samplers[key]

    def energy(self, name: str | None) -> EnergyModel | None:
        """The named energy model (built on first use), or ``None`` for ``None`` / ``"none"``."""
        if name is None or name == NO_ENERGY_MODEL:
            return None
        with self._lock:
            if name not in self._energies:
                log.info("building energy model %s", name)
                self._energies[name] = self._build_energy(name)
            return self._energies[name]

    def generate(
        self,
        molecule: str | Chem.Mol,
        *,
        num_conformers: int = DEFAULT_NUM_CONFORMERS,
        checkpoint: str | Path | None = None,
        energy_model: str | None = DEFAULT_ENERGY_MODEL,
        options: PostProcessing = DEFAULTS,
        seed: int = 0,
        steps: int | None = None,
        fragments: str = "reject",
        name: str | None = None,
        properties: Mapping[str, str] | None = None,
        fmax: float = 0.05,
        refine_rounds: int = 0,
    ) -> list[Ensemble]:
        """One :class:`Ensemble` per molecule sampled: the input itself, or (``options.stereo ==
        "enumerate"`` and open stereochemistry) each of its stereoisomers, titled ``name_1``, ``name_2``, ...

        ``properties`` are written onto the answer as the input's own (default: a molecule's own properties;
        none for a SMILES); ``fmax`` (eV/Å) bounds relaxation, ``refine_rounds`` fine-tunes the model on this
        molecule first (test-time Adjoint Sampling; needs an energy model).

        Raises:
            SmilesError: an unreadable SMILES, or a salt/mixture with ``fragments="reject"``.
            UnassignedStereoError: open stereochemistry with ``options.stereo == "refuse"``.
            UnsupportedElementError, TooManyAtomsError: a molecule the model cannot take.
            ValueError: invalid options (``num_conformers < 1``, ``relax`` without an energy model, ``select``
                with ``repair``).
        """
        if num_conformers < 1:
            raise ValueError(f"num_conformers must be at least 1, got {num_conformers}")
        energy_name = None if energy_model in (None, NO_ENERGY_MODEL) else energy_model
        if options.relax and energy_name is None:
            raise ValueError("relax needs an energy model (e.g. energy_model='mmff')")
        t0 = time.perf_counter()
        given = _prepare(molecule, fragments)
        unassigned = find_unassigned_stereo(given.mol)
        if unassigned and options.stereo == "refuse":
            raise UnassignedStereoError(given.smiles, unassigned)
        isomers = (
            enumerate_stereoisomers(given.mol, max_isomers=options.max_isomers) if unassigned else [given.sample_smiles]
        )
        model = self.sampler(checkpoint)
        energy = self.energy(energy_name)
        sampler = model.with_energy(energy)
        repair = sampler.default_repair if options.repair is None else options.repair
        if options.select is None:  # the model's default, recorded in the provenance as what was done
            options = options.replace(select=sampler.default_select and not repair)
        prepared = time.perf_counter() - t0
        out = []
        for k, smiles in enumerate(isomers, 1):
            request = SamplingRequest(
                smiles=smiles,
                num_conformers=num_conformers,
                seed=seed,
                steps=steps,
                relax=options.relax,
                fmax=fmax,
                repair=repair,
                refine_rounds=refine_rounds,
                relaxed_selection=options.select,  # resolved above
            )
            sampled = sampler.sample(request)
            if unassigned or not given.smiles_order:
                sampled.mol = _in_input_order(sampled.mol, given.mol)
            base = name or given.name
            title = (f"{base}_{k}" if len(isomers) > 1 else base) if base else smiles
            provenance = EnsembleProvenance(
                model=model.provenance,
                energy_model=_recorded_energy_model(energy_name, sampled.mol),
                post_processing=options,
                seed=seed,
                steps=steps,
                timings_s={"prepare": prepared} if k == 1 else {},
            )
            out.append(
                finish_ensemble(
                    sampled,
                    requested=num_conformers,
                    options=options,
                    provenance=provenance,
                    name=title,
                    smiles=smiles if unassigned else Chem.MolToSmiles(Chem.RemoveHs(given.mol)),
                    input_smiles=given.smiles,
                    stereoisomer=k if unassigned else None,
                    input_properties=given.properties if properties is None else properties,
                )
            )
        return out

    def close(self) -> None:
        """Close the energy models this generator built (worker pools, calculators)."""
        with self._lock:
            energies = list(self._energies.values()) if self._owns_energies else []
            self._energies.clear()
        for model in energies:
            close = getattr(model, "close", None)
            if callable(close):
                close()


@overload
def generate_conformers(
    molecule: str | Chem.Mol,
    *,
    num_conformers: int = ...,
    checkpoint: str | Path | None = ...,
    energy_model: str | None = ...,
    relax: bool = ...,
    repair: bool | None = ...,
    dedup_rmsd: float = ...,
    energy_tolerance: float | None = ...,
    energy_window: float | None = ...,
    temperature_k: float = ...,
    stereo: Literal["refuse"] = ...,
    max_isomers: int = ...,
    select: bool | None = ...,
    fragments: str = ...,
    seed: int = ...,
    steps: int | None = ...,
    name: str | None = ...,
    device: str = ...,
    generator: ConformerGenerator | None = ...,
) -> Chem.Mol: ...


@overload
def generate_conformers(
    molecule: str | Chem.Mol,
    *,
    num_conformers: int = ...,
    checkpoint: str | Path | None = ...,
    energy_model: str | None = ...,
    relax: bool = ...,
    repair: bool | None = ...,
    dedup_rmsd: float = ...,
    energy_tolerance: float | None = ...,
    energy_window: float | None = ...,
    temperature_k: float = ...,
    stereo: Literal["enumerate"],
    max_isomers: int = ...,
    select: bool | None = ...,
    fragments: str = ...,
    seed: int = ...,
    steps: int | None = ...,
    name: str | None = ...,
    device: str = ...,
    generator: ConformerGenerator | None = ...,
) -> list[Chem.Mol]: ...


def generate_conformers(
    molecule: str | Chem.Mol,
    *,
    num_conformers: int = DEFAULT_NUM_CONFORMERS,
    checkpoint: str | Path | None = None,
    energy_model: str | None = DEFAULT_ENERGY_MODEL,
    relax: bool = DEFAULTS.relax,
    repair: bool | None = DEFAULTS.repair,
    dedup_rmsd: float = DEFAULTS.dedup_rmsd,
    energy_tolerance: float | None = DEFAULTS.energy_tolerance,
    energy_window: float | None = DEFAULTS.energy_window,
    temperature_k: float = DEFAULTS.temperature_k,
    stereo: StereoPolicy = DEFAULTS.stereo,
    max_isomers: int = DEFAULTS.max_isomers,
    select: bool | None = DEFAULTS.select,
    fragments: str = "reject",
    seed: int = 0,
    steps: int | None = None,
    name: str | None = None,
    device: str = "cpu",
    generator: ConformerGenerator | None = None,
) -> Chem.Mol | list[Chem.Mol]:
    """Low-energy conformers of one molecule, as an RDKit molecule (see the module docstring for its
    properties). The same defaults as ``adjoint-sampling sample`` and the HTTP service.

    Args:
        molecule: a SMILES, or an RDKit molecule (hydrogens are added; its atom order and properties are kept).
        num_conformers: samples drawn, before checks and duplicate removal.
        checkpoint: the model (default: the shipped torsional model ``checkpoints/torsional.pt``).
        energy_model: scores (and relaxes) the conformers: ``xtb`` (GFN2-xTB), ``mmff``, ``gfn1-xtb``, ...;
            ``None`` or ``"none"``: no scores (no energies, weights or ranks; the sampler's order).
        relax: locally minimize every conformer with the energy model.
        repair: MMFF94-optimize raw samples from the bond graph (stereo enforced) before the checks.
        dedup_rmsd: Å heavy-atom RMSD below which a conformer duplicates a lower one (``0``: keep all).
        energy_tolerance: kcal/mol; a duplicate must also be this close in energy (``None``: RMSD alone).
        energy_window: kcal/mol above the lowest beyond which conformers are dropped (``None``: keep all).
        temperature_k: of the Boltzmann weights.
        stereo: ``"refuse"`` an input with unassigned stereochemistry (:class:`UnassignedStereoError`, naming
            the atoms), or ``"enumerate"`` its stereoisomers.
        max_isomers: at most this many stereoisomers with ``stereo="enumerate"``.
        select: relaxed selection: 3x the draws, each MMFF94-relaxed (torsions first), distinct basins kept by
            energy. ``None``: the model's default (on for the torsional model, off for the Cartesian one);
            ``False``: the fast pipeline (about 1.25x the speed, lower coverage).
        fragments: ``"reject"`` salts and mixtures, or keep the ``"largest"`` fragment.
        seed: the same seed (and checkpoint and options) gives the same conformers.
        steps: integration steps (default: the checkpoint's).
        name: the molecule's title (``_Name``; default: the molecule's own, else the SMILES).
        device: where a new generator runs the model.
        generator: reuse loaded models across calls (default: a new one, loaded and closed for this call).

    Returns:
        With ``stereo="refuse"``: one molecule. With ``stereo="enumerate"``: a list, one molecule per
        stereoisomer (just one when the input's stereochemistry is complete), each under its own isomeric
        SMILES (property ``isomeric_smiles``).

    Raises:
        UnassignedStereoError: open stereochemistry with ``stereo="refuse"``.
        SmilesError: an unreadable SMILES, a salt or mixture with ``fragments="reject"``.
        ValueError: an element the model does not know, too many atoms, or invalid options.
    """
    options = PostProcessing(
        repair=repair,
        relax=relax,
        dedup_rmsd=dedup_rmsd,
        energy_tolerance=energy_tolerance,
        energy_window=energy_window,
        temperature_k=temperature_k,
        stereo=stereo,
        max_isomers=max_isomers,
        select=select,
    )
    own = generator is None
    gen = generator if generator is not None else ConformerGenerator(checkpoint=checkpoint, device=device)
    try:
        ensembles = gen.generate(
            molecule,
            num_conformers=num_conformers,
            checkpoint=checkpoint,
            energy_model=energy_model,
            options=options,
            seed=seed,
            steps=steps,
            fragments=fragments,
            name=name,
        )
    finally:
        if own:
            gen.close()
    mols = [e.mol for e in ensembles]
    return mols if stereo == "enumerate" else mols[0]
