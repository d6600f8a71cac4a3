"""From-scratch text encoders and fit's text probes on one text column of a table (issue 27).

    python benchmarks/bench_text_scratch.py /work/fit_data/products28/table.csv --target category --column description

Part 1, the probes of ``mmcore fit``'s candidates phase on its sample (400 train / 300 val rows that have
a text, seeded as fit samples): TF-IDF of words (uni+bigrams), of character 2-4-grams within words
(scikit-learn's ``char_wb``) and of both, each by logistic regression standardised (C 0.5) or on the
L2-normalised rows as they are (C 10). Part 2: ``text_ngram`` and ``text_transformer`` (word tokens)
trained alone on the column's training rows (AdamW 2e-3, batch 32, ``--epochs``; test accuracy at the
best val epoch), per ``--seeds``. One intra-op thread. Prints one line per result.
"""

from __future__ import annotations

import argparse
import csv
import random
import time

import numpy as np


def probes(rows: list[dict], target: str, column: str) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = random.Random(0)
    data = {}
    for split, most in (("train", 400), ("val", 300)):
        chosen = [r for r in rows if r["split"] == split and r[column].strip()]
        rng.shuffle(chosen)
        data[split] = ([r[column] for r in chosen[:most]], [r[target] for r in chosen[:most]])
    (train, train_y), (val, val_y) = data["train"], data["val"]
    kinds = {"words 1-2": lambda: [TfidfVectorizer(ngram_range=(1, 2), max_features=5000)],
             "char_wb 2-4": lambda: [TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), max_features=4000)],
             "both": lambda: [TfidfVectorizer(max_features=2000),
                              TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), max_features=4000)]}
    for kind, make in kinds.items():
        vectorizers = [v.fit(train) for v in make()]
        x = np.hstack([v.transform(train).toarray() for v in vectorizers])
        v = np.hstack([v.transform(val).toarray() for v in vectorizers])
        for how, model in (("standardised C=0.5", make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=300))),
                           ("unscaled C=10", LogisticRegression(C=10, max_iter=300))):
            score = float(np.mean(model.fit(x, train_y).predict(v) == np.asarray(val_y)))
            print(f"probe {kind:12s} {x.shape[1]:5d} columns, {how:18s}: val accuracy {score:.3f} "
                  f"({len(train)} train / {len(val)} val rows)", flush=True)


def train_alone(rows: list[dict], target: str, column: str, kind: str, seed: int, epochs: int) -> None:
    import torch

    from mmcore_plugins.encoders.text import ByteTransformerEncoder, NgramBagEncoder, VocabTokenizer

    classes = sorted({r[target] for r in rows})

    def split(name: str) -> list[tuple[str, int]]:
        return [(r[column], classes.index(r[target])) for r in rows if r["split"] == name and r[column].strip()]

    train, val, test = split("train"), split("val"), split("test")
    torch.manual_seed(seed)
    order_rng = random.Random(seed)
    if kind == "text_ngram":
        encoder = NgramBagEncoder(dim=64)
        processor = encoder.processor()
    else:
        encoder = ByteTransformerEncoder(dim=64, heads=4, layers=1, tokenizer="word", vocab_size=2000)
        processor = VocabTokenizer("word", 2000, 64)
    processor.fit([t for t, _ in train])
    head = torch.nn.Linear(64, len(classes))
    optimiser = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=2e-3)
    items, targets = [processor(t) for t, _ in train], torch.tensor([y for _, y in train])

    def accuracy(data: list[tuple[str, int]]) -> float:
        encoder.eval()
        with torch.no_grad():
            predicted = head(encoder(processor.collate([processor(t) for t, _ in data])).pooled).argmax(1)
        encoder.train()
        return float((predicted == torch.tensor([y for _, y in data])).float().mean())

    best, start = (-1.0, 0.0, 0), time.perf_counter()
    for epoch in range(epochs):
        order = list(range(len(items)))
        order_rng.shuffle(order)
        for i in range(0, len(order), 32):
            chunk = order[i: i + 32]
            loss = torch.nn.functional.cross_entropy(head(encoder(processor.collate([items[j] for j in chunk])).pooled),
                                                     targets[chunk])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        score = accuracy(val)
        if score > best[0]:
            best = (score, accuracy(test), epoch + 1)
    print(f"alone {kind:16s} seed {seed}: val {best[0]:.3f}, test {best[1]:.3f} (best epoch {best[2]} of {epochs}; "
          f"{len(train)} train / {len(val)} val / {len(test)} test rows with a text; {time.perf_counter() - start:.1f} s)",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="a CSV with a split column (train / val / test)")
    parser.add_argument("--target", required=True)
    parser.add_argument("--column", required=True, help="the text column")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with open(args.table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    probes(rows, args.target, args.column)
    for seed in args.seeds:
        for kind in ("text_ngram", "text_transformer"):
            train_alone(rows, args.target, args.column, kind, seed, args.epochs)


if __name__ == "__main__":
    main()
