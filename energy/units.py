"""Atomic units ↔ the energy protocol's units (eV, Å, eV/Å), CODATA 2018.

CODATA 2018 is the set mctc-lib (the structure library under tblite and xtb) uses, so geometries
converted here match what tblite's own file readers produce. The published CODATA 2018 values:

- Hartree energy: ``E_h = 27.211386245988 eV``
- Bohr radius: ``a_0 = 0.529177210903 Å``
- Boltzmann constant: ``k_B = 8.617333262e-5 eV/K`` (exact since the 2019 SI redefinition)

Each adapter converts once, at its boundary: positions Å → Bohr on the way in, energies Hartree → eV
and gradients Hartree/Bohr → forces eV/Å on the way out.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BOHR_ANGSTROM",
    "BOLTZMANN_EV_PER_K",
    "HARTREE_EV",
    "KCAL_PER_MOL_IN_EV",
    "angstrom_to_bohr",
    "gradient_hartree_bohr_to_forces_ev_angstrom",
    "hartree_to_ev",
    "kelvin_to_hartree",
]

HARTREE_EV = 27.211386245988
"""One Hartree in eV (CODATA 2018)."""

BOHR_ANGSTROM = 0.529177210903
"""One Bohr radius in Å (CODATA 2018)."""

BOLTZMANN_EV_PER_K = 8.617333262e-5
"""Boltzmann constant in eV/K (exact)."""

KCAL_PER_MOL_IN_EV = 4184.0 / (6.02214076e23 * 1.602176634e-19)
"""One kcal/mol per molecule in eV (exact in SI: 4184 J / (N_A e))."""


def angstrom_to_bohr(positions_angstrom: np.ndarray) -> np.ndarray:
    """Å → Bohr: ``x / a_0``."""
    return np.asarray(positions_angstrom, dtype=np.float64) / BOHR_ANGSTROM


def hartree_to_ev(energy_hartree: float) -> float:
    """Hartree → eV: ``E · E_h``."""
    return float(energy_hartree) * HARTREE_EV


def gradient_hartree_bohr_to_forces_ev_angstrom(gradient_hartree_bohr: np.ndarray) -> np.ndarray:
    """``∂E/∂x`` in Hartree/Bohr → forces ``−∂E/∂x`` in eV/Å: ``−g · E_h / a_0``."""
    return -np.asarray(gradient_hartree_bohr, dtype=np.float64) * (HARTREE_EV / BOHR_ANGSTROM)


def kelvin_to_hartree(temperature_k: float) -> float:
    """A temperature as the energy ``k_B T`` in Hartree (tblite's electronic temperature unit)."""
    return float(temperature_k) * BOLTZMANN_EV_PER_K / HARTREE_EV
