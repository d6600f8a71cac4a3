"""torchmetrics metrics the built-in heads declare: retrieval recall@K, BLEU over token ids (public: `retrieval`
reuses them) and a macro F1 whose memory is linear in the number of classes.

Imported lazily (from the heads' ``metrics()``), so discovering plugins does not import torchmetrics.
Both are ``torchmetrics.Metric`` subclasses: their states synchronise across processes
(``torch.distributed``) like any other torchmetrics metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassF1Score
from torchmetrics.text import BLEUScore
from torchmetrics.utilities import dim_zero_cat

DIRECTIONS = ("a->b", "b->a")


class MulticlassMacroF1(MulticlassF1Score):
    """torchmetrics' ``MulticlassF1Score(average="macro")`` with per-class counts in O(C) memory.

    torchmetrics counts true/false positives from a C x C confusion matrix (a bincount of
    ``target * C + prediction`` with ``minlength=C**2``): 20 GB of int64 for 50,000 classes, from a
    1.5 MB CSV. The same counts come from three bincounts of length C: ``tp`` of the correct
    predictions' classes, ``fp = predicted - tp``, ``fn = actual - tp`` (``tn = N - tp - fp - fn``).
    The states, their synchronisation across processes and ``compute()`` (classes absent from both
    predictions and targets left out of the mean, as torchmetrics does) are torchmetrics' own.

    ``update(preds, target)``: ``preds`` class indices ``[N]`` (or scores ``[N, C]``, argmax taken),
    ``target`` class indices ``[N]``, int64 in ``[0, num_classes)``. ValueError otherwise.
    """

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(num_classes=num_classes, average="macro", **kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        if preds.is_floating_point() and preds.dim() == target.dim() + 1:
            preds = preds.argmax(dim=1)
        preds, target = preds.reshape(-1).long(), target.reshape(-1).long()
        if preds.shape != target.shape:
            raise ValueError(f"preds and target must have one class per sample, got {preds.numel()} and {target.numel()}")
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            preds, target = preds[keep], target[keep]
        n = self.num_classes
        for name, values in (("preds", preds), ("target", target)):
            if values.numel() and (int(values.min()) < 0 or int(values.max()) >= n):
                raise ValueError(f"{name} must hold class indices in [0, {n}), got values in "
                                 f"[{int(values.min())}, {int(values.max())}]")
        tp = torch.bincount(target[preds == target], minlength=n)
        fp = torch.bincount(preds, minlength=n) - tp
        fn = torch.bincount(target, minlength=n) - tp
        self._update_state(tp, fp, target.numel() - tp - fp - fn, fn)


def as_embedding_pairs(predictions: Any) -> torch.Tensor:
    """``[B, 2, E]`` from a ``[B, 2, E]`` tensor or an ``(a [B, E], b [B, E])`` pair."""
    if isinstance(predictions, (tuple, list)) and len(predictions) == 2:
        a, b = predictions
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape or a.dim() != 2:
            raise ValueError(f"an embedding pair must be two [B, E] tensors of one shape, got {_shapes(predictions)}")
        return torch.stack([a, b], dim=1)
    if not isinstance(predictions, torch.Tensor) or predictions.dim() != 3 or predictions.shape[1] != 2:
        raise ValueError(f"predictions must be [B, 2, E] paired embeddings or an (a, b) pair, got {_shapes(predictions)}")
    return predictions


class RetrievalRecall(Metric):
    """Recall@K of cross-modal retrieval (``a->b``: query with modality a, search the b gallery; or ``b->a``).

    ``update(predictions, ids)``: ``predictions`` are the paired embeddings ``[B, 2, E]`` (or an
    ``(a, b)`` pair of ``[B, E]``), ``ids [B]`` pair ids — gallery items with the query's id are
    its matches. Rows with a non-finite embedding (samples lacking a modality) are skipped.
    ``compute()`` ranks the whole gallery seen since the last reset (every process's, when
    distributed) by dot product; a query scores 1 when a match is among its top K.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, k: int, direction: str = "a->b", chunk_size: int = 1024, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.k, self.direction, self.chunk_size = k, direction, chunk_size
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")

    def update(self, predictions: Any, ids: torch.Tensor) -> None:
        pairs = as_embedding_pairs(predictions).detach()
        ids = torch.as_tensor(ids, device=pairs.device)
        if ids.shape != pairs.shape[:1]:
            raise ValueError(f"ids must have shape [{pairs.shape[0]}] (one pair id per sample), got {list(ids.shape)}")
        keep = torch.isfinite(pairs).all(dim=2).all(dim=1)
        self.embeddings.append(pairs[keep].float())
        self.ids.append(ids[keep].long())

    def compute(self) -> torch.Tensor:
        embeddings = dim_zero_cat(self.embeddings) if len(self.embeddings) else torch.zeros(0, 2, 1, device=self.device)
        ids = dim_zero_cat(self.ids) if len(self.ids) else torch.zeros(0, dtype=torch.long, device=self.device)
        if embeddings.numel() == 0:
            return torch.tensor(0.0, device=self.device)
        queries, gallery = (embeddings[:, 0], embeddings[:, 1]) if self.direction == "a->b" else (embeddings[:, 1], embeddings[:, 0])
        k = min(self.k, len(ids))
        hits = []
        for start in range(0, len(ids), self.chunk_size):  # chunked: no [N, N] similarity matrix
            top = (queries[start : start + self.chunk_size] @ gallery.T).topk(k, dim=1).indices
            hits.append((ids[top] == ids[start : start + self.chunk_size, None]).any(dim=1))
        return torch.cat(hits).float().mean()


class CaptionBLEU(BLEUScore):
    """BLEU (torchmetrics ``BLEUScore``) of generated token ids against reference token ids.

    ``update(predictions [B, T], targets [B, T'])``: both are id tensors that ``decode`` turns into
    strings (it stops at end-of-sequence and drops padding); each sample has one reference.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], n_gram: int = 4, smooth: bool = True, **kwargs: Any) -> None:
        super().__init__(n_gram=n_gram, smooth=smooth, **kwargs)
        self.decode = decode

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:  # type: ignore[override]
        if predictions.shape[0] != targets.shape[0]:
            raise ValueError(f"predictions and targets must have one row per sample, got {predictions.shape[0]} and {targets.shape[0]}")
        hypotheses = [self.decode(row) for row in predictions.tolist()]
        references = [[self.decode(row)] for row in targets.tolist()]
        super().update(hypotheses, references)


def _shapes(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {list(value.shape)}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_shapes(v) for v in value) + ")"
    return type(value).__name__


__all__ = ["CaptionBLEU", "MulticlassMacroF1", "RetrievalRecall", "as_embedding_pairs"]
