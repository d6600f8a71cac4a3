"""Weight averaging (``trainer.ema_decay``) against the optimiser's own weights, paired in one run.

    python benchmarks/bench_weight_averaging.py RUN/config.yaml --run-dir /tmp/ema --horizons 0.5,1,2,4 \
        [--seed 0] [--patience 10] [--out rows.jsonl] [key=value ...]

The moving average does not change the training trajectory (it only reads the weights), so one run gives
a paired comparison: after every epoch the raw weights and one average per horizon (in epochs of
optimiser steps: decay = 1 - 1 / (horizon x steps per epoch), warmed up as the trainer does) are
evaluated on the val and test splits. The config's own early stopping is switched off so every epoch is
seen; the summary then applies it afterwards (``--patience``, strict improvement of val accuracy) to each
series, and prints the test accuracy at the epoch each would have kept, and the mean test accuracy from
epoch 5 on. Any config with val and test splits (e.g. a ``mmcore fit`` run's config.yaml).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mmcore
from mmcore.engine.averaging import WeightEMA
from mmcore.engine.config import load_config
from mmcore.engine.trainer import Trainer


def summarise(rows: list[dict], patience: int) -> list[str]:
    keys = ["raw"] + sorted({k[:-4] for k in rows[0] if k.startswith("ema") and k.endswith("_val")}, key=lambda k: float(k[3:]))
    lines = []
    for key in keys:
        best, best_epoch, bad = -1.0, 0, 0
        for row in rows:
            if row[f"{key}_val"] > best:
                best, best_epoch, bad = row[f"{key}_val"], row["epoch"], 0
            else:
                bad += 1
                if bad >= patience:
                    break
        kept = rows[best_epoch - 1]
        later = rows[4:] or rows
        mean = sum(r[f"{key}_test"] for r in later) / len(later)
        name = "raw weights" if key == "raw" else f"average over {key[3:]} epochs"
        lines.append(f"{name:28s} keeps epoch {best_epoch:3d}: val {best:.4f} test {kept[key + '_test']:.4f}; "
                     f"mean test from epoch 5 {mean:.4f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizons", default="0.5,1,2,4", help="epochs of steps each average spans, comma-separated")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--out", help="JSONL of the per-epoch accuracies")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    horizons = [float(h) for h in args.horizons.split(",") if h.strip()]
    config = load_config(args.config, [f"trainer.run_dir={args.run_dir}", f"trainer.seed={args.seed}", "trainer.progress=false",
                                       "trainer.early_stopping=null", "trainer.ema_decay=null", "trainer.plots=false",
                                       "trainer.tensorboard=false", *args.overrides])
    averages: dict[float, WeightEMA] = {}
    rows: list[dict] = []

    class Probe:
        @mmcore.hookimpl
        def mmcore_train_step_end(self, trainer, step):
            if not averages:
                averages.update({h: WeightEMA(trainer.model, 1 - 1 / (h * trainer.steps_per_epoch)) for h in horizons})
            for average in averages.values():
                average.update()

        @mmcore.hookimpl
        def mmcore_epoch_end(self, trainer, epoch, metrics):
            row = {"epoch": epoch, "raw_val": metrics["val/accuracy"],
                   "raw_test": trainer.evaluate(trainer.datasets["test"], split="test")["accuracy"]}
            for h, average in averages.items():
                with average.applied():
                    row[f"ema{h:g}_val"] = trainer.evaluate(trainer.datasets["val"], split="val")["accuracy"]
                    row[f"ema{h:g}_test"] = trainer.evaluate(trainer.datasets["test"], split="test")["accuracy"]
            rows.append(row)
            print(json.dumps(row), flush=True)

    start = time.perf_counter()
    with mmcore.register_plugin(Probe(), name="weight-averaging-probe"):
        Trainer(config, overwrite=True).fit()
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} epochs in {time.perf_counter() - start:.0f} s; early stopping applied afterwards (patience {args.patience}):")
    print("\n".join(summarise(rows, args.patience)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
