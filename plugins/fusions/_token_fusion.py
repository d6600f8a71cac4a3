"""``TokenFusion``: the base of the token-level fusions (attention, non-local gate).

Each modality's tokens are projected to ``dim`` and given a learned modality embedding; the
attention itself is ``mmcore_plugins.layers.attention`` (shared with the captioning head).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore_plugins.layers.options import check_dropout, check_heads


class TokenFusion(mmcore.Fusion):
    """Base of the token-level fusions: each modality's tokens projected to ``dim`` + a modality embedding.

    ``tokens(features, slots)`` returns the projected tokens of ``slots`` side by side and their
    key mask ``mask & present``; tokens that are padding or belong to an absent sample are exactly
    zero (selected away, so they get no gradient either).
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int, heads: int, dropout: float, name: str) -> None:
        super().__init__(input_dims, dim)
        check_heads(name, dim, heads)
        check_dropout(name, dropout)
        self.slots = list(input_dims)
        self.heads = heads
        self.project = nn.ModuleDict({s: nn.Linear(w, dim) for s, w in input_dims.items()})
        self.modality_embedding = nn.ParameterDict({s: nn.Parameter(torch.randn(dim) * 0.02) for s in input_dims})

    def project_slot(self, features: Mapping[str, Features], slot: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``slot``'s tokens ``[B, L, dim]`` (zero where not real) and their key mask ``[B, L]``."""
        f = features[slot]
        keep = f.mask & f.present[:, None]
        projected = self.project[slot](f.tokens) + self.modality_embedding[slot]
        return torch.where(keep[..., None], projected, torch.zeros((), dtype=projected.dtype, device=projected.device)), keep

    def tokens(self, features: Mapping[str, Features], slots: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected tokens of ``slots`` concatenated along L, and their key mask."""
        parts = [self.project_slot(features, s) for s in slots]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)

    def tokens_or_placeholder(
        self, features: Mapping[str, Features], slot: str, placeholder: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`project_slot`, but an absent sample gets one learned ``placeholder`` token (position 0)."""
        f = features[slot]
        x = self.project[slot](f.tokens) + self.modality_embedding[slot]
        length = f.mask.shape[1]
        first = torch.arange(length, device=x.device)[None, :] == 0
        # Boolean algebra, not torch.where, on these bool masks: the same values, and a graph that
        # onnxruntime runs (its CPU Where takes no bool operands).
        mask = (f.present[:, None] & f.mask) | (~f.present[:, None] & first)
        stand_in = torch.where(first[..., None], placeholder.to(x.dtype), torch.zeros((), dtype=x.dtype, device=x.device))
        x = torch.where(f.present[:, None, None], x, stand_in)
        return torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device)), mask
