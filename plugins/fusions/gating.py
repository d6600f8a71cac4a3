"""Gating and modulation fusions: ``gated`` (GMU), ``film``, ``nl_gate`` and ``multiplicative``.

Each lets one part of the input scale another: GMU gates every modality's hidden vector, FiLM
and the non-local gate modulate one *target* modality's tokens by the others, multiplicative
interactions let the other modalities generate the weights applied to the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore.features import readable_now
from mmcore_plugins.fusions._common import (
    check_dropout,
    check_positive,
    check_slots,
    choose_slot,
    finish_tokens,
    masked_softmax,
    mean_over_present,
    require_modalities,
    select_present,
    stack_present,
)
from mmcore_plugins.fusions._token_fusion import TokenFusion
from mmcore_plugins.layers.attention import MultiHeadAttention


class GatedFusion(mmcore.Fusion):
    """Gated multimodal unit (GMU, Arevalo et al. 2017), generalised from 2 to N modalities.

    ``h_i = tanh(W_i x_i)``; per-feature gates ``z = softmax_i(W_z [x_1; ...; x_N])``; output
    ``sum_i z_i * h_i``. For two modalities this is the paper's ``z * h_1 + (1 - z) * h_2``
    (a softmax over two logits is a sigmoid of their difference). Missing modalities: excluded —
    an absent input enters the gate network as zeros and its gate is 0 (the softmax runs over the
    present modalities only), so one modality left gives exactly its ``h_i``.
    """

    reads_tokens = False  # pooled vectors only

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim)
        require_modalities(input_dims, "gated")
        check_dropout("gated", dropout)
        self.slots = list(input_dims)
        self.norms = nn.ModuleDict({s: nn.LayerNorm(w) for s, w in input_dims.items()})
        self.hidden = nn.ModuleDict({s: nn.Linear(w, dim) for s, w in input_dims.items()})
        self.gate = nn.Linear(sum(input_dims.values()), len(self.slots) * dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        present = stack_present(features, self.slots)  # [N, B]
        # Every modality of every sample present (one full record, as a Predictor sees): the selections and
        # the softmax's mask would keep everything, so they are skipped -- the same values, fewer operators.
        everything = readable_now(present) and bool(present.all())
        xs = [self.norms[s](features[s].unmasked_pooled) for s in self.slots]
        if not everything:
            xs = [select_present(x, features[s].present) for s, x in zip(self.slots, xs, strict=True)]
        hidden = torch.stack([torch.tanh(self.hidden[s](x)) for s, x in zip(self.slots, xs, strict=True)])  # [N, B, dim]
        logits = self.gate(torch.cat(xs, dim=-1)).view(-1, len(self.slots), self.dim).transpose(0, 1)  # [N, B, dim]
        if everything:
            gates = torch.softmax(logits, dim=0)
        else:
            gates = masked_softmax(logits, present[..., None].expand_as(logits), dim=0)
        return Features.from_pooled(self.dropout((gates * hidden).sum(0)), present.any(0))


class FiLMFusion(mmcore.Fusion):
    """FiLM (Perez et al. 2018): one modality's tokens modulated feature-wise by the others, ``gamma * x + beta``.

    ``target`` (default: the first modality) is modulated token by token with
    ``(1 + gamma) * W x + beta``; ``gamma, beta = W_f c`` come from ``c``, the mean of the present
    conditioning modalities' pooled projections, and start near the identity modulation. Missing
    modalities: an absent conditioning modality is left out of the mean (none left = identity
    modulation); an absent target is replaced by one learned placeholder token, so a sample with
    only conditioning modalities is described by the modulated placeholder.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, target: str | None = None, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim)
        self.target = choose_slot(input_dims, target, option="target", fusion="film")
        check_dropout("film", dropout)
        self.conditions = [s for s in input_dims if s != self.target]
        width = input_dims[self.target]
        self.project_target = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))
        self.project_condition = nn.ModuleDict(
            {s: nn.Sequential(nn.LayerNorm(input_dims[s]), nn.Linear(input_dims[s], dim), nn.GELU()) for s in self.conditions}
        )
        self.to_film = nn.Linear(dim, 2 * dim)
        # Near the identity modulation (gamma = beta = 0), small but non-zero so gradients reach
        # the conditioning modalities from the first step.
        nn.init.normal_(self.to_film.weight, std=0.01)
        nn.init.zeros_(self.to_film.bias)
        self.placeholder = nn.Parameter(torch.randn(dim) * 0.02)
        self.out = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        target = features[self.target]
        cond_present = stack_present(features, self.conditions)  # [C, B]
        cond = torch.stack(
            [select_present(self.project_condition[s](features[s].unmasked_pooled), features[s].present) for s in self.conditions]
        )
        gamma, beta = self.to_film(mean_over_present(cond, cond_present)).chunk(2, dim=-1)
        # Padding and absent samples are zeroed before anything touches them (not after): a
        # non-finite value there must not reach gamma's gradient through 0 * inf.
        real = target.mask & target.present[:, None]
        tokens = self.project_target(torch.where(real[..., None], target.tokens, torch.zeros((), dtype=target.tokens.dtype,
                                                                                            device=target.tokens.device)))
        length = target.mask.shape[1]
        first = torch.arange(length, device=tokens.device)[None, :] == 0
        stand_in = torch.where(first[..., None], self.placeholder.to(tokens.dtype), torch.zeros((), dtype=tokens.dtype, device=tokens.device))
        tokens = torch.where(target.present[:, None, None], tokens, stand_in)
        # Boolean algebra rather than torch.where on bool masks (onnxruntime's CPU Where takes no bools).
        mask = (target.present[:, None] & target.mask) | (~target.present[:, None] & first)
        tokens = torch.where(mask[..., None], tokens, torch.zeros((), dtype=tokens.dtype, device=tokens.device))
        modulated = self.out((1 + gamma[:, None, :]) * tokens + beta[:, None, :])
        return finish_tokens(modulated, mask, target.present | cond_present.any(0))


class NonLocalGateFusion(TokenFusion):
    """Non-local gating: each ``target`` token attends to the other modalities' tokens, and what it reads gates it.

    A non-local block (Wang et al. 2018) across modalities, as the NL-gate of Wang, Tran &
    Feiszli 2020: ``y = attn(x_t, context)``, ``out = x_t * sigmoid(W_g y) + W_z y`` per target
    token (``W_z`` starts at zero, so the block starts as a pure gate). ``target`` defaults to the
    first modality. Missing modalities: absent context modalities are masked keys (with none
    left, ``y = 0`` and the gate is a constant); an absent target is replaced by one learned
    placeholder token.
    """

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, heads: int = 4, target: str | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__(input_dims, dim, heads, dropout, "nl_gate")
        self.target = choose_slot(input_dims, target, option="target", fusion="nl_gate")
        self.context = [s for s in self.slots if s != self.target]
        self.placeholder = nn.Parameter(torch.randn(dim) * 0.02)
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = MultiHeadAttention(dim, heads, dropout)
        self.gate = nn.Linear(dim, dim)
        self.residual = nn.Linear(dim, dim)
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        x, mask = self.tokens_or_placeholder(features, self.target, self.placeholder)
        context, key_mask = self.tokens(features, self.context)
        attended = self.attention(self.norm_q(x), self.norm_kv(context), key_mask)
        out = self.norm_out(x * torch.sigmoid(self.gate(attended)) + self.residual(attended))
        return finish_tokens(out, mask, features[self.target].present | key_mask.any(1))


class MultiplicativeFusion(mmcore.Fusion):
    """Multiplicative interactions (Jayakumar et al. 2020): the other modalities generate the weights applied to one.

    ``f(x, z) = z^T W x + U z + V x + b`` with ``x`` the ``target`` modality (default: the first)
    and ``z`` the mean context projection of the present other modalities. ``form`` picks how the
    3-D tensor ``W`` is held: ``vector`` — diagonal (``z`` generates a gating vector:
    ``(1 + W z) * (V x)``); ``matrix`` — full (``z`` generates a whole ``[dim, width]`` matrix
    added to ``V``, the hypernetwork view); ``tensor`` — a rank-``rank`` CP factorisation of the
    full tensor, ``sum_r (a_r . z) (v_r . x) u_r``, for wide inputs. Missing modalities: absent
    context modalities are left out of the mean (none left: ``z = 0``, a plain linear map of
    ``x``); an absent target counts as ``x = 0`` (output ``U z + b``).
    """

    reads_tokens = False  # pooled vectors only

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, form: Literal["vector", "matrix", "tensor"] = "vector",
        target: str | None = None, context_dim: int = 32, rank: int = 8, dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, dim)
        self.target = choose_slot(input_dims, target, option="target", fusion="multiplicative")
        if form not in ("vector", "matrix", "tensor"):
            raise ValueError(f"multiplicative: form must be 'vector', 'matrix' or 'tensor', got {form!r}")
        check_positive("multiplicative", context_dim=context_dim, rank=rank)
        check_dropout("multiplicative", dropout)
        self.form, self.rank, self.context_dim = form, rank, context_dim
        self.others = [s for s in input_dims if s != self.target]
        width = input_dims[self.target]
        self.norm = nn.LayerNorm(width)
        self.context = nn.ModuleDict(
            {s: nn.Sequential(nn.LayerNorm(input_dims[s]), nn.Linear(input_dims[s], context_dim)) for s in self.others}
        )
        self.linear = nn.Linear(width, dim)  # V x + b
        self.context_out = nn.Linear(context_dim, dim, bias=False)  # U z
        if form == "vector":
            self.hyper = nn.Linear(context_dim, dim)
        elif form == "matrix":
            self.hyper = nn.Linear(context_dim, dim * width)
        else:
            self.left = nn.Linear(context_dim, rank, bias=False)
            self.u = nn.Parameter(torch.randn(rank, dim) / rank**0.5)
            self.v = nn.Parameter(torch.randn(rank, width) / width**0.5)
        if form != "tensor":  # start close to the plain linear map V x + b
            nn.init.normal_(self.hyper.weight, std=0.01)
            nn.init.zeros_(self.hyper.bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        target = features[self.target]
        x = select_present(self.norm(target.unmasked_pooled), target.present)
        present = stack_present(features, self.others)
        ctx = torch.stack([select_present(self.context[s](features[s].unmasked_pooled), features[s].present) for s in self.others])
        z = mean_over_present(ctx, present)
        base = self.linear(x)
        if self.form == "vector":
            out = (1 + self.hyper(z)) * base
        elif self.form == "matrix":
            generated = self.hyper(z).view(-1, self.dim, x.shape[-1])
            out = base + torch.einsum("bdw,bw->bd", generated, x)
        else:
            out = base + (self.left(z) * (x @ self.v.T)) @ self.u
        out = out + self.context_out(z)
        return Features.from_pooled(self.dropout(out), target.present | present.any(0))


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_fusion("gated", GatedFusion, example_options={"dim": 16})
    registry.add_fusion("film", FiLMFusion, example_options={"dim": 16})
    registry.add_fusion("nl_gate", NonLocalGateFusion, example_options={"dim": 16, "heads": 2})
    registry.add_fusion(
        "multiplicative", MultiplicativeFusion, example_options={"dim": 16, "form": "matrix", "context_dim": 8}
    )


__all__ = ["FiLMFusion", "GatedFusion", "MultiplicativeFusion", "NonLocalGateFusion"]
