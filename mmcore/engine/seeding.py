"""Seeding and random-generator state: what makes a run reproducible and a resumed run identical.

A single process keeps one stream seeded with ``trainer.seed``. In a distributed run process
``r`` reseeds its generators at the start of every epoch with :func:`epoch_seed`
``(seed, r, epoch)`` (see :class:`~mmcore.engine.trainer.Trainer`). :func:`rng_state` and
:func:`set_rng_state` save and restore every generator (torch CPU and CUDA, Python, NumPy) as
tensors and plain data, so ``state.pt`` loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch

from mmcore.engine.distributed import process_seed

__all__ = ["seed_everything", "rng_state", "set_rng_state", "epoch_seed", "loader_seed", "process_seed"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, torch (CPU and every CUDA device) and NumPy's global generator."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is a dependency, but seeding must never be what fails
        pass


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and plain data (loadable with weights_only=True)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = (name, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached))
    except ImportError:
        pass
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (CUDA states of devices this machine lacks are dropped)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"])[: torch.cuda.device_count()])  # resumed on fewer GPUs
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, cached))


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed process ``rank`` of a distributed run reseeds its generators with at the start of
    ``epoch`` (:func:`~mmcore.engine.distributed.process_seed`: distinct per process and epoch)."""
    return process_seed(seed, rank, epoch)


def loader_seed(seed: int, epoch: int, *, rank: int = 0, distributed: bool = False) -> int:
    """The seed of an epoch's training DataLoader generator (its workers' seeds are drawn from it):
    per process in a distributed run, so processes do not repeat each other's draws."""
    return process_seed(seed, rank, epoch) if distributed else seed * 7919 + epoch
