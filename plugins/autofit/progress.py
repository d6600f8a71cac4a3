"""``FitProgress``: ``fit``'s own plugin for the one training run it starts -- a line per epoch, and the
time limit kept. Built fresh for each fit and registered for that run only (``mmcore.register_plugin``),
it keeps its state on itself and drives the trainer only through the surface hooks may use
(``mmcore/hookspecs.py``, "The trainer a hook sees"): it reads ``trainer.options`` and stops the run with
``trainer.request_stop(reason)``, which the run's ``report.json`` and ``fit_summary.json`` record.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import mmcore


class FitProgress:
    """One line per epoch through ``log`` (None: silent) and, with a ``deadline`` (a
    ``time.perf_counter()`` value), the time limit: when another epoch as long as the last would end
    after it (the machine slowed down since the step time was measured), training stops after this
    epoch (the best checkpoint so far is kept and tested). ``clock`` is the time source."""

    def __init__(self, *, deadline: float | None, log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.deadline, self.log, self.clock = deadline, log, clock
        self.epoch_started: float | None = None
        #: the epoch after which the time limit stopped training (None: it did not)
        self.stopped_after: int | None = None

    @mmcore.hookimpl
    def mmcore_train_start(self, trainer) -> None:
        """The clock of the first epoch starts here, after the setup."""
        self.epoch_started = self.clock()

    @mmcore.hookimpl
    def mmcore_epoch_end(self, trainer, epoch, metrics) -> None:
        if self.log is not None:
            shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith(("train/loss", "val/")))
            self.log(f"epoch {epoch}/{trainer.options.epochs}  {shown}")
        now, last = self.clock(), self.epoch_started
        self.epoch_started = now
        if self.deadline is None or last is None or epoch >= trainer.options.epochs:
            return
        if now + (now - last) > self.deadline:
            self.stopped_after = epoch
            reason = (f"time limit: another epoch (the last took {now - last:.1f} s) would end "
                      f"{now + (now - last) - self.deadline:.1f} s after it")
            trainer.request_stop(reason)
            if self.log is not None:
                self.log(f"{reason}; stopping after epoch {epoch} (the best checkpoint so far is kept)")
