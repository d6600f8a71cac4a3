"""Median rank of the first match (MedR), against ranks counted by hand, and through the contrastive head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcore_plugins.retrieval.metrics import RetrievalMedianRank, first_match_ranks


def test_first_match_ranks_counts_higher_scoring_items():
    gallery = torch.eye(4)
    queries = torch.tensor([[1.0, 0.5, 0, 0], [0.9, 0.8, 0.7, 0.1], [0, 0, 0, 1.0]])
    # query 0 matches id 0 (best), query 1 matches id 3 (scored last of 4), query 2 has no match.
    ranks = first_match_ranks(queries, gallery, torch.tensor([0, 3, 9]), torch.tensor([0, 1, 2, 3]))
    assert ranks.tolist() == [1.0, 4.0, 5.0]
    # Several matches: the best-scoring one counts (same-class positives).
    ranks = first_match_ranks(queries[1:2], gallery, torch.tensor([7]), torch.tensor([5, 7, 7, 5]))
    assert ranks.tolist() == [2.0]


@pytest.mark.parametrize("direction", ["a->b", "b->a"])
def test_median_rank_equals_numpy_median_of_brute_force_ranks(direction):
    g = torch.Generator().manual_seed(0)
    pairs = torch.randn(37, 2, 6, generator=g)
    ids = torch.randint(0, 5, (37,), generator=g)
    pairs[3, 1] = float("nan")  # a sample lacking a modality is skipped
    metric = RetrievalMedianRank(direction, chunk_size=8)
    metric.update(pairs[:20], ids[:20])
    metric.update(pairs[20:], ids[20:])
    keep = torch.isfinite(pairs).all(2).all(1)
    p, i = pairs[keep].numpy(), ids[keep].numpy()
    q, gal = (p[:, 0], p[:, 1]) if direction == "a->b" else (p[:, 1], p[:, 0])
    sims = q @ gal.T
    expected = [1 + (sims[r] > sims[r][i == i[r]].max()).sum() for r in range(len(q))]
    assert float(metric.compute()) == pytest.approx(float(np.median(expected)))


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_median_rank_of_nothing_is_nan():
    assert torch.isnan(RetrievalMedianRank().compute())


def test_a_median_rank_monitor_is_minimised():
    from mmcore.engine.metrics import lower_is_better
    from mmcore_plugins.heads.contrastive import ContrastiveHead

    metrics = ContrastiveHead(8, {"a": 4, "b": 4}).metrics()
    assert lower_is_better("median_rank_ab", metrics=metrics) and lower_is_better("median_rank_ba", metrics=metrics)
    assert not lower_is_better("recall@1_ab", metrics=metrics)
