"""Peak memory of ``mmcore predict RUN --data BIG --out FILE`` against the table's length (issue 20.10: a
table of millions of rows peaked at 4.8 GB before predictions were streamed).

Makes a small ``mmcore fit`` run per table kind (numbers with empty cells + a category; an image column),
writes prediction tables of growing length from the same generator, runs ``mmcore predict`` on each in a
fresh process and reports that process's peak RSS (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` read
by an intermediate process that starts nothing else), its wall time and the output's size. Memory must not
grow with rows: the streamed command holds one batch (``--batch-size``) and writes as it goes.

    python benchmarks/predict_memory.py                          # tabular 100k / 1M rows, image 2k / 20k rows
    python benchmarks/predict_memory.py --tabular 10000 100000 --image 500 2000 --workdir /tmp/pm

Prints one JSON object per measurement and a table; ``--json FILE`` also writes them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: Run in a fresh interpreter: it starts ``mmcore predict`` and prints the child's peak RSS (KiB on Linux).
_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)\n"
)


def _write_png(path: Path, seed: int, size: int = 16) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), mode="RGB").save(path)


def write_table(path: Path, rows: int, kind: str, *, seed: int = 0, target: bool = True) -> Path:
    """``rows`` rows, written as they are made (this script must not be what holds the table)."""
    rng = np.random.default_rng(seed)
    columns = ["a", "weight", "group"] + (["photo"] if kind == "image" else []) + (["y"] if target else [])
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        block = 10_000
        for start in range(0, rows, block):
            n = min(block, rows - start)
            a, h = rng.standard_normal((2, n)).round(3)
            for k in range(n):
                i = start + k
                group = "north" if i % 2 else "south"
                row = [a[k], "" if i % 7 == 0 else h[k], group]
                if kind == "image":
                    row.append(f"img/{i % 8}.png")
                if target:
                    row.append("high" if a[k] + 0.5 * h[k] + (0.8 if group == "north" else -0.8) > 0 else "low")
                writer.writerow(row)
    return path


def make_run(workdir: Path, kind: str) -> Path:
    run = workdir / f"run-{kind}"
    if (run / "fit_summary.json").is_file():
        return run
    if kind == "image":
        for k in range(8):
            _write_png(workdir / "img" / f"{k}.png", k)
    table = write_table(workdir / f"train-{kind}.csv", 200, kind)
    subprocess.run([sys.executable, "-m", "mmcore", "fit", str(table), "--target", "y", "--preset", "fast", "--max-epochs", "1",
                    "--time-limit", "20m", "--run-dir", str(run)], check=True, stdout=subprocess.DEVNULL)
    return run


def measure(run: Path, table: Path, out: Path, batch_size: int) -> dict:
    command = [sys.executable, "-m", "mmcore", "predict", str(run), "--data", str(table), "--out", str(out), "--overwrite",
               "--batch-size", str(batch_size)]
    load = os.getloadavg()[0]
    result = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=True)
    code, kib, seconds = result.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"mmcore predict failed (exit {code}) on {table}")
    lines = sum(1 for _ in out.open("rb"))
    return {"table": table.name, "rows": lines, "peak_rss_mib": round(int(kib) / 1024, 1), "seconds": round(float(seconds), 1),
            "output_mib": round(out.stat().st_size / 2**20, 1), "table_mib": round(table.stat().st_size / 2**20, 1),
            "batch_size": batch_size, "load_1min_before": round(load, 2), "load_1min_after": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tabular", type=int, nargs="*", default=[100_000, 1_000_000], help="row counts of the tabular tables")
    parser.add_argument("--image", type=int, nargs="*", default=[2_000, 20_000], help="row counts of the image tables")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workdir", default="/tmp/mmcore-predict-memory", help="tables, runs and outputs go here")
    parser.add_argument("--json", metavar="FILE", help="also write the measurements here (JSON lines)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for kind, counts in (("tabular", args.tabular), ("image", args.image)):
        if not counts:
            continue
        started = time.perf_counter()
        run = make_run(workdir, kind)
        print(f"# {kind}: run {run} ready in {time.perf_counter() - started:.0f} s", flush=True)
        for rows in counts:
            table = workdir / f"{kind}-{rows}.csv"
            if not table.exists():
                write_table(table, rows, kind, seed=1, target=False)
            result = {"kind": kind, **measure(run, table, workdir / f"{kind}-{rows}.jsonl", args.batch_size)}
            results.append(result)
            print(json.dumps(result), flush=True)
            (workdir / f"{kind}-{rows}.jsonl").unlink()
    if args.json:
        Path(args.json).write_text("".join(json.dumps(r) + "\n" for r in results), encoding="utf-8")
    print(f"\n{'kind':<8} {'rows':>9} {'peak RSS MiB':>12} {'seconds':>8} {'output MiB':>10} {'load':>10}")
    for r in results:
        print(f"{r['kind']:<8} {r['rows']:>9,} {r['peak_rss_mib']:>12.1f} {r['seconds']:>8.1f} {r['output_mib']:>10.1f} "
              f"{r['load_1min_before']:>4.1f}-{r['load_1min_after']:<4.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
