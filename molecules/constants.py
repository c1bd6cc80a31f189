"""Constants of the molecule floor that front ends show before any work starts, free of RDKit and numpy.

The command line's help (``adjoint-sampling sample --help``, ``bench conformers --help``) prints these, so they
live here rather than in the modules that use them (:mod:`molecules.ensemble`, :mod:`molecules.stereo`,
:mod:`molecules.references`, which import them from here): building the parser imports no chemistry.
"""

from __future__ import annotations

__all__ = ["DATASETS", "DEFAULT_MAX_ISOMERS", "DEFAULT_TEMPERATURE_K"]

DEFAULT_TEMPERATURE_K = 298.15
"""Room temperature (25 °C), the temperature CREST, Auto3D and most papers report weights at."""

DEFAULT_MAX_ISOMERS = 32
"""At most this many stereoisomers per input (five open stereo elements); OMEGA's flipper default is similar."""

DATASETS: dict[str, tuple[str, str]] = {  # name -> (index file, conformer folder), relative to the data dir
    "spice_test": ("spice/spice_test.txt", "spice/conformers"),
    "drugs_dev": ("drugs/drugs_dev.txt", "drugs/conformers"),
}
"""The reference-ensemble sets of :func:`molecules.references.load_references`."""
