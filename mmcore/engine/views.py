"""Views of a dataset of raw samples: what one training epoch sees (modality dropout, augmentations),
perturbed or partly missing copies for robustness evaluation. (They are batched by
:func:`mmcore.data.make_dataloader`, with the one collate of training and evaluation.)

Everything is decided per sample from a seed, the epoch and the sample's index, never from a
shared random stream: results are the same with or without DataLoader workers, in one process
or many, and after a resume.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

#: A perturbation instance: ``(raw, generator) -> raw`` (see mmcore.engine.robustness).
Perturb = Callable[[Any, torch.Generator], Any]


def sample_rng(*key: Any) -> random.Random:
    """A random stream that depends only on ``key`` (e.g. seed, epoch, index)."""
    return random.Random("/".join(str(k) for k in key))


def _with_inputs(sample: Mapping[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    return {**sample, "inputs": inputs}


def _perturbed(perturb: Perturb, raw: Any, generator: torch.Generator) -> Any:
    """``perturb(raw)``; a raw input it cannot read (:class:`~mmcore.errors.InputReadError`) is left as it
    is, for the collate to read and treat by ``unreadable_inputs``, naming its table, row and column."""
    from mmcore.errors import InputReadError

    try:
        return perturb(raw, generator)
    except InputReadError:
        return raw


class TrainingView(Dataset):
    """The training split as epoch ``epoch`` sees it.

    Every sample comes back with ``"index"``: its row in ``dataset`` (collated into the batch's
    ``index``, so a training plugin can look up what it computed per row, e.g. a teacher's outputs);

    * modality dropout: each present modality of a sample is removed (its raw input set to None,
      so its encoder sees ``present=False`` exactly as for truly missing data) with probability
      ``dropout[slot]``; a sample never loses all of its modalities;
    * augmentation: each ``(factory, max_level)`` of ``augment[slot]`` perturbs the raw input at
      a level drawn uniformly from ``[0, max_level]``.
    """

    def __init__(self, dataset: Dataset, *, epoch: int, seed: int, dropout: Mapping[str, float] | None = None,
                 augment: Mapping[str, Sequence[tuple[Callable[[float], Perturb], float]]] | None = None) -> None:
        self.dataset, self.epoch, self.seed = dataset, epoch, seed
        self.dropout = {slot: float(p) for slot, p in (dropout or {}).items() if p > 0}
        self.augment = {slot: list(items) for slot, items in (augment or {}).items() if items}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        sample = self.dataset[index]
        if not self.dropout and not self.augment:
            return {**sample, "index": index}
        rng = sample_rng("train", self.seed, self.epoch, index)
        inputs = dict(sample["inputs"])
        if self.dropout:
            present = [slot for slot, raw in inputs.items() if raw is not None]
            drop = [slot for slot in present if rng.random() < self.dropout.get(slot, 0.0)]
            if drop and len(drop) == len(present):
                drop.pop(rng.randrange(len(drop)))  # keep one modality, chosen at random
            for slot in drop:
                inputs[slot] = None
        for slot, items in self.augment.items():
            if inputs.get(slot) is None:
                continue
            for factory, max_level in items:
                level = rng.uniform(0.0, max_level)
                generator = torch.Generator().manual_seed(rng.getrandbits(62))
                if level > 0:
                    inputs[slot] = _perturbed(factory(level), inputs[slot], generator)
        return {**_with_inputs(sample, inputs), "index": index}


class PerturbedView(Dataset):
    """``dataset`` with ``perturb`` applied to every present raw input of ``slot`` (seeded per sample)."""

    def __init__(self, dataset: Dataset, slot: str, perturb: Perturb, *, seed: int = 0) -> None:
        self.dataset, self.slot, self.perturb, self.seed = dataset, slot, perturb, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        sample = self.dataset[index]
        raw = sample["inputs"].get(self.slot)
        if raw is None:
            return sample
        generator = torch.Generator().manual_seed(sample_rng("perturb", self.seed, self.slot, index).getrandbits(62))
        return _with_inputs(sample, {**sample["inputs"], self.slot: _perturbed(self.perturb, raw, generator)})


class SubsetOfModalities(Dataset):
    """``dataset`` with only the modalities in ``keep`` (every other slot is missing for every sample)."""

    def __init__(self, dataset: Dataset, keep: Sequence[str]) -> None:
        self.dataset, self.keep = dataset, set(keep)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        sample = self.dataset[index]
        return _with_inputs(sample, {slot: (raw if slot in self.keep else None) for slot, raw in sample["inputs"].items()})
