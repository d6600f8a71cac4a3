"""``fit``'s time: the phases of a fit with their planned and actual seconds, the machine's load, and
the intra-op thread policy -- what a time limit needs to be a promise on a busy machine.

Every phase counts against ``--time-limit`` (reading and column inference, preparing the table,
candidate selection, the step-time probe, the frozen features of train/val/test, the epochs, the
test evaluation, saving): :class:`Phases` records each one as planned and as it happened, for the
printed summary and ``fit_summary.json``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mmcore.errors import UserInputError

#: Seconds kept in reserve at the end of a fit: writing the summary and loading the Predictor.
FINAL_SECONDS = 3.0
#: Seconds a run's own bookkeeping takes at its start and again at its end, beyond what the probe
#: measures (the run directory, config, report and metrics files, loading the best checkpoint).
RUN_SECONDS = 0.5
#: Share of the time limit kept unplanned: the load of a shared machine changes while we run.
SAFETY_SHARE = 0.08


def cpu_count() -> int:
    """CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def process_age() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where unknown): a command's start-up
    (the interpreter, PyTorch, the plugins) counts against a limit given on its command line."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the system gives none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def choose_threads(cores: int | None = None, idle: float | None = None) -> tuple[int, str]:
    """Intra-op threads for a fit, and why: mmcore's one policy, ``trainer.threads: auto``
    (:func:`mmcore.threads.auto_threads`: one thread per CPU idle now, at least one), so a fit and a
    ``mmcore train`` on the same machine choose alike. ``cores``/``idle`` are for tests (default: measured).
    The progress plugin still drops to one thread when the machine turns busy mid-fit."""
    from mmcore.threads import auto_threads, idle_cpus, usable_cpus

    cores = usable_cpus() if cores is None else cores
    idle = idle_cpus() if idle is None else idle
    threads = auto_threads(cpus=cores, default=cores, idle=idle)
    if idle is None:
        return threads, f"{cores} CPUs, idle CPUs not measurable here: by the 1-minute load average"
    return threads, f"{idle:.1f} of {cores} CPUs idle at the start"


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


# ---------------------------------------------------------------------- the plan
#: Frozen-feature image sizes fit may scale down to (EfficientNet-Lite0's cost grows with the pixels).
IMAGE_SIZES = (224, 192, 160, 128, 96)
#: A plan is good enough once this many epochs fit (more are taken when there is time).
WANT_EPOCHS = 3
#: Rows fit may scale training down to (halving), never fewer.
MIN_TRAIN_ROWS = 1000
#: Validation rows kept when training rows are scaled down (at least; never more than there are).
MIN_VAL_ROWS = 1000
#: Training stops within an epoch at the time limit; a plan needs at least this share of one.
MIN_EPOCH_SHARE = 0.25


class TimeLimitError(UserInputError):
    """``--time-limit`` cannot hold even the smallest plan: raised before training, with the estimate
    and the option that would make it fit. The CLI gives exit status 2 and one line."""


@dataclass
class Costs:
    """What the start of a fit measured, seconds: a training step reading its inputs for the first
    time (``cold_step``) and once they are remembered (``warm_step``), a validation sample with its
    inputs remembered (``eval_sample``) and read for the first time (``eval_cold_sample``), reading a
    row into the data set (``load_row``), building the model (``setup_fixed``), an epoch's own cost
    beyond its steps and validation (``epoch_fixed``: saving checkpoints), and per frozen slot
    its features per row (``feature_row``), measured at ``feature_size`` px for the slots in
    ``image_slots`` (their cost scales with the pixels: ``(size / feature_size) ** 2``)."""

    cold_step: float
    warm_step: float
    eval_sample: float
    eval_cold_sample: float = 0.0
    load_row: float = 0.0
    setup_fixed: float = 0.0
    epoch_fixed: float = 0.0
    feature_row: dict[str, float] = field(default_factory=dict)
    feature_size: int | None = None
    image_slots: tuple[str, ...] = ()


@dataclass
class Schedule:
    """A plan for the rest of a fit: ``epochs`` over ``train_rows`` (of the table's), ``val_rows``,
    frozen images at ``image_size`` px (None: unchanged), and the planned seconds per phase
    (``setup``, ``features`` (train + val), ``training``, ``test`` (its features included), ``final``).
    ``fits``: whether at least ``MIN_EPOCH_SHARE`` of an epoch fits; ``needed``: the smallest plan's seconds."""

    epochs: int
    train_rows: int
    val_rows: int
    image_size: int | None
    planned: dict[str, float]
    per_epoch: float
    fits: bool
    needed: float
    available: float
    scaled: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.planned.values())


def _option(costs: Costs, available: float, *, train: int, val: int, test: int, batch_size: int, max_epochs: int,
            size: int | None) -> Schedule:
    scale = {slot: ((size / costs.feature_size) ** 2 if size and costs.feature_size and slot in costs.image_slots else 1.0)
             for slot in costs.feature_row}
    feature_row = sum(cost * scale[slot] for slot, cost in costs.feature_row.items())
    steps = max(1, math.ceil(train / batch_size))
    per_epoch = steps * costs.warm_step + val * costs.eval_sample + costs.epoch_fixed
    first_extra = steps * max(0.0, costs.cold_step - costs.warm_step)
    planned = {"setup": RUN_SECONDS + costs.setup_fixed + costs.load_row * (train + val + test),
               "features": feature_row * (train + val),
               "test": RUN_SECONDS + test * (max(costs.eval_cold_sample, costs.eval_sample) + feature_row),
               "final": FINAL_SECONDS}
    fixed = sum(planned.values()) + first_extra
    room = available - fixed
    epochs = int(min(max_epochs, max(0, math.floor(room / per_epoch)))) if per_epoch > 0 else max_epochs
    share = min(1.0, max(0.0, room / per_epoch)) if per_epoch > 0 else 1.0
    planned["training"] = first_extra + per_epoch * (epochs if epochs >= 1 else share)
    return Schedule(max(1, epochs), train, val, size, planned, per_epoch, fits=share >= MIN_EPOCH_SHARE or epochs >= 1,
                    needed=fixed + MIN_EPOCH_SHARE * per_epoch, available=available)


def plan_schedule(left: float, costs: Costs, *, train_rows: int, val_rows: int, test_rows: int, batch_size: int,
                  max_epochs: int, image_size: int | None = None, min_train_rows: int = MIN_TRAIN_ROWS) -> Schedule:
    """The best plan that fits ``left`` seconds (less ``SAFETY_SHARE`` of it, for a load that changes).

    Tried in order, the first giving ``WANT_EPOCHS`` epochs wins: the table as it is; frozen images
    at each smaller size of :data:`IMAGE_SIZES` (from ``image_size``, when an image slot is frozen);
    then, at the smallest size, training rows halved (down to ``min_train_rows``; validation rows
    with them, to no fewer than ``MIN_VAL_ROWS``). Test rows are never dropped: the score is measured
    on all of them. When no option reaches ``WANT_EPOCHS``, the one with the most epochs x rows
    that fits is taken; when none fits, the smallest, with ``fits`` False (the caller refuses).
    """
    available = left * (1.0 - SAFETY_SHARE)
    sizes: list[int | None] = [image_size]
    if image_size and costs.image_slots and costs.feature_size:
        sizes += [s for s in IMAGE_SIZES if s < image_size]
    options: list[tuple[int | None, int, int]] = [(s, train_rows, val_rows) for s in sizes]
    train = train_rows
    while train // 2 >= min_train_rows:
        train //= 2
        options.append((sizes[-1], train, max(min(MIN_VAL_ROWS, val_rows), round(val_rows * train / train_rows))))
    tried = [_option(costs, available, train=t, val=v, test=test_rows, batch_size=batch_size, max_epochs=max_epochs, size=s)
             for s, t, v in options]
    for option in tried:
        if option.fits and option.epochs >= min(WANT_EPOCHS, max_epochs):
            return _scaled(option, train_rows, val_rows, image_size)
    fitting = [o for o in tried if o.fits]
    if fitting:
        best = max(fitting, key=lambda o: (min(o.epochs, WANT_EPOCHS) * o.train_rows, o.image_size or 0))
        return _scaled(best, train_rows, val_rows, image_size)
    return _scaled(tried[-1], train_rows, val_rows, image_size)


def _scaled(option: Schedule, train_rows: int, val_rows: int, image_size: int | None) -> Schedule:
    if image_size and option.image_size and option.image_size < image_size:
        option.scaled.append(f"frozen image features at {option.image_size} px instead of {image_size}")
    if option.train_rows < train_rows:
        option.scaled.append(f"{option.train_rows} of {train_rows} training rows")
    if option.val_rows < val_rows:
        option.scaled.append(f"{option.val_rows} of {val_rows} validation rows")
    return option


def refusal(schedule: Schedule, limit: float, spent: float, *, frozen: bool, preset: str) -> str:
    """The one line a fit that cannot hold its time limit stops with: the estimate and what would fit."""
    needed = spent + schedule.needed / (1.0 - SAFETY_SHARE)
    suggest = f"--time-limit {duration_text(needed)} or more"  # the estimate itself: a rounder number is more than needed
    if frozen and preset != "fast":
        suggest += ", or --preset fast (no pretrained features to compute)"
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in schedule.planned.items() if seconds >= 0.5)
    smallest = f"{schedule.train_rows} training rows" + (f", images at {schedule.image_size} px" if schedule.image_size else "")
    return (f"--time-limit {duration_text(limit)}: even the smallest plan ({smallest}, {MIN_EPOCH_SHARE:.0%} of one epoch) needs "
            f"about {needed:.0f} s ({spent:.0f} s already spent reading and measuring; {parts}); pass {suggest}")


def epochs_text(count: int) -> str:
    """``"1 epoch"``, ``"3 epochs"``: a count of epochs as fit prints it."""
    return f"{count} epoch{'' if count == 1 else 's'}"


def duration_text(seconds: float) -> str:
    """Seconds rounded up to a whole second, written as ``--time-limit`` reads it (``choose.parse_duration``):
    ``"20s"``, ``"119s"``, ``"5m"``, ``"5m1s"``, ``"1h2m"`` -- never rounded up further (a suggested
    limit is the least that does, not a round number above it)."""
    total = int(math.ceil(seconds - 1e-9))
    if total < 120:
        return f"{total}s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
