"""`example_char_noise`: a text perturbation replacing characters by random letters (typing noise)."""

from __future__ import annotations

import string
from typing import Any

import torch

import mmcore

LETTERS = string.ascii_lowercase


class CharNoise(mmcore.Perturbation):
    """Text: each character replaced by a random lower-case letter with probability ``level`` (0 = unchanged)."""

    modality = "text"  # the one place the modality is declared (registration reads it)
    levels = (0.05, 0.1, 0.2, 0.4)  # the default sweep of `mmcore eval --robustness`

    def __call__(self, raw: Any, generator: torch.Generator) -> str:
        if not isinstance(raw, str):
            raise TypeError(f"example_char_noise perturbs strings, got {type(raw).__name__}")
        # Every draw comes from `generator` (same state -> same output); a new string is returned.
        hit = torch.rand(len(raw), generator=generator).tolist()
        picks = torch.randint(0, len(LETTERS), (len(raw),), generator=generator).tolist()
        return "".join(LETTERS[p] if h < self.level else c for c, h, p in zip(raw, hit, picks, strict=True))
