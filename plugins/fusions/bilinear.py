"""Tensor-product fusions: ``tensor`` (TFN) and ``low_rank_tensor`` (LMF).

Both append a constant 1 to every modality's vector, so the fused tensor holds the unimodal,
bimodal, ... and N-modal interaction terms. An absent modality's vector becomes ``[1, 0, ..., 0]``:
only its constant survives, and the result reduces exactly to the fusion of the present ones.
(The factorised bilinear poolings — mcb, mfb, mutan, block — live in ``factorized.py``.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore_plugins.fusions._common import (
    check_dropout,
    check_positive,
    check_slots,
    require_modalities,
    select_present,
    stack_present,
)

#: The largest outer product TensorFusion builds per sample (entries).
MAX_TENSOR_ENTRIES = 2**22


def with_one(x: torch.Tensor) -> torch.Tensor:
    """``[B, d] -> [B, d + 1]`` with a leading constant 1."""
    return torch.cat([torch.ones_like(x[:, :1]), x], dim=-1)


class TensorFusion(mmcore.Fusion):
    """Tensor fusion network (Zadeh et al. 2017): ``W vec(z_1' (x) z_2' (x) ... (x) z_N') + b`` with ``z_i' = [1; z_i]``.

    Each modality is first reduced to ``z_i = GELU(W_i LN(x_i))`` of width ``factor_dim`` (the
    outer product has ``(factor_dim + 1) ** N`` entries, so N modalities are fused at once, not
    pairwise), then the flattened outer product is projected to ``dim``. Missing modalities:
    ``z_i' = [1, 0, ..., 0]``, so only the interaction terms among the present modalities remain.
    """

    reads_tokens = False  # pooled vectors only

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, factor_dim: int = 16, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim)
        require_modalities(input_dims, "tensor")
        check_positive("tensor", factor_dim=factor_dim)
        check_dropout("tensor", dropout)
        size = (factor_dim + 1) ** len(input_dims)
        if size > MAX_TENSOR_ENTRIES:
            raise ValueError(
                f"tensor: the outer product would have {size:,} entries ((factor_dim + 1) ** {len(input_dims)}), "
                f"more than {MAX_TENSOR_ENTRIES:,}; lower factor_dim or use low_rank_tensor"
            )
        self.slots = list(input_dims)
        self.factors = nn.ModuleDict(
            {s: nn.Sequential(nn.LayerNorm(w), nn.Linear(w, factor_dim), nn.GELU()) for s, w in input_dims.items()}
        )
        self.out = nn.Linear(size, dim)
        self.dropout = nn.Dropout(dropout)

    def factor_vectors(self, features: Mapping[str, Features]) -> list[torch.Tensor]:
        """``[1; z_i]`` per modality, ``[B, factor_dim + 1]`` (``[1, 0, ...]`` where absent)."""
        return [with_one(select_present(self.factors[s](features[s].unmasked_pooled), features[s].present)) for s in self.slots]

    @staticmethod
    def outer_product(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
        """The flattened outer product ``[B, prod_i d_i]`` of ``[B, d_i]`` vectors (first index slowest)."""
        z = vectors[0]
        for v in vectors[1:]:
            z = (z[:, :, None] * v[:, None, :]).flatten(1)
        return z

    def fused_tensor(self, features: Mapping[str, Features]) -> torch.Tensor:
        """The flattened outer product of the ``[1; z_i]``, ``[B, (factor_dim + 1) ** N]``."""
        return self.outer_product(self.factor_vectors(features))

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        present = stack_present(features, self.slots).any(0)
        return Features.from_pooled(self.dropout(self.out(self.fused_tensor(features))), present)


class LowRankTensorFusion(mmcore.Fusion):
    """Low-rank multimodal fusion (LMF, Liu et al. 2018): TFN's weight tensor as a rank-R CP decomposition.

    ``h = sum_r lambda_r prod_i (W_i^(r) [1; LN(x_i)]) + b`` — linear in each modality's vector and
    never building the outer product (cost linear in N). With rank ``prod_i (d_i + 1)`` it can
    express any TFN weight exactly (tested). Missing modalities: the vector becomes ``[1, 0, ..., 0]``,
    so the absent modality's factor contributes only its constant row.
    """

    reads_tokens = False  # pooled vectors only

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, rank: int = 4, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim)
        require_modalities(input_dims, "low_rank_tensor")
        check_positive("low_rank_tensor", rank=rank)
        check_dropout("low_rank_tensor", dropout)
        self.slots, self.rank = list(input_dims), rank
        self.norms = nn.ModuleDict({s: nn.LayerNorm(w) for s, w in input_dims.items()})
        # Each factor maps a unit-variance [1; x] to unit-variance outputs, so the N-way product keeps
        # its scale whatever N is (LMF's Xavier init shrinks it geometrically with N).
        self.factors = nn.ParameterDict(
            {s: nn.Parameter(torch.randn(rank, w + 1, dim) / (w + 1) ** 0.5) for s, w in input_dims.items()}
        )
        self.rank_weights = nn.Parameter(torch.full((1, rank), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.dropout = nn.Dropout(dropout)

    def fuse_vectors(self, vectors: Sequence[torch.Tensor]) -> torch.Tensor:
        """``h`` from the already-extended ``[1; x_i]`` vectors ``[B, d_i + 1]`` (one per slot, in order)."""
        product = None
        for s, v in zip(self.slots, vectors, strict=True):
            term = torch.einsum("bw,rwd->rbd", v, self.factors[s].to(v.dtype))
            product = term if product is None else product * term
        return torch.einsum("r,rbd->bd", self.rank_weights[0].to(product.dtype), product) + self.bias

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        vectors = [with_one(select_present(self.norms[s](features[s].unmasked_pooled), features[s].present)) for s in self.slots]
        present = stack_present(features, self.slots).any(0)
        return Features.from_pooled(self.dropout(self.fuse_vectors(vectors)), present)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_fusion("tensor", TensorFusion, example_options={"dim": 16, "factor_dim": 4})
    registry.add_fusion("low_rank_tensor", LowRankTensorFusion, example_options={"dim": 16, "rank": 3})


__all__ = ["LowRankTensorFusion", "TensorFusion", "with_one"]
