"""The small prediction network of the regression and multilabel heads."""

from __future__ import annotations

from torch import nn


def mlp(input_dim: int, output_dim: int, hidden: int | None, dropout: float) -> nn.Sequential:
    """``Dropout -> Linear(input_dim, output_dim)``, or with ``hidden`` one GELU hidden layer in between.

    ``[B, input_dim] -> [B, output_dim]``. Raises ``ValueError`` when ``hidden`` is not a positive
    int (or None) or ``dropout`` is not in [0, 1).
    """
    if hidden is not None and (isinstance(hidden, bool) or hidden < 1):
        raise ValueError(f"hidden must be a positive int (or null for no hidden layer), got {hidden!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if hidden:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, output_dim))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim, output_dim))
