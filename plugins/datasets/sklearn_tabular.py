"""`sklearn_tabular`: scikit-learn's bundled tabular data sets, columns grouped into modalities."""

from __future__ import annotations

from typing import Literal

import torch

import mmcore
from mmcore.data import SPLITS, SampleDataset, seeded_split

# Natural column groups: breast_cancer's 30 columns are 10 measurements x (mean, error, worst).
_DEFAULT_GROUPS = {
    "breast_cancer": lambda names: {
        "mean": [n for n in names if n.startswith("mean ")],
        "error": [n for n in names if n.endswith(" error")],
        "worst": [n for n in names if n.startswith("worst ")],
    },
    "wine": lambda names: {"first": names[: len(names) // 2], "second": names[len(names) // 2 :]},
}


def load_sklearn_tabular(
    split: Literal["train", "val", "test"],
    dataset: Literal["wine", "breast_cancer"] = "wine",
    modalities: dict[str, list[str]] | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    missing_rate: float = 0.0,
    seed: int = 0,
) -> SampleDataset:
    """scikit-learn's wine or breast-cancer data, its columns split into modality slots (offline)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must be in [0, 1), got {missing_rate}")
    from sklearn import datasets as skdatasets

    loader = {"wine": skdatasets.load_wine, "breast_cancer": skdatasets.load_breast_cancer}.get(dataset)
    if loader is None:
        raise ValueError(f"dataset must be one of {sorted(_DEFAULT_GROUPS)}, got {dataset!r}")
    bunch = loader()
    names = [str(n) for n in bunch.feature_names]
    groups = modalities if modalities is not None else _DEFAULT_GROUPS[dataset](names)
    unknown = sorted({c for cols in groups.values() for c in cols} - set(names))
    if unknown:
        raise ValueError(f"unknown column(s) {unknown} for dataset {dataset!r}; its columns are {names}")
    column = {n: i for i, n in enumerate(names)}
    indices = seeded_split(len(bunch.target), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)[split]
    # Missing modalities are drawn per sample and slot from a generator seeded by the split, so a
    # sample never loses every modality and the pattern is the same on every run.
    rng = torch.Generator().manual_seed(seed * 1000 + SPLITS.index(split))
    samples = []
    for i in indices:
        row = bunch.data[i]
        inputs = {slot: [float(row[column[c]]) for c in cols] for slot, cols in groups.items()}
        if missing_rate:
            drop = (torch.rand(len(groups), generator=rng) < missing_rate).tolist()
            if all(drop):
                drop[int(torch.randint(len(groups), (1,), generator=rng))] = False
            inputs = {slot: (None if d else v) for (slot, v), d in zip(inputs.items(), drop, strict=True)}
        samples.append({"inputs": inputs, "target": int(bunch.target[i])})
    metadata = {
        "num_classes": len(bunch.target_names),
        "class_names": [str(n) for n in bunch.target_names],
        "modalities": {slot: list(cols) for slot, cols in groups.items()},
    }
    return SampleDataset(samples, metadata=metadata)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_dataset("sklearn_tabular", load_sklearn_tabular)
