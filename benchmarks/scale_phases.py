"""Where the time and memory of one epoch go, phase by phase, for ``mmcore train`` and for the plain
loop (issue 26: attributing the per-row gap between them). Run as a wrapper around either program:

    python benchmarks/scale_phases.py OUT.json -- -m mmcore train CONFIG --overwrite
    python benchmarks/scale_phases.py OUT.json -- benchmarks/plain_loop.py TABLE --threads 1

It installs timers, runs the program in this process (``runpy``) and, at exit, writes ``OUT.json``:

- ``phases``: seconds and resident memory (MB, ``/proc/self/statm``) at the end of each phase the
  program passes through -- for ``mmcore train``: reading the manifest (``load_datasets``), recording
  the data (the table's digest), fitting the processors, ``setup`` as a whole (its remainder: building
  the model, the monitor check that imports torchmetrics, the optimiser), each epoch's training loop,
  validation, checkpoints, the test evaluation with the report (and the diagnostics' pass when it
  makes one); for the plain loop: fitting the processors; for both: ``exit``;
- ``loader_s`` / ``collate_s`` / ``batches``: time spent fetching batches (``DataLoader.__next__``:
  the data set's ``__getitem__`` and the collate), of it in the model's collate (the processors:
  PNG decode, text, numbers), and the number of batches; the rest of a training epoch is the steps
  themselves (forward, backward, optimiser);
- ``opened``: images opened so far (calls of :func:`PIL.Image.open`: the manifest's header checks
  and the image processor's reads), at the end of each phase and in all;
- ``total_s``: from the wrapper's start to exit; ``peak_mb``: ``ru_maxrss``.

Both programs are timed by the same probes, so a phase one side has and the other lacks shows up
as such; the probes cost a ``perf_counter`` call per batch and per image open.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import runpy
import sys
import time

T0 = time.perf_counter()
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


state = {"phases": [], "loader_s": 0.0, "collate_s": 0.0, "batches": 0, "opened": 0}


def mark(name: str, start: float) -> None:
    now = time.perf_counter()
    state["phases"].append({"phase": name, "s": round(now - start, 3), "at_s": round(now - T0, 3),
                            "rss_mb": round(rss_mb(), 1), "opened": state["opened"]})


def wrap(owner, attr: str, after) -> None:
    """``owner.attr`` replaced by a wrapper calling ``after(start)`` when each call ends."""
    original = getattr(owner, attr)

    def wrapper(*a, **k):
        start = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            after(start)

    setattr(owner, attr, wrapper)


def timed(owner, attr: str, name: str) -> None:
    """Each call of ``owner.attr`` is a phase of its own (:func:`mark`)."""
    wrap(owner, attr, lambda start: mark(name, start))


def accumulate(owner, attr: str, key: str, count: str | None = None) -> None:
    """The calls of ``owner.attr`` summed into ``state[key]`` (and counted into ``state[count]``)."""

    def add(start: float) -> None:
        state[key] += time.perf_counter() - start
        if count:
            state[count] += 1

    wrap(owner, attr, add)


def install(program: list[str]) -> None:
    import PIL.Image
    from torch.utils.data import dataloader

    accumulate(dataloader._BaseDataLoaderIter, "__next__", "loader_s", "batches")
    original_open = PIL.Image.open

    def counted_open(*a, **k):
        state["opened"] += 1
        return original_open(*a, **k)

    PIL.Image.open = counted_open
    if program[:2] == ["-m", "mmcore"]:
        import mmcore.data
        import mmcore.engine.trainer as T
        import mmcore.model

        original = T.load_datasets

        def load_datasets(*a, **k):
            start = time.perf_counter()
            out = original(*a, **k)
            mark("read manifest (load_datasets)", start)
            return out

        T.load_datasets = load_datasets
        timed(mmcore.model.MultimodalModel, "fit_processors", "fit processors")
        timed(T.Trainer, "setup", "setup (all)")
        timed(T.Trainer, "_train_epoch", "train epoch")
        timed(T.Trainer, "_validate", "validation")
        timed(T.Trainer, "_checkpoint", "checkpoint")
        timed(T.Trainer, "_finish", "test + report")
        timed(T.Trainer, "_record_data", "record data (digest)")
        accumulate(mmcore.data.ModelCollate, "__call__", "collate_s")
    else:
        import mmcore.model

        timed(mmcore.model.MultimodalModel, "fit_processors", "fit processors")
        accumulate(mmcore.model.MultimodalModel, "collate", "collate_s")


def main() -> None:
    out, sep, *program = sys.argv[1:]
    if sep != "--" or not program:
        raise SystemExit(__doc__)
    install(program)

    def dump() -> None:
        mark("exit", time.perf_counter())
        state["total_s"] = time.perf_counter() - T0
        state["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with open(out, "w") as fh:
            json.dump(state, fh, indent=1)

    atexit.register(dump)
    if program[0] == "-m":
        sys.argv = [program[1], *program[2:]]
        runpy.run_module(program[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(program)
        runpy.run_path(program[0], run_name="__main__")


if __name__ == "__main__":
    main()
