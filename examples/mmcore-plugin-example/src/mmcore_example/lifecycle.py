"""A lifecycle hook: log each epoch's validation loss through Python logging (logger ``mmcore_example``).

Installed plugins' lifecycle hooks run in every training, so this one only logs (silent unless
the application enables INFO for ``mmcore_example``); it writes no file.
"""

from __future__ import annotations

import logging

import mmcore

logger = logging.getLogger("mmcore_example")


@mmcore.hookimpl
def mmcore_epoch_end(trainer, epoch, metrics) -> None:
    if "val/loss" in metrics:
        logger.info("epoch %d: val/loss %.4f", epoch, metrics["val/loss"])
