"""Retrieval metrics beyond recall@K: the median rank of the first match (MedR).

Imported lazily (from the contrastive head's ``metrics()``), so discovering plugins does not
import torchmetrics.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.utilities import dim_zero_cat

from mmcore_plugins.heads.metrics import RetrievalRecall


def first_match_ranks(queries: torch.Tensor, gallery: torch.Tensor, query_ids: torch.Tensor, gallery_ids: torch.Tensor,
                      chunk_size: int = 1024) -> torch.Tensor:
    """1-based rank of each query's best-scoring match in the gallery (dot product), ``[Q]`` float.

    A match is a gallery item with the query's id. The rank is 1 + the number of gallery items
    scoring strictly higher than the best match (ties resolved in the query's favour); a query
    without any match in the gallery gets rank ``len(gallery) + 1``.
    """
    ranks = []
    for start in range(0, len(queries), chunk_size):  # chunked: no [Q, N] matrix for the whole set
        sims = queries[start : start + chunk_size] @ gallery.T
        match = query_ids[start : start + chunk_size, None] == gallery_ids[None, :]
        best = sims.masked_fill(~match, float("-inf")).max(dim=1).values
        higher = (sims > best[:, None]).sum(dim=1)
        ranks.append(torch.where(match.any(dim=1), higher + 1, torch.full_like(higher, len(gallery) + 1)))
    return torch.cat(ranks).float() if ranks else torch.zeros(0)


class RetrievalMedianRank(RetrievalRecall):
    """Median rank (MedR) of the first match in cross-modal retrieval; lower is better, 1 is perfect.

    Same inputs as :class:`~mmcore_plugins.heads.metrics.RetrievalRecall` (paired embeddings
    ``[B, 2, E]`` and pair ids; ``direction`` ``a->b`` or ``b->a``; rows lacking a modality are
    skipped). The median of an even count is the mean of the two middle ranks (``numpy.median``).
    The standard companion of recall@K in cross-modal retrieval (e.g. Karpathy & Fei-Fei 2015,
    Faghri et al. 2018, "VSE++").
    """

    higher_is_better = False

    def __init__(self, direction: str = "a->b", chunk_size: int = 1024, **kwargs: Any) -> None:
        super().__init__(1, direction, chunk_size, **kwargs)

    def compute(self) -> torch.Tensor:
        if not len(self.embeddings):
            return torch.tensor(float("nan"), device=self.device)
        embeddings, ids = dim_zero_cat(self.embeddings), dim_zero_cat(self.ids)
        if embeddings.numel() == 0:
            return torch.tensor(float("nan"), device=self.device)
        a, b = embeddings[:, 0], embeddings[:, 1]
        queries, gallery = (a, b) if self.direction == "a->b" else (b, a)
        return first_match_ranks(queries, gallery, ids, ids, self.chunk_size).quantile(0.5)


__all__ = ["RetrievalMedianRank", "first_match_ranks"]
