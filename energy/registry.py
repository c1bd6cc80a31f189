"""Energy models by name: the one place the CLI, the workers and the benchmarks look them up.

Each entry names a class (imported lazily, so ``mmff`` never imports tblite or fairchem) and the
keyword options it is built with; ``build_energy_model("xtb", method="GFN1-xTB")`` passes options on.
``auto`` picks ``ani2xt`` or ``xtb`` per structure (:func:`energy.auto.choose_energy_model`).
"""

from __future__ import annotations

import importlib
from typing import Any

from energy.protocol import EnergyModel

__all__ = ["ENERGY_MODELS", "build_energy_model"]

# name -> ("module:Class", default options)
ENERGY_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "xtb": ("energy.xtb:XtbEnergy", {"method": "GFN2-xTB"}),
    "gfn1-xtb": ("energy.xtb:XtbEnergy", {"method": "GFN1-xTB"}),
    "mmff": ("energy.mmff:MmffEnergy", {}),
    "fairchem": ("energy.fairchem:FairchemEnergy", {}),
    "ani2xt": ("energy.ani2xt:Ani2xtEnergy", {}),
    "auto": ("energy.auto:AutoEnergy", {}),  # ani2xt where it applies, xtb elsewhere (per structure)
}


def build_energy_model(name: str, **options: Any) -> EnergyModel:
    """Build the named model; unknown names list the known ones."""
    try:
        target, defaults = ENERGY_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown energy model {name!r}; choose one of {sorted(ENERGY_MODELS)}") from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    model = cls(**{**defaults, **options})
    if not isinstance(model, EnergyModel):
        raise TypeError(f"{target} does not implement the EnergyModel protocol")
    return model
