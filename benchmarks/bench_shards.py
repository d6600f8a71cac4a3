"""Shards vs the in-memory manifest (issue 26): throughput of one training epoch, and a 1,000,000-row
table sharded and streamed for one epoch.

    python benchmarks/scale_data.py /work/scale_data --rows 10000 --tables 10000
    python benchmarks/bench_shards.py throughput /work/scale_data --rows 10000 --rounds 2 --out /tmp/bench_shards
    python benchmarks/bench_shards.py million --rows 1000000 --out /tmp/bench_shards_1m
    python benchmarks/bench_shards.py setup /work/scale_data --rows 100000 --trees after=.,before=/old/checkout --out /tmp/bs

``throughput``: ``manifest_<rows>.csv`` (a 32x32 PNG, a short text, two numbers, a label) is sharded
(``mmcore shard``'s :func:`write_shards`, 1,000 samples a shard; wall time reported), then in one
process, alternating manifest and shards ``--rounds`` times (ratios from side-by-side runs survive
a busy machine):

- ``data``: one epoch of the trainer's own training batches (its DataLoader: (seed, epoch) global
  batches, the processors, ``collate``; no model step), samples/s;
- ``train``: one epoch of ``Trainer.fit`` (the config of bench_scale.py: ``image_cnn`` +
  ``text_transformer`` + ``tabular_mlp``, ``concat``, batch 64, one intra-op thread), the trainer's
  own ``samples_per_s`` of that epoch.

Reported: medians and ``shards / manifest`` (target >= 0.95).

``million``: a table of ``--rows`` tiny rows (four numbers, a label, 98% train) is written, sharded
(10,000 a shard) and one training epoch of its batches streamed from the shards (the trainer's
sampler and collate for a ``tabular_mlp`` model, batch 1024, no model step), each step in a fresh
child process: wall time and peak RSS (``ru_maxrss``) of each.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scale_config(data: dict, run_dir: str) -> dict:
    sys.path.insert(0, str(HERE))
    from bench_scale import config

    base = config(Path("."), 0, "header", run_dir, epochs=1)
    base["data"] = data
    base["trainer"].update({"threads": 1, "progress": False, "plots": False, "tensorboard": False})
    return base


def manifest_data(table: Path) -> dict:
    return {"name": "manifest", "path": str(table), "columns": {"image": "image", "text": "text", "numbers": ["x1", "x2"]},
            "path_columns": ["image"], "target": "label", "split_column": "split"}


def epoch_batches(trainer) -> tuple[int, float]:
    """One epoch of the trainer's training batches (no model step): (samples, seconds)."""
    loader = trainer.train_loader(1)
    start = time.perf_counter()
    n = 0
    for batch, (local, _) in zip(loader, loader.batch_sampler.shares, strict=True):
        n += local
        del batch
    return n, time.perf_counter() - start


def throughput(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    from mmcore.engine.datasets import model_data_options
    from mmcore.engine.trainer import Trainer
    from mmcore.plugin_manager import get_plugin_manager
    from mmcore_plugins.shards.write import write_shards

    table = Path(args.data) / f"manifest_{args.rows}.csv"
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="bench_shards_runs_"))
    cfg = scale_config(manifest_data(table), str(work / "probe"))
    implied = model_data_options(cfg["model"], get_plugin_manager().registry)
    started = time.perf_counter()
    index = write_shards(str(table), cfg["data"], implied, out / "shards", shard_size=args.shard_size)
    shard_s = time.perf_counter() - started
    shard_bytes = sum(s["bytes"] for e in index["splits"].values() for s in e["shards"])
    print(json.dumps({"step": "shard", "rows": args.rows, "seconds": round(shard_s, 2), "bytes": shard_bytes,
                      "shards": sum(len(e["shards"]) for e in index["splits"].values())}), flush=True)
    sources = {"manifest": cfg["data"], "shards": {"name": "shards", "path": str(out / "shards")}}
    results: dict[str, dict[str, list[float]]] = {k: {"data": [], "train": []} for k in sources}
    for r in range(args.rounds):
        for name, data in sources.items():
            trainer = Trainer(scale_config(data, str(work / f"{name}-{r}-data")))
            trainer.setup()
            n, seconds = epoch_batches(trainer)
            trainer.rundir.release()
            results[name]["data"].append(n / seconds)
            print(json.dumps({"round": r, "source": name, "measure": "data", "samples": n, "samples_per_s": round(n / seconds, 1),
                              "load": os.getloadavg()[0]}), flush=True)
        if args.train:
            for name, data in sources.items():
                report = Trainer(scale_config(data, str(work / f"{name}-{r}-train"))).fit()
                sps = report["history"][0]["samples_per_s"]
                results[name]["train"].append(sps)
                print(json.dumps({"round": r, "source": name, "measure": "train", "samples_per_s": round(sps, 1),
                                  "load": os.getloadavg()[0]}), flush=True)
    summary = {"rows": args.rows, "shard_s": round(shard_s, 2)}
    for measure in ("data", "train"):
        if results["manifest"][measure]:
            m, s = (statistics.median(results[k][measure]) for k in ("manifest", "shards"))
            ratios = [b / a for a, b in zip(results["manifest"][measure], results["shards"][measure], strict=True)]
            summary[measure] = {"manifest": round(m, 1), "shards": round(s, 1), "ratio_of_medians": round(s / m, 3),
                                "ratio_per_round": [round(x, 3) for x in ratios]}
    print(json.dumps({"summary": summary}), flush=True)


CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
step, table, out, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import torch
torch.set_num_threads(1)
DATA = {"name": "manifest", "columns": {"numbers": ["a", "b", "c", "d"]}, "target": "label", "split_column": "split",
        "validate": "none"}
MODEL = {"encoders": {"numbers": {"name": "tabular_mlp", "num_features": 4, "dim": 16}}, "fusion": {"name": "concat", "dim": 16},
         "head": {"name": "classification", "num_classes": 2}}
result = {"step": step}
if step == "shard":
    from pathlib import Path
    from mmcore.engine.datasets import model_data_options
    from mmcore.plugin_manager import get_plugin_manager
    from mmcore_plugins.shards.write import write_shards
    index = write_shards(table, DATA, model_data_options(MODEL, get_plugin_manager().registry), Path(out), shard_size=10000)
    result["shards"] = sum(len(e["shards"]) for e in index["splits"].values())
    result["bytes"] = sum(s["bytes"] for e in index["splits"].values() for s in e["shards"])
else:
    from mmcore.engine.trainer import Trainer
    data = {"name": "shards", "path": out} if step == "stream" else {**DATA, "path": table}
    cfg = {"data": data, "model": MODEL, "trainer": {"epochs": 1, "batch_size": 1024, "threads": 1, "run_dir": out + "-run-" + step,
           "progress": False, "plots": False, "tensorboard": False}}
    trainer = Trainer(cfg, overwrite=True)  # a re-run replaces the step's run folder
    trainer.setup()
    t_setup = time.perf_counter()
    loader = trainer.train_loader(1)
    n = 0
    for batch, (local, _) in zip(loader, loader.batch_sampler.shares, strict=True):
        n += local
    result.update({"samples": n, "setup_s": round(t_setup - t0, 1), "epoch_s": round(time.perf_counter() - t_setup, 1)})
    trainer.rundir.release()
result["wall_s"] = round(time.perf_counter() - t0, 1)
result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(result))
"""


def million(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / f"tiny_{args.rows}.csv"
    if not table.exists():
        rng = random.Random(0)
        tmp = table.with_suffix(".tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["a", "b", "c", "d", "label", "split"])
            for i in range(args.rows):
                writer.writerow([round(rng.gauss(0, 1), 4) for _ in range(4)] + [i % 2, "val" if i % 100 == 98 else
                                                                                 "test" if i % 100 == 99 else "train"])
        tmp.rename(table)
    steps = args.steps.split(",") if args.steps else ["shard", "stream"] + (["manifest"] if args.manifest else [])
    for step in steps:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", CHILD, step, str(table), str(out / "shards"), str(args.rows)],
                                capture_output=True, text=True)
        if result.returncode:
            print(result.stderr[-3000:], file=sys.stderr)
            raise SystemExit(result.returncode)
        record = json.loads(result.stdout.strip().splitlines()[-1])
        record.update({"rows": args.rows, "process_wall_s": round(time.perf_counter() - started, 1), "load": os.getloadavg()[0]})
        print(json.dumps(record), flush=True)


SETUP_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
shards, run_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
import torch
torch.set_num_threads(1)
from bench_shards import scale_config
import mmcore_plugins
from mmcore.engine.trainer import Trainer
trainer = Trainer(scale_config({"name": "shards", "path": shards}, run_dir))
trainer.setup()
seconds = time.perf_counter() - t0
trainer.rundir.release()
print(json.dumps({"setup_s": round(seconds, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "train_rows": len(trainer.datasets["train"]), "vocab": len(trainer.model.processors["text"].state_dict()["vocab"] or [])
                  if "vocab" in trainer.model.processors["text"].state_dict() else None,
                  "numbers_mean": trainer.model.processors["numbers"].state_dict()["mean"],
                  "code": mmcore_plugins.__file__}))
"""


def setup(args: argparse.Namespace) -> None:
    """``Trainer.setup()`` from shards of ``--rows`` rows of the scale table (fitting the processors
    included: it streamed nothing before, and held every training sample, image bytes and all), in a
    fresh process per code tree (``--trees after=.,before=/old/checkout`` as bench_scale.py's),
    alternated for ``--rounds``: wall time and peak RSS (``ru_maxrss``). The shards are written once
    into ``--out`` (1,000 samples a shard) by this checkout's ``write_shards``."""
    from mmcore.engine.datasets import model_data_options
    from mmcore.plugin_manager import get_plugin_manager
    from mmcore_plugins.shards.write import write_shards

    out = Path(args.out)
    folder = out / f"shards_{args.rows}"
    if not (folder / "index.json").exists():
        table = Path(args.data) / f"manifest_{args.rows}.csv"
        cfg = scale_config(manifest_data(table), str(out / "probe"))
        cfg["data"]["validate"] = "none"
        started = time.perf_counter()
        write_shards(str(table), cfg["data"], model_data_options(cfg["model"], get_plugin_manager().registry), folder,
                     shard_size=1000)
        print(json.dumps({"step": "shard", "rows": args.rows, "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    trees = dict(t.split("=", 1) for t in args.trees.split(","))
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_NUM_THREADS")}
            if trees[name] != ".":
                env["PYTHONPATH"] = trees[name]
            out_run = subprocess.run([sys.executable, "-c", SETUP_CHILD, str(folder), str(out / f"run-{name}-{r}"), str(HERE)],
                                     capture_output=True, text=True, env=env, cwd="/")
            if out_run.returncode:
                raise SystemExit(out_run.stderr[-3000:])
            record = json.loads(out_run.stdout.strip().splitlines()[-1])
            record.update({"round": r, "tree": name, "load": round(os.getloadavg()[0], 1)})
            results[name].append(record)
            print(json.dumps(record), flush=True)
    print("| code | setup (s, median; rounds) | peak RSS (MB, median; rounds) |\n| --- | --- | --- |")
    for name, records in results.items():
        print(f"| {name} | {statistics.median(x['setup_s'] for x in records):.1f} "
              f"({', '.join(str(x['setup_s']) for x in records)}) | {statistics.median(x['peak_rss_mb'] for x in records):.0f} "
              f"({', '.join(str(round(x['peak_rss_mb'])) for x in records)}) |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("data", help="the folder of scale_data.py (manifest_<rows>.csv, images/)")
    p.add_argument("--rows", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--no-train", dest="train", action="store_false", help="the data-only measure alone")
    p.add_argument("--out", required=True, help="a folder for the shards (outside the repository)")
    p.set_defaults(run=throughput)
    p = sub.add_parser("million")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--manifest", action="store_true", help="also one epoch of the same rows from the in-memory manifest")
    p.add_argument("--steps", help="only these steps, comma-separated (shard, stream, manifest): e.g. stream again on "
                                   "shards written before")
    p.add_argument("--out", required=True)
    p.set_defaults(run=million)
    p = sub.add_parser("setup", help="Trainer.setup() from shards: time and peak RSS per code tree, alternated")
    p.add_argument("data", help="the folder of scale_data.py (manifest_<rows>.csv, images/)")
    p.add_argument("--rows", type=int, default=100000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--trees", default="after=.")
    p.add_argument("--out", required=True, help="a folder for the shards and runs (outside the repository)")
    p.set_defaults(run=setup)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
