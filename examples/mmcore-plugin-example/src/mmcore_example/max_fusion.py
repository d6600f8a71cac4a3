"""`example_max`: element-wise max over the projected vectors of the present modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import mmcore
from mmcore import Features


class MaxFusion(mmcore.Fusion):
    """Element-wise max over per-modality projections; absent modalities are skipped."""

    def __init__(self, input_dims: Mapping[str, int], dim: int = 64) -> None:
        super().__init__(input_dims, dim)
        self.proj = nn.ModuleDict({slot: nn.Linear(width, dim) for slot, width in input_dims.items()})

    def forward(self, features: Mapping[str, Features]) -> Features:
        if set(features) != set(self.input_dims):
            raise ValueError(f"expected modalities {sorted(self.input_dims)}, got {sorted(features)}")
        projected = torch.stack([self.proj[s](features[s].pooled) for s in self.input_dims])  # [N, B, dim]
        present = torch.stack([features[s].present for s in self.input_dims])  # [N, B]
        # -inf where absent, so max never picks an absent modality (and sends it no gradient).
        masked = projected.masked_fill(~present[..., None], float("-inf"))
        fused = masked.max(dim=0).values
        any_present = present.any(dim=0)
        fused = torch.where(any_present[:, None], fused, torch.zeros_like(fused))
        return Features.from_pooled(fused, any_present)
