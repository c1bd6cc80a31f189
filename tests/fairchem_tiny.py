"""Random-weight fairchem checkpoints in the exact format fairchem's own loader reads.

Pretrained UMA/eSEN weights cannot be downloaded here, so the tests (and the benchmarks that time "the
random fairchem model") build a checkpoint with the real architectures and random weights and load it
through :class:`energy.fairchem.FairchemEnergy`, the code path users take with a real checkpoint.

The file is what fairchem's trainer writes (``mlip_unit.convert_train_checkpoint_to_inference_checkpoint``):
a pickled :class:`MLIPInferenceCheckpoint` holding the Hydra ``model_config`` (``HydraModel`` with an
``eSCNMDMoeBackbone``), the ``model_state_dict``, the ``ema_state_dict`` of a
``torch.optim.swa_utils.AveragedModel`` (what ``load_inference_model(use_ema=True)`` restores) and the
``tasks_config`` (one ``Task`` per dataset and property, with normalizers and element references).

Two layouts, after fairchem's release configs:

* ``"uma"``: ``configs/uma/training_release/uma_sm_full_conserve_1p2.yaml``: a mixture-of-linear-experts
  backbone (``num_experts > 0``, composition embedding, charge-balanced channels, a ``model_id`` tag) with
  a ``DatasetSpecificMoEWrapper`` energy/force head over the datasets ``omol`` and ``omat``.
* ``"esen"``: ``configs/uma/training_release/esen_sm_cons_orbnet.yaml``: the same backbone without experts
  and a ``DatasetSpecificSingleHeadWrapper`` head for ``omol`` only.

Both are conservative (forces = −∇E by autograd). Write one from the shell with
``python -m tests.fairchem_tiny OUT.pt [--architecture uma|esen] [--size tiny|uma-s]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import hydra
import torch
from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint

__all__ = ["UMA_S_SIZES", "TinyModelSpec", "write_random_checkpoint"]

_PKG = "fairchem.core"


@dataclass(frozen=True, kw_only=True)
class TinyModelSpec:
    """Architecture and sizes of a random-weight checkpoint (defaults: a few thousand parameters)."""

    architecture: Literal["uma", "esen"] = "uma"
    sphere_channels: int = 8
    lmax: int = 1
    num_layers: int = 2
    hidden_channels: int = 8
    edge_channels: int = 8
    num_distance_basis: int = 16
    num_experts: int = 2
    max_num_elements: int = 100
    cutoff_angstrom: float = 6.0
    max_neighbors: int = 300
    energy_rmsd_ev: float = 1.3
    seed: int = 0

    @property
    def datasets(self) -> tuple[str, ...]:
        return ("omol", "omat") if self.architecture == "uma" else ("omol",)


# The sizes of UMA-S (K4L2 backbone of fairchem's release configs), for timings that mean something.
UMA_S_SIZES = TinyModelSpec(
    sphere_channels=128,
    lmax=2,
    num_layers=4,
    hidden_channels=128,
    edge_channels=128,
    num_distance_basis=64,
    num_experts=32,
)


def _backbone_config(spec: TinyModelSpec) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model": f"{_PKG}.models.uma.escn_moe.eSCNMDMoeBackbone",
        "max_num_elements": spec.max_num_elements,
        "sphere_channels": spec.sphere_channels,
        "lmax": spec.lmax,
        "mmax": spec.lmax,
        "otf_graph": True,
        "max_neighbors": spec.max_neighbors,
        "cutoff": spec.cutoff_angstrom,
        "edge_channels": spec.edge_channels,
        "distance_function": "gaussian",
        "num_distance_basis": spec.num_distance_basis,
        "regress_forces": True,
        "regress_stress": False,
        "direct_forces": False,
        "num_layers": spec.num_layers,
        "hidden_channels": spec.hidden_channels,
        "norm_type": "rms_norm_sh",
        "act_type": "gate",
        "ff_type": "spectral",
        "chg_spin_emb_type": "rand_emb",
        "dataset_mapping": {d: d for d in spec.datasets},
    }
    if spec.architecture == "uma":
        config |= {
            "num_experts": spec.num_experts,
            "use_composition_embedding": True,
            "charge_balanced_channels": [0, 1, 2],
        }
    else:
        config |= {"num_experts": 0}
    return config


def _head_config(spec: TinyModelSpec) -> dict[str, Any]:
    common = {"head_cls": f"{_PKG}.models.uma.escn_md.MLP_EFS_Head", "head_kwargs": {"wrap_property": False}}
    if spec.architecture == "uma":
        return {
            "module": f"{_PKG}.models.uma.escn_moe.DatasetSpecificMoEWrapper",
            "dataset_mapping": {d: d for d in spec.datasets},
            **common,
        }
    return {
        "module": f"{_PKG}.models.uma.escn_moe.DatasetSpecificSingleHeadWrapper",
        "dataset_names": ["omol"],
        **common,
    }


def _task(name: str, prop: str, dataset: str, rmsd: float, element_refs: list[float] | None) -> dict[str, Any]:
    task: dict[str, Any] = {
        "_target_": f"{_PKG}.units.mlip_unit.mlip_unit.Task",
        "name": name,
        "level": "system" if prop == "energy" else "atom",
        "property": prop,
        "out_spec": {
            "_target_": f"{_PKG}.units.mlip_unit.mlip_unit.OutputSpec",
            "dim": [1] if prop == "energy" else [3],
            "dtype": "float32",
        },
        "normalizer": {"_target_": f"{_PKG}.modules.normalization.normalizer.Normalizer", "mean": 0.0, "rmsd": rmsd},
        "datasets": [dataset],
    }
    if element_refs is not None:
        task["element_references"] = {
            "_target_": f"{_PKG}.modules.normalization.element_references.ElementReferences",
            "element_references": {"_target_": "torch.DoubleTensor", "_args_": [element_refs]},
        }
    return task


def _tasks_config(spec: TinyModelSpec, generator: torch.Generator) -> list[dict[str, Any]]:
    tasks = []
    for dataset in spec.datasets:
        # Per-element reference energies (eV), as in the released models: the energy head predicts the
        # remainder and the loader adds the references back (``undo_element_references``).
        refs = (-10.0 * torch.rand(spec.max_num_elements, generator=generator, dtype=torch.float64)).tolist()
        refs[0] = 0.0
        tasks.append(_task(f"{dataset}_energy", "energy", dataset, spec.energy_rmsd_ev, refs))
        tasks.append(_task(f"{dataset}_forces", "forces", dataset, spec.energy_rmsd_ev, None))
    return tasks


def write_random_checkpoint(path: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Write a random-weight inference checkpoint to ``path``; the same ``spec`` writes the same weights."""
    spec = spec or TinyModelSpec()
    model_config: dict[str, Any] = {
        "_target_": f"{_PKG}.models.base.HydraModel",
        "backbone": _backbone_config(spec),
        "heads": {"energyandforcehead": _head_config(spec)},
        "pass_through_head_outputs": True,
    }
    if spec.architecture == "uma":
        # fairchem refuses UMA (expert) checkpoints without a model_id (apply_uma_compat_fixups).
        model_config["model_id"] = "random-tiny-uma"
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = hydra.utils.instantiate(model_config)
    ema = torch.optim.swa_utils.AveragedModel(model)
    checkpoint = MLIPInferenceCheckpoint(
        model_config=model_config,
        model_state_dict=model.state_dict(),
        ema_state_dict=ema.state_dict(),
        tasks_config=_tasks_config(spec, generator),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a random-weight fairchem UMA/eSEN inference checkpoint.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--architecture", choices=["uma", "esen"], default="uma")
    parser.add_argument("--size", choices=["tiny", "uma-s"], default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    base = UMA_S_SIZES if args.size == "uma-s" else TinyModelSpec()
    spec = TinyModelSpec(**{**base.__dict__, "architecture": args.architecture, "seed": args.seed})
    print(write_random_checkpoint(args.out, spec))


if __name__ == "__main__":
    main()
