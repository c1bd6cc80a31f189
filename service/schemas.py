"""Request and response bodies of the HTTP API (pydantic, only at the HTTP edge).

The limits below are the single home of what a request may ask for; the OpenAPI schema advertises
them, and :mod:`service.validation` adds the chemistry checks a schema cannot express (parsable SMILES,
supported elements, at most :data:`molecules.graph.MAX_ATOMS` atoms, assigned stereochemistry). The defaults
are the command line's and the Python API's (:data:`inference.options.DEFAULTS`), under the same names.

The answer (:class:`ConformerResponse`) is the one documented schema of a molecule's conformers
(``docs/OUTPUT.md``): energies (absolute, eV; relative, kcal/mol), Boltzmann weights, ranks, the checks and
the provenance (checkpoint SHA-256 and training rounds, energy model, every post-processing setting).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from inference.options import (
    DEFAULT_NUM_CONFORMERS,
    DEFAULTS,
    MIN_TEMPERATURE_K,
    SELECT_WITH_REPAIR,
    StereoPolicy,
)

__all__ = [
    "MAX_ISOMERS",
    "MAX_JOB_CONFORMERS",
    "MAX_JOB_SMILES",
    "MAX_SEED",
    "MAX_SMILES_LENGTH",
    "MAX_SYNC_CONFORMERS",
    "Checks",
    "Conformer",
    "ConformerRequest",
    "ConformerResponse",
    "ErrorResponse",
    "FieldError",
    "JobAccepted",
    "JobProgress",
    "JobRequest",
    "JobResult",
    "JobState",
    "JobStatus",
    "ModelInfo",
    "MoleculeResult",
    "OutputFormat",
    "PostProcessingInfo",
    "Provenance",
    "SamplingOptions",
    "ServiceInfo",
    "StereoisomersResponse",
]

MAX_SMILES_LENGTH = 500
MAX_SYNC_CONFORMERS = 64
MAX_JOB_CONFORMERS = 256
MAX_JOB_SMILES = 100
MAX_SEED = 2**31 - 1
MAX_PRUNE_RMS = 10.0  # Å
MAX_ENERGY_WINDOW = 1000.0  # kcal/mol
MAX_TEMPERATURE_K = 10_000.0
MAX_ISOMERS = DEFAULTS.max_isomers

OutputFormat = Literal["json", "sdf", "xyz"]

Smiles = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_SMILES_LENGTH),
    Field(
        description="one molecule, e.g. 'CC(=O)Nc1ccc(O)cc1'",
        examples=["CC(=O)Nc1ccc(O)cc1"],
        json_schema_extra={"format": "smiles"},
    ),
]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


_SMILES_SCHEMA = {"type": "string", "format": "smiles", "minLength": 1, "maxLength": MAX_SMILES_LENGTH}
SmilesList = Annotated[
    list[Smiles],
    Field(min_length=1, max_length=MAX_JOB_SMILES),
    BeforeValidator(_one_or_many),
    WithJsonSchema(
        {
            "anyOf": [
                _SMILES_SCHEMA,
                {"type": "array", "items": _SMILES_SCHEMA, "minItems": 1, "maxItems": MAX_JOB_SMILES},
            ],
            "title": "Smiles",
            "description": f"one SMILES, or a list of up to {MAX_JOB_SMILES}",
        }
    ),
]


class SamplingOptions(BaseModel):
    """What every request shares (sync and jobs); the defaults are :data:`inference.options.DEFAULTS`."""

    model_config = ConfigDict(extra="forbid")

    relax: bool = Field(DEFAULTS.relax, description="locally minimize every conformer with the energy model")
    repair: bool | None = Field(
        DEFAULTS.repair,
        description=(
            "MMFF94-optimize the raw samples from the SMILES's own bond graph before the connectivity and stereo "
            "checks, inverting stereocentres and double bonds that came out wrong (restores bond lengths, angles "
            "and the requested stereochemistry; false returns only the network's own valid samples; null: the model's "
            "default, off for the torsional model, on for the Cartesian one)"
        ),
    )
    energy_model: str | None = Field(
        default=None,
        max_length=64,
        description="scores (and relaxes) conformers; default: the server's (see GET /v1/model)",
    )
    dedup_rmsd: float = Field(
        DEFAULTS.dedup_rmsd,
        ge=0,
        le=MAX_PRUNE_RMS,
        allow_inf_nan=False,
        description="Å: a conformer within this heavy-atom RMSD (symmetry-aware) of a lower-energy one is removed "
        "as a duplicate; 0 keeps every conformer",
    )
    energy_tolerance: float | None = Field(
        DEFAULTS.energy_tolerance,
        ge=0,
        le=MAX_ENERGY_WINDOW,
        allow_inf_nan=False,
        description="kcal/mol: a duplicate must also lie within this energy of the kept conformer (CREST's ETHR); "
        "null: by RMSD alone; 0 removes no duplicates",
    )
    prune_rms: float | None = Field(
        default=None,
        gt=0,
        le=MAX_PRUNE_RMS,
        allow_inf_nan=False,
        description="Å: the former name of dedup_rmsd (when given, it is used instead of dedup_rmsd)",
    )
    energy_window: float | None = Field(
        DEFAULTS.energy_window,
        ge=0,
        le=MAX_ENERGY_WINDOW,
        allow_inf_nan=False,
        description="kcal/mol: keep conformers within this of the lowest",
    )
    temperature_k: float = Field(
        DEFAULTS.temperature_k,
        ge=MIN_TEMPERATURE_K,
        le=MAX_TEMPERATURE_K,
        allow_inf_nan=False,
        description="K: temperature of the Boltzmann weights",
    )
    stereo: StereoPolicy = Field(
        DEFAULTS.stereo,
        description="'refuse': a SMILES with an unassigned stereocentre or stereo double bond is a 422 naming the "
        "atoms; 'enumerate': each stereoisomer (up to max_isomers) is sampled and returned under its own "
        "isomeric SMILES (the answer lists them under `stereoisomers`)",
    )
    select: bool | None = Field(
        DEFAULTS.select,
        description="relaxed selection: draw four times the samples (35 % of them with uniform torsions), "
        "MMFF94-relax each (torsions first, then 30 Cartesian iterations for the distinct ones), drop duplicate "
        "basins and keep num_conformers by their Boltzmann law at 3 kcal/mol. null: the model's default (on for the "
        "torsional model; the Cartesian model refuses true); false: the fast pipeline (each draw relaxed once: about "
        "1.25x the speed, lower coverage on the benchmark)",
    )
    max_isomers: int = Field(
        DEFAULTS.max_isomers, ge=1, le=MAX_ISOMERS, description="at most this many stereoisomers per SMILES"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="same seed, same request: same conformers")

    @field_validator("select")
    @classmethod
    def _select_without_repair(cls, select: bool | None, info: ValidationInfo) -> bool | None:
        if select and info.data.get("repair"):
            raise ValueError(SELECT_WITH_REPAIR)
        return select


class ConformerRequest(SamplingOptions):
    """``POST /v1/conformers``: a small request answered at once."""

    smiles: Smiles
    num_conformers: int = Field(
        DEFAULT_NUM_CONFORMERS,
        ge=1,
        le=MAX_SYNC_CONFORMERS,
        description="conformers drawn (before checks and duplicate removal)",
    )
    format: OutputFormat = Field("json", description="json; sdf or xyz return the file itself")


class JobRequest(SamplingOptions):
    """``POST /v1/jobs``: queued, for many molecules or many conformers."""

    smiles: SmilesList
    num_conformers: int = Field(
        DEFAULT_NUM_CONFORMERS, ge=1, le=MAX_JOB_CONFORMERS, description="conformers drawn per molecule"
    )


class FieldError(BaseModel):
    field: str = Field(description="the offending field, e.g. 'smiles[3]' ('body' for the request as a whole)")
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    message: str = Field(description="what went wrong, in one sentence")
    detail: list[FieldError] = Field(default_factory=list)


class Conformer(BaseModel):
    rank: int = Field(description="0 = lowest energy (the list index; `conformer_rank` counts from 1)")
    conformer_rank: int = Field(description="1 = lowest energy (the SD tag `conformer_rank`)")
    energy_ev: float | None = Field(description="absolute energy under the energy model, eV (6 decimals)")
    relative_energy_kcal_mol: float | None = Field(description="above the lowest returned conformer")
    boltzmann_weight: float | None = Field(
        default=None, description="exp(−ΔE/k_BT) / Σ exp(−ΔE/k_BT) over the returned conformers, at `temperature_k`"
    )
    positions: list[list[float]] = Field(description="Å, one [x, y, z] per atom, in the order of `elements`")


class Checks(BaseModel):
    passed: list[str] = Field(
        description="checks every returned conformer passed: connectivity, stereochemistry, finite_energy, and "
        "after relaxation connectivity_after_relaxation, stereochemistry_after_relaxation"
    )
    requested: int
    returned: int
    rejected: dict[str, int] = Field(description="conformers dropped, by reason")
    reflected: int = Field(description="mirror images reflected back to the requested stereochemistry")
    pruned: int = Field(description="near-duplicates removed (`dedup_rmsd`, `energy_tolerance`)")
    outside_energy_window: int
    repaired: int = Field(0, description="raw samples MMFF94-optimized before the checks (see `repair`)")
    stereo_repaired: int = Field(
        0, description="of the repaired: samples whose wrong stereocentres or double bonds the repair put right"
    )
    mmff_relaxed: int = Field(0, description="conformers given the model's fast MMFF94 relaxation before scoring")
    acyl_isomers_turned: int = Field(
        0,
        description="amide, ester or acid bonds of raw samples turned to the isomer drawn at room temperature "
        "(the torsional model's acyl-isomer rule)",
    )
    clashes: int = Field(0, description="returned conformers with a steric clash (reported, not rejected)")


class ModelInfo(BaseModel):
    checkpoint: str = Field(description="the checkpoint's file name")
    sha256: str = Field(description="SHA-256 of the checkpoint file")
    kind: str = Field(description="the checkpoint's stored kind: 'conformers' (the Cartesian sampler)")
    training_rounds: int | None = Field(description="training rounds behind the weights")
    training_energy_calls: int | None
    training_energy_model: str | None
    integration_steps: int
    versions: dict[str, str]
    default_select: bool | None = Field(
        None, description="whether a request that leaves `select` unset gets relaxed selection from this model"
    )


class PostProcessingInfo(BaseModel):
    """The post-processing settings of the answer (the request's, or the defaults)."""

    repair: bool | None = Field(description="as requested; null: the model's default (see checks.repaired)")
    relax: bool
    dedup_rmsd: float
    energy_tolerance: float | None
    energy_window: float | None
    temperature_k: float
    stereo: StereoPolicy
    max_isomers: int
    select: bool | None = Field(None, description="as done: the request's, or the model's default")


class Provenance(BaseModel):
    model: ModelInfo
    energy_model: str
    relaxed: bool
    repaired: bool = Field(description="whether `repair` was asked for")
    seed: int
    timings_s: dict[str, float]
    post_processing: PostProcessingInfo | None = None
    pipeline: str | None = Field(
        None, description="what was done to the draws before the checks (the SD tag `pipeline`, docs/OUTPUT.md)"
    )


class ConformerResponse(BaseModel):
    smiles: str = Field(description="the SMILES asked for, or with `stereo: enumerate` this stereoisomer's")
    input_smiles: str | None = Field(default=None, description="the SMILES of the request")
    isomeric_smiles: str | None = Field(default=None, description="the isomeric SMILES the conformers were sampled for")
    name: str | None = Field(default=None, description="the SDF record title")
    stereoisomer: int | None = Field(
        default=None, description="1-based index among the enumerated stereoisomers (null: the SMILES as given)"
    )
    num_atoms: int
    elements: list[str]
    bonds: list[tuple[int, int, float]] = Field(
        default_factory=list,
        description="[begin, end, order] per bond: atom indices into `elements`; order 1, 1.5 (aromatic), 2 or 3",
    )
    conformers: list[Conformer] = Field(description="sorted by energy, lowest first")
    checks: Checks
    provenance: Provenance


class StereoisomersResponse(BaseModel):
    """The answer with ``stereo: enumerate``: one full answer per stereoisomer of the SMILES."""

    smiles: str = Field(description="the SMILES of the request")
    stereoisomers: list[ConformerResponse] = Field(description="in enumeration order (one if nothing was open)")


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)


class JobProgress(BaseModel):
    total: int = Field(description="molecules in the job")
    finished: int = Field(description="molecules answered (with conformers or an error)")
    failed: int = Field(description="molecules that failed")
    fraction: float


class JobStatus(BaseModel):
    id: str
    status: JobState
    progress: JobProgress
    created_at: float = Field(description="Unix time")
    started_at: float | None
    finished_at: float | None
    expires_at: float | None = Field(description="when the record and results are deleted (Unix time)")
    attempts: int
    error: str | None
    result_url: str


class JobAccepted(JobStatus):
    status_url: str


class MoleculeResult(BaseModel):
    index: int
    smiles: str
    error: str | None = None
    result: ConformerResponse | None = Field(
        default=None, description="the answer (with `stereo: refuse`, the default)"
    )
    stereoisomers: list[ConformerResponse] | None = Field(
        default=None, description="with `stereo: enumerate`: one answer per stereoisomer"
    )


class JobResult(BaseModel):
    id: str
    status: JobState
    results: list[MoleculeResult] = Field(description="one per SMILES, in request order")


class ServiceInfo(BaseModel):
    model: ModelInfo
    energy_models: list[str]
    default_energy_model: str
    supported_elements: list[str]
    max_atoms: int
    limits: dict[str, int | float]
