"""The plain loop the scale benchmarks compare ``mmcore train`` with (issue 26): one epoch over the
scale table (:mod:`scale_data`) written by hand with PyTorch, the same model and the same input
processing, none of mmcore's run machinery.

    python benchmarks/plain_loop.py /work/scale_data/manifest_10000.csv --epochs 1

What it does, as a user would write it: ``csv.DictReader`` reads the table (no validation: a
missing or broken file fails when its batch is read), the rows are split by the ``split`` column,
a ``DataLoader`` (batch 64, shuffled, seeded) batches them through the model's own ``collate``
(the processors: PNG -> 32x32 tensor, text -> byte ids, x1/x2 -> a row of numbers), and a loop of
forward, cross-entropy, backward, AdamW (``fused`` as the trainer uses it), gradient clipping at
1.0 and a warmup-cosine schedule trains it; validation and test accuracy are counted by hand at the
end. The model is ``mmcore.build_model`` of the same spec as :func:`bench_scale.config` (the same
network, the same initial weights for a seed): what differs from ``mmcore train`` is exactly the
framework around it -- manifest validation, the trainer, torchmetrics, the run directory.

Prints one JSON line: wall time from process start (``--t0``, else the interpreter's own start),
steps, accuracy, peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--t0", type=float, default=None, help="wall-clock start to measure from (default: now)")
    args = parser.parse_args(argv)
    t0 = args.t0 if args.t0 is not None else time.time()

    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_scale import config

    import mmcore

    spec = config(args.table.parent, 0, "none", "unused")["model"]
    root = args.table.parent
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    with args.table.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            splits[row["split"]].append({"inputs": {"image": str(root / row["image"]), "text": row["text"],
                                                    "numbers": [float(row["x1"]), float(row["x2"])]},
                                         "target": int(row["label"])})
    t_data = time.time()
    torch.manual_seed(0)
    model = mmcore.build_model(spec)
    model.fit_processors(splits["train"])
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=0.002, fused=True)
    loader = DataLoader(splits["train"], batch_size=64, shuffle=True, collate_fn=model.collate,
                        generator=torch.Generator().manual_seed(0))
    total = len(loader) * args.epochs
    warmup = max(1, int(0.05 * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    t_ready = time.time()
    steps = 0
    for _ in range(args.epochs):
        model.train()
        for batch in loader:
            out = model(batch["inputs"])
            loss = F.cross_entropy(out.logits, batch["targets"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            steps += 1
    accuracy = {}
    model.eval()
    with torch.no_grad():
        for split in ("val", "test"):
            right = 0
            for batch in DataLoader(splits[split], batch_size=64, collate_fn=model.collate):
                right += int((model(batch["inputs"]).logits.argmax(-1) == batch["targets"]).sum())
            accuracy[split] = right / max(1, len(splits[split]))
    done = time.time()
    print(json.dumps({"wall_s": done - t0, "startup_s": t_ready - t0, "read_s": t_data - t0, "steps": steps,
                      "accuracy": accuracy, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "threads": torch.get_num_threads(), "pid": os.getpid()}))


if __name__ == "__main__":
    main()
