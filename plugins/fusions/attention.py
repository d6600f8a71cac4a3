"""Attention fusions on ``mmcore_kernels.cross_attention``: ``cross_attention`` and ``perceiver``.

Keys are every context modality's tokens, masked by ``mask & present``, so padding and absent
modalities never receive attention (and a sample with no key at all gets zeros, never NaN).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import mmcore
from mmcore import Features, masked_mean
from mmcore_plugins.fusions._common import AttentionBlock
from mmcore_plugins.fusions.concat import check_slots


class _TokenProjection(mmcore.Fusion):
    """Base: every modality's tokens projected to ``dim`` plus a learned modality embedding."""

    def __init__(self, input_dims: Mapping[str, int], dim: int, heads: int) -> None:
        super().__init__(input_dims, dim)
        if heads < 1 or dim % heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        self.slots = list(input_dims)
        self.project = nn.ModuleDict({s: nn.Linear(w, dim) for s, w in input_dims.items()})
        self.modality_embedding = nn.ParameterDict({s: nn.Parameter(torch.zeros(dim)) for s in input_dims})

    def tokens(self, features: Mapping[str, Features], slots: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated projected tokens ``[B, sum L, dim]`` and their key mask (``mask & present``)."""
        parts, masks = [], []
        for s in slots:
            f = features[s]
            keep = f.mask & f.present[:, None]
            projected = self.project[s](f.tokens) + self.modality_embedding[s]
            parts.append(torch.where(keep[..., None], projected, torch.zeros_like(projected)))
            masks.append(keep)
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)


class CrossAttentionFusion(_TokenProjection):
    """Queries of one modality attend to the tokens of all the others (stacked cross-attention blocks).

    ``query`` names the querying modality (default: the first). Where it is absent, a learned
    placeholder query stands in, so the sample is still described by the other modalities; where
    every other modality is absent, attention contributes zeros and the query passes through.
    """

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, layers: int = 1,
        query: str | None = None, dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, dim, heads)
        if len(input_dims) < 2:
            raise ValueError(f"cross_attention needs at least 2 modalities, got {list(input_dims)}")
        self.query = query if query is not None else self.slots[0]
        if self.query not in input_dims:
            raise ValueError(f"query must be one of the modalities {sorted(input_dims)}, got {self.query!r}")
        if layers < 1:
            raise ValueError(f"layers must be at least 1, got {layers}")
        self.context = [s for s in self.slots if s != self.query]
        self.placeholder = nn.Parameter(torch.zeros(dim))
        self.blocks = nn.ModuleList([AttentionBlock(dim, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        q_feats = features[self.query]
        queries = self.project[self.query](q_feats.tokens) + self.modality_embedding[self.query]
        b, length = q_feats.mask.shape
        first = torch.arange(length, device=queries.device)[None, :] == 0
        # Absent query modality: a single learned placeholder query at position 0.
        placeholder = torch.where(first[..., None], self.placeholder.to(queries.dtype), torch.zeros_like(queries))
        queries = torch.where(q_feats.present[:, None, None], queries, placeholder)
        q_mask = torch.where(q_feats.present[:, None], q_feats.mask, first.expand(b, -1))
        context, key_mask = self.tokens(features, self.context)
        x = queries
        for block in self.blocks:
            x = block(x, context, key_mask)
        x = self.norm(x)
        present = q_feats.present | key_mask.any(1)
        mask = q_mask & present[:, None]
        x = torch.where(mask[..., None], x, torch.zeros_like(x))
        return Features(tokens=x, mask=mask, pooled=masked_mean(x, mask), present=present)


class PerceiverFusion(_TokenProjection):
    """Learned latent queries cross-attend to every modality's tokens, then self-attend (Perceiver / Q-Former style).

    Any subset of modalities works natively: absent ones are masked out of the keys. The fused
    tokens are the ``num_latents`` latents; pooled is their mean.
    """

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, num_latents: int = 8,
        layers: int = 1, dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, dim, heads)
        if num_latents < 1 or layers < 1:
            raise ValueError(f"num_latents and layers must be at least 1, got {num_latents} and {layers}")
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.cross = nn.ModuleList([AttentionBlock(dim, heads, dropout) for _ in range(layers)])
        self.self_attention = nn.ModuleList([AttentionBlock(dim, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        context, key_mask = self.tokens(features, self.slots)
        x = self.latents.to(context.dtype).expand(context.shape[0], -1, -1)
        for cross, self_attn in zip(self.cross, self.self_attention, strict=True):
            x = self_attn(cross(x, context, key_mask))
        x = self.norm(x)
        present = key_mask.any(1)
        mask = present[:, None].expand(-1, x.shape[1]).clone()
        x = torch.where(mask[..., None], x, torch.zeros_like(x))
        return Features(tokens=x, mask=mask, pooled=masked_mean(x, mask), present=present)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_fusion("cross_attention", CrossAttentionFusion, example_options={"dim": 16, "heads": 2})
    registry.add_fusion("perceiver", PerceiverFusion, example_options={"dim": 16, "heads": 2, "num_latents": 4})
