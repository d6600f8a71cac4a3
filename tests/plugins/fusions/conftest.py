"""Fusion-test setup: a test-only token encoder (ragged [L, F] sequences, padded with masks), and the
Triton interpreter switched on when there is no GPU (as tests/kernels does), so the attention fusions
can be run through the real Triton kernel on CPU tensors. Triton reads the variable when the kernel
modules are first imported, which ``import mmcore_kernels`` does not do.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from torch import nn

import mmcore
from mmcore import Features


class SequenceProcessor(mmcore.Processor):
    def __init__(self, num_features: int) -> None:
        self.num_features = num_features

    def __call__(self, raw):
        return torch.as_tensor(raw, dtype=torch.float32).reshape(-1, self.num_features)

    def collate(self, items):
        length = max((i.shape[0] for i in items if i is not None), default=1)
        values = torch.zeros(len(items), length, self.num_features)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for row, item in enumerate(items):
            if item is not None:
                values[row, : item.shape[0]] = item
                mask[row, : item.shape[0]] = True
        return {"values": values, "mask": mask, "present": torch.tensor([i is not None for i in items])}

    def example(self, generator):
        return torch.randn(int(torch.randint(1, 5, (1,), generator=generator)), self.num_features, generator=generator)


class SequenceEncoder(mmcore.Encoder):
    """Per-token MLP over ragged sequences (test helper)."""

    modality = "sequence"

    def __init__(self, num_features: int = 2, dim: int = 16) -> None:
        super().__init__()
        self.num_features, self.dim = num_features, dim
        self.net = nn.Sequential(nn.Linear(num_features, dim), nn.GELU(), nn.Linear(dim, dim))

    def processor(self):
        return SequenceProcessor(self.num_features)

    def forward(self, batch):
        return Features.from_tokens(self.net(batch["values"]), batch["mask"], batch["present"])


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models are tiny: one intra-op thread is as fast, and immune to oversubscribed cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sequence_encoder_class():
    """The test-only encoder class itself (for fixtures that register it under their own name)."""
    return SequenceEncoder


@pytest.fixture
def sequence_encoder():
    """Registers ``test_sequence`` on the default plugin manager for the duration of a test."""
    mmcore.register_encoder("test_sequence", modality="sequence")(SequenceEncoder)
    yield "test_sequence"
    SequenceEncoder.__mmcore_plugin__.unregister()
