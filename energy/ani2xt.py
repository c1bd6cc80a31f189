"""ANI-2xt: a neural-network potential for neutral, closed-shell H, C, N, O, F, S, Cl molecules, offline.

The trained weights are the ones the ``auto3d`` package ships in its wheel
(``Auto3D/engines/models/ani2xt_no_repulsion.pt``: seven per-element networks, a plain ``state_dict``);
they are found on disk through the installed package, never downloaded, and loaded with
``torch.load(weights_only=True)``. Nothing of auto3d is imported or executed.

The model (Smith et al., Chem. Sci. 8, 3192 (2017); ANI-2xt: Liu et al., JCTC 2022) is

.. math::

    E = \\sum_i \\left[ \\varepsilon_{Z_i} + \\mathrm{NN}_{Z_i}\\big(G_i\\big) \\right],

with :math:`G_i` the atomic environment vector (AEV) of atom :math:`i` (torchani's ``AEVComputer`` with
the ANI-1x radial and angular terms for seven elements: radial cutoff 5.2 Å, 16 shifts from 0.9 Å,
η = 16 Å⁻²; angular cutoff 3.5 Å, 4 shifts from 0.9 Å, 8 angular sections, η = 8 Å⁻², ζ = 32),
:math:`\\mathrm{NN}_Z` the element's network (``Linear → CELU(0.1)`` ×3 ``→ Linear``, layer sizes read
from the weights) and :math:`\\varepsilon_Z` the element's self energy. Energies are in Hartree inside and
leave in eV (:data:`energy.units.HARTREE_EV`); forces are ``−∂E/∂x`` by autograd, in eV/Å.

Batching: a batch of structures (any mix of molecules and sizes) is laid out flat, without padding, and
the neighbour pairs are looked for only inside each structure, so one forward and one backward pass
evaluate the whole batch (split into chunks of at most ``max_atoms_per_batch`` atoms). Per-atom energies
are summed in float64 whatever the network dtype, so a float32 model does not lose the ~10⁴ eV totals
to rounding.

A structure with an element outside H, C, N, O, F, S, Cl (the reason names the atoms), a net charge or
a multiplicity other than 1 is invalid (ANI-2xt knows neither charge nor spin), as is one failing the
shared checks of :mod:`energy.validation`; the rest of the batch is evaluated.

Example::

    >>> from rdkit import Chem
    >>> from rdkit.Chem import AllChem
    >>> from molecules.structures import conformer_structures
    >>> mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    >>> _ = AllChem.EmbedMultipleConfs(mol, 4, randomSeed=7)
    >>> result = Ani2xtEnergy(dtype="float64").evaluate(conformer_structures(mol))
    >>> bool(result.valid.all()), tuple(result.forces.shape)
    (True, (36, 3))
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from energy.protocol import EnergyResult, Structures
from energy.units import HARTREE_EV
from energy.validation import DEFAULT_MIN_DISTANCE_ANGSTROM, StructureLimits, atom_slices, structure_problems

__all__ = [
    "ANI2XT_ELEMENTS",
    "ANI2XT_SELF_ENERGIES_HARTREE",
    "Ani2xtConfig",
    "Ani2xtEnergy",
    "Ani2xtNetwork",
    "ani2xt_problem",
    "ani2xt_weights_path",
]

log = logging.getLogger(__name__)

ANI2XT_ELEMENTS: tuple[int, ...] = (1, 6, 7, 8, 9, 16, 17)
"""Atomic numbers ANI-2xt covers, in the order of its networks (H, C, N, O, F, S, Cl)."""

ANI2XT_SELF_ENERGIES_HARTREE: tuple[float, ...] = (
    -0.5984,
    -38.0826,
    -54.7031,
    -75.1901,
    -99.8006,
    -398.1224,
    -460.1387,
)
"""Per-element energy shifts ε_Z (Hartree) the networks were trained against, in :data:`ANI2XT_ELEMENTS` order."""

_SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F", 16: "S", 17: "Cl"}
_ELEMENT_NAMES = ", ".join(_SYMBOLS[z] for z in ANI2XT_ELEMENTS)
_WEIGHTS = ("Auto3D", Path("engines") / "models" / "ani2xt_no_repulsion.pt")
_MAX_ATOMIC_NUMBER = 118
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def ani2xt_weights_path() -> Path:
    """The ANI-2xt weights file of the installed ``auto3d`` package (located without importing it).

    Raises:
        FileNotFoundError: auto3d is not installed, or its wheel lacks the weights.
    """
    package, relative = _WEIGHTS
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"ANI-2xt weights not found: the auto3d package ({package}/{relative.as_posix()}) is not installed "
        "(pip install -c constraints.txt auto3d)"
    )


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z] if 0 < z <= _MAX_ATOMIC_NUMBER else f"Z={z}"


def ani2xt_problem(atomic_numbers: Sequence[int], total_charge: int, multiplicity: int) -> str | None:
    """Why ANI-2xt cannot describe this molecule (naming the atoms, 0-based), or ``None`` if it can."""
    foreign = [(i, int(z)) for i, z in enumerate(atomic_numbers) if int(z) not in _SYMBOLS]
    if foreign:
        shown = ", ".join(f"{i} ({_symbol(z)}, Z={z})" for i, z in foreign[:8])
        more = f" and {len(foreign) - 8} more" if len(foreign) > 8 else ""
        noun = "atom" if len(foreign) == 1 else "atoms"
        return f"ANI-2xt has no parameters for {noun} {shown}{more}: it covers only {_ELEMENT_NAMES}"
    if total_charge != 0:
        return f"total charge {total_charge:+d}: ANI-2xt describes neutral molecules only (use xtb for ions)"
    if multiplicity != 1:
        return (
            f"multiplicity {multiplicity}: ANI-2xt describes closed-shell molecules (singlets) only "
            "(use xtb for radicals)"
        )
    return None


def _import_torchani_aev() -> tuple[type, type]:
    """torchani's ``AEVComputer`` and the ``narrow_down`` pair screen (quiet about its optional CUDA extensions)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The extensions: .* are not installed", category=UserWarning)
        from torchani.aev import AEVComputer
        from torchani.neighbors import narrow_down
    return AEVComputer, narrow_down


def _element_networks(state_dict: dict[str, torch.Tensor]) -> nn.ModuleList:
    """One ``Linear → CELU(0.1) → … → Linear(→1)`` network per element, sized from the weights."""
    networks = nn.ModuleList()
    for e in range(len(ANI2XT_ELEMENTS)):
        layers = sorted({int(k.split(".")[1]) for k in state_dict if k.startswith(f"{e}.") and k.endswith(".weight")})
        if not layers:
            raise ValueError(f"ANI-2xt weights hold no network for element {_SYMBOLS[ANI2XT_ELEMENTS[e]]}")
        modules: list[nn.Module] = []
        for j, layer in enumerate(layers):
            out_dim, in_dim = state_dict[f"{e}.{layer}.weight"].shape
            if layer != 2 * j:
                raise ValueError(f"unexpected layer layout in the ANI-2xt weights: {e}.{layer}")
            if j:
                modules.append(nn.CELU(0.1))
            modules.append(nn.Linear(in_dim, out_dim))
        networks.append(nn.Sequential(*modules))
    networks.load_state_dict(state_dict)
    return networks


class Ani2xtNetwork(nn.Module):
    """AEVs + per-element networks: species ``[N]`` (0-6), positions ``[N, 3]`` (Å), candidate pairs ``[2, P]``
    (atoms that may interact: the same structure) → per-atom energies ``[N]`` in Hartree (float64, self
    energies included)."""

    self_energies: torch.Tensor

    def __init__(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().__init__()
        aev_computer, self._narrow_down = _import_torchani_aev()
        self.aev = aev_computer.like_1x(  # type: ignore[attr-defined]
            num_species=len(ANI2XT_ELEMENTS),
            radial_start=0.9,
            radial_cutoff=5.2,
            radial_eta=16.0,
            radial_num_shifts=16,
            angular_start=0.9,
            angular_cutoff=3.5,
            angular_eta=8.0,
            angular_zeta=32.0,
            angular_num_shifts=4,
            angular_num_sections=8,
        )
        self.networks = _element_networks(state_dict)
        width = int(state_dict["0.0.weight"].shape[1])
        if width != self.aev.out_dim:
            raise ValueError(f"ANI-2xt weights expect AEVs of width {width}, the AEV computer makes {self.aev.out_dim}")
        self.register_buffer("self_energies", torch.tensor(ANI2XT_SELF_ENERGIES_HARTREE, dtype=torch.float64))

    @property
    def cutoff_angstrom(self) -> float:
        return float(self.aev.radial.cutoff)

    def forward(self, species: torch.Tensor, positions: torch.Tensor, candidate_pairs: torch.Tensor) -> torch.Tensor:
        species_b, positions_b = species[None], positions[None]
        neighbors = self._narrow_down(self.cutoff_angstrom, species_b, positions_b, candidate_pairs)
        aev = self.aev.compute_from_neighbors(species_b, positions_b, neighbors)[0]
        energies = self.self_energies[species]  # float64, so float32 networks do not round the totals
        for e, network in enumerate(self.networks):
            rows = (species == e).nonzero().flatten()
            if rows.numel():
                energies = energies.index_add(0, rows, network(aev[rows]).flatten().to(torch.float64))
        return energies


@dataclass(frozen=True, kw_only=True)
class Ani2xtConfig:
    """How :class:`Ani2xtEnergy` runs.

    Attributes:
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``); results come back on the device
            of the input positions.
        dtype: the network's precision, ``torch.float32`` or ``torch.float64`` (per-atom energies are summed
            in float64 either way).
        max_atoms_per_batch: atoms per forward pass; a larger batch is split. Bounds memory, and on a CPU
            passes of ~1000 atoms are ~2× faster than passes of 20,000 (cache); ``None``: 1024 on a CPU,
            32768 on a GPU.
        min_distance_angstrom: two atoms closer than this make a structure invalid (see :mod:`energy.validation`).
    """

    device: str = "cpu"
    dtype: torch.dtype = torch.float64
    max_atoms_per_batch: int | None = None
    min_distance_angstrom: float = DEFAULT_MIN_DISTANCE_ANGSTROM

    def __post_init__(self) -> None:
        if self.max_atoms_per_batch is None:
            on_gpu = torch.device(self.device).type == "cuda"
            object.__setattr__(self, "max_atoms_per_batch", 32_768 if on_gpu else 1_024)
        assert self.max_atoms_per_batch is not None
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if self.max_atoms_per_batch < 1:
            raise ValueError(f"max_atoms_per_batch must be >= 1, got {self.max_atoms_per_batch}")
        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} was requested but torch sees no CUDA device")


def _dtype(value: torch.dtype | str) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if value not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {value!r}")
    return _DTYPES[value]


class Ani2xtEnergy:
    """Batched ANI-2xt energies (eV) and forces (eV/Å), on CPU or CUDA.

    Args:
        device: ``"cpu"`` (default) or a CUDA device; the model is built there once and reused.
        dtype: ``"float64"`` (default: tight relaxations, finite-difference checks) or ``"float32"``
            (what the networks were trained in; cheaper on GPUs).
        max_atoms_per_batch, min_distance_angstrom: see :class:`Ani2xtConfig`.
        weights: a weights file other than the one auto3d ships (same format); ``None`` for auto3d's.
    """

    def __init__(
        self,
        *,
        device: str = "cpu",
        dtype: torch.dtype | str = "float64",
        max_atoms_per_batch: int | None = None,
        min_distance_angstrom: float = DEFAULT_MIN_DISTANCE_ANGSTROM,
        weights: str | Path | None = None,
    ) -> None:
        self.config = Ani2xtConfig(
            device=device,
            dtype=_dtype(dtype),
            max_atoms_per_batch=max_atoms_per_batch,
            min_distance_angstrom=min_distance_angstrom,
        )
        path = ani2xt_weights_path() if weights is None else Path(weights)
        with torch.inference_mode(False):  # parameters built in inference mode could not be used with autograd
            self._build(path)
        self.limits = StructureLimits(
            model="ANI-2xt",
            supported_elements=frozenset(ANI2XT_ELEMENTS),
            min_distance_angstrom=min_distance_angstrom,
        )
        log.debug("ANI-2xt loaded from %s on %s (%s)", path, self.config.device, self.config.dtype)

    def _build(self, path: Path) -> None:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        self.weights_path = path
        self.network = Ani2xtNetwork(state_dict).to(self.config.device).eval()
        self.network.aev.to(self.config.dtype)  # the self energies stay float64
        self.network.networks.to(self.config.dtype)
        self.network.requires_grad_(False)
        species = torch.full((_MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.long)
        species[list(ANI2XT_ELEMENTS)] = torch.arange(len(ANI2XT_ELEMENTS))
        self._species_of = species.to(self.config.device)
        self._triu: dict[int, torch.Tensor] = {}
        assert self.config.max_atoms_per_batch is not None
        self._max_atoms = self.config.max_atoms_per_batch

    @property
    def name(self) -> str:
        return "ANI-2xt"

    # --- checks ------------------------------------------------------------------------------------

    def problems(self, structures: Structures) -> list[str | None]:
        """One reason per structure ANI-2xt cannot evaluate (``None`` where it can)."""
        shared = structure_problems(structures, self.limits)
        numbers = structures.atomic_numbers.cpu()
        charges = structures.total_charge.cpu().tolist()
        multiplicities = structures.multiplicity.cpu().tolist()
        out: list[str | None] = []
        for k, rows in enumerate(atom_slices(structures)):
            z = numbers[rows]
            own = None
            if shared[k] is not None or charges[k] != 0 or multiplicities[k] != 1:
                own = ani2xt_problem(z.tolist(), int(charges[k]), int(multiplicities[k]))
            out.append(own if own is not None else shared[k])
        return out

    # --- evaluation --------------------------------------------------------------------------------

    def _candidate_pairs(self, counts: list[int]) -> torch.Tensor:
        """``[2, P]`` all atom pairs ``i < j`` inside each structure, on the flat layout of ``counts`` atoms."""
        device = self.config.device
        blocks: list[torch.Tensor] = []
        start = 0
        run_start, run_n, run_len = 0, -1, 0
        for n in [*counts, -1]:  # runs of equal sizes (conformers of one molecule) are built at once
            if n == run_n:
                run_len += 1
            else:
                if run_len and run_n > 1:
                    triu = self._triu.get(run_n)
                    if triu is None:
                        triu = self._triu[run_n] = torch.triu_indices(run_n, run_n, 1, device=device)
                    offsets = run_start + run_n * torch.arange(run_len, device=device)
                    blocks.append((triu[:, None, :] + offsets[None, :, None]).reshape(2, -1))
                run_start, run_n, run_len = start, n, 1
            start += max(n, 0)
        if not blocks:
            return torch.zeros((2, 0), dtype=torch.long, device=device)
        return torch.cat(blocks, dim=1)

    def _forward(self, z: torch.Tensor, x: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies ``[g]`` (eV, float64) and forces ``[n, 3]`` (eV/Å, float64) of structures laid out flat."""
        device, dtype = self.config.device, self.config.dtype
        # leave a caller's inference mode: tensors made in it cannot take part in autograd
        with torch.inference_mode(False), torch.enable_grad():
            species = self._species_of[z.to(device).clone()]
            owner = torch.repeat_interleave(
                torch.arange(len(counts), device=device), torch.tensor(counts, device=device)
            )
            pairs = self._candidate_pairs(counts)
            positions = x.detach().to(device=device, dtype=dtype).clone().requires_grad_(True)
            atom_energies = self.network(species, positions, pairs)
            energies = torch.zeros(len(counts), dtype=torch.float64, device=device).index_add(0, owner, atom_energies)
            (gradient,) = torch.autograd.grad(energies.sum(), positions)
        return energies.detach() * HARTREE_EV, -gradient.detach().to(torch.float64) * HARTREE_EV

    def _chunks(self, todo: list[int], sizes: list[int]) -> list[list[int]]:
        chunks: list[list[int]] = []
        atoms = 0
        for k in todo:
            if chunks and atoms + sizes[k] <= self._max_atoms:
                chunks[-1].append(k)
                atoms += sizes[k]
            else:
                chunks.append([k])
                atoms = sizes[k]
        return chunks

    def evaluate(self, structures: Structures) -> EnergyResult:
        """Energies ``[G]`` (eV) and forces ``[N, 3]`` (eV/Å) in the dtype and on the device of the positions;
        invalid entries: ``nan`` energy, zero forces and a reason."""
        problems = self.problems(structures)
        like = structures.positions
        g, n = structures.num_structures, like.shape[0]
        energies = torch.full((g,), float("nan"), dtype=torch.float64, device=self.config.device)
        forces = torch.zeros((n, 3), dtype=torch.float64, device=self.config.device)
        slices = atom_slices(structures)
        sizes = [s.stop - s.start for s in slices]
        reasons: list[str | None] = list(problems)
        for chunk in self._chunks([k for k, p in enumerate(problems) if p is None], sizes):
            self._evaluate_chunk(structures, chunk, slices, energies, forces, reasons)
        valid = torch.tensor([r is None for r in reasons], dtype=torch.bool)
        return EnergyResult(
            energies=energies.to(device=like.device, dtype=like.dtype),
            forces=forces.to(device=like.device, dtype=like.dtype),
            valid=valid.to(like.device),
            reasons=tuple(reasons),
        )

    def _evaluate_chunk(
        self,
        structures: Structures,
        chunk: list[int],
        slices: list[slice],
        energies: torch.Tensor,
        forces: torch.Tensor,
        reasons: list[str | None],
    ) -> None:
        """Fill ``energies``/``forces``/``reasons`` for ``chunk`` in one pass (retried one by one if it fails)."""
        rows = torch.cat([torch.arange(slices[k].start, slices[k].stop) for k in chunk])
        counts = [slices[k].stop - slices[k].start for k in chunk]
        try:
            chunk_energies, chunk_forces = self._forward(
                structures.atomic_numbers[rows.to(structures.atomic_numbers.device)],
                structures.positions[rows.to(structures.positions.device)],
                counts,
            )
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if len(chunk) == 1:
                reasons[chunk[0]] = f"ANI-2xt evaluation failed: {type(exc).__name__}: {exc}"
                return
            log.warning("ANI-2xt pass over %d structures failed (%s); evaluating one at a time", len(chunk), exc)
            for k in chunk:
                self._evaluate_chunk(structures, [k], slices, energies, forces, reasons)
            return
        device = self.config.device
        index, rows = torch.tensor(chunk, device=device), rows.to(device)
        owner = torch.repeat_interleave(torch.arange(len(chunk), device=device), torch.tensor(counts, device=device))
        bad_atoms = (~torch.isfinite(chunk_forces).all(dim=1)).long()
        bad_force = torch.zeros(len(chunk), dtype=torch.long, device=device).index_add(0, owner, bad_atoms) > 0
        finite = torch.isfinite(chunk_energies) & ~bad_force
        energies[index] = torch.where(finite, chunk_energies, float("nan"))
        forces[rows] = torch.where(finite[owner][:, None], chunk_forces, 0.0)
        for k, ok in zip(chunk, finite.tolist(), strict=True):
            if not ok:
                reasons[k] = "ANI-2xt returned a non-finite energy or force"
