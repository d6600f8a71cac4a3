"""Datasets of raw multimodal samples, and the one way they become batches for a model.

A sample is ``{"inputs": {slot: raw | None}, "target": ...}``; None marks a modality the sample
lacks. :func:`make_dataloader` is mmcore's only DataLoader factory -- the trainer's training
batches and evaluation both come from it -- and :class:`ModelCollate` its only
collate (training and evaluation differ by one flag). Processed inputs can be memoized
(:func:`memoize_inputs`); the frozen-feature cache lives in :mod:`mmcore.feature_cache`, its
public names are re-exported here (``mmcore.data.attach_feature_cache``, ...).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mmcore.components import PartialFit, Processor, fitter_for
from mmcore.feature_cache import (  # noqa: F401 - re-exported: documented as mmcore.data.*
    CACHED,
    FeatureCache,
    FeatureCacheHandle,
    SlotCache,
    attach_feature_cache,
    encoder_fingerprint,
    is_cacheable,
    precompute_features,
    sample_key,
)

SPLITS = ("train", "val", "test")

logger = logging.getLogger("mmcore.data")


class SampleDataset(Dataset):
    """A map-style dataset of raw samples, with metadata (e.g. ``num_classes``) for configs and reports.

    Each sample is ``{"inputs": {slot: raw or None}, "target": value}``; None marks a modality
    the sample lacks. ``compact=True`` stores them as columns (:class:`mmcore.sample_columns.SampleColumns`:
    each sample handed out is a new dict, equal to the one given); otherwise as a list of the dicts given.
    A ``SampleColumns`` given is held as it is (a table read batch by batch into columns is never
    turned into dicts whole).
    """

    def __init__(self, samples: Sequence[Mapping[str, Any]], *, metadata: Mapping[str, Any] | None = None,
                 compact: bool = False) -> None:
        from mmcore.sample_columns import SampleColumns

        if isinstance(samples, SampleColumns):
            first_bad = samples.first_without_mapping("inputs")
            if first_bad is not None:
                raise ValueError(f"sample #{first_bad} must be a mapping with an 'inputs' mapping, got {samples[first_bad]!r:.80}")
            self.samples: Sequence[Mapping[str, Any]] = samples
            self.metadata = dict(metadata or {})
            return
        for i, sample in enumerate(samples):
            if not isinstance(sample, Mapping) or not isinstance(sample.get("inputs"), Mapping):
                raise ValueError(f"sample #{i} must be a mapping with an 'inputs' mapping, got {sample!r:.80}")
        if compact:  # a large table's samples as columns (~0.1-0.2 KB a row instead of ~0.9: issue 26)
            self.samples = SampleColumns(samples)
        else:
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


# ---------------------------------------------------------------------- batches
@contextlib.contextmanager
def processors_training(processors: Mapping[str, Any], training: bool = True) -> Iterator[None]:
    """Switch every processor's ``training`` flag (:attr:`Processor.training`, train-time augmentation)
    to ``training`` for the duration of the block, and back off afterwards."""
    switched = list(processors.values()) if training else []
    for p in switched:
        p.training = True
    try:
        yield
    finally:
        for p in switched:
            p.training = False


class ModelCollate:
    """``model.collate`` as a picklable callable (for worker processes): the one collate of
    training and evaluation. Samples that carry an int ``"index"`` (the training view's rows) give
    the batch an ``index`` ``[B]`` int64 tensor of them. ``training=True`` switches the processors that have a ``training``
    flag (train-time augmentation, e.g. ``image_cnn``'s shifts) on while collating; evaluation
    batches are collated with it off. Feature caches attached to the model are honoured by
    ``model.collate`` itself."""

    def __init__(self, model: Any, *, training: bool = False) -> None:
        if not callable(getattr(model, "collate", None)):
            raise TypeError(f"model must have a collate(samples) method (an mmcore.MultimodalModel), got {type(model).__name__}")
        self.model, self.training = model, training

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        with processors_training(getattr(self.model, "processors", {}), self.training):
            batch = self.model.collate(samples)
        # The rows' indices in the data set (TrainingView adds them), passed through to the batch:
        # training plugins look up per-row values (a teacher's cached outputs) by them.
        if isinstance(batch, dict) and samples and all(isinstance(s, Mapping) and isinstance(s.get("index"), int) for s in samples):
            batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
        return batch


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and NumPy's generators from the worker's torch seed.

    PyTorch seeds each worker's torch generator with ``base_seed + worker_id`` (``base_seed`` drawn
    from the DataLoader's generator); the other generators would otherwise be copies of the parent's.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is a dependency; seeding must still never be what fails
        pass


def make_dataloader(
    dataset: Dataset,
    model: Any,
    batch_size: int | None = 32,
    *,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool | None = None,
    training: bool = False,
    batch_sampler: Sampler | None = None,
) -> DataLoader:
    """Batches of ``model.collate`` over ``dataset``: seeded order and workers, pinned memory on CUDA.

    The same ``seed`` gives the same batches in the same order, with or without worker processes
    (each worker's Python and NumPy generators are seeded from its torch seed, :func:`seed_worker`).
    ``training=True`` collates with the processors' train-time augmentation on
    (:class:`ModelCollate`). ``pin_memory`` defaults to whether CUDA is available.
    ``batch_sampler`` (e.g. the trainer's distributed global-batch sampler) replaces
    ``batch_size``, ``shuffle`` and ``drop_last``, which must then be left at None/False/False.

    Raises:
        ValueError: ``batch_size`` is not a positive int (without a ``batch_sampler``),
            ``num_workers`` is negative, or a ``batch_sampler`` comes with batch options.
        TypeError: ``model`` has no ``collate``.
    """
    if batch_sampler is not None:
        if shuffle or drop_last or batch_size not in (None, 32):
            raise ValueError("make_dataloader: batch_sampler decides the batches; pass no batch_size, shuffle or drop_last with it")
    elif not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    collate = ModelCollate(model, training=training)
    batching: dict[str, Any] = ({"batch_sampler": batch_sampler} if batch_sampler is not None
                                else {"batch_size": batch_size, "shuffle": shuffle, "drop_last": drop_last})
    return DataLoader(
        dataset,
        **batching,
        collate_fn=collate,
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers else None,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=False,
    )


# ---------------------------------------------------------------------- processed-input memo
class _NothingToFit(PartialFit):
    def update(self, raws: Sequence[Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class MemoizedProcessor(Processor):
    """Wraps a deterministic processor: each raw input read from a file (or given as text) is
    processed once and its tensors kept in memory, so later epochs skip reading, decoding and
    feature extraction (e.g. a WAV file's resampling and log-mel spectrogram).

    Only raw inputs that name their content -- file paths and strings -- are remembered (keyed
    by :func:`sample_key`: path, size and modification time, or the text); arrays, tensors and
    images are processed every time. Memory grows with the distinct paths and texts seen, so
    slots whose raw inputs are perturbed at train time (new strings every epoch) should not be
    memoized (:func:`memoize_inputs` takes them in ``exclude``). Refuses processors that
    augment: their output differs on every call. With DataLoader workers each worker remembers
    what it processed during one epoch only (workers are new each epoch), so this pays off with
    ``num_workers=0``. The ``training`` flag, fitting, state and examples go to ``inner``.
    """

    def __init__(self, inner: Processor) -> None:
        if inner.augment or isinstance(inner, MemoizedProcessor):
            raise ValueError(f"{type(inner).__name__} cannot be memoized: it augments its inputs or is already memoized")
        self.inner = inner
        self.memo: dict[str, Any] = {}

    @property
    def training(self) -> bool:
        return bool(self.inner.training)

    @training.setter
    def training(self, value: bool) -> None:
        self.inner.training = value

    @property
    def columns(self):  # a row reader's columns are the inner processor's
        return self.inner.columns

    @property
    def categorical(self):
        return self.inner.categorical

    def check_state(self, state: Mapping[str, Any]) -> None:
        self.inner.check_state(state)

    def __call__(self, raw: Any) -> Any:
        if not isinstance(raw, (str, os.PathLike)):
            return self.inner(raw)
        key = sample_key(raw)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = self.inner(raw)
        return hit

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        return self.inner.collate(items)

    def fit(self, raws: Sequence[Any]) -> None:
        self.memo.clear()  # fitted statistics change what the processor returns
        self.inner.fit(raws)

    def partial_fitter(self) -> PartialFit:
        fitter = fitter_for(self.inner)
        if fitter is None:  # the inner processor fits nothing: neither does this (and its memo stays right)
            return _NothingToFit()
        self.memo.clear()  # fitted statistics change what the processor returns
        return fitter

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.memo.clear()
        self.inner.load_state_dict(state)

    def example(self, generator: torch.Generator) -> Any:
        return self.inner.example(generator)


def memoize_inputs(model: Any, exclude: Sequence[str] = ()) -> list[str]:
    """Wrap every deterministic processor of ``model`` in a :class:`MemoizedProcessor`; returns the slots.

    "Deterministic" means it does not augment (``augment`` false or absent). Slots with a feature
    cache attached (their hits skip the processor anyway) and slots in ``exclude`` -- those whose
    raw inputs are perturbed at train time, every perturbed text would be a new entry -- are left
    alone. Undo with :func:`unmemoize_inputs`.
    """
    cached = getattr(model, "feature_caches", {})
    slots = []
    for slot, processor in list(model.processors.items()):
        if slot in exclude or slot in cached or processor.augment or isinstance(processor, MemoizedProcessor):
            continue
        model.processors[slot] = MemoizedProcessor(processor)
        slots.append(slot)
    return slots


def unmemoize_inputs(model: Any) -> None:
    """Put back the processors :func:`memoize_inputs` wrapped (and drop what they remembered)."""
    for slot, processor in list(model.processors.items()):
        if isinstance(processor, MemoizedProcessor):
            model.processors[slot] = processor.inner
