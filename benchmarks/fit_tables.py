"""The tables of `mmcore fit`'s benchmark (issue 27), written as a user would bring them: a CSV of
file paths and values, with a ``split`` column (train / val / test).

    python benchmarks/fit_tables.py digits32  DIGITS OUT   # from benchmarks/fit_data.py's folder DIGITS
    python benchmarks/fit_tables.py products  OUT [--rows 3000] [--side 28]  # needs dataset-fashion-mnist (apt)
    python benchmarks/fit_tables.py generated OUT --rows 10000

* ``digits32``: the fit benchmark's rows (``benchmarks/fit_data.py``: a noisy 8x8 digit, the digit
  spoken, a weak text hint, an ``ink`` number, a ``scanner`` category, an id) with every image
  upscaled to 32 x 32 (bilinear): the thumbnail a ">= 32 px means a photo" rule mistakes for one.
* ``products``: product photos from Fashion-MNIST (Debian's ``dataset-fashion-mnist``: Zalando's
  28 x 28 grey article photos, 10 categories), ``--rows`` drawn from its training set (seeded), at
  ``--side`` px; with a noisy ``description`` (category words from a small vocabulary, generic
  words, typos; on 20% of rows another category's words, on 25% empty), a ``price`` (log-normal around
  a per-category median, 5% empty), a ``brand`` (12 brands, each category favouring a few), a
  ``created_at`` date-time (uniform over two years: no signal) and a ``product_id``; target
  ``category``. 70 / 15 / 15% train / val / test.
* ``generated``: ``--rows`` synthetic rows: a 32 x 32 PNG of one of 4 shapes (random size, place,
  grey level, pixel noise and a distracting line), a short text (a colour word that agrees with
  the shape 60% of the time, plus filler), a number ``weight`` (shape-dependent mean, noise of
  twice the spread between means) and a number ``noise``; target ``shape``. 70 / 15 / 15%.

Everything is drawn from ``--seed``; the files are written under OUT (use a folder outside the
repository, e.g. /work/fit_data/...).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist")
CATEGORIES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
WORDS = {
    "T-shirt/top": ("tee", "t-shirt", "crew neck", "short sleeve", "cotton top", "tank"),
    "Trouser": ("trousers", "pants", "slim fit", "chinos", "straight leg", "waistband"),
    "Pullover": ("pullover", "sweater", "knit", "jumper", "wool blend", "ribbed cuffs"),
    "Dress": ("dress", "midi", "a-line", "sleeveless", "evening", "flowy"),
    "Coat": ("coat", "jacket", "parka", "lined", "zip front", "winter"),
    "Sandal": ("sandal", "open toe", "strappy", "flat", "summer", "buckle"),
    "Shirt": ("shirt", "button down", "collar", "long sleeve", "oxford", "flannel"),
    "Sneaker": ("sneaker", "trainer", "lace-up", "running", "rubber sole", "canvas"),
    "Bag": ("bag", "tote", "handbag", "shoulder strap", "zip pocket", "leather"),
    "Ankle boot": ("ankle boot", "boot", "chelsea", "heel", "suede", "side zip"),
}
GENERIC = ("new", "classic", "comfortable", "everyday", "great value", "soft", "black", "navy", "grey", "limited",
           "bestseller", "free returns", "size m", "size l", "regular", "stylish", "premium", "basic")
PRICE_MEDIAN = (15, 35, 30, 45, 80, 30, 28, 60, 40, 70)
BRANDS = ("Acme", "Northwind", "Zenith", "Orbit", "Nova", "Lumen", "Kestrel", "Harbor", "Vale", "Pioneer", "Atlas", "Juniper")
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow")
FILLER = ("item", "sample", "thing", "object", "piece", "entry", "see photo", "as shown", "n/a", "ok")


def _idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian header, then uint8 data) -> array."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _splits(n: int, rng: np.random.Generator, val: float = 0.15, test: float = 0.15) -> np.ndarray:
    order = rng.permutation(n)
    split = np.empty(n, dtype=object)
    n_test, n_val = int(round(test * n)), int(round(val * n))
    split[order[:n_test]], split[order[n_test:n_test + n_val]], split[order[n_test + n_val:]] = "test", "val", "train"
    return split


def _typo(text: str, rng: np.random.Generator, rate: float = 0.04) -> str:
    chars = list(text)
    for k in range(len(chars)):
        if chars[k].isalpha() and rng.random() < rate:
            chars[k] = chr(ord("a") + int(rng.integers(26)))
    return "".join(chars)


def _write(out: Path, rows: list[dict], info: dict) -> Path:
    table = out / "table.csv"
    with table.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    info["rows"] = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    (out / "info.json").write_text(json.dumps(info, indent=2))
    return table


def _fresh(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)


def digits32(digits: Path, out: Path) -> Path:
    from PIL import Image

    _fresh(out)
    rows = []
    with (digits / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["image"]:
                with Image.open(digits / row["image"]) as img:
                    big = img.convert("L").resize((32, 32), Image.BILINEAR)
                name = f"images/{Path(row['image']).name}"
                big.save(out / name)
                row["image"] = name
            if row["audio"]:  # copied: cells name files inside the table's folder
                (out / "audio").mkdir(exist_ok=True)
                shutil.copyfile(digits / row["audio"], out / row["audio"])
            rows.append(row)
    return _write(out, rows, {"source": str(digits), "image_side": 32})


def products(out: Path, *, rows: int = 3000, side: int = 28, seed: int = 0) -> Path:
    from PIL import Image

    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit("needs Debian's dataset-fashion-mnist: apt-get install -y dataset-fashion-mnist")
    rng = np.random.default_rng(seed)
    images, labels = _idx(FASHION / "train-images-idx3-ubyte.gz"), _idx(FASHION / "train-labels-idx1-ubyte.gz")
    chosen = rng.choice(len(labels), size=rows, replace=False)
    split = _splits(rows, rng)
    _fresh(out)
    start = dt.datetime(2022, 1, 1)
    brand_pref = {c: rng.choice(len(BRANDS), size=3, replace=False) for c in range(len(CATEGORIES))}
    table = []
    for k, index in enumerate(chosen):
        label = int(labels[index])
        name = f"images/{k:05d}.png"
        img = Image.fromarray(images[index], mode="L")
        if side != 28:
            img = img.resize((side, side), Image.BILINEAR)
        img.save(out / name)
        words = list(WORDS[CATEGORIES[label if rng.random() >= 0.2 else int(rng.integers(len(CATEGORIES)))]])
        parts = list(rng.choice(words, size=int(rng.integers(1, 3)), replace=False))
        parts += list(rng.choice(GENERIC, size=int(rng.integers(1, 4)), replace=False))
        rng.shuffle(parts)
        description = "" if rng.random() < 0.25 else _typo(" ".join(parts), rng)
        price = "" if rng.random() < 0.05 else f"{PRICE_MEDIAN[label] * float(np.exp(0.45 * rng.standard_normal())):.2f}"
        brand = BRANDS[int(brand_pref[label][rng.integers(3)])] if rng.random() < 0.4 else BRANDS[int(rng.integers(len(BRANDS)))]
        created = start + dt.timedelta(seconds=float(rng.uniform(0, 2 * 365 * 86400)))
        table.append({"product_id": f"P-{100000 + 7 * k}", "photo": name, "description": description, "price": price,
                      "brand": brand, "created_at": created.strftime("%Y-%m-%d %H:%M:%S"), "category": CATEGORIES[label],
                      "split": split[k]})
    return _write(out, table, {"source": str(FASHION), "seed": seed, "side": side})


def _shape(kind: int, rng: np.random.Generator) -> np.ndarray:
    """A 32 x 32 grey image (uint8) of one of SHAPES with clutter."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (32, 32), int(rng.integers(0, 60)))
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(8, 16))
    cx, cy = (int(v) for v in rng.integers(size // 2 + 1, 32 - size // 2 - 1, size=2))
    box = (cx - size // 2, cy - size // 2, cx + size // 2, cy + size // 2)
    grey = int(rng.integers(140, 256))
    if kind == 0:
        draw.ellipse(box, fill=grey)
    elif kind == 1:
        draw.rectangle(box, fill=grey)
    elif kind == 2:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), (cx, box[1])], fill=grey)
    else:
        w = max(2, size // 4)
        draw.rectangle((cx - w // 2, box[1], cx + w // 2, box[3]), fill=grey)
        draw.rectangle((box[0], cy - w // 2, box[2], cy + w // 2), fill=grey)
    x0, y0, x1, y1 = (int(v) for v in rng.integers(0, 32, size=4))
    draw.line((x0, y0, x1, y1), fill=int(rng.integers(80, 200)), width=int(rng.integers(1, 3)))
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, 40, (32, 32))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def generated(out: Path, *, rows: int = 10000, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    split = _splits(rows, rng)
    _fresh(out)
    table = []
    for k in range(rows):
        kind = int(rng.integers(len(SHAPES)))
        name = f"images/{k // 1000:03d}/{k:06d}.png"
        if k % 1000 == 0:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_shape(kind, rng), mode="L").save(out / name)
        colour = COLOURS[kind if rng.random() < 0.6 else int(rng.integers(len(COLOURS)))]
        filler = list(rng.choice(FILLER, size=int(rng.integers(1, 3)), replace=False))
        text = " ".join([colour, *filler] if rng.random() < 0.5 else [*filler, colour])
        table.append({"image": name, "note": text, "weight": round(float(kind + 2.0 * rng.standard_normal()), 3),
                      "noise": round(float(rng.standard_normal()), 3), "shape": SHAPES[kind], "split": split[k]})
    return _write(out, table, {"seed": seed, "rows_total": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="table", required=True)
    p = sub.add_parser("digits32")
    p.add_argument("digits", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("products")
    p.add_argument("out", type=Path)
    p.add_argument("--rows", type=int, default=3000)
    p.add_argument("--side", type=int, default=28)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("generated")
    p.add_argument("out", type=Path)
    p.add_argument("--rows", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.table == "digits32":
        table = digits32(args.digits, args.out)
    elif args.table == "products":
        table = products(args.out, rows=args.rows, side=args.side, seed=args.seed)
    else:
        table = generated(args.out, rows=args.rows, seed=args.seed)
    print(table, (table.parent / "info.json").read_text())


if __name__ == "__main__":
    main()
