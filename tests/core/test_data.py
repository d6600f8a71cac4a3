"""mmcore.data: the one DataLoader factory and collate, seeded splits and the processed-input memo,
on real images (scikit-learn's bundled photos) through real encoders. (The frozen-feature cache:
test_feature_cache.py.)"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from photo_data import dataset, image_model

import mmcore
from mmcore.data import (
    FeatureCache,
    MemoizedProcessor,
    ModelCollate,
    SampleDataset,
    attach_feature_cache,
    make_dataloader,
    memoize_inputs,
    seeded_split,
    unmemoize_inputs,
)


def test_seeded_split_is_a_partition():
    parts = seeded_split(50, val_fraction=0.2, test_fraction=0.1, seed=3)
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(50))
    assert parts == seeded_split(50, val_fraction=0.2, test_fraction=0.1, seed=3)
    with pytest.raises(ValueError, match="must leave training data"):
        seeded_split(10, val_fraction=0.5, test_fraction=0.5, seed=0)


def test_make_dataloader_is_seeded_and_the_same_with_workers():
    model, data = image_model(), dataset(10)

    def order(**kwargs):
        return [b["targets"].tolist() + b["inputs"]["text"]["ids"][:, 0].tolist()
                for b in make_dataloader(data, model, 4, shuffle=True, **kwargs)]

    assert order(seed=1) == order(seed=1)
    assert order(seed=1) != order(seed=2)
    assert order(seed=1, num_workers=2) == order(seed=1)
    batch = next(iter(make_dataloader(data, model, 4)))
    assert batch["inputs"]["image"]["present"].tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        make_dataloader(data, model, 0)
    with pytest.raises(TypeError, match="must have a collate"):
        make_dataloader(data, object(), 4)


def test_make_dataloader_takes_a_batch_sampler_and_refuses_batch_options_with_it():
    model, data = image_model(), dataset(6)
    sampler = [[5, 0], [2, 3, 4]]
    batches = list(make_dataloader(data, model, None, batch_sampler=sampler))
    assert [b["targets"].tolist() for b in batches] == [[2, 0], [2, 0, 1]]
    with pytest.raises(ValueError, match="batch_sampler decides the batches"):
        make_dataloader(data, model, None, batch_sampler=sampler, shuffle=True)
    with pytest.raises(ValueError, match="num_workers must be an int >= 0"):
        make_dataloader(data, model, 4, num_workers=-1)


class _Flagged(mmcore.Processor):
    """Returns whether it was in training mode when it processed a sample."""

    training = False

    def __call__(self, raw):
        return torch.tensor([float(self.training)])

    def collate(self, items):
        return {"x": torch.stack([torch.zeros(1) if i is None else i for i in items]),
                "present": torch.tensor([i is not None for i in items])}


def test_one_collate_switches_train_time_processing_on_only_for_training_batches():
    model = image_model()
    model.processors["text"] = flagged = _Flagged()
    samples = dataset(2).samples
    assert ModelCollate(model, training=True)(samples)["inputs"]["text"]["x"].flatten().tolist() == [1.0, 1.0]
    assert flagged.training is False, "switched back off after collating"
    assert ModelCollate(model)(samples)["inputs"]["text"]["x"].flatten().tolist() == [0.0, 0.0]
    train_batch = next(iter(make_dataloader(SampleDataset(samples), model, 2, training=True)))
    assert train_batch["inputs"]["text"]["x"].flatten().tolist() == [1.0, 1.0]


class _CountingProcessor(mmcore.Processor):
    """Reads a text file (or takes text) and returns its length as a tensor; counts its calls."""

    def __init__(self, augment: bool = False) -> None:
        self.augment, self.calls, self.offset = augment, 0, 0.0

    def __call__(self, raw):
        self.calls += 1
        text = open(raw).read() if isinstance(raw, Path) or (isinstance(raw, str) and Path(raw).is_file()) else str(raw)
        return torch.tensor([len(text) + self.offset])

    def collate(self, items):
        return {"x": torch.stack([torch.zeros(1) if i is None else i for i in items]),
                "present": torch.tensor([i is not None for i in items])}

    def fit(self, raws):
        self.offset = 1.0

    def state_dict(self):
        return {"offset": self.offset}

    def load_state_dict(self, state):
        self.offset = state["offset"]


def test_memoized_processor_processes_each_file_once_and_arrays_every_time(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello")
    inner = _CountingProcessor()
    memo = MemoizedProcessor(inner)
    first = memo(str(path))
    assert torch.equal(memo(str(path)), first) and torch.equal(memo(path), first) and inner.calls == 1
    memo("some words"), memo("some words")
    assert inner.calls == 2, "text is remembered by content"
    memo(np.zeros(3)), memo(np.zeros(3))
    assert inner.calls == 4, "arrays (e.g. augmented copies) are never remembered"
    path.write_text("hello, world")  # an edited file is another input
    assert memo(str(path)).item() == len("hello, world") and inner.calls == 5
    memo.fit([])  # fitted statistics change the output: nothing stale survives
    assert memo(str(path)).item() == len("hello, world") + 1 and inner.calls == 6
    assert memo.state_dict() == {"offset": 1.0}


def test_memoize_inputs_leaves_slots_with_a_feature_cache_alone():
    model = image_model(freeze=True, dim=8)
    attach_feature_cache(model, "image", FeatureCache())
    assert memoize_inputs(model) == ["text"]
    unmemoize_inputs(model)


def test_memoizing_refuses_augmenting_processors_and_memoize_inputs_skips_them():
    with pytest.raises(ValueError, match="cannot be memoized: it augments"):
        MemoizedProcessor(_CountingProcessor(augment=True))
    model = types.SimpleNamespace(processors={"a": _CountingProcessor(), "b": _CountingProcessor(augment=True)})
    assert memoize_inputs(model) == ["a"]
    assert isinstance(model.processors["a"], MemoizedProcessor) and not isinstance(model.processors["b"], MemoizedProcessor)
    assert memoize_inputs(model) == [], "never wrapped twice"
    unmemoize_inputs(model)
    assert memoize_inputs(model, exclude=["a"]) == [], "slots perturbed at train time are left alone"
    unmemoize_inputs(model)
    assert isinstance(model.processors["a"], _CountingProcessor)
