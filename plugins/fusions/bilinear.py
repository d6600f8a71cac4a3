"""Multiplicative fusions: ``tensor`` (TFN) and ``low_rank_tensor`` (LMF).

Both append a constant 1 to every modality's vector, so the fused tensor holds the unimodal,
bimodal, ... and N-modal interaction terms. An absent modality's vector becomes ``[1, 0, ..., 0]``:
only its constant survives, and the result reduces exactly to the fusion of the present ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore_plugins.fusions._common import select_present, stack_present
from mmcore_plugins.fusions.concat import check_slots


def with_one(x: torch.Tensor) -> torch.Tensor:
    """``[B, d] -> [B, d + 1]`` with a leading constant 1."""
    return torch.cat([torch.ones_like(x[:, :1]), x], dim=-1)


class TensorFusion(mmcore.Fusion):
    """Tensor fusion network (Zadeh et al. 2017): outer product of ``[1; z_i]`` over all modalities.

    Each modality is first projected to ``factor_dim`` (the outer product has
    ``(factor_dim + 1) ** N`` entries), then the flattened outer product is projected to ``dim``.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, factor_dim: int = 16) -> None:
        super().__init__(input_dims, dim)
        if factor_dim < 1:
            raise ValueError(f"factor_dim must be positive, got {factor_dim}")
        size = (factor_dim + 1) ** len(input_dims)
        if size > 2**22:
            raise ValueError(
                f"the outer product would have {size} entries ((factor_dim + 1) ** {len(input_dims)}); lower factor_dim"
            )
        self.slots = list(input_dims)
        self.factors = nn.ModuleDict(
            {s: nn.Sequential(nn.LayerNorm(w), nn.Linear(w, factor_dim), nn.GELU()) for s, w in input_dims.items()}
        )
        self.out = nn.Linear(size, dim)

    def fused_tensor(self, features: Mapping[str, Features]) -> torch.Tensor:
        """The flattened outer product ``[B, prod(factor_dim + 1)]``."""
        z = None
        for s in self.slots:
            v = with_one(select_present(self.factors[s](features[s].pooled), features[s].present))
            z = v if z is None else (z[:, :, None] * v[:, None, :]).flatten(1)
        return z

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        present = stack_present(features, self.slots).any(0)
        return Features.from_pooled(self.out(self.fused_tensor(features)), present)


class LowRankTensorFusion(mmcore.Fusion):
    """Low-rank multimodal fusion (Liu et al. 2018): TFN's weight tensor as a rank-R CP decomposition.

    ``h = sum_r w_r * prod_i (W_i^(r) [1; x_i]) + b``: linear in each modality and never building the
    outer product. At full rank it can represent any TFN (tested).
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, rank: int = 4) -> None:
        super().__init__(input_dims, dim)
        if rank < 1:
            raise ValueError(f"rank must be positive, got {rank}")
        self.slots, self.rank = list(input_dims), rank
        self.factors = nn.ParameterDict(
            {s: nn.Parameter(torch.randn(rank, w + 1, dim) / (w + 1) ** 0.5) for s, w in input_dims.items()}
        )
        self.rank_weights = nn.Parameter(torch.ones(rank) / rank)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        product = None
        for s in self.slots:
            v = with_one(select_present(features[s].pooled, features[s].present))  # [B, w + 1]
            term = torch.einsum("bw,rwd->rbd", v, self.factors[s])
            product = term if product is None else product * term
        fused = torch.einsum("r,rbd->bd", self.rank_weights, product) + self.bias
        present = stack_present(features, self.slots).any(0)
        return Features.from_pooled(fused, present)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_fusion("tensor", TensorFusion, example_options={"dim": 16, "factor_dim": 4})
    registry.add_fusion("low_rank_tensor", LowRankTensorFusion, example_options={"dim": 16, "rank": 3})
