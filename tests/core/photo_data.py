"""Shared test data for tests/core: crops of scikit-learn's bundled photos and a small image + text
model over them (real images through real encoders, no mocks)."""

from __future__ import annotations

import numpy as np
import torch

import mmcore
from mmcore.data import SampleDataset


def photo_crops(n: int) -> list[np.ndarray]:
    from sklearn.datasets import load_sample_image

    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    return [np.ascontiguousarray(photos[i % 2][40 * i : 40 * i + 96, 50 * i : 50 * i + 96]) for i in range(n)]


def image_model(**encoder):
    spec = {"encoders": {"image": {"name": "image_torchvision", "arch": "resnet18", "image_size": 32, **encoder},
                         "text": {"name": "text_transformer", "dim": 16, "heads": 2, "layers": 1, "max_length": 16}},
            "fusion": {"name": "concat", "dim": 16}, "head": {"name": "classification", "num_classes": 3}}
    torch.manual_seed(0)
    return mmcore.build_model(spec)


def dataset(n: int = 10) -> SampleDataset:
    words = ["un", "deux", "trois"]
    return SampleDataset([{"inputs": {"image": img if i != 3 else None, "text": words[i % 3]}, "target": i % 3}
                          for i, img in enumerate(photo_crops(n))])
