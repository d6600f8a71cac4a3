"""``FitProgress``: ``fit``'s own plugin for the one training run it starts -- a line per epoch, and the
time limit kept. Built fresh for each fit and registered for that run only (``mmcore.register_plugin``),
it keeps its state on itself and drives the trainer only through the surface hooks may use
(``mmcore/hookspecs.py``, "The trainer a hook sees"): it reads ``trainer.options`` and stops the run with
``trainer.request_stop(reason)`` -- after an epoch, or within one (``finish_epoch=False``) -- which the
run's ``report.json`` and ``fit_summary.json`` record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import mmcore
from mmcore_plugins.autofit.budget import epochs_text

#: The reserve after training is stretched by the steps' slowdown, at most this much.
MAX_SLOWDOWN = 3.0
#: At an epoch's end, another epoch is begun only when at least this share of one fits before the deadline.
MIN_EPOCH_SHARE = 0.2
#: The run grows only by epochs that fit before the deadline at this multiple of the last epoch's time.
GROW_MARGIN = 1.15
#: An epoch whose steps took more than this multiple of the previous epoch's is a machine slowing down:
#: the run does not grow after it.
SLOWING = 1.1


class FitProgress:
    """One line per epoch through ``log`` (None: silent) and, with a ``deadline`` (a ``clock()`` value
    by which training, the last validation included, must be over), the time limit:

    * after every optimiser step: when one more step and a validation would end after the deadline,
      the running epoch ends now (``request_stop(..., finish_epoch=False)``): a machine that slowed
      down, or an epoch longer than the time left, never runs past the limit;
    * after every epoch: when not even ``MIN_EPOCH_SHARE`` of another epoch and its validation fit,
      training stops there (the best checkpoint so far is kept and tested).
    * after every epoch before the planned last one, with ``max_epochs`` (the preset's cap), the plan
      grows (:meth:`~mmcore.engine.trainer.Trainer.extend`) when epochs turned out faster than planned:
      the time left before the deadline holds at least one more epoch than planned at
      ``GROW_MARGIN`` x the last epoch's measured time (training, validation and checkpoint), the
      validation metric improved in that epoch (the best checkpoint is the latest; no early stop on
      the way), that epoch's steps were not slower than the previous epoch's (``SLOWING``: a machine
      getting busy never grows the plan), and ``max_epochs`` is not reached. The run gets every
      epoch that fits so (at most ``max_epochs``); the learning rate goes on from where it was over
      the longer horizon, and the run's ``config.yaml`` records it (``trainer.epochs``,
      ``trainer.schedule_extensions``). Not after the planned last epoch: the rate is at its floor there.

    ``reserve``: seconds kept after the deadline's training for what follows (see :attr:`deadline`).
    ``val_seconds``: the expected validation time (the measured one replaces it after the first
    epoch). ``planned_step``: the probe's step time; an epoch whose steps take more than twice as
    long with more than one intra-op thread drops to one (a machine that got busy: spinning threads
    slow down by an order of magnitude, one thread in proportion). ``clock`` is the time source.
    ``max_epochs``: the most epochs the plan may grow to (None: it never grows); :attr:`grown` lists
    each growth.
    """

    def __init__(self, *, deadline: float | None, log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter, val_seconds: float = 0.0,
                 planned_step: float | None = None, reserve: float = 0.0, max_epochs: int | None = None) -> None:
        self.end, self.reserve, self.log, self.clock = deadline, reserve, log, clock
        self.max_epochs = max_epochs
        #: per growth of the plan: ``{"after_epoch", "from", "to", "epoch_s", "left_s"}``
        self.grown: list[dict[str, Any]] = []
        self.val_seconds, self.planned_step = val_seconds, planned_step
        self.epoch_started: float | None = None
        self.train_started: float | None = None
        self.last_step_end: float | None = None
        self.step_seconds: float | None = None  # the latest step's duration
        self.epoch_steps = 0
        #: per finished epoch: ``{"epoch", "seconds", "train_s", "val_s", "steps"}``
        self.epochs: list[dict[str, Any]] = []
        #: the epoch after which (or within which) the time limit stopped training (None: it did not)
        self.stopped_after: int | None = None
        self.stopped_within_epoch = False
        #: intra-op threads dropped to one after this epoch (None: not)
        self.threads_dropped_after: int | None = None

    @property
    def deadline(self) -> float | None:
        """When training must be over: the end less the ``reserve`` (what follows training: the test
        evaluation and saving, as planned), the reserve stretched by how much slower the steps run
        than the probe measured (at most ``MAX_SLOWDOWN`` x): a machine that got busy slows those too."""
        if self.end is None:
            return None
        slowdown = 1.0
        if self.planned_step and self.epoch_steps and self.last_step_end is not None and self.epoch_started is not None:
            slowdown = (self.last_step_end - self.epoch_started) / self.epoch_steps / self.planned_step
        elif self.planned_step and self.epochs and self.epochs[-1]["train_s"] and self.epochs[-1]["steps"]:
            slowdown = self.epochs[-1]["train_s"] / self.epochs[-1]["steps"] / self.planned_step
        return self.end - self.reserve * min(MAX_SLOWDOWN, max(1.0, slowdown))

    @mmcore.hookimpl
    def mmcore_train_start(self, trainer) -> None:
        """The clock of the first epoch starts here, after the setup."""
        self.epoch_started = self.train_started = self.clock()
        self.last_step_end = None

    @mmcore.hookimpl
    def mmcore_train_step_end(self, trainer, step) -> None:
        now = self.clock()
        previous = self.last_step_end if self.last_step_end is not None else self.epoch_started
        if previous is not None:
            self.step_seconds = now - previous
        self.last_step_end = now
        self.epoch_steps += 1
        if self.deadline is None or self.step_seconds is None or self.stopped_after is not None:
            return
        if self.epoch_steps >= getattr(trainer, "steps_per_epoch", float("inf")):
            return  # the epoch's last step: its validation follows anyway; the epoch-end check decides
        deadline = self.deadline
        if now + self.step_seconds + self.val_seconds > deadline:
            self.stopped_after, self.stopped_within_epoch = trainer.epoch, True
            reason = (f"time limit: another step ({self.step_seconds:.2f} s) and a validation ({self.val_seconds:.1f} s) "
                      f"would end {now + self.step_seconds + self.val_seconds - deadline:.1f} s after it")
            trainer.request_stop(reason, finish_epoch=False)
            if self.log is not None:
                self.log(f"{reason}; ending epoch {trainer.epoch} after step {step} (the best checkpoint so far is kept)")

    @mmcore.hookimpl
    def mmcore_epoch_end(self, trainer, epoch, metrics) -> None:
        if self.log is not None:
            shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith(("train/loss", "val/")))
            self.log(f"epoch {epoch}/{trainer.options.epochs}  {shown}")
        now, last = self.clock(), self.epoch_started
        self.epoch_started = now
        if last is not None:
            train_s = (self.last_step_end - last) if self.last_step_end is not None and self.last_step_end >= last else None
            val_s = now - self.last_step_end if train_s is not None else None
            self.epochs.append({"epoch": epoch, "seconds": now - last, "train_s": train_s, "val_s": val_s,
                                "steps": self.epoch_steps})
            if val_s is not None:
                self.val_seconds = val_s
            self._maybe_one_thread(epoch, train_s)
        self.epoch_steps, self.last_step_end = 0, None  # the next step is timed from this epoch's end
        if self.deadline is None or last is None or epoch >= trainer.options.epochs or self.stopped_after is not None:
            return
        self._maybe_grow(trainer, epoch, now)
        epoch_train = self.epochs[-1]["train_s"] if self.epochs and self.epochs[-1]["train_s"] is not None else now - last
        needed = MIN_EPOCH_SHARE * epoch_train + self.val_seconds
        deadline = self.deadline
        if now + needed > deadline:
            self.stopped_after = epoch
            reason = (f"time limit: {max(0.0, deadline - now):.1f} s left, less than {MIN_EPOCH_SHARE:.0%} of another "
                      f"epoch (the last took {now - last:.1f} s) and its validation")
            trainer.request_stop(reason)
            if self.log is not None:
                self.log(f"{reason}; stopping after epoch {epoch} (the best checkpoint so far is kept)")

    def _maybe_grow(self, trainer, epoch: int, now: float) -> None:
        """More epochs when the measured ones leave room for them (see the class docstring)."""
        planned = trainer.options.epochs
        if self.max_epochs is None or planned >= self.max_epochs or trainer.stop_reason is not None:
            return
        if getattr(trainer, "best_epoch", None) != epoch:
            return  # validation did not improve in this epoch: more of the same is not what it needs
        record = self.epochs[-1]
        if not record["train_s"] or record["steps"] < getattr(trainer, "steps_per_epoch", record["steps"]):
            return
        if len(self.epochs) >= 2:
            previous = self.epochs[-2]
            if previous["train_s"] and previous["steps"] and \
                    record["train_s"] / record["steps"] > SLOWING * previous["train_s"] / previous["steps"]:
                return  # slowing down: the time left holds less than the last epoch says
        left = self.deadline - now
        total = min(self.max_epochs, epoch + int(left // (GROW_MARGIN * record["seconds"])))
        if total <= planned:
            return
        trainer.extend(total)
        self.grown.append({"after_epoch": epoch, "from": planned, "to": total, "epoch_s": record["seconds"], "left_s": left})
        if self.log is not None:
            self.log(f"epochs take {record['seconds']:.1f} s and {left:.0f} s are left before the time limit's reserve: "
                     f"{epochs_text(total)} instead of {planned} (the learning rate goes on from where it is over the longer horizon)")

    def _maybe_one_thread(self, epoch: int, train_s: float | None) -> None:
        if self.planned_step is None or not train_s or not self.epoch_steps or epoch < 2:
            return  # the first epoch reads every input once: slower by design
        import torch

        per_step = train_s / self.epoch_steps
        if per_step > 2 * self.planned_step and torch.get_num_threads() > 1:
            torch.set_num_threads(1)
            self.threads_dropped_after = epoch
            if self.log is not None:
                self.log(f"steps take {per_step * 1000:.0f} ms, more than twice the {self.planned_step * 1000:.0f} ms "
                         "measured at the start: the machine got busy; one intra-op thread from now on")
