"""Startup and memory at scale (issue 26): how long ``mmcore train`` takes before its first step, and
how much memory it holds then, on the generated table of :mod:`scale_data` (N rows: a 32x32 PNG, a
short text, two numbers, a label).

    python benchmarks/scale_data.py /work/scale_data --rows 100000 --tables 1000,10000,100000
    python benchmarks/bench_scale.py startup /work/scale_data --rows 10000,100000 --validate header,none
    python benchmarks/bench_scale.py phases /work/scale_data_1m --rows 1000000 --validate none

Each measurement is a fresh process (``python -c``-style child of this script) that imports mmcore,
builds a :class:`~mmcore.engine.trainer.Trainer` for the fixed config below and runs its
``setup()`` -- everything ``mmcore train`` does before the first step: read and validate the
manifest, build the three splits, fit the processors, build the model and optimiser. Reported:

- ``startup_s``: from just before the child is started to the end of ``setup()`` (interpreter
  start and imports included), wall time;
- ``data_s``: the part spent reading, splitting and validating the manifest (``load_datasets``);
- ``rss_mb``: the child's peak resident memory (``ru_maxrss``) at that point;
- ``cpu_s``: the child's CPU time (user + system) to that point: on a shared machine steadier than the wall time;
- the per-row cost: the slope between the smallest and the largest table.

Runs alternate between tables and validation levels (``--repeats`` rounds), medians reported.
The config: ``image_cnn`` (32x32 RGB) + ``text_transformer`` (bytes) + ``tabular_mlp`` (x1, x2),
``concat``, ``classification`` of 10 classes, batch 64, one intra-op thread (``trainer.threads: 1``
where the trainer has the option, and ``torch.set_num_threads(1)`` in the child in any case).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def config(data: Path, rows: int, validate: str, run_dir: str, epochs: int = 1) -> dict:
    return {
        "data": {"name": "manifest", "path": str(data / f"manifest_{rows}.csv"),
                 "columns": {"image": "image", "text": "text", "numbers": ["x1", "x2"]},
                 "path_columns": ["image"], "target": "label", "split_column": "split", "validate": validate},
        "model": {
            "encoders": {"image": {"name": "image_cnn", "image_size": 32, "channels": 3, "width": 32, "dim": 64},
                         "text": {"name": "text_transformer", "dim": 64, "heads": 4, "layers": 1, "max_length": 32},
                         "numbers": {"name": "tabular_mlp", "num_features": 2, "dim": 64}},
            "fusion": {"name": "concat", "dim": 128},
            "head": {"name": "classification", "num_classes": 10},
        },
        "trainer": {"epochs": epochs, "batch_size": 64, "lr": 0.002, "run_dir": run_dir, "device": "cpu"},
    }


CHILD = r"""
import json, resource, sys, time
t_spawn = float(sys.argv[1]); cfg = json.loads(sys.argv[2])
import torch
torch.set_num_threads(1)
t_import = time.time()
import mmcore.engine.trainer as T
spent = {"data_s": 0.0}
load = T.load_datasets
def timed(*a, **k):
    t = time.perf_counter(); out = load(*a, **k); spent["data_s"] += time.perf_counter() - t; return out
T.load_datasets = timed
trainer = T.Trainer(cfg, overwrite=True)
trainer.setup()
done = time.time()
trainer.close()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"startup_s": done - t_spawn, "torch_import_s": t_import - t_spawn, "data_s": spent["data_s"],
                  "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
                  "torchmetrics_imported": "torchmetrics" in sys.modules,
                  "train_rows": len(trainer.datasets["train"])}))
"""


STEPS_CHILD = r"""
import json, os, sys, time
cfg = json.loads(sys.argv[1]); steps = int(sys.argv[2])
import mmcore.engine.trainer as T
trainer = T.Trainer(cfg, overwrite=True)
trainer.setup()
trainer.begin_epoch(1)
batch = trainer.model.collate([trainer.datasets["train"][i] for i in range(64)])
for _ in range(3):
    trainer.train_step(batch)
times = []
for _ in range(steps):
    t = time.perf_counter(); trainer.train_step(batch); times.append(time.perf_counter() - t)
trainer.close()
times.sort()
print(json.dumps({"step_ms": 1000 * times[len(times) // 2], "threads": trainer.threads,
                  "wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
"""


def threads(args: argparse.Namespace) -> None:
    """Median training-step time (batch 64, the scale config) in fresh processes per thread setting,
    alternated: 1 thread; 2 threads with OpenMP's default waits (spinning); 2 with
    OMP_WAIT_POLICY=PASSIVE; trainer.threads: auto as the mmcore command runs it (PASSIVE set)."""
    variants = {"1 thread": (1, None), "2 threads, default waits": (2, None), "2 threads, PASSIVE": (2, "PASSIVE"),
                "auto, PASSIVE (the mmcore command)": ("auto", "PASSIVE"), "auto, default waits (a Python program)": ("auto", None)}
    results: dict[str, list[float]] = {k: [] for k in variants}
    chosen: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        for r in range(args.repeats):
            for name, (count, policy) in variants.items():
                cfg = config(args.data, 1000, "none", str(Path(tmp) / "run"))
                cfg["trainer"]["threads"] = count
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
                if policy:
                    env["OMP_WAIT_POLICY"] = policy
                out = subprocess.run([sys.executable, "-c", STEPS_CHILD, json.dumps(cfg), str(args.steps)],
                                     capture_output=True, text=True, env=env, check=False)
                if out.returncode:
                    raise SystemExit(out.stderr[-3000:])
                m = json.loads(out.stdout.strip().splitlines()[-1])
                results[name].append(m["step_ms"])
                chosen[name] = m["threads"]
                print(f"round {r + 1}: {name}: {m}", flush=True)
    print(f"load average at the end: {os.getloadavg()}")
    one = statistics.median(results["1 thread"])
    print("| setting | threads | step (ms, median of rounds) | vs 1 thread |\n| --- | --- | --- | --- |")
    for name, ts in results.items():
        print(f"| {name} | {chosen[name]} | {statistics.median(ts):.1f} (rounds: {', '.join(f'{t:.0f}' for t in ts)}) | "
              f"{statistics.median(ts) / one:.2f}x |")


def run_child(cmd: list[str], env: dict, cwd: str | None = None) -> dict:
    """Run ``cmd`` to its end; its wall time from just before the start and its own peak RSS (wait4)."""
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    # CPU time (user + system) of the child: on a shared machine it grows far less with the load than
    # the wall time does (both sides run one intra-op thread: no spinning threads inflate it)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024, "stdout": out}


#: ``mmcore train`` overrides that leave it the plain loop's work: the plain loop checks no file before
#: training (mmcore's default reads every file's header) and computes no imbalance diagnostics (one
#: more pass over the validation split when the last epoch is not the best; gradient norms per step).
EQUAL_WORK = ["data.validate=none", "trainer.diagnostics=false"]


def epoch(args: argparse.Namespace) -> None:
    """Whole-process wall time and peak RSS of one epoch: ``mmcore train`` (trainer.threads: 1; the
    optional outputs -- progress bar, TensorBoard, plots -- off) against benchmarks/plain_loop.py
    (one thread), alternated, fresh processes. ``--equal-work``: also ``mmcore train`` with
    :data:`EQUAL_WORK` (what the framework costs when it does what the plain loop does)."""
    import yaml

    here = Path(__file__).resolve().parent
    results: dict[tuple[int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        for r in range(args.repeats):
            for rows in [int(n) for n in args.rows.split(",")]:
                cfg = config(args.data, rows, args.validate, str(Path(tmp) / "run"))
                cfg["trainer"].update(threads=1, progress=False, tensorboard=False, plots=False)
                path = Path(tmp) / "config.yaml"
                path.write_text(yaml.safe_dump(cfg))
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
                runs = {"mmcore": [sys.executable, "-m", "mmcore", "train", str(path), "--overwrite"],
                        "plain": [sys.executable, str(here / "plain_loop.py"), str(args.data / f"manifest_{rows}.csv"),
                                  "--threads", "1"]}
                if args.equal_work:  # the plain loop's work only: no file checks, no diagnostics (see epoch())
                    runs["mmcore equal work"] = [sys.executable, "-m", "mmcore", "train", str(path), *EQUAL_WORK, "--overwrite"]
                order = list(runs)
                for name in (order if r % 2 == 0 else order[::-1]):
                    m = run_child(runs[name], env)
                    results.setdefault((rows, name), []).append(m)
                    print(f"round {r + 1}: {rows} rows, {name}: wall {m['wall_s']:.1f} s, CPU {m['cpu_s']:.1f} s, "
                          f"peak RSS {m['rss_mb']:.0f} MB, load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"load average at the end: {os.getloadavg()}")
    print("| rows | mmcore train (s) | plain loop (s) | ratio | mmcore peak RSS (MB) | plain peak RSS (MB) | CPU s: mmcore, plain, ratio (rounds) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for side in (["mmcore", "mmcore equal work"] if args.equal_work else ["mmcore"]):
        for rows in sorted({k[0] for k in results}):
            a, b = results[rows, side], results[rows, "plain"]
            ratios = [x["wall_s"] / y["wall_s"] for x, y in zip(a, b, strict=True)]
            cpu = [x["cpu_s"] / y["cpu_s"] for x, y in zip(a, b, strict=True)]
            print(f"| {rows:,}{' (equal work)' if side != 'mmcore' else ''} | {statistics.median(x['wall_s'] for x in a):.1f} | "
                  f"{statistics.median(y['wall_s'] for y in b):.1f} | "
                  f"{statistics.median(ratios):.2f} (rounds {', '.join(f'{q:.2f}' for q in ratios)}) | "
                  f"{statistics.median(x['rss_mb'] for x in a):.0f} | {statistics.median(y['rss_mb'] for y in b):.0f} | "
                  f"{statistics.median(x['cpu_s'] for x in a):.1f}, {statistics.median(y['cpu_s'] for y in b):.1f}, "
                  f"{statistics.median(cpu):.2f} ({', '.join(f'{q:.2f}' for q in cpu)}) |")


DATA_CHILD = r"""
import gc, json, os, resource, sys, time
path, level, slots = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
level, _, workers = level.partition("+workers=")  # e.g. header+workers=1: the check pool's size forced
chosen = []  # the check pool's size, as decided (none: no pool considered)
try:
    import mmcore_plugins.datasets.manifest.check_pool as check_pool
    decide = check_pool.worker_count
    check_pool.worker_count = lambda idle=None: chosen.append(int(workers) if workers else decide(idle)) or chosen[-1]
except ImportError:  # an old tree without it
    pass
import torch
from mmcore_plugins.datasets.manifest import load_manifest
import mmcore_plugins
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * page / 2**20
gc.collect(); before = rss()
def cpu_all():  # this process and its children (the file checks' worker processes)
    t = os.times(); return t.user + t.system + t.children_user + t.children_system
def cpu_children():
    t = os.times(); return t.children_user + t.children_system
t = time.perf_counter(); cpu = cpu_all(); children = cpu_children()
data = {s: load_manifest(s, path, columns={"image": "image", "text": "text", "numbers": ["x1", "x2"]}, target="label",
                         path_columns=["image"], split_column="split", validate=level, slot_modalities=slots)
        for s in ("train", "val", "test")}
seconds = time.perf_counter() - t; cpu = cpu_all() - cpu; children = cpu_children() - children
gc.collect()
print(json.dumps({"data_s": seconds, "cpu_s": cpu, "children_cpu_s": children, "pool": chosen[:1], "load": os.getloadavg()[0], "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "held_mb": rss() - before, "rows": sum(len(d) for d in data.values()),
                  "code": os.path.dirname(mmcore_plugins.__file__)}))
"""


def data(args: argparse.Namespace) -> None:
    """The manifest alone (all three splits built, as the trainer does), in fresh processes, code
    trees alternated: ``--trees after=.,before=/path/to/old/checkout`` (an old checkout needs links
    ``mmcore_plugins -> plugins`` and ``mmcore_kernels -> kernels`` in it; it is put first on
    PYTHONPATH). Reports the time and the memory still held once the data sets are built (RSS growth),
    per row."""
    trees = dict(t.split("=", 1) for t in args.trees.split(","))
    runs = [tuple(v.split(":")) for v in args.variants.split(",")]  # tree:level
    slots = {"image": "image", "text": "text", "numbers": "tabular"}
    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeats):
        for tree, level in runs:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            if trees[tree] != ".":
                env["PYTHONPATH"] = trees[tree]
            out = subprocess.run([sys.executable, "-c", DATA_CHILD, str(args.data / f"manifest_{args.rows}.csv"), level,
                                  json.dumps(slots)], capture_output=True, text=True, env=env, check=False, cwd="/")
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
            m = json.loads(out.stdout.strip().splitlines()[-1])
            results.setdefault((tree, level), []).append(m)
            print(f"round {r + 1}: {tree} {level}: {json.dumps(m)}", flush=True)
    print(f"load average at the end: {os.getloadavg()}")
    print(f"| code | validate | {args.rows:,} rows: seconds (median; rounds) | CPU s (median; rounds) | ms per row | held MB | "
          "KB per row | peak MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (tree, level), ms in results.items():
        sec = statistics.median(m["data_s"] for m in ms)
        cpu = statistics.median(m.get("cpu_s", float("nan")) for m in ms)
        held = statistics.median(m["held_mb"] for m in ms)
        rounds = ", ".join(f"{m['data_s']:.1f}" for m in ms)
        cpu_rounds = ", ".join(f"{m.get('cpu_s', float('nan')):.1f}" for m in ms)
        peak = statistics.median(m.get("peak_mb", float("nan")) for m in ms)
        print(f"| {tree} | {level} | {sec:.1f} ({rounds}) | {cpu:.1f} ({cpu_rounds}) | {sec / args.rows * 1000:.3f} | "
              f"{held:.0f} | {held * 1024 / args.rows:.2f} | {peak:.0f} |")


def trainer_has_threads() -> bool:
    from mmcore.engine.config import TrainerOptions

    return "threads" in getattr(TrainerOptions, "__dataclass_fields__", {})


def measure(data: Path, rows: int, validate: str, run_dir: str) -> dict:
    cfg = config(data, rows, validate, run_dir)
    if trainer_has_threads():
        cfg["trainer"]["threads"] = 1
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD, repr(start), json.dumps(cfg)], capture_output=True, text=True,
                         env=env, check=False)
    if out.returncode:
        raise SystemExit(f"child failed ({rows} rows, validate {validate}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


PHASES_CHILD = r"""
import json, resource, sys, time
t0w, t0c = time.time(), time.process_time()
cfg = json.loads(sys.argv[1])
import torch
torch.set_num_threads(1)
import mmcore.engine.trainer as T
import mmcore.model as M
marks = []
def mark(name):
    marks.append({"phase": name, "wall_s": time.time() - t0w, "cpu_s": time.process_time() - t0c,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
mark("interpreter, import torch, mmcore.engine.trainer")
def wrap(owner, attr, name):
    f = getattr(owner, attr)
    def w(*a, **k):
        out = f(*a, **k); mark(name); return out
    setattr(owner, attr, w)
wrap(T, "load_datasets", "read the manifest (three splits)")
wrap(T.Trainer, "_record_data", "data record")
wrap(T, "build_model", "build the model")
wrap(T.Trainer, "_check_monitor", "monitor check (imports torchmetrics)")
wrap(M.MultimodalModel, "fit_processors", "fit the processors")
trainer = T.Trainer(cfg, overwrite=True)
trainer.setup()
mark("rest of setup (optimiser, ...)")
trainer.close()
print(json.dumps(marks))
"""


def phases(args: argparse.Namespace) -> None:
    """Where start-up goes, phase by phase (one fresh process): wall and CPU time (user + system) spent
    in each phase of ``Trainer.setup`` and the peak RSS at its end."""
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        cfg = config(args.data, args.rows, args.validate, str(Path(tmp) / "run"))
        if trainer_has_threads():
            cfg["trainer"]["threads"] = 1
        print(f"load average at the start: {os.getloadavg()}", flush=True)
        out = subprocess.run([sys.executable, "-c", PHASES_CHILD, json.dumps(cfg)], capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"), check=False)
        if out.returncode:
            raise SystemExit(out.stderr[-4000:])
        marks = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"load average at the end: {os.getloadavg()}")
    total = marks[-1]["cpu_s"]
    print(f"| phase ({args.rows:,} rows, validate {args.validate}) | wall s | CPU s | share of CPU | peak RSS after (MB) |")
    print("| --- | --- | --- | --- | --- |")
    wall = cpu = 0.0
    for m in marks:
        print(f"| {m['phase']} | {m['wall_s'] - wall:.1f} | {m['cpu_s'] - cpu:.1f} | {(m['cpu_s'] - cpu) / total:.0%} | "
              f"{m['rss_mb']:.0f} |")
        wall, cpu = m["wall_s"], m["cpu_s"]
    print(f"| all | {wall:.1f} | {cpu:.1f} | | {marks[-1]['rss_mb']:.0f} |")


def startup(args: argparse.Namespace) -> None:
    sizes = [int(n) for n in args.rows.split(",")]
    levels = args.validate.split(",")
    results: dict[tuple[int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        for r in range(args.repeats):
            for rows in sizes:
                for level in levels:
                    m = measure(args.data, rows, level, str(Path(tmp) / "run"))
                    results.setdefault((rows, level), []).append(m)
                    print(f"round {r + 1}: {rows} rows, validate {level}: {json.dumps(m)} "
                          f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    print(f"\nload average at the end: {os.getloadavg()}")
    print("| rows | validate | startup (s) | of which data (s) | peak RSS (MB) | torchmetrics imported |")
    print("| --- | --- | --- | --- | --- | --- |")
    med = {}
    for (rows, level), ms in sorted(results.items()):
        med[rows, level] = {k: statistics.median(m[k] for m in ms) for k in ("startup_s", "data_s", "rss_mb")}
        print(f"| {rows:,} | {level} | {med[rows, level]['startup_s']:.1f} | {med[rows, level]['data_s']:.1f} | "
              f"{med[rows, level]['rss_mb']:.0f} | {ms[0]['torchmetrics_imported']} |")
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        for level in levels:
            a, b = med[lo, level], med[hi, level]
            per_row_ms = (b["startup_s"] - a["startup_s"]) / (hi - lo) * 1000
            per_row_kb = (b["rss_mb"] - a["rss_mb"]) / (hi - lo) * 1024
            fixed = a["startup_s"] - per_row_ms * lo / 1000
            print(f"validate {level}: {per_row_ms:.3f} ms and {per_row_kb:.2f} KB per row, {fixed:.1f} s fixed "
                  f"(projection to 1,000,000 rows: {fixed + per_row_ms * 1000:.0f} s, "
                  f"{a['rss_mb'] + per_row_kb * (1_000_000 - lo) / 1024:.0f} MB)")


def files(args: argparse.Namespace) -> None:
    """Per-file cost of the manifest's file check in this process: header vs decode, one thread vs a
    pool, alternated (each file is in the page cache after the first round: this measures the check,
    not the disk)."""
    from mmcore_plugins.datasets.manifest.rows import check_files
    from mmcore_plugins.io.image import probe_image, verify_image

    paths = [args.data / f"images/{i // 1000:04d}/{i:07d}.png" for i in range(args.count)]
    check_files(paths, decode=True, workers=1)  # warm the page cache
    variants = {f"{'decode' if d else 'header'}, {w} thread(s)": (d, w) for d in (False, True) for w in (1, 2, 4)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, (decode, workers) in variants.items():
            t = time.perf_counter()
            check_files(paths, decode=decode, workers=workers)
            times[name].append((time.perf_counter() - t) / len(paths) * 1e6)
    t = time.perf_counter()
    for p in paths:  # what validation did before: open for the header, open again and decode
        probe_image(p)
        verify_image(p)
    before = (time.perf_counter() - t) / len(paths) * 1e6
    print(f"load average: {os.getloadavg()}")
    print("| check | us per file (median) |\n| --- | --- |")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.0f} |")
    print(f"| before (probe, then a second open to decode), 1 thread | {before:.0f} |")


def predict(args: argparse.Namespace) -> None:
    """Cold start of ``mmcore predict RUN --data TABLE`` against benchmarks/plain_predict.py (the same
    model loaded by hand), whole fresh processes alternated (the order turns each round), wall time
    and peak RSS each; ``--trees`` adds code trees for mmcore (``after=.,before=/old/checkout``, as
    ``data``). The run is the scale config trained one epoch on the first ``--train-rows`` rows of
    ``manifest_1000.csv``; the table is ``--rows`` rows of the same file (absolute image paths)."""
    import csv

    import yaml

    here = Path(__file__).resolve().parent
    trees = dict(t.split("=", 1) for t in args.trees.split(","))
    with tempfile.TemporaryDirectory(prefix="bench_scale_predict_") as tmp:
        tmp = Path(tmp)
        with (args.data / "manifest_1000.csv").open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            row["image"] = str(args.data / row["image"])
        for name, chosen, fields in (("train.csv", rows[:args.train_rows], list(rows[0])),
                                     ("table.csv", rows[:args.rows], ["image", "text", "x1", "x2"])):
            with (tmp / name).open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(chosen)
        cfg = config(args.data, 0, "none", str(tmp / "run"))
        cfg["data"].update(path=str(tmp / "train.csv"), allow_outside_paths=True)
        cfg["trainer"].update(threads=1, progress=False, tensorboard=False, plots=False)
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
        out = subprocess.run([sys.executable, "-m", "mmcore", "train", str(tmp / "config.yaml")], capture_output=True,
                             text=True, check=False, cwd=str(tmp))
        if out.returncode:
            raise SystemExit(f"training the run failed:\n{out.stderr[-3000:]}")
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_NUM_THREADS")}
        runs = {"plain": ([sys.executable, str(here / "plain_predict.py"), str(tmp / "run"), str(tmp / "table.csv")], base)}
        for tree, folder in trees.items():
            env = dict(base, PYTHONPATH=folder) if folder != "." else base
            runs[f"mmcore ({tree})"] = ([sys.executable, "-m", "mmcore", "predict", str(tmp / "run"), "--data",
                                         str(tmp / "table.csv"), "--out", str(tmp / "out.jsonl"), "--overwrite"], env)
        for cmd, env in runs.values():  # warm the page cache (first-run file reads are not the comparison)
            run_child(cmd, env, cwd=str(tmp))  # not this checkout: `python -m mmcore` would import ./mmcore
        names = list(runs)
        results: dict[str, list[dict]] = {k: [] for k in names}
        for r in range(args.repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                m = run_child(*runs[name], cwd=str(tmp))
                results[name].append(m)
            print(f"round {r + 1}: " + ", ".join(f"{n} {results[n][-1]['wall_s']:.2f} s" for n in names)
                  + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"load average at the end: {os.getloadavg()}")
    print("| command | wall (s, median) | vs plain (median of rounds) | rounds (s) | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        ms = results[name]
        ratios = [m["wall_s"] / p["wall_s"] for m, p in zip(ms, results["plain"], strict=True)]
        walls = ", ".join(f"{m['wall_s']:.2f}" for m in ms)
        print(f"| {name} | {statistics.median(m['wall_s'] for m in ms):.2f} | {statistics.median(ratios):.2f}x | "
              f"{walls} | {statistics.median(m['rss_mb'] for m in ms):.0f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("startup", help="time and memory before the first step")
    p.add_argument("data", type=Path, help="the folder scale_data.py wrote")
    p.add_argument("--rows", default="10000,100000")
    p.add_argument("--validate", default="header,none")
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(run=startup)
    h = sub.add_parser("phases", help="start-up phase by phase: wall, CPU and peak RSS (one fresh process)")
    h.add_argument("data", type=Path)
    h.add_argument("--rows", type=int, default=100000)
    h.add_argument("--validate", default="none")
    h.set_defaults(run=phases)
    d = sub.add_parser("data", help="the manifest alone: time and memory held, code trees alternated")
    d.add_argument("data", type=Path)
    d.add_argument("--rows", type=int, default=100000)
    d.add_argument("--trees", default="after=.")
    d.add_argument("--variants", default="after:header,after:none",
                   help="TREE:LEVEL[+workers=N] (N: the file checks' worker processes, forced; default: the idle CPUs')")
    d.add_argument("--repeats", type=int, default=2)
    d.set_defaults(run=data)
    e = sub.add_parser("epoch", help="whole-process one epoch: mmcore train vs plain_loop.py")
    e.add_argument("data", type=Path)
    e.add_argument("--rows", default="10000")
    e.add_argument("--validate", default="header")
    e.add_argument("--repeats", type=int, default=2)
    e.add_argument("--equal-work", action="store_true", help=f"also mmcore train with {' '.join(EQUAL_WORK)}")
    e.set_defaults(run=epoch)
    t = sub.add_parser("threads", help="step time per thread setting (fresh processes, alternated)")
    t.add_argument("data", type=Path)
    t.add_argument("--steps", type=int, default=30)
    t.add_argument("--repeats", type=int, default=3)
    t.set_defaults(run=threads)
    f = sub.add_parser("files", help="per-file cost of the file check (header / decode, threads)")
    f.add_argument("data", type=Path)
    f.add_argument("--count", type=int, default=5000)
    f.add_argument("--repeats", type=int, default=3)
    f.set_defaults(run=files)
    q = sub.add_parser("predict", help="cold start of mmcore predict vs plain_predict.py (fresh processes, alternated)")
    q.add_argument("data", type=Path)
    q.add_argument("--rows", type=int, default=64, help="rows in the predicted table")
    q.add_argument("--train-rows", type=int, default=200)
    q.add_argument("--trees", default="after=.")
    q.add_argument("--repeats", type=int, default=5)
    q.set_defaults(run=predict)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
