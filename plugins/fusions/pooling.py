"""Fusions that pool one vector per modality: ``sum``, ``mean``, ``weighted_concat``, ``deepset``, ``late``.

Each projects every modality's pooled vector and combines only the present ones; a sample that
has a single modality gets that modality's projection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore_plugins.fusions._common import masked_softmax, select_present, stack_present
from mmcore_plugins.fusions.concat import check_slots


class _PerModalityProjection(mmcore.Fusion):
    """Base: LayerNorm + Linear from each modality's width to ``dim``."""

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256) -> None:
        super().__init__(input_dims, dim)
        self.slots = list(input_dims)
        self.project = nn.ModuleDict(
            {s: nn.Sequential(nn.LayerNorm(w), nn.Linear(w, dim)) for s, w in input_dims.items()}
        )

    def projections(self, features: Mapping[str, Features]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, B, dim]`` projections (zero where absent) and the ``[N, B]`` presence."""
        check_slots(self, features)
        present = stack_present(features, self.slots)
        projected = torch.stack(
            [select_present(self.project[s](features[s].pooled), features[s].present) for s in self.slots]
        )
        return projected, present


class SumFusion(_PerModalityProjection):
    """Sum of per-modality projections over the present modalities (absent ones add nothing)."""

    def forward(self, features: Mapping[str, Features]) -> Features:
        projected, present = self.projections(features)
        return Features.from_pooled(projected.sum(0), present.any(0))


class MeanFusion(_PerModalityProjection):
    """Mean of per-modality projections over the present modalities (absent ones are not counted)."""

    def forward(self, features: Mapping[str, Features]) -> Features:
        projected, present = self.projections(features)
        count = present.sum(0).clamp_min(1).to(projected.dtype)[:, None]
        return Features.from_pooled(projected.sum(0) / count, present.any(0))


class WeightedConcatFusion(mmcore.Fusion):
    """Concatenation + projection with learned per-modality weights (softmax over present modalities).

    An absent modality gets weight 0, so it contributes nothing; the remaining weights renormalise.
    The projection runs on ``mmcore_kernels.concat_linear``.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, activation: Literal["gelu", "relu", "none"] = "gelu") -> None:
        super().__init__(input_dims, dim)
        self.slots = list(input_dims)
        self.norms = nn.ModuleDict({s: nn.LayerNorm(w) for s, w in input_dims.items()})
        self.weight_logits = nn.Parameter(torch.zeros(len(self.slots)))
        self.linear = nn.Linear(sum(input_dims.values()), dim)
        self.activation = {"gelu": nn.GELU(), "relu": nn.ReLU(), "none": nn.Identity()}[activation]

    def forward(self, features: Mapping[str, Features]) -> Features:
        from mmcore_kernels import concat_linear

        check_slots(self, features)
        present = stack_present(features, self.slots)  # [N, B]
        logits = self.weight_logits[:, None].expand(-1, present.shape[1])
        weights = masked_softmax(logits, present, dim=0)  # [N, B]
        # Scaling by N keeps the input scale of a plain concatenation when every modality is there.
        xs = [
            select_present(self.norms[s](features[s].pooled), features[s].present) * weights[i][:, None] * len(self.slots)
            for i, s in enumerate(self.slots)
        ]
        fused = self.activation(concat_linear(xs, self.linear.weight, self.linear.bias))
        return Features.from_pooled(fused, present.any(0))


class DeepSetFusion(_PerModalityProjection):
    """Permutation-invariant DeepSets pooling: rho(sum over present modalities of phi(embedding)).

    Works for any subset of modalities natively: absent ones are simply not in the set.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, hidden: int | None = None) -> None:
        super().__init__(input_dims, dim)
        hidden = hidden or dim
        self.phi = nn.Sequential(nn.GELU(), nn.Linear(dim, hidden), nn.GELU())
        self.rho = nn.Sequential(nn.Linear(hidden, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, features: Mapping[str, Features]) -> Features:
        projected, present = self.projections(features)
        phi = self.phi(projected)
        elements = torch.where(present[..., None], phi, torch.zeros_like(phi))
        return Features.from_pooled(self.rho(elements.sum(0)), present.any(0))


class LateFusion(_PerModalityProjection):
    """Decision-level fusion: one decision vector per modality, combined over present modalities.

    Each modality gets its own small network to a ``dim``-wide decision vector; ``combine: mean``
    averages the present ones, ``combine: learned`` weights them by a softmax over learned
    per-modality scores restricted to the present ones. The head then reads the combined decision
    (with a linear head, this is exactly averaging per-modality predictions).
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, combine: Literal["mean", "learned"] = "mean") -> None:
        super().__init__(input_dims, dim)
        self.decide = nn.ModuleDict({s: nn.Sequential(nn.GELU(), nn.Linear(dim, dim)) for s in self.slots})
        self.combine = combine
        self.scores = nn.Parameter(torch.zeros(len(self.slots)))

    def forward(self, features: Mapping[str, Features]) -> Features:
        projected, present = self.projections(features)
        decisions = torch.stack([self.decide[s](projected[i]) for i, s in enumerate(self.slots)])
        if self.combine == "mean":
            logits = torch.zeros_like(self.scores)
        else:
            logits = self.scores
        weights = masked_softmax(logits[:, None].expand(-1, present.shape[1]), present, dim=0)
        fused = (decisions * weights[..., None]).sum(0)
        return Features.from_pooled(fused, present.any(0))


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    small = {"dim": 16}
    registry.add_fusion("sum", SumFusion, example_options=small)
    registry.add_fusion("mean", MeanFusion, example_options=small)
    registry.add_fusion("weighted_concat", WeightedConcatFusion, example_options=small)
    registry.add_fusion("deepset", DeepSetFusion, example_options=small)
    registry.add_fusion("late", LateFusion, example_options={"dim": 16, "combine": "learned"})


__all__ = ["DeepSetFusion", "LateFusion", "MeanFusion", "SumFusion", "WeightedConcatFusion"]
