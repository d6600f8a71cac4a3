"""The ``plots`` logger: one PNG per quantity in the run directory's ``plots/`` when the run ends.

``plots/<name>.png`` for the loss and each metric (train and validation curves over epochs;
:func:`mmcore.engine.plots.plot_history`) and ``plots/diagnostics.png`` for the run's
modality-imbalance diagnostics (:func:`mmcore.engine.plots.plot_diagnostics`), listed in
``report["plots"]``. Needs matplotlib;
without it nothing is drawn and the list stays empty.
"""

from __future__ import annotations

import mmcore


class PlotsLogger:
    """Draw the training curves as PNGs into ``plots/`` (matplotlib) when the run ends."""

    @mmcore.hookimpl
    def mmcore_train_end(self, trainer, report) -> None:
        from mmcore.engine.plots import plot_diagnostics, plot_history  # matplotlib only when a run ends

        report["plots"] = [str(p) for p in plot_history(trainer.history, trainer.rundir.plots, root=trainer.rundir.path)]
        if report.get("diagnostics"):  # the imbalance diagnostics (mmcore.engine.diagnostics)
            drawn = plot_diagnostics(report["diagnostics"], trainer.rundir.plots / "diagnostics.png",
                                     root=trainer.rundir.path)
            if drawn is not None:
                report["plots"].append(str(drawn))


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_logger("plots", PlotsLogger)
