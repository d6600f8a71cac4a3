"""Attention fusions on ``mmcore_kernels.cross_attention``: ``cross_attention``, ``perceiver``, ``nl_gate``,
``co_attention``, ``mult``, ``joint_transformer`` and ``bottleneck``.

Keys are every context modality's tokens, masked by ``mask & present``, so padding and absent
modalities never receive attention (and a sample with no key at all gets zeros, never NaN).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import mmcore
from mmcore import Features, masked_mean
from mmcore_plugins.fusions._common import AttentionBlock, MultiHeadCrossAttention, choose_slot
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
        self.query = choose_slot(input_dims, query, option="query", fusion="cross_attention")
        if layers < 1:
            raise ValueError(f"layers must be at least 1, got {layers}")
        self.context = [s for s in self.slots if s != self.query]
        self.placeholder = nn.Parameter(torch.zeros(dim))
        self.blocks = nn.ModuleList([AttentionBlock(dim, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        q_feats = features[self.query]
        queries, q_mask = _tokens_or_placeholder(self, self.query, q_feats, self.placeholder)
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


def _finish(x: torch.Tensor, mask: torch.Tensor, present: torch.Tensor) -> Features:
    """Fused Features from tokens ``x``: padding and absent samples zeroed, pooled = masked mean."""
    mask = mask & present[:, None]
    x = torch.where(mask[..., None], x, torch.zeros_like(x))
    return Features(tokens=x, mask=mask, pooled=masked_mean(x, mask), present=present)


class NonLocalGateFusion(_TokenProjection):
    """Non-local gating: each token of ``target`` attends to the other modalities' tokens, and the result gates it.

    ``g = sigmoid(W attn(x_t, context))``; ``out = x_t * g + attn`` per target token. An absent
    target is a learned placeholder token; absent context modalities are masked keys (attention
    then contributes zeros and the gate is constant).
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, target: str | None = None) -> None:
        super().__init__(input_dims, dim, heads)
        self.target = choose_slot(input_dims, target, option="target", fusion="nl_gate")
        self.context = [s for s in self.slots if s != self.target]
        self.placeholder = nn.Parameter(torch.zeros(dim))
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = MultiHeadCrossAttention(dim, heads)
        self.gate = nn.Linear(dim, dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        x, mask = _tokens_or_placeholder(self, self.target, features[self.target], self.placeholder)
        context, key_mask = self.tokens(features, self.context)
        attended = self.attention(self.norm_q(x), self.norm_kv(context), key_mask)
        out = x * torch.sigmoid(self.gate(attended)) + attended
        return _finish(out, mask, features[self.target].present | key_mask.any(1))


class CoAttentionFusion(_TokenProjection):
    """Co-attention: every modality's tokens attend to all the others' (both directions), then combined.

    Each modality's attended tokens are pooled; the fused vector is the mean over present
    modalities, and the fused tokens are all modalities' attended tokens side by side.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim, heads)
        if len(input_dims) < 2:
            raise ValueError(f"co_attention needs at least 2 modalities, got {list(input_dims)}")
        self.blocks = nn.ModuleDict({s: AttentionBlock(dim, heads, dropout) for s in self.slots})
        self.out = nn.Linear(dim, dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        tokens, masks = [], []
        for s in self.slots:
            own, own_mask = self.tokens(features, [s])
            context, key_mask = self.tokens(features, [o for o in self.slots if o != s])
            tokens.append(self.blocks[s](own, context, key_mask))
            masks.append(own_mask)
        x, mask = self.out(torch.cat(tokens, 1)), torch.cat(masks, 1)
        present = torch.stack([features[s].present for s in self.slots]).any(0)
        # Pooled: mean over present modalities of each modality's masked mean, so a long
        # sequence does not outweigh a single-token modality.
        pooled_each = torch.stack([masked_mean(self.out(t), m) for t, m in zip(tokens, masks, strict=True)])
        has = torch.stack([m.any(1) for m in masks])
        pooled = (pooled_each * has[..., None]).sum(0) / has.sum(0).clamp_min(1)[:, None].to(x.dtype)
        fused = _finish(x, mask, present)
        return Features(tokens=fused.tokens, mask=fused.mask, pooled=pooled, present=present)


class MulTFusion(_TokenProjection):
    """MulT (Tsai et al. 2019): pairwise cross-modal transformers into each modality, then self-attention.

    For each target modality, one cross-modal block per source modality (source tokens as keys);
    their outputs are concatenated and projected, then a self-attention block runs over the
    target's tokens. Fused tokens are all targets' tokens; pooled is the mean over present targets.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim, heads)
        if len(input_dims) < 2 or layers < 1:
            raise ValueError(f"mult needs at least 2 modalities and 1 layer, got {list(input_dims)} and {layers}")
        self.cross = nn.ModuleDict({
            f"{src}->{dst}": nn.ModuleList([AttentionBlock(dim, heads, dropout) for _ in range(layers)])
            for dst in self.slots for src in self.slots if src != dst
        })
        self.merge = nn.ModuleDict({s: nn.Linear(dim * (len(self.slots) - 1), dim) for s in self.slots})
        self.self_attention = nn.ModuleDict({s: AttentionBlock(dim, heads, dropout) for s in self.slots})

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        outputs, masks, pooled, has = [], [], [], []
        for dst in self.slots:
            own, own_mask = self.tokens(features, [dst])
            streams = []
            for src in self.slots:
                if src == dst:
                    continue
                context, key_mask = self.tokens(features, [src])
                x = own
                for block in self.cross[f"{src}->{dst}"]:
                    x = block(x, context, key_mask)
                streams.append(x)
            x = self.self_attention[dst](self.merge[dst](torch.cat(streams, -1)), key_mask=own_mask)
            outputs.append(x)
            masks.append(own_mask)
            pooled.append(masked_mean(x, own_mask))
            has.append(own_mask.any(1))
        has_t = torch.stack(has)
        mean = (torch.stack(pooled) * has_t[..., None]).sum(0) / has_t.sum(0).clamp_min(1)[:, None].to(outputs[0].dtype)
        present = torch.stack([features[s].present for s in self.slots]).any(0)
        fused = _finish(torch.cat(outputs, 1), torch.cat(masks, 1), present)
        return Features(tokens=fused.tokens, mask=fused.mask, pooled=mean * present[:, None].to(mean.dtype), present=present)


class JointTransformerFusion(_TokenProjection):
    """Single-stream transformer: all modalities' tokens (plus modality embeddings and a CLS token) in one sequence.

    Padding and absent modalities are masked keys; pooled is the CLS output.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim, heads)
        if layers < 1:
            raise ValueError(f"layers must be at least 1, got {layers}")
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = nn.ModuleList([AttentionBlock(dim, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        tokens, mask = self.tokens(features, self.slots)
        b = tokens.shape[0]
        x = torch.cat([self.cls.to(tokens.dtype).expand(b, 1, -1), tokens], 1)
        key_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], 1)
        for block in self.blocks:
            x = block(x, key_mask=key_mask)
        x = self.norm(x)
        present = mask.any(1)
        fused = _finish(x[:, 1:], mask, present)
        cls = torch.where(present[:, None], x[:, 0], torch.zeros_like(x[:, 0]))
        return Features(tokens=fused.tokens, mask=fused.mask, pooled=cls, present=present)


class BottleneckFusion(_TokenProjection):
    """Attention bottlenecks (Nagrani et al. 2021): modality streams exchange information only through a few shared tokens.

    Each layer, every present modality self-attends over ``[its tokens; bottleneck]``; the new
    bottleneck is the mean of the modalities' updated copies over the present ones. Fused tokens
    are the bottleneck tokens; pooled is their mean.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, bottleneck_tokens: int = 4, layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim, heads)
        if bottleneck_tokens < 1 or layers < 1:
            raise ValueError(f"bottleneck_tokens and layers must be at least 1, got {bottleneck_tokens} and {layers}")
        self.bottleneck = nn.Parameter(torch.randn(bottleneck_tokens, dim) * 0.02)
        self.layers = nn.ModuleList([nn.ModuleDict({s: AttentionBlock(dim, heads, dropout) for s in self.slots}) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        streams = {s: self.tokens(features, [s]) for s in self.slots}
        any_tokens = next(iter(streams.values()))[0]
        b, n = any_tokens.shape[0], self.bottleneck.shape[0]
        z = self.bottleneck.to(any_tokens.dtype).expand(b, -1, -1)
        has = torch.stack([streams[s][1].any(1) for s in self.slots])  # [N, B]
        always = torch.ones(b, n, dtype=torch.bool, device=z.device)
        for layer in self.layers:
            updates = []
            for s in self.slots:
                tokens, mask = streams[s]
                x = layer[s](torch.cat([tokens, z], 1), key_mask=torch.cat([mask, always], 1))
                streams[s] = (x[:, : tokens.shape[1]], mask)
                updates.append(x[:, tokens.shape[1]:])
            weights = has.to(z.dtype)[..., None, None]
            count = has.sum(0).to(z.dtype)[:, None, None]
            mixed = (torch.stack(updates) * weights).sum(0) / count.clamp_min(1)
            z = torch.where(count > 0, mixed, z)
        present = has.any(0)
        return _finish(self.norm(z), always, present)


def _tokens_or_placeholder(fusion, slot: str, feats: Features, placeholder: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected tokens of ``slot``; where the modality is absent, one learned placeholder token at position 0."""
    x = fusion.project[slot](feats.tokens) + fusion.modality_embedding[slot]
    b, length = feats.mask.shape
    first = torch.arange(length, device=x.device)[None, :] == 0
    stand_in = torch.where(first[..., None], placeholder.to(x.dtype), torch.zeros_like(x))
    x = torch.where(feats.present[:, None, None], x, stand_in)
    mask = torch.where(feats.present[:, None], feats.mask, first.expand(b, -1))
    return x, mask


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_fusion("cross_attention", CrossAttentionFusion, example_options={"dim": 16, "heads": 2})
    registry.add_fusion("perceiver", PerceiverFusion, example_options={"dim": 16, "heads": 2, "num_latents": 4})
    small = {"dim": 16, "heads": 2}
    registry.add_fusion("nl_gate", NonLocalGateFusion, example_options=small)
    registry.add_fusion("co_attention", CoAttentionFusion, example_options=small)
    registry.add_fusion("mult", MulTFusion, example_options=small)
    registry.add_fusion("joint_transformer", JointTransformerFusion, example_options={**small, "layers": 1})
    registry.add_fusion("bottleneck", BottleneckFusion, example_options={**small, "bottleneck_tokens": 2, "layers": 1})
