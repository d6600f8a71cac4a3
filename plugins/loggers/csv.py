"""The ``csv`` logger: ``metrics.csv`` in the run directory, one row per epoch.

Columns are every key of the epoch rows in order of first appearance (``epoch``, ``step``,
``lr``, ``train/loss``, ``train/<metric>``..., ``samples_per_s``, ``val/<metric>``...,
``val/loss``). The whole history (a resumed run's earlier epochs included) is rewritten
atomically after every epoch and when the run ends, so the file always matches the last checkpoint.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import mmcore


def write_history(history: Sequence[Mapping[str, float]], path: Path) -> None:
    """``history`` as CSV at ``path`` (atomic): a header of every key, then one row per entry."""
    from mmcore.engine.atomic import write_file  # when a run writes, not when plugins are discovered

    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    write_file(path, text.getvalue())


class CsvLogger:
    """Write the per-epoch metrics to ``metrics.csv`` in the run directory."""

    @mmcore.hookimpl
    def mmcore_epoch_end(self, trainer) -> None:
        write_history(trainer.history, trainer.rundir.metrics)

    @mmcore.hookimpl
    def mmcore_train_end(self, trainer) -> None:
        write_history(trainer.history, trainer.rundir.metrics)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_logger("csv", CsvLogger)
