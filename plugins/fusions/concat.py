"""`concat` and `weighted_concat`: feature-level concatenation + projection, on the fused concat-linear kernel.

``weighted_concat`` is ``concat`` with learned per-modality weights (a softmax over the present
modalities) in front of the projection.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore_plugins.fusions._common import (
    check_dropout,
    check_slots,
    masked_softmax,
    require_modalities,
    stack_present,
)
from mmcore_plugins.layers.activations import ACTIVATIONS
from mmcore_plugins.layers.activations import activation as make_activation

__all__ = ["ACTIVATIONS", "ConcatFusion", "WeightedConcatFusion", "check_slots"]


class ConcatFusion(mmcore.Fusion):
    """Concatenate the per-modality pooled vectors and project them (one fused kernel, no concat copy).

    ``activation(W [LN(x_1); ...; LN(x_N)] + b)``, computed by ``mmcore_kernels.concat_linear``
    without materialising the concatenation. Any number of modalities (1 included).
    Missing modalities: replaced by a learned placeholder vector for that sample, so the
    projection always sees a full-width input and an absent modality's data never leaks in.
    """

    reads_tokens = False  # pooled vectors only

    def __init__(
        self,
        input_dims: Mapping[str, int],
        dim: int = 256,
        dropout: float = 0.0,
        activation: Literal["gelu", "relu", "none"] = "gelu",
    ) -> None:
        super().__init__(input_dims, dim)
        act = make_activation(activation)
        check_dropout("concat", dropout)
        self.slots = list(input_dims)
        self.norms = nn.ModuleDict({slot: nn.LayerNorm(width) for slot, width in input_dims.items()})
        self.placeholders = nn.ParameterDict({slot: nn.Parameter(torch.zeros(width)) for slot, width in input_dims.items()})
        total = sum(input_dims.values())
        self.weight = nn.Parameter(torch.empty(dim, total))
        self.bias = nn.Parameter(torch.zeros(dim))
        # nn.Linear's default initialisation, for the same training behaviour as cat + Linear.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(total)
        nn.init.uniform_(self.bias, -bound, bound)
        self.activation = act
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Mapping[str, Features]) -> Features:
        from mmcore_kernels import concat_linear

        check_slots(self, features)
        xs = []
        for slot in self.slots:
            feats = features[slot]
            normed = self.norms[slot](feats.unmasked_pooled)
            xs.append(torch.where(feats.present.unsqueeze(1), normed, _as(self.placeholders[slot], normed.dtype)))
        dtype = xs[0].dtype
        fused = self.activation(concat_linear(xs, _as(self.weight, dtype), _as(self.bias, dtype)))
        if self.dropout.p:
            fused = self.dropout(fused)
        present = functools.reduce(torch.logical_or, (features[slot].present for slot in self.slots))
        return Features.from_pooled(fused, present=present)


class WeightedConcatFusion(mmcore.Fusion):
    """Concatenation + projection with learned per-modality weights (softmax over the present modalities).

    ``activation(W [N w_1 LN(x_1); ...; N w_N LN(x_N)] + b)`` with ``w = softmax(s)`` over the
    present modalities of each sample (``s``: one learned score per modality; the factor ``N`` keeps
    the scale of a plain concatenation when every modality is there and the scores are equal).
    Missing modalities: weight exactly 0 (their block of the input is zero) and the weights of the
    present ones renormalise, so a sample with one modality left gives it the whole weight ``N``.
    """

    reads_tokens = False  # pooled vectors only

    def __init__(
        self,
        input_dims: Mapping[str, int],
        dim: int = 256,
        dropout: float = 0.0,
        activation: Literal["gelu", "relu", "none"] = "gelu",
    ) -> None:
        super().__init__(input_dims, dim)
        require_modalities(input_dims, "weighted_concat")
        act = make_activation(activation)
        check_dropout("weighted_concat", dropout)
        self.slots = list(input_dims)
        self.norms = nn.ModuleDict({s: nn.LayerNorm(w) for s, w in input_dims.items()})
        self.scores = nn.Parameter(torch.zeros(len(self.slots)))
        self.linear = nn.Linear(sum(input_dims.values()), dim)
        self.activation = act
        self.dropout = nn.Dropout(dropout)

    def modality_weights(self, present: torch.Tensor) -> torch.Tensor:
        """``[N, B]`` softmax of the learned scores over each sample's present modalities (0 where absent)."""
        return masked_softmax(self.scores[:, None].expand(-1, present.shape[1]), present, dim=0)

    def forward(self, features: Mapping[str, Features]) -> Features:
        from mmcore_kernels import concat_linear

        check_slots(self, features)
        present = stack_present(features, self.slots)  # [N, B]
        weights = self.modality_weights(present) * len(self.slots)
        xs = []
        for i, slot in enumerate(self.slots):
            normed = self.norms[slot](features[slot].unmasked_pooled)
            weighted = normed * weights[i][:, None].to(normed.dtype)
            xs.append(torch.where(features[slot].present[:, None], weighted, torch.zeros((), dtype=normed.dtype, device=normed.device)))
        weight, bias = self.linear.weight.to(xs[0].dtype), self.linear.bias.to(xs[0].dtype)
        fused = self.dropout(self.activation(concat_linear(xs, weight, bias)))
        return Features.from_pooled(fused, present=present.any(0))


def _as(param: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``param`` in ``dtype`` (autocast gives bf16/fp16 activations); itself when it already is."""
    return param if param.dtype == dtype else param.to(dtype)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_fusion("concat", ConcatFusion, example_options={"dim": 16})
    registry.add_fusion("weighted_concat", WeightedConcatFusion, example_options={"dim": 16})
