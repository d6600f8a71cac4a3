"""`digit_captions`: images of 2-4 handwritten digits side by side, captioned with their words
("three one four"), for image captioning that installs offline.

The digits are scikit-learn's bundled 8x8 handwritten digits (1797 images). The *digit images*
are split first (``test_fraction`` / ``val_fraction`` of them, drawn from ``seed``), and each
split's captions are composed only from its own images: no test digit image is ever seen in
training (only other writings of the same digits). A sample is a ``8 x (8 * max_digits)``
greyscale PNG (white strokes on black, as scikit-learn stores them), the digits placed left to
right from the left edge and the rest black; its target is the caption, the digits' words in
``language`` (one of av_digits' seven: en, fr, de, es, it, pt, nl) separated by spaces.
``image_noise`` adds Gaussian noise of that standard deviation to the [0, 1] image.

Generated once, deterministically from its options, into a cache folder (``root``, default
``$MMCORE_CACHE/digit_captions`` or ``~/.cache/mmcore/digit_captions``, one sub-folder per hash
of the options) as PNG files + ``manifest.jsonl``; ``metadata["vocab"]`` lists the words (the
captioning head's ``vocab``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import mmcore
from mmcore.data import SampleDataset
from mmcore_plugins.datasets._generated import generated_folder, write_jsonl

#: Bump when generation changes: the cache folder name includes it.
FORMAT_VERSION = 1
N_DIGITS = 1797
SIDE = 8  # scikit-learn digits are 8x8


def default_root() -> Path:
    """``$MMCORE_CACHE/digit_captions``, or ``~/.cache/mmcore/digit_captions``."""
    return Path(os.environ.get("MMCORE_CACHE", Path.home() / ".cache" / "mmcore")) / "digit_captions"


def split_digit_images(seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[int]]:
    """Indices of scikit-learn's digit images per split (disjoint), drawn from ``seed``."""
    import torch

    order = torch.randperm(N_DIGITS, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test, n_val = round(N_DIGITS * test_fraction), round(N_DIGITS * val_fraction)
    return {"test": sorted(order[:n_test]), "val": sorted(order[n_test : n_test + n_val]), "train": sorted(order[n_test + n_val :])}


def generate(root: Path, *, seed: int, sizes: dict[str, int], min_digits: int, max_digits: int, language: str,
             image_noise: float, val_fraction: float, test_fraction: float) -> Path:
    """Write the data set into ``root`` (atomically: a half-written folder is never used); return the manifest."""
    import torch
    from PIL import Image

    from mmcore_plugins.datasets.av_digits import WORDS

    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # the digits ship inside scikit-learn
        raise ImportError("the digit_captions data set needs scikit-learn (its bundled digits): "
                          "pip install scikit-learn") from exc

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    pools = split_digit_images(seed, val_fraction, test_fraction)
    with generated_folder(root, prefix=".digit_captions-") as tmp:
        (tmp / "images").mkdir()
        rows = []
        for split_number, split in enumerate(("train", "val", "test")):
            g = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (split_number + 1))
            pool = pools[split]
            for n in range(sizes[split]):
                count = int(torch.randint(min_digits, max_digits + 1, (1,), generator=g))
                chosen = [pool[int(j)] for j in torch.randint(len(pool), (count,), generator=g)]
                canvas = torch.zeros(SIDE, SIDE * max_digits)
                for slot, index in enumerate(chosen):
                    canvas[:, slot * SIDE : (slot + 1) * SIDE] = images[index]
                if image_noise > 0:
                    canvas = (canvas + image_noise * torch.randn(canvas.shape, generator=g)).clamp(0, 1)
                name = f"{split}_{n:05d}"
                Image.fromarray((canvas * 255).round().to(torch.uint8).numpy(), mode="L").save(tmp / "images" / f"{name}.png")
                labels = [int(digits.target[i]) for i in chosen]
                rows.append({"id": name, "image": f"images/{name}.png", "caption": " ".join(WORDS[language][d] for d in labels),
                             "digits": labels, "sources": chosen, "split": split})
        write_jsonl(tmp / "manifest.jsonl", rows)
    return root / "manifest.jsonl"


def load_digit_captions(
    split: Literal["train", "val", "test"],
    root: str | None = None,
    seed: int = 0,
    train_size: int = 4000,
    val_size: int = 500,
    test_size: int = 1000,
    min_digits: int = 2,
    max_digits: int = 4,
    language: str = "en",
    image_noise: float = 0.0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> SampleDataset:
    """Images of 2-4 handwritten digits side by side, captioned with their words; test digit images unseen in training.

    Samples: ``{"id": "test_00012", "inputs": {"image": <absolute PNG path>}, "target": "three one four"}``.
    ``train_size``/``val_size``/``test_size``: captions per split; ``val_fraction``/``test_fraction``:
    shares of the 1797 digit images reserved for those splits' captions.

    Raises:
        ValueError: an option out of range (named, with what was expected and what came).
    """
    from mmcore_plugins.datasets.av_digits import WORDS

    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    for name, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name, value in (("min_digits", min_digits), ("max_digits", max_digits)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8:
            raise ValueError(f"{name} must be an int in 1..8, got {value!r}")
    if min_digits > max_digits:
        raise ValueError(f"min_digits ({min_digits}) must be <= max_digits ({max_digits})")
    if language not in WORDS:
        raise ValueError(f"language must be one of {sorted(WORDS)}, got {language!r}")
    if image_noise < 0:
        raise ValueError(f"image_noise must be >= 0, got {image_noise}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction <= 0.5):
        raise ValueError(f"val_fraction and test_fraction must be in (0, 1) and together at most 0.5 (training keeps "
                         f"most digit images), got {val_fraction} and {test_fraction}")
    options = {"seed": seed, "sizes": {"train": train_size, "val": val_size, "test": test_size}, "min_digits": min_digits,
               "max_digits": max_digits, "language": language, "image_noise": image_noise,
               "val_fraction": val_fraction, "test_fraction": test_fraction, "version": FORMAT_VERSION}
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    folder = (Path(root).expanduser() if root else default_root()) / key
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        generate(folder, **{k: v for k, v in options.items() if k != "version"})
    samples = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["split"] == split:
            samples.append({"id": row["id"], "inputs": {"image": str(folder / row["image"])}, "target": row["caption"]})
    return SampleDataset(samples, metadata={"vocab": list(WORDS[language]), "root": str(folder), "options": options,
                                            "max_digits": max_digits})


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_dataset("digit_captions", load_digit_captions,
                         example_options={"train_size": 40, "val_size": 8, "test_size": 8})
