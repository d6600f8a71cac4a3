"""`example_margin`: a binary classification head trained with a hinge loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import mmcore


class MarginHead(mmcore.Head):
    """Binary classification with a hinge loss: predicts 1 where the score is positive.

    Targets are 0/1 per sample; ``margin`` is the hinge's margin (the loss is
    ``max(0, margin - y * score)`` with ``y = 2 * target - 1``).
    """

    def __init__(self, input_dim: int, margin: float = 1.0) -> None:
        super().__init__(input_dim)
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin!r}")
        self.margin = float(margin)
        self.linear = nn.Linear(input_dim, 1)

    def forward(self, fused, targets=None, features=None) -> mmcore.HeadOutput:
        score = self.linear(fused.pooled).squeeze(1)
        loss = None if targets is None else torch.relu(self.margin - (2 * targets - 1) * score).mean()
        return mmcore.HeadOutput(logits=score, predictions=(score > 0).long(), loss=loss)

    def metrics(self) -> dict[str, Any]:
        import torchmetrics

        return {"accuracy": torchmetrics.Accuracy(task="binary")}

    def collate_targets(self, targets: Sequence[Any]) -> torch.Tensor:
        if any(t not in (0, 1) for t in targets):
            raise ValueError(f"example_margin takes targets 0 or 1, got {sorted(set(targets) - {0, 1})[:5]}")
        return torch.tensor(targets, dtype=torch.float32)

    def example_targets(self, batch_size: int, generator: torch.Generator) -> list[int]:
        return torch.randint(0, 2, (batch_size,), generator=generator).tolist()
