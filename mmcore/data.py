"""Datasets of raw multimodal samples: ``{"inputs": {slot: raw | None}, "target": ...}``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")


class SampleDataset(Dataset):
    """A map-style dataset of raw samples, with metadata (e.g. ``num_classes``) for configs and reports.

    Each sample is ``{"inputs": {slot: raw or None}, "target": value}``; None marks a modality
    the sample lacks.
    """

    def __init__(self, samples: Sequence[Mapping[str, Any]], *, metadata: Mapping[str, Any] | None = None) -> None:
        for i, sample in enumerate(samples):
            if not isinstance(sample, Mapping) or not isinstance(sample.get("inputs"), Mapping):
                raise ValueError(f"sample #{i} must be a mapping with an 'inputs' mapping, got {sample!r:.80}")
        self.samples = list(samples)
        self.metadata = dict(metadata or {})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        return self.samples[index]


def seeded_split(n: int, *, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Indices ``0..n-1`` shuffled with ``seed`` and cut into train/val/test."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must leave training data, got {val_fraction + test_fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
