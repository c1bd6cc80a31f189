"""The control networks by configuration: one builder, and the ``kind`` tag that checkpoints store.

A network config is an :class:`~sampler.egnn.EGNNConfig` or a
:class:`~sampler.tensor_product.TensorProductConfig`; the config's type picks the network. Stored as a dict, a
tensor-product config carries ``"kind": "tensor-product"``; an EGNN config carries no tag, so checkpoints
written before the tensor-product network existed (and code that reads their network dict) keep working.

Example::

    >>> control = build_control(TensorProductConfig(node_features=4))
    >>> network_from_dict(network_to_dict(control.config)) == control.config
    True
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeAlias

from sampler.egnn import EGNNConfig, EGNNControl
from sampler.tensor_product_config import TensorProductConfig

if TYPE_CHECKING:
    from sampler.tensor_product import TensorProductControl

__all__ = [
    "NETWORK_KINDS",
    "ControlConfig",
    "ControlNetwork",
    "build_control",
    "describe_network",
    "network_from_dict",
    "network_kind",
    "network_to_dict",
]

ControlConfig = EGNNConfig | TensorProductConfig
ControlNetwork: TypeAlias = "EGNNControl | TensorProductControl"

#: the ``kind`` tag of each network config type (EGNN is the default when a stored dict has no tag)
NETWORK_KINDS: dict[str, type[EGNNConfig] | type[TensorProductConfig]] = {
    "egnn": EGNNConfig,
    "tensor-product": TensorProductConfig,
}


def build_control(config: ControlConfig) -> ControlNetwork:
    """The control network that ``config`` describes."""
    if isinstance(config, EGNNConfig):
        return EGNNControl(config)
    if isinstance(config, TensorProductConfig):
        from sampler.tensor_product import TensorProductControl  # e3nn: imported only for this network

        return TensorProductControl(config)
    raise TypeError(f"unknown control-network config {type(config).__name__}")


def network_kind(config: ControlConfig) -> str:
    for kind, cls in NETWORK_KINDS.items():
        if type(config) is cls:
            return kind
    raise TypeError(f"unknown control-network config {type(config).__name__}")


def network_to_dict(config: ControlConfig) -> dict[str, Any]:
    """Plain dict of the config; tagged with ``kind`` unless it is an EGNN (untagged = EGNN)."""
    d = dataclasses.asdict(config)
    kind = network_kind(config)
    return d if kind == "egnn" else {"kind": kind, **d}


def network_from_dict(d: dict[str, Any]) -> ControlConfig:
    """Inverse of :func:`network_to_dict`; a dict without ``kind`` is an EGNN config."""
    fields = dict(d)
    kind = fields.pop("kind", "egnn")
    if kind not in NETWORK_KINDS:
        raise ValueError(f"unknown control network kind {kind!r}; known: {sorted(NETWORK_KINDS)}")
    return NETWORK_KINDS[kind](**fields)


def describe_network(config: ControlConfig) -> str:
    """A short human-readable name, e.g. ``EGNN 4x64`` or ``tensor product 4 layers, 48x0e+16x1o+16x1e``."""
    if isinstance(config, EGNNConfig):
        return f"EGNN {config.num_layers}x{config.hidden}"
    irreps = f"{config.scalars}x0e+{config.gated_irreps()}"
    return f"tensor product {config.num_layers} layers, {irreps}"
