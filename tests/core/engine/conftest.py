"""A tiny, fast tabular run config shared by the engine tests."""

from __future__ import annotations

import copy

import pytest

#: scikit-learn's wine data (178 rows) split into two modalities; trains in about a second.
WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "missing_rate": 0.2, "seed": 0},
    "model": {
        "encoders": {
            "first": {"name": "tabular_mlp", "num_features": 6, "dim": 16, "dropout": 0.1},
            "second": {"name": "tabular_mlp", "num_features": 7, "dim": 16, "dropout": 0.1},
        },
        "fusion": {"name": "concat", "dim": 16, "dropout": 0.1},
        "head": {"name": "classification", "num_classes": 3},
    },
    "trainer": {"epochs": 3, "batch_size": 16, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False},
}


@pytest.fixture
def wine_config(tmp_path):
    """A fresh copy of the wine config writing into this test's temporary folder."""
    config = copy.deepcopy(WINE)
    config["trainer"]["run_dir"] = str(tmp_path / "run")
    return config


@pytest.fixture(scope="module")
def wine_base():
    """A fresh copy of the wine config (no run_dir), for module-scoped fixtures."""
    return copy.deepcopy(WINE)
