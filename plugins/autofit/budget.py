"""``fit``'s time: the phases of a fit with their planned and actual seconds, the machine's load, and
the intra-op thread policy -- what a time limit needs to be a promise on a busy machine.

Every phase counts against ``--time-limit`` (reading and column inference, preparing the table,
candidate selection, the step-time probe, the frozen features of train/val/test, the epochs, the
test evaluation, saving): :class:`Phases` records each one as planned and as it happened, for the
printed summary and ``fit_summary.json``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: Seconds kept in reserve at the end of a fit: writing the summary and loading the Predictor.
FINAL_SECONDS = 3.0
#: Share of the time limit kept unplanned: the load of a shared machine changes while we run.
SAFETY_SHARE = 0.08


def cpu_count() -> int:
    """CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the system gives none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def choose_threads(cores: int | None = None, load: float | None = None) -> tuple[int, str]:
    """Intra-op threads for a fit, and why: one thread when the machine is busy (its 1-minute load
    leaves less than one core free) -- PyTorch's OpenMP threads spin while they wait, so on a busy
    machine two threads ran 4-35x slower than one here, where one thread slows in proportion to the
    load --, else one per free core. The step-time probe then keeps one thread if more are not
    measurably faster (:func:`apply_threads` switches). Kept in this one function so that a
    project-wide thread policy (an option and a default in mmcore) can replace it."""
    cores = cpu_count() if cores is None else cores
    load = load_average() if load is None else load
    if cores <= 1:
        return 1, "one CPU"
    if load is None:
        return cores, f"{cores} CPUs (no load average on this system)"
    free = cores - load
    if free < 1.0:
        return 1, f"busy machine (load {load:.1f} on {cores} CPUs): one thread slows in proportion, more would spin"
    threads = max(1, min(cores, int(free)))
    return threads, f"load {load:.1f} on {cores} CPUs: {threads} free"


def apply_threads(threads: int) -> None:
    """Set PyTorch's intra-op threads for this process."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


@dataclass
class Phase:
    """One phase of a fit: ``planned`` seconds (None: not planned ahead, measured as it ran) and ``actual``."""

    name: str
    planned: float | None = None
    actual: float = 0.0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.name, "planned_s": None if self.planned is None else round(self.planned, 2),
                "actual_s": round(self.actual, 2), **({"note": self.note} if self.note else {})}


@dataclass
class Phases:
    """The fit's clock: ``limit`` seconds from ``started`` (a ``clock()`` value), phase by phase."""

    limit: float
    started: float
    clock: Callable[[], float] = time.perf_counter
    phases: list[Phase] = field(default_factory=list)
    loads: list[tuple[str, float | None]] = field(default_factory=list)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        """Seconds left of the limit (negative once it is passed)."""
        return self.limit - self.elapsed()

    @contextlib.contextmanager
    def phase(self, name: str, planned: float | None = None, note: str = "") -> Iterator[Phase]:
        """Time a phase; the yielded :class:`Phase` may get its ``planned`` / ``note`` filled inside."""
        record = Phase(name, planned, note=note)
        self.phases.append(record)
        start = self.clock()
        try:
            yield record
        finally:
            record.actual += self.clock() - start

    def add(self, name: str, actual: float, planned: float | None = None, note: str = "") -> Phase:
        """A phase timed elsewhere (inside the trainer, from the progress plugin's clock)."""
        record = Phase(name, planned, actual, note)
        self.phases.append(record)
        return record

    def sample_load(self, when: str) -> float | None:
        load = load_average()
        self.loads.append((when, load))
        return load

    def to_json(self) -> dict[str, Any]:
        return {"limit_s": self.limit, "phases": [p.to_json() for p in self.phases],
                "load_average_1min": {when: load for when, load in self.loads}, "cpus": cpu_count()}

    def table(self) -> str:
        """The phases as printed lines: name, planned, actual (and the total against the limit)."""
        lines = [f"  {'phase':<22} {'planned':>9} {'actual':>9}"]
        for p in self.phases:
            planned = "-" if p.planned is None else f"{p.planned:.1f} s"
            lines.append(f"  {p.name:<22} {planned:>9} {p.actual:>7.1f} s" + (f"  {p.note}" if p.note else ""))
        lines.append(f"  {'total':<22} {self.limit:>7.1f} s {self.elapsed():>7.1f} s  (limit / actual)")
        return "\n".join(lines)
