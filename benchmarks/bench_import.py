"""Whole-process cost of ``import mmcore`` (and of discovering every plugin) against ``import torch``.

Target (issue 2): ``import mmcore`` costs at most 1.25x ``import torch``. Each round runs a fresh
interpreter, so caches of the running process don't flatter the numbers.

    python -m pytest benchmarks/bench_import.py --benchmark-only
    python benchmarks/bench_import.py          # prints medians and the ratio
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import pytest

COMMANDS = {
    "import torch": "import torch",
    "import mmcore": "import mmcore",
    "mmcore plugins": "import mmcore; mmcore.get_plugin_manager()",
}


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("label", list(COMMANDS))
def test_import_time(benchmark, label):
    benchmark.pedantic(_run, args=(COMMANDS[label],), rounds=7, iterations=1, warmup_rounds=1)


def main(rounds: int = 9) -> None:
    medians = {}
    for label, code in COMMANDS.items():
        _run(code)  # warm the file cache
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            _run(code)
            times.append(time.perf_counter() - start)
        medians[label] = statistics.median(times)
        print(f"{label:<16} median {medians[label]:.3f} s over {rounds} runs")
    for label in ("import mmcore", "mmcore plugins"):
        print(f"{label} / import torch = {medians[label] / medians['import torch']:.3f}")


if __name__ == "__main__":
    main()
