"""`example_char_histogram`: a text encoder over character frequencies (no tokenizer, no weights)."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

import torch
from torch import nn

import mmcore
from mmcore import Features

ALPHABET = string.ascii_lowercase + string.digits + " "


class CharHistogramProcessor(mmcore.Processor):
    """A string -> normalised histogram of its characters over a-z, 0-9 and space."""

    def __call__(self, raw: str) -> torch.Tensor:
        if not isinstance(raw, str):
            raise TypeError(f"expected a string, got {type(raw).__name__}")
        counts = torch.zeros(len(ALPHABET))
        for char in raw.lower():
            index = ALPHABET.find(char)
            if index >= 0:
                counts[index] += 1
        return counts / counts.sum().clamp_min(1)

    def collate(self, items: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        present = torch.tensor([item is not None for item in items])
        zeros = torch.zeros(len(ALPHABET))
        return {"histogram": torch.stack([zeros if i is None else i for i in items]), "present": present}

    def example(self, generator: torch.Generator) -> str:
        length = int(torch.randint(1, 20, (1,), generator=generator))
        picks = torch.randint(0, len(ALPHABET), (length,), generator=generator).tolist()
        return "".join(ALPHABET[i] for i in picks)


class CharHistogramEncoder(mmcore.Encoder):
    """Character-frequency text encoder: histogram -> MLP -> one vector per text."""

    modality = "text"

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(len(ALPHABET), dim), nn.GELU(), nn.Linear(dim, dim))

    def processor(self) -> CharHistogramProcessor:
        return CharHistogramProcessor()

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        return Features.from_pooled(self.net(batch["histogram"]), batch["present"])
