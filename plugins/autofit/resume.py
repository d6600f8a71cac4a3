"""A ``fit`` run interrupted (Ctrl-C) and continued with the command fit printed, ``mmcore train
RUN/config.yaml --resume RUN``, finishes as fit would have finished it.

fit chose the ensemble's experts between training and the test pass (:class:`.fitting.ExpertChoice`, a
plugin fit registers for the one run it trains) and wrote ``fit_summary.json`` when training ended; an
interrupted fit wrote only ``status: interrupted`` there. A resumed run is trained by ``mmcore train``, not
by fit, so these hooks do fit's last steps for it: before the test pass (``mmcore_before_test``) the same
expert choice, and when training ends (``mmcore_train_end``) ``fit_summary.json`` updated from the run's
report (status, epochs, best epoch, test metrics, the experts chosen) with a ``resumed`` note. They act only
on a resume of a fit run's own directory whose summary still says ``interrupted`` (fit's own training is
never a resume; a run trained from a fit run's config into another directory is no fit run); every other
training is left alone.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import mmcore
from mmcore_plugins.autofit.fitting import PLAN_FILE, SUMMARY_FILE

#: the trainer attribute carrying the expert choice from ``mmcore_before_test`` to ``mmcore_train_end``
_CHOICE = "_autofit_resumed_experts"


def interrupted_summary(trainer: Any) -> dict[str, Any] | None:
    """``fit_summary.json`` of the fit run ``trainer`` resumes when fit left it interrupted, else None
    (not a resume, not a fit run's own directory, a summary that is damaged or says otherwise)."""
    from mmcore.engine.artefacts import MAX_JSON_BYTES
    from mmcore.engine.atomic import UnsafePathError, read_json
    from mmcore_plugins.autofit.contract import fit_run_of

    if getattr(trainer, "resume", None) is None:
        return None
    run = Path(trainer.run_dir)
    source = fit_run_of(trainer.config.get("data"))
    if source is None or not (run / SUMMARY_FILE).is_file() or not (run / PLAN_FILE).is_file() \
            or not os.path.samefile(source, run):
        return None
    try:
        summary = read_json(run / SUMMARY_FILE, max_bytes=MAX_JSON_BYTES, what=SUMMARY_FILE)
    except (ValueError, UnsafePathError, OSError):
        return None
    return summary if isinstance(summary, dict) and summary.get("status") == "interrupted" else None


@mmcore.hookimpl
def mmcore_before_test(trainer: Any) -> None:
    """A resumed fit run with a uni-modal ensemble: fit's expert choice, before the one test pass."""
    from mmcore_plugins.autofit.fitting import ExpertChoice, _has_experts
    from mmcore_plugins.autofit.predictor import read_plan

    if interrupted_summary(trainer) is None:
        return
    run = Path(trainer.run_dir)
    if not _has_experts(trainer.config, read_plan(run)):
        return
    chooser = ExpertChoice(run, clock=time.perf_counter, verbose=trainer.is_main)
    chooser.mmcore_before_test(trainer)
    setattr(trainer, _CHOICE, chooser)


@mmcore.hookimpl
def mmcore_train_end(trainer: Any, report: dict[str, Any]) -> None:
    """A resumed fit run: ``fit_summary.json`` says how the run ended (written on the main process)."""
    from mmcore.engine.atomic import write_file

    summary = interrupted_summary(trainer)
    if summary is None or not trainer.is_main:
        return
    chooser = getattr(trainer, _CHOICE, None)
    before = summary.get("epochs_run")
    summary.pop("resume", None)  # the hint to continue: done
    summary.update({"status": report.get("status"), "best_epoch": report.get("best_epoch"), "epochs_run": report.get("epochs_run"),
                    "epochs_final": trainer.options.epochs, "monitor": report.get("monitor"), "best_val": report.get("best_value"),
                    "test": report.get("test", {}), "stop_reason": report.get("stop_reason"),
                    "unreadable_inputs": report.get("unreadable_inputs"),
                    "experts": chooser.out if chooser is not None else summary.get("experts"),
                    "resumed": {"after_epoch": before, "how": "mmcore train RUN/config.yaml --resume RUN",
                                "note": "fit was interrupted after epoch " f"{before}; the resumed run trained on to epoch "
                                f"{report.get('epochs_run')} and finished as fit would (expert choice before the test pass"
                                + (f": {chooser.out['why']}" if chooser is not None and chooser.out else "") + "); "
                                "'time' is fit's, up to the interruption",
                                "train_seconds": report.get("seconds")}})
    write_file(Path(trainer.run_dir) / SUMMARY_FILE, json.dumps(summary, indent=2))
