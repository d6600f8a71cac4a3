"""`example_palindromes`: a generated text data set (is the word a palindrome?), one split per call."""

from __future__ import annotations

import random

from mmcore.data import SampleDataset, seeded_split

ALPHABET = "abcdefgh"


def load_palindromes(split: str, size: int = 120, seed: int = 0, val_fraction: float = 0.2,
                     test_fraction: float = 0.2) -> SampleDataset:
    """Words of 3-8 letters labelled 1 when they read the same backwards (half of them), else 0.

    ``split``: "train", "val" or "test" (the framework passes it); ``size``: samples over all
    splits; the same ``seed`` gives the same words and the same split. Each sample is
    ``{"inputs": {"text": word}, "target": 0 | 1}``; ``metadata`` has ``num_classes`` and ``classes``.

    Raises:
        ValueError: an unknown split, or ``size`` < 5.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if not isinstance(size, int) or size < 5:
        raise ValueError(f"size must be an int >= 5, got {size!r}")
    rng = random.Random(seed)
    samples = []
    for i in range(size):
        half = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(2, 4)))
        palindrome = i % 2 == 0
        word = half + half[-2::-1] if palindrome else half + "".join(rng.choice(ALPHABET) for _ in range(len(half)))
        samples.append({"inputs": {"text": word}, "target": int(word == word[::-1])})
    rows = seeded_split(size, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)[split]
    return SampleDataset([samples[i] for i in rows], metadata={"num_classes": 2, "classes": ["no", "yes"]})
