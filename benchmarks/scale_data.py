"""The scale benchmarks' table (issue 26): N rows of a 32x32 PNG, a short text, two numbers and a label.

Each row ``i`` is drawn from ``(seed, i)`` alone, so the first 10,000 rows of the 1,000,000-row
table are the 10,000-row table: one folder of images serves every size.

- ``image``: ``images/DDDD/IIIIIII.png`` (1,000 files a folder), 32x32 RGB: a background colour
  with noise and a bright square whose position depends on the label;
- ``text``: three to six words, one of which depends on the label (weak evidence);
- ``x1``, ``x2``: numbers, ``x1`` a noisy function of the label, ``x2`` noise;
- ``label``: 0..9; ``split``: ``train`` (80%), ``val`` (10%), ``test`` (10%) by ``i % 10``.

    python benchmarks/scale_data.py /work/scale_data --rows 1000000 --tables 1000,10000,100000,1000000

writes the images once (skipping those already there) and ``manifest_<N>.csv`` for each size in
``--tables`` (the first N rows). ``--fill-links N`` writes only the first N images and gives every
later row a hard link to one of them with the same label (writing a million PNGs takes hours on a
busy machine; start-up measurements need every file to exist, not distinct pixels):

    cp -al /work/scale_data/images /work/scale_data_1m/images   # hard links to the images already written
    python benchmarks/scale_data.py /work/scale_data_1m --rows 1000000 --tables 1000000 --fill-links 271000 Keep it outside the repository: 1,000,000 rows are ~4.5 GB of
small files.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import time
from pathlib import Path

import numpy as np

WORDS = ("red", "green", "blue", "small", "large", "round", "square", "bright", "dark", "soft", "sharp", "quiet",
         "loud", "fast", "slow", "warm", "cold", "old", "new", "tall")
CUES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PER_FOLDER = 1000


def row(seed: int, i: int) -> dict:
    """Row ``i``'s values (its image's pixels come from :func:`pixels` with the same key)."""
    rng = random.Random(f"{seed}/{i}")
    label = rng.randrange(10)
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]
    words.insert(rng.randrange(len(words) + 1), CUES[label] if rng.random() < 0.6 else rng.choice(CUES))
    return {"image": image_path(i), "text": " ".join(words), "x1": round(label / 9 + rng.gauss(0, 0.3), 4),
            "x2": round(rng.gauss(0, 1), 4), "label": label, "split": ("val", "test")[i % 10 - 8] if i % 10 >= 8 else "train"}


def image_path(i: int) -> str:
    return f"images/{i // PER_FOLDER:04d}/{i:07d}.png"


def pixels(seed: int, i: int, label: int) -> np.ndarray:
    g = np.random.default_rng([seed, i])
    base = g.integers(0, 256, size=3)
    img = np.clip(base + g.normal(0, 24, size=(32, 32, 3)), 0, 255)
    y, x = divmod(label, 5)
    img[4 + 14 * y: 14 + 14 * y, 2 + 6 * x: 8 + 6 * x] = 255 - base // 3
    return img.astype(np.uint8)


def write_images(out: Path, rows: int, seed: int, fill_links: int | None = None) -> int:
    from PIL import Image

    written = 0
    by_label: dict[int, list[int]] = {}  # --fill-links: the written rows of each label, linked to round-robin
    start = time.time()
    for i in range(rows):
        path = out / image_path(i)
        if i % PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            if i and i % 50_000 == 0:
                print(f"  {i} images ({time.time() - start:.0f} s)", flush=True)
        label = row(seed, i)["label"]
        if fill_links is not None and i >= fill_links:
            if not path.exists():
                sources = by_label[label]
                os.link(out / image_path(sources[i % len(sources)]), path)
                written += 1
            continue
        by_label.setdefault(label, []).append(i)
        if path.exists():
            continue
        tmp = path.with_suffix(".tmp")
        Image.fromarray(pixels(seed, i, label)).save(tmp, format="PNG")
        os.replace(tmp, path)  # an interrupted run leaves no half image under the name
        written += 1
    return written


def write_table(out: Path, rows: int, seed: int) -> Path:
    path = out / f"manifest_{rows}.csv"
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "text", "x1", "x2", "label", "split"])
        writer.writeheader()
        for i in range(rows):
            writer.writerow(row(seed, i))
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000, help="images to write (the largest table)")
    parser.add_argument("--tables", default="1000,10000,100000,1000000", help="table sizes, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fill-links", type=int, default=None, metavar="N",
                        help="write only the first N images; later rows get a hard link to one of them with the same label")
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.tables.split(","))
    if sizes[-1] > args.rows:
        parser.error(f"--tables {sizes[-1]} needs --rows >= {sizes[-1]}")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    written = write_images(args.out, args.rows, args.seed, args.fill_links)
    print(f"{written} images written in {time.time() - start:.0f} s")
    for n in sizes:
        print(f"table: {write_table(args.out, n, args.seed)}")


if __name__ == "__main__":
    main()
