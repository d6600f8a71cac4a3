"""The ``progress`` logger: a tqdm bar over each epoch's optimiser steps (running loss, samples/s,
the last validation value of the monitored metric), and one line per epoch on stdout::

    epoch 3/20  lr 0.0009  train/loss 0.4121  train/accuracy 0.86  samples_per_s 2.1e+04  val/accuracy 0.84 ...
"""

from __future__ import annotations

import time

import mmcore


class ProgressLogger:
    """A progress bar while an epoch trains and one line of metrics per epoch."""

    #: seconds between refreshes of the bar's numbers (reading the running loss syncs the device)
    refresh_s = 0.5

    def __init__(self) -> None:
        self.bar = None
        self.bar_epoch = None

    def _open(self, trainer) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=trainer.steps_per_epoch, desc=f"epoch {trainer.epoch}/{trainer.options.epochs}",
                        leave=False, dynamic_ncols=True, mininterval=0.5)
        self.bar_epoch = trainer.epoch
        self.tick, self.samples_at_tick = time.perf_counter(), trainer.epoch_samples

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = self.bar_epoch = None

    @mmcore.hookimpl
    def mmcore_train_step_end(self, trainer) -> None:
        if self.bar_epoch != trainer.epoch:
            self._close()
            self._open(trainer)
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.tick > self.refresh_s or self.bar.n >= self.bar.total:
            seen = trainer.epoch_samples
            rate = (seen - self.samples_at_tick) * trainer.dist.world_size / max(now - self.tick, 1e-9)
            postfix = {"loss": f"{trainer.epoch_loss:.4f}", "samples/s": f"{rate:.0f}"}
            monitor = f"val/{trainer.options.monitor}"
            if trainer.history and monitor in trainer.history[-1]:
                postfix[f"val {trainer.options.monitor}"] = f"{trainer.history[-1][monitor]:.4f}"
            self.bar.set_postfix(postfix)
            self.tick, self.samples_at_tick = now, seen

    @mmcore.hookimpl
    def mmcore_epoch_end(self, trainer, epoch, metrics) -> None:
        self._close()
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k not in ("epoch", "step"))
        print(f"epoch {epoch}/{trainer.options.epochs}  {shown}", flush=True)

    @mmcore.hookimpl
    def mmcore_train_end(self) -> None:
        self._close()


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_logger("progress", ProgressLogger)
