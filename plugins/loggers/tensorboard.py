"""The ``tensorboard`` logger: TensorBoard event files in the run directory's ``tensorboard/``.

Every epoch's numbers (``train/loss``, ``val/<metric>``, ``lr``, ``samples_per_s``) at step =
epoch, and the test results as ``test/<metric>`` at the last optimiser step. Needs the
``tensorboard`` package; without it the logger writes nothing (and says nothing).
"""

from __future__ import annotations

import mmcore


class TensorBoardLogger:
    """Write TensorBoard scalars (when tensorboard is installed) into ``tensorboard/``."""

    def __init__(self) -> None:
        self.writer = None

    @mmcore.hookimpl
    def mmcore_train_start(self, trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: skip silently
            return
        from mmcore.engine.atomic import ensure_folder

        # TensorBoard names its own event files: the folder is made (or found) a real one first,
        # so a linked tensorboard/ is refused rather than written through.
        folder = ensure_folder(trainer.rundir.tensorboard, root=trainer.rundir.path)
        self.writer = SummaryWriter(log_dir=str(folder))

    @mmcore.hookimpl
    def mmcore_epoch_end(self, epoch, metrics) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key not in ("epoch", "step"):
                self.writer.add_scalar(key, value, int(epoch))
        self.writer.flush()

    @mmcore.hookimpl
    def mmcore_train_end(self, trainer, report) -> None:
        if self.writer is None:
            return
        for key, value in (report.get("test") or {}).items():
            self.writer.add_scalar(f"test/{key}", value, trainer.step)
        self.writer.close()
        self.writer = None


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_logger("tensorboard", TensorBoardLogger)
