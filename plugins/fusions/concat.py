"""`concat`: feature-level concatenation + projection, on the fused concat-linear kernel.

(``weighted_concat``, its variant with learned per-modality weights, is registered by ``pooling.py``.)
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
from mmcore_plugins.fusions._common import check_dropout, check_slots

__all__ = ["ACTIVATIONS", "ConcatFusion", "check_slots"]

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "none": nn.Identity}


class ConcatFusion(mmcore.Fusion):
    """Concatenate the per-modality pooled vectors and project them (one fused kernel, no concat copy).

    ``activation(W [LN(x_1); ...; LN(x_N)] + b)``, computed by ``mmcore_kernels.concat_linear``
    without materialising the concatenation. Any number of modalities (1 included).
    Missing modalities: replaced by a learned placeholder vector for that sample, so the
    projection always sees a full-width input and an absent modality's data never leaks in.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        dim: int = 256,
        dropout: float = 0.0,
        activation: Literal["gelu", "relu", "none"] = "gelu",
    ) -> None:
        super().__init__(input_dims, dim)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
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
        self.activation = ACTIVATIONS[activation]()
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


def _as(param: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``param`` in ``dtype`` (autocast gives bf16/fp16 activations); itself when it already is."""
    return param if param.dtype == dtype else param.to(dtype)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_fusion("concat", ConcatFusion, example_options={"dim": 16})
