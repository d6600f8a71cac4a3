"""Attention fusions on ``mmcore_kernels.cross_attention``: ``cross_attention``, ``co_attention``, ``mult``,
``joint_transformer``, ``bottleneck`` and ``perceiver``.

All of them share ``mmcore_plugins.layers.attention`` (one multi-head attention module whose projections hand the
kernel ``[B, L, H, D]`` views). Keys are modality tokens masked by ``mask & present``: padding and
absent modalities are never attended to, and a query with no valid key at all gets exactly zero
from the kernel (never NaN). Output tokens are zero and masked where not real; ``present`` is
"any modality present".
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import mmcore
from mmcore import Features, masked_mean
from mmcore_plugins.fusions._common import (
    check_positive,
    check_slots,
    choose_slot,
    finish_tokens,
    mean_over_present,
    require_modalities,
    stack_present,
)
from mmcore_plugins.fusions._token_fusion import TokenFusion
from mmcore_plugins.layers.attention import TransformerBlock


def _blocks(count: int, dim: int, heads: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList([TransformerBlock(dim, heads, dropout) for _ in range(count)])


class CrossAttentionFusion(TokenFusion):
    """Queries of one modality attend to the tokens of all the others (a stack of cross-attention blocks).

    ``query`` names the querying modality (default: the first); its projected tokens go through
    ``layers`` pre-norm blocks of cross-attention (keys/values: every other modality's tokens, side
    by side with modality embeddings) + feed-forward. Fused tokens are the updated query tokens.
    Missing modalities: absent context modalities are masked keys (with none left, attention adds
    zeros and the query passes through); an absent query modality is replaced by one learned
    placeholder query token, so the sample is still described by the other modalities.
    """

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, layers: int = 1,
        query: str | None = None, dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, dim, heads, dropout, "cross_attention")
        self.query = choose_slot(input_dims, query, option="query", fusion="cross_attention")
        check_positive("cross_attention", layers=layers)
        self.context = [s for s in self.slots if s != self.query]
        self.placeholder = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = _blocks(layers, dim, heads, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        x, q_mask = self.tokens_or_placeholder(features, self.query, self.placeholder)
        context, key_mask = self.tokens(features, self.context)
        for block in self.blocks:
            x = block(x, context, key_mask)
        present = features[self.query].present | key_mask.any(1)
        return finish_tokens(self.norm(x), q_mask, present)


class CoAttentionFusion(TokenFusion):
    """Co-attention: every modality's tokens attend to all the others' at once (both directions), then combined.

    Per layer (ViLBERT-style co-attentional blocks, generalised to N modalities), each modality's
    stream cross-attends to the other streams' tokens from the previous layer, all updated
    simultaneously. Combined: fused tokens are all streams side by side (projected); pooled is the
    mean over the present modalities of each stream's masked mean (a long sequence does not
    outweigh a one-token modality). Missing modalities: an absent stream is masked out of the keys
    and out of the output; a stream whose context is entirely absent just passes through.
    """

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__(input_dims, dim, heads, dropout, "co_attention")
        require_modalities(input_dims, "co_attention")
        check_positive("co_attention", layers=layers)
        self.layers = nn.ModuleList([nn.ModuleDict({s: TransformerBlock(dim, heads, dropout) for s in self.slots}) for _ in range(layers)])
        self.out = nn.Linear(dim, dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        streams = {s: self.project_slot(features, s) for s in self.slots}
        for layer in self.layers:
            updated = {}
            for s in self.slots:
                others = [streams[o] for o in self.slots if o != s]
                context = torch.cat([t for t, _ in others], 1) if len(others) > 1 else others[0][0]
                key_mask = torch.cat([m for _, m in others], 1) if len(others) > 1 else others[0][1]
                updated[s] = (layer[s](streams[s][0], context, key_mask), streams[s][1])
            streams = updated
        outs = [self.out(streams[s][0]) for s in self.slots]
        masks = [streams[s][1] for s in self.slots]
        pooled = mean_over_present(
            torch.stack([masked_mean(o, m) for o, m in zip(outs, masks, strict=True)]), torch.stack([m.any(1) for m in masks])
        )
        present = stack_present(features, self.slots).any(0)
        return finish_tokens(torch.cat(outs, 1), torch.cat(masks, 1), present, pooled=pooled)


class MulTFusion(TokenFusion):
    """MulT (Tsai et al. 2019): pairwise cross-modal transformers into each modality, then self-attention.

    For each target modality and each source modality, a cross-modal transformer (``layers``
    blocks; queries: the target stream, keys/values: the source's projected tokens at every layer,
    as in the paper); a target's streams are concatenated, projected back to ``dim`` and passed
    through a self-attention block. Fused tokens are every target's tokens; pooled is the mean over
    the present targets of their masked means (the paper reads out the last time step; masked
    means suit ragged and single-token modalities). Missing modalities: an absent source is masked
    keys (that cross-modal stream adds zeros); an absent target is masked out of the output.
    """

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__(input_dims, dim, heads, dropout, "mult")
        require_modalities(input_dims, "mult")
        check_positive("mult", layers=layers)
        self.cross = nn.ModuleDict({
            f"{src}->{dst}": _blocks(layers, dim, heads, dropout)
            for dst in self.slots for src in self.slots if src != dst
        })
        self.merge = nn.ModuleDict({s: nn.Linear(dim * (len(self.slots) - 1), dim) for s in self.slots})
        self.self_attention = nn.ModuleDict({s: TransformerBlock(dim, heads, dropout) for s in self.slots})
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        projected = {s: self.project_slot(features, s) for s in self.slots}
        outputs, pooled, has = [], [], []
        for dst in self.slots:
            own, own_mask = projected[dst]
            streams = []
            for src in self.slots:
                if src == dst:
                    continue
                context, key_mask = projected[src]
                x = own
                for block in self.cross[f"{src}->{dst}"]:
                    x = block(x, context, key_mask)
                streams.append(x)
            merged = self.merge[dst](torch.cat(streams, -1))
            x = self.norm(self.self_attention[dst](merged, key_mask=own_mask))
            outputs.append(x)
            pooled.append(masked_mean(x, own_mask))
            has.append(own_mask.any(1))
        present = stack_present(features, self.slots).any(0)
        mask = torch.cat([projected[s][1] for s in self.slots], 1)
        return finish_tokens(torch.cat(outputs, 1), mask, present, pooled=mean_over_present(torch.stack(pooled), torch.stack(has)))


class JointTransformerFusion(TokenFusion):
    """Single-stream transformer: every modality's tokens (+ modality embeddings) and a CLS token in one sequence.

    ``layers`` pre-norm self-attention blocks over ``[CLS; tokens of modality 1; ...; modality N]``;
    fused tokens are the modality tokens after the stack, pooled is the CLS output. Any number of
    modalities (1 included). Missing modalities: their tokens (and padding) are masked keys, so a
    sample is described by whatever it has.
    """

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, layers: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__(input_dims, dim, heads, dropout, "joint_transformer")
        check_positive("joint_transformer", layers=layers)
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = _blocks(layers, dim, heads, dropout)
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
        return finish_tokens(x[:, 1:], mask, mask.any(1), pooled=x[:, 0])


class BottleneckFusion(TokenFusion):
    """Attention bottlenecks (MBT, Nagrani et al. 2021): modality streams exchange information only through a few shared tokens.

    Each layer, every modality's stream self-attends over ``[its tokens; bottleneck tokens]`` with
    its own block; the new bottleneck is the mean of the streams' updated copies (the paper's
    ``z = mean_i z_i``). Fused tokens are the final bottleneck tokens; pooled is the mean over the
    present modalities of each stream's masked mean (MBT averages the per-modality readouts).
    Missing modalities: an absent stream does not contribute to the bottleneck mean (a sample with
    one modality keeps that stream's bottleneck) and is left out of the pooled mean.
    """

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, bottleneck_tokens: int = 4, layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, dim, heads, dropout, "bottleneck")
        require_modalities(input_dims, "bottleneck")
        check_positive("bottleneck", bottleneck_tokens=bottleneck_tokens, layers=layers)
        self.bottleneck = nn.Parameter(torch.randn(bottleneck_tokens, dim) * 0.02)
        self.layers = nn.ModuleList([nn.ModuleDict({s: TransformerBlock(dim, heads, dropout) for s in self.slots}) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        streams = {s: self.project_slot(features, s) for s in self.slots}
        b, n = features[self.slots[0]].batch_size, self.bottleneck.shape[0]
        z = self.bottleneck.to(streams[self.slots[0]][0].dtype).expand(b, -1, -1)
        has = torch.stack([streams[s][1].any(1) for s in self.slots])  # [N, B]
        always = torch.ones(b, n, dtype=torch.bool, device=z.device)
        for layer in self.layers:
            updates = []
            for s in self.slots:
                tokens, mask = streams[s]
                x = layer[s](torch.cat([tokens, z], 1), key_mask=torch.cat([mask, always], 1))
                streams[s] = (x[:, : tokens.shape[1]], mask)
                updates.append(x[:, tokens.shape[1]:])
            mixed = mean_over_present(torch.stack(updates), has)
            z = torch.where(has.any(0)[:, None, None], mixed, z)
        present = has.any(0)
        pooled = mean_over_present(torch.stack([masked_mean(self.norm(streams[s][0]), streams[s][1]) for s in self.slots]), has)
        return finish_tokens(self.norm(z), always, present, pooled=pooled)


class PerceiverFusion(TokenFusion):
    """Learned latent queries cross-attend to every modality's tokens, then self-attend (Perceiver, Jaegle et al. 2021; Q-Former style).

    ``num_latents`` learned latents; each of ``layers`` rounds is a cross-attention block (latents
    read all modalities' tokens, side by side with modality embeddings) then a latent
    self-attention block. Fused tokens are the latents; pooled is their mean. Any number of
    modalities (1 included). Missing modalities: natively handled — absent ones are masked keys.
    """

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, num_latents: int = 8,
        layers: int = 1, dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, dim, heads, dropout, "perceiver")
        check_positive("perceiver", num_latents=num_latents, layers=layers)
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.cross = _blocks(layers, dim, heads, dropout)
        self.self_attention = _blocks(layers, dim, heads, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        context, key_mask = self.tokens(features, self.slots)
        x = self.latents.to(context.dtype).expand(context.shape[0], -1, -1)
        for cross, self_attention in zip(self.cross, self.self_attention, strict=True):
            x = self_attention(cross(x, context, key_mask))
        present = key_mask.any(1)
        mask = present[:, None].expand(-1, x.shape[1])
        return finish_tokens(self.norm(x), mask, present)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    small = {"dim": 16, "heads": 2}
    registry.add_fusion("cross_attention", CrossAttentionFusion, example_options=small)
    registry.add_fusion("co_attention", CoAttentionFusion, example_options=small)
    registry.add_fusion("mult", MulTFusion, example_options=small)
    registry.add_fusion("joint_transformer", JointTransformerFusion, example_options={**small, "layers": 1})
    registry.add_fusion("bottleneck", BottleneckFusion, example_options={**small, "bottleneck_tokens": 2, "layers": 1})
    registry.add_fusion("perceiver", PerceiverFusion, example_options={**small, "num_latents": 4})


__all__ = [
    "BottleneckFusion",
    "CoAttentionFusion",
    "CrossAttentionFusion",
    "JointTransformerFusion",
    "MulTFusion",
    "PerceiverFusion",
]
