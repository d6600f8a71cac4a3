"""What ``data_summary.json``'s SHA-256 of each source table costs at a training start (issue 20.8), against
what reading the same table costs anyway.

Writes a CSV of about ``--mb`` MB (numbers, a category, text), then alternates, ``--rounds`` times: the
digest (:func:`mmcore.engine.data_record.file_digest`, one read of the file's bytes) and the table read
(:func:`mmcore_plugins.io.tables.read_table`, what the manifest does before the digest). Reports medians and
the digest's share of (read + digest). The file is in the page cache for both (a first read warms it).

    python benchmarks/bench_data_digest.py --mb 100 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def write_csv(path: Path, mb: float) -> Path:
    rng = np.random.default_rng(0)
    words = ["red", "green", "blue", "small", "large", "round", "sharp", "soft", "bright", "dark", "old", "new"]
    target = int(mb * 2**20)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("a,b,c,group,note,y\n")
        while fh.tell() < target:
            a = rng.standard_normal((10_000, 3)).round(4)
            w = rng.integers(0, len(words), (10_000, 4))
            fh.write("".join(f"{x},{y},{z},g{int(abs(x) * 10)},{' '.join(words[k] for k in ws)},{int(x > 0)}\n"
                             for (x, y, z), ws in zip(a, w, strict=True)))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--path", default="/tmp/mmcore-digest-bench.csv")
    args = parser.parse_args(argv)
    from mmcore.engine.data_record import file_digest
    from mmcore_plugins.io.tables import read_table

    path = Path(args.path)
    if not path.exists() or abs(path.stat().st_size - args.mb * 2**20) > 2**20:
        write_csv(path, args.mb)
    size = path.stat().st_size
    file_digest(path)  # page cache warm
    digests, reads = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        file_digest(path)
        digests.append(time.perf_counter() - t)
        t = time.perf_counter()
        rows = read_table(path)
        reads.append(time.perf_counter() - t)
        del rows
    d, r = statistics.median(digests), statistics.median(reads)
    print(f"file {path}: {size / 2**20:.1f} MiB; load {os.getloadavg()[0]:.1f} (1 min)")
    print(f"digest (one SHA-256 read): median {d:.3f} s of {[round(x, 3) for x in digests]} = {size / 2**20 / d:.0f} MiB/s")
    print(f"read_table (the manifest's read): median {r:.2f} s of {[round(x, 2) for x in reads]}")
    print(f"digest share of read + digest: {100 * d / (d + r):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
