"""Caption metrics beside BLEU: exact match and per-token (per-word) accuracy of generated captions.

Imported lazily (from the captioning head's ``metrics()``). Both compare decoded strings, so a
baseline that outputs strings some other way is scored by the same functions
(:func:`token_counts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchmetrics import Metric


def token_counts(hypothesis: str, reference: str) -> tuple[int, int]:
    """``(correct, total)`` words of one caption: position-wise equal words, over the longer of the two.

    ``total = max(len(hyp), len(ref))`` words, so a missing or an extra word counts as an error
    (a caption that stops early, or goes on, is not rewarded). Two empty captions: ``(0, 0)``.
    """
    h, r = hypothesis.split(), reference.split()
    return sum(a == b for a, b in zip(h, r, strict=False)), max(len(h), len(r))


class _CaptionMetric(Metric):
    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, decode: Callable[[Sequence[int]], str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decode = decode
        self.add_state("correct", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def pairs(self, predictions: torch.Tensor, targets: torch.Tensor) -> list[tuple[str, str]]:
        if predictions.shape[0] != targets.shape[0]:
            raise ValueError(f"predictions and targets must have one row per sample, got {predictions.shape[0]} and {targets.shape[0]}")
        return [(self.decode(p), self.decode(t)) for p, t in zip(predictions.tolist(), targets.tolist(), strict=True)]

    def compute(self) -> torch.Tensor:
        return (self.correct / self.total.clamp_min(1)).float()


class CaptionExactMatch(_CaptionMetric):
    """Share of captions generated exactly (every word, nothing more): ``update(predictions [B, T], targets [B, T'])`` ids."""

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        pairs = self.pairs(predictions, targets)
        self.correct += sum(h == r for h, r in pairs)
        self.total += len(pairs)


class CaptionTokenAccuracy(_CaptionMetric):
    """Position-wise word accuracy over all captions (see :func:`token_counts`): correct words / words."""

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        for h, r in self.pairs(predictions, targets):
            correct, total = token_counts(h, r)
            self.correct += correct
            self.total += total


__all__ = ["CaptionExactMatch", "CaptionTokenAccuracy", "token_counts"]
