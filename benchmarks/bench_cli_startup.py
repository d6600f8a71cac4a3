"""Where ``mmcore --help`` and ``mmcore plugins`` spend their start, measured side by side.

1. Fresh processes, alternated round by round (so load drifts hit every command alike): ``mmcore --help``,
   ``mmcore plugins``, ``python -c "import torch"`` and ``python -c "import mmcore"``; the median of
   ``--rounds`` runs each, and ``uptime`` before and after.
2. In one process, alternated: plugin discovery's distribution look-ups for the ``mmcore`` entry points as
   they were (``dist.metadata`` re-parsed for each look-up: sort key, then name and version) against one
   parse per distribution (:func:`mmcore.plugin_manager._distribution_of` with its cache).

    python benchmarks/bench_cli_startup.py --rounds 5

Found (2026-12-06, 2 busy cores): ``import torch`` is most of both commands' start -- ``import mmcore``
imports it (``mmcore.components``: the contracts are ``nn.Module``s) and so does every built-in plugin
module -- so lazy imports in the commands' registration cannot make ``--help`` fast; the metadata
re-parsing was the largest cost of mmcore's own.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from importlib import metadata

COMMANDS = {
    "mmcore --help": [sys.executable, "-m", "mmcore", "--help"],
    "mmcore plugins": [sys.executable, "-m", "mmcore", "plugins"],
    "import torch": [sys.executable, "-c", "import torch"],
    "import mmcore": [sys.executable, "-c", "import mmcore"],
}


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def fresh(rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(rounds):
        for label, argv in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[label].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def lookups(rounds: int) -> dict[str, float]:
    from mmcore.plugin_manager import BUILTIN_DISTRIBUTION, _distribution_of

    eps = list(metadata.entry_points(group="mmcore"))

    def reparsed() -> None:  # what discovery did: a parse in the sort key, two more (name, version) per plugin
        for ep in sorted(eps, key=lambda e: (0 if e.dist.metadata["Name"] == BUILTIN_DISTRIBUTION else 1, e.name)):
            ep.dist.metadata["Name"], ep.dist.version

    def cached() -> None:
        cache: dict = {}
        for ep in sorted(eps, key=lambda e: _distribution_of(e, cache)):
            _distribution_of(ep, cache)

    times: dict[str, list[float]] = {"re-parsed": [], "cached": []}
    for _ in range(rounds):
        for label, run in (("re-parsed", reparsed), ("cached", cached)):
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("load before:", _uptime())
    for label, seconds in fresh(args.rounds).items():
        print(f"{label:<16} median {seconds:.2f} s over {args.rounds} fresh runs")
    for label, seconds in lookups(args.rounds).items():
        print(f"distribution look-ups, {label:<10} median {seconds * 1000:.1f} ms for "
              f"{len(list(metadata.entry_points(group='mmcore')))} entry points")
    print("load after: ", _uptime())


if __name__ == "__main__":
    main()
