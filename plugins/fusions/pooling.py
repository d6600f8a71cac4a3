"""Fusions that pool one vector per modality: ``sum``, ``mean``, ``deepset`` and ``late``.

Each normalises every modality's pooled vector, projects it, and combines only the present ones,
so a sample that has a single modality gets a function of that modality alone. All take any
number of modalities, one included. (``weighted_concat`` lives beside ``concat`` in ``concat.py``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore_plugins.fusions._common import (
    check_dropout,
    check_positive,
    check_slots,
    masked_softmax,
    mean_over_present,
    select_present,
    stack_present,
)


class _PerModalityProjection(mmcore.Fusion):
    """Base: LayerNorm + Linear from each modality's width to ``dim``; dropout on the fused output."""

    reads_tokens = False  # pooled vectors only

    name = "pooling"

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim)
        check_dropout(self.name, dropout)
        self.slots = list(input_dims)
        self.project = nn.ModuleDict({s: nn.Sequential(nn.LayerNorm(w), nn.Linear(w, dim)) for s, w in input_dims.items()})
        self.dropout = nn.Dropout(dropout)

    def projections(self, features: Mapping[str, Features]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, B, dim]`` projections (exactly zero where absent) and the ``[N, B]`` presence."""
        check_slots(self, features)
        present = stack_present(features, self.slots)
        projected = torch.stack(
            [select_present(self.project[s](features[s].unmasked_pooled), features[s].present) for s in self.slots]
        )
        return projected, present

    def finish(self, fused: torch.Tensor, present: torch.Tensor) -> Features:
        return Features.from_pooled(self.dropout(fused), present.any(0))


class SumFusion(_PerModalityProjection):
    """Sum of the per-modality projections ``sum_i W_i LN(x_i)`` over the present modalities.

    Missing modalities: excluded (they add nothing), so the output scale grows with the number present.
    """

    name = "sum"

    def forward(self, features: Mapping[str, Features]) -> Features:
        projected, present = self.projections(features)
        return self.finish(projected.sum(0), present)


class MeanFusion(_PerModalityProjection):
    """Mean of the per-modality projections ``W_i LN(x_i)`` over the present modalities.

    Missing modalities: excluded from the mean (not counted), so one modality left gives its projection.
    """

    name = "mean"

    def forward(self, features: Mapping[str, Features]) -> Features:
        projected, present = self.projections(features)
        return self.finish(mean_over_present(projected, present), present)


class DeepSetFusion(_PerModalityProjection):
    """Permutation-invariant DeepSets pooling (Zaheer et al. 2017): ``rho(sum_i phi(W_i LN(x_i)))`` over the present modalities.

    The modalities are a set: ``phi`` and ``rho`` are shared, the sum makes the result independent
    of their order. Missing modalities: natively handled, an absent one is simply not in the set
    (any subset, a single modality included, is a valid input).
    """

    name = "deepset"

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim, dropout)
        hidden = dim if hidden is None else hidden
        check_positive("deepset", hidden=hidden)
        self.phi = nn.Sequential(nn.GELU(), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.rho = nn.Sequential(nn.Linear(hidden, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, features: Mapping[str, Features]) -> Features:
        projected, present = self.projections(features)
        elements = select_present(self.phi(projected).transpose(0, 1), present.T).transpose(0, 1)
        return self.finish(self.rho(elements.sum(0)), present)


class LateFusion(_PerModalityProjection):
    """Decision-level (late) fusion: one decision vector per modality, averaged over the present modalities.

    Each modality has its own network to a ``dim``-wide *decision* vector
    ``d_i = W'_i GELU(W_i LN(x_i))``; the fused vector is ``sum_i w_i d_i`` with ``w`` uniform
    (``combine: mean``) or a softmax of learned per-modality scores (``combine: learned``), both
    over the present modalities only. Relation to the head: the head reads the combined decision,
    and since the weights sum to 1, a linear head ``h(d) = A d + c`` gives exactly
    ``sum_i w_i h(d_i)`` — the weighted mean of per-modality predictions (logits) of one shared
    head, i.e. classic late fusion. A head with a hidden layer sees the combined decision instead.
    Missing modalities: excluded (weight 0, the others renormalise).
    """

    name = "late"

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, combine: Literal["mean", "learned"] = "mean", dropout: float = 0.0
    ) -> None:
        super().__init__(input_dims, dim, dropout)
        if combine not in ("mean", "learned"):
            raise ValueError(f"late: combine must be 'mean' or 'learned', got {combine!r}")
        self.combine = combine
        self.decide = nn.ModuleDict({s: nn.Sequential(nn.GELU(), nn.Linear(dim, dim)) for s in self.slots})
        self.scores = nn.Parameter(torch.zeros(len(self.slots)), requires_grad=combine == "learned")

    def modality_weights(self, present: torch.Tensor) -> torch.Tensor:
        """``[N, B]`` combination weights: softmax of the scores over each sample's present modalities."""
        return masked_softmax(self.scores[:, None].expand(-1, present.shape[1]), present, dim=0)

    def forward(self, features: Mapping[str, Features]) -> Features:
        projected, present = self.projections(features)
        decisions = torch.stack([self.decide[s](projected[i]) for i, s in enumerate(self.slots)])
        decisions = select_present(decisions.transpose(0, 1), present.T).transpose(0, 1)
        weights = self.modality_weights(present).to(decisions.dtype)
        return self.finish((decisions * weights[..., None]).sum(0), present)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    small = {"dim": 16}
    registry.add_fusion("sum", SumFusion, example_options=small)
    registry.add_fusion("mean", MeanFusion, example_options=small)
    registry.add_fusion("deepset", DeepSetFusion, example_options={"dim": 16, "hidden": 12})
    registry.add_fusion("late", LateFusion, example_options={"dim": 16, "combine": "learned"})


__all__ = ["DeepSetFusion", "LateFusion", "MeanFusion", "SumFusion"]
