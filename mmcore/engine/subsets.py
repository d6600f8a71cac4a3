"""Predictions from a subset of the modalities, from features already encoded.

Every fusion accepts any subset of present modalities (an absent one never influences a sample's
output: the :class:`~mmcore.Fusion` contract), so the model's prediction from modalities ``S`` is
the fusion and head applied to the encoders' features with every slot outside ``S`` marked absent
-- exactly what the encoders would have emitted had those inputs been missing (zeros, mask and
``present`` False). The encoders run once; only the (cheap) fusion and head run per subset. Used by
the imbalance diagnostics (metric with each modality removed), the balancers (uni-modal
predictions and losses) and ``mmcore explain`` (coalition values of exact Shapley values).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch

from mmcore.components import HeadOutput
from mmcore.features import Features


def select_rows(features: Features, rows: torch.Tensor) -> Features:
    """The samples ``rows`` (indices ``[R]`` long, or a bool mask ``[B]``) of ``features``."""
    return Features(tokens=features.tokens[rows], mask=features.mask[rows], pooled=features.pooled[rows],
                    present=features.present[rows])


def keep_present(features: Features, keep: torch.Tensor) -> Features:
    """``features`` with the samples where ``keep [B]`` (bool) is False made absent (zeros, masked out).

    A selection, not a multiplication: an absent sample's values get exactly zero gradient.
    """
    zero = torch.zeros((), dtype=features.pooled.dtype, device=features.pooled.device)
    keep = keep.to(device=features.present.device, dtype=torch.bool)
    return Features(tokens=torch.where(keep[:, None, None], features.tokens, zero), mask=features.mask & keep[:, None],
                    pooled=torch.where(keep[:, None], features.pooled, zero), present=features.present & keep)


def only(features: Mapping[str, Features], slots: Collection[str], rows: torch.Tensor | None = None) -> dict[str, Features]:
    """``{slot: Features}`` with the slots outside ``slots`` absent for every sample (optionally only ``rows``).

    Slots outside ``slots`` become :meth:`Features.absent` (no autograd graph to the encoder that
    made them); slots in it keep theirs.
    """
    out = {}
    for slot, feats in features.items():
        picked = feats if rows is None else select_rows(feats, rows)
        if slot in slots:
            out[slot] = picked
        else:
            like = picked.pooled
            out[slot] = Features.absent(like.shape[0], feats.dim, device=like.device, dtype=like.dtype)
    return out


def head_output(model, features: Mapping[str, Features], targets: torch.Tensor | None = None) -> HeadOutput:
    """``model``'s fusion and head on ``features`` (``{slot: Features}``, every slot of the model)."""
    fused = model.fusion(features) if model.fusion is not None else next(iter(features.values()))
    out = model.head(fused, targets, features)
    out.features, out.fused = features, fused
    return out


def expand_subsets(features: Mapping[str, Features], subsets: torch.Tensor, slots: list[str]) -> dict[str, Features]:
    """Every sample once per subset: ``subsets [K, M]`` (bool, column ``j`` = ``slots[j]``) -> features
    of ``B * K`` rows, row ``b * K + k`` = sample ``b`` with only the slots of subset ``k`` kept."""
    k = subsets.shape[0]
    out = {}
    for j, slot in enumerate(slots):
        feats = features[slot]
        b = feats.present.shape[0]
        rows = torch.arange(b, device=feats.present.device).repeat_interleave(k)
        keep = subsets[:, j].to(feats.present.device).repeat(b)
        out[slot] = keep_present(select_rows(feats, rows), keep)
    return out


def all_subsets(m: int, device=None) -> torch.Tensor:
    """``[2^m, m]`` bool: row ``i`` holds the players in the binary digits of ``i`` (bit ``j`` = player ``j``)."""
    index = torch.arange(2**m, device=device)
    return (index[:, None] >> torch.arange(m, device=device)[None, :]) & 1 == 1
