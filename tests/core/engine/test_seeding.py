"""Seeding and random-generator state (mmcore.engine.seeding)."""

from __future__ import annotations

import random

import numpy as np
import torch

from mmcore.engine.seeding import epoch_seed, loader_seed, rng_state, seed_everything, set_rng_state


def _draws():
    return (torch.rand(3).tolist(), random.random(), float(np.random.rand()))


def test_seed_everything_makes_every_generator_repeat():
    seed_everything(123)
    first = _draws()
    seed_everything(123)
    assert _draws() == first
    seed_everything(124)
    assert _draws() != first


def test_a_saved_state_restores_every_generator_through_a_weights_only_file(tmp_path):
    seed_everything(7)
    _draws()
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = _draws()
    seed_everything(99)  # move every generator elsewhere
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def test_per_process_seeds_differ_by_rank_and_epoch_and_repeat():
    seeds = {epoch_seed(0, rank, epoch) for rank in range(4) for epoch in range(1, 4)}
    assert len(seeds) == 12
    assert epoch_seed(5, 1, 2) == epoch_seed(5, 1, 2) != epoch_seed(6, 1, 2)
    assert loader_seed(3, 2) == 3 * 7919 + 2  # one process: the stream older runs used
    assert loader_seed(3, 2, rank=1, distributed=True) == epoch_seed(3, 1, 2) != loader_seed(3, 2, rank=0, distributed=True)
