"""Gating fusions: ``gated`` (gated multimodal unit) and ``film`` (feature-wise linear modulation)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import mmcore
from mmcore import Features, masked_mean
from mmcore_plugins.fusions._common import choose_slot, masked_softmax, select_present, stack_present
from mmcore_plugins.fusions.concat import check_slots


class GatedFusion(mmcore.Fusion):
    """Gated multimodal unit (GMU, Arevalo et al. 2017), generalised from 2 to N modalities.

    ``h_i = tanh(W_i x_i)``; gates ``z = softmax_i(W_z [x_1; ...; x_N])`` per feature, taken over the
    present modalities only (absent inputs enter the gate as zeros and get gate 0); output
    ``sum_i z_i * h_i``. With two modalities this is the paper's ``z h_1 + (1 - z) h_2``.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256) -> None:
        super().__init__(input_dims, dim)
        self.slots = list(input_dims)
        self.norms = nn.ModuleDict({s: nn.LayerNorm(w) for s, w in input_dims.items()})
        self.hidden = nn.ModuleDict({s: nn.Linear(w, dim) for s, w in input_dims.items()})
        self.gate = nn.Linear(sum(input_dims.values()), len(self.slots) * dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        present = stack_present(features, self.slots)  # [N, B]
        xs = [select_present(self.norms[s](features[s].pooled), features[s].present) for s in self.slots]
        hidden = torch.stack([torch.tanh(self.hidden[s](x)) for s, x in zip(self.slots, xs, strict=True)])  # [N, B, dim]
        logits = self.gate(torch.cat(xs, dim=-1)).view(-1, len(self.slots), self.dim).transpose(0, 1)  # [N, B, dim]
        gates = masked_softmax(logits, present[..., None].expand_as(logits), dim=0)
        return Features.from_pooled((gates * hidden).sum(0), present.any(0))


class FiLMFusion(mmcore.Fusion):
    """FiLM (Perez et al. 2018): one modality's tokens modulated by the others, ``gamma * x + beta``.

    ``target`` (default: the first modality) is modulated token by token; ``gamma`` and ``beta``
    come from the mean of the present conditioning modalities' pooled projections (identity
    modulation when none is present). An absent target is replaced by a learned placeholder token,
    so a sample with only conditioning modalities still gets an output.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, target: str | None = None) -> None:
        super().__init__(input_dims, dim)
        self.target = choose_slot(input_dims, target, option="target", fusion="film")
        self.conditions = [s for s in input_dims if s != self.target]
        self.project_target = nn.Sequential(nn.LayerNorm(input_dims[self.target]), nn.Linear(input_dims[self.target], dim))
        self.project_condition = nn.ModuleDict(
            {s: nn.Sequential(nn.LayerNorm(input_dims[s]), nn.Linear(input_dims[s], dim), nn.GELU()) for s in self.conditions}
        )
        self.to_film = nn.Linear(dim, 2 * dim)
        # Start near the identity modulation (gamma = beta = 0), small but non-zero so gradients
        # reach the conditioning modalities from the first step.
        nn.init.normal_(self.to_film.weight, std=0.01)
        nn.init.zeros_(self.to_film.bias)
        self.placeholder = nn.Parameter(torch.zeros(dim))
        self.out = nn.Sequential(nn.GELU(), nn.Linear(dim, dim))

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        target = features[self.target]
        cond_present = stack_present(features, self.conditions)  # [C, B]
        cond = torch.stack(
            [select_present(self.project_condition[s](features[s].pooled), features[s].present) for s in self.conditions]
        )
        count = cond_present.sum(0).clamp_min(1).to(cond.dtype)[:, None]
        gamma, beta = self.to_film(cond.sum(0) / count).chunk(2, dim=-1)  # zero when no condition: identity
        tokens = self.project_target(target.tokens)  # [B, L, dim]
        # Absent target: one learned placeholder token stands in for it.
        placeholder = self.placeholder.expand(tokens.shape[0], 1, -1).to(tokens.dtype)
        has_target = target.present[:, None, None]
        tokens = torch.where(has_target, tokens, torch.cat([placeholder, torch.zeros_like(tokens[:, 1:])], dim=1))
        mask = torch.where(target.present[:, None], target.mask, torch.arange(tokens.shape[1], device=tokens.device)[None, :] == 0)
        modulated = self.out((1 + gamma[:, None, :]) * tokens + beta[:, None, :])
        present = target.present | cond_present.any(0)
        mask = mask & present[:, None]
        modulated = modulated * mask[..., None].to(modulated.dtype)
        return Features(tokens=modulated, mask=mask, pooled=masked_mean(modulated, mask), present=present)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_fusion("gated", GatedFusion, example_options={"dim": 16})
    registry.add_fusion("film", FiLMFusion, example_options={"dim": 16})
