"""The hyper-parameters of :class:`~sampler.tensor_product.TensorProductControl`, importable without e3nn.

Code that only reads, writes or compares network configs (checkpoint loading, :mod:`sampler.networks`) imports
this module; e3nn (which imports ``torch._dynamo``, seconds at start-up) is imported when a tensor-product network
is built or its irreps are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from e3nn import o3

__all__ = ["TensorProductConfig"]


@dataclass(frozen=True, kw_only=True)
class TensorProductConfig:
    """Tensor-product network hyper-parameters.

    Attributes:
        node_features: width of the systems' node features.
        edge_features: width of the systems' edge (pair) features.
        num_layers: interaction blocks.
        scalars: multiplicity of the hidden ``0e`` channels.
        vectors: multiplicity of each hidden ``l >= 1`` irrep (``1o``, and ``2e`` when ``lmax = 2``).
        lmax: highest degree of the spherical harmonics and of the hidden irreps (1 or 2).
        pseudo_tensors: also carry the opposite-parity irreps (``1e``, and ``2o`` when ``lmax = 2``): the
            cross-product paths ``1o x 1o -> 1e`` then survive. Still reflection-equivariant.
        radial_basis: number of Gaussians on the softened distance.
        radial_max_angstrom: centre of the last Gaussian (the first is at 0; the width is their spacing).
        radial_hidden: width of the radial MLP that produces the tensor-product weights.
        softening_angstrom: ``epsilon`` of the softened direction and distance.
        time_frequencies: number of Fourier frequencies embedding ``t`` (as in the EGNN).
        output_scale: initial value of the learned output scale.
    """

    node_features: int
    edge_features: int = 0
    num_layers: int = 3
    scalars: int = 32
    vectors: int = 8
    lmax: int = 1
    pseudo_tensors: bool = True
    radial_basis: int = 16
    radial_max_angstrom: float = 8.0
    radial_hidden: int = 64
    softening_angstrom: float = 0.1
    time_frequencies: int = 8
    output_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.lmax not in (1, 2):
            raise ValueError(f"lmax must be 1 or 2, got {self.lmax}")
        for name in ("num_layers", "scalars", "vectors", "radial_basis", "radial_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.softening_angstrom <= 0 or self.radial_max_angstrom <= 0:
            raise ValueError("softening_angstrom and radial_max_angstrom must be positive")

    def gated_irreps(self) -> o3.Irreps:
        """The hidden ``l >= 1`` irreps (each multiplied by a gate)."""
        from e3nn import o3

        parities = (1, -1) if self.pseudo_tensors else (1,)
        return o3.Irreps(
            [(self.vectors, (l, p * (-1) ** l)) for l in range(1, self.lmax + 1) for p in parities]  # noqa: E741
        ).sort()[0]
