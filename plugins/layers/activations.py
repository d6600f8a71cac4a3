"""The ``activation:`` option's choices, shared by the fusions that take one (``concat``, ``weighted_concat``)."""

from __future__ import annotations

from torch import nn

#: Option value -> module class. ``none`` is the identity (a purely linear projection).
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "none": nn.Identity}


def activation(name: str) -> nn.Module:
    """A new activation module for option value ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()
