"""A fit run interrupted by Ctrl-C and continued with the command fit printed (``mmcore train RUN/config.yaml
--resume RUN``) finishes as fit would (:mod:`mmcore_plugins.autofit.resume`): the ensemble's experts are chosen
before the test pass (the choice in ``best/``, ``config.yaml`` and the summary) and ``fit_summary.json`` says
how the run ended, not ``interrupted``. One tiny fit (two epochs, the first interrupted) and its resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from autofit_helpers import write_jsonl

import mmcore
from mmcore.cli import main
from mmcore.errors import RunInterrupted
from mmcore.yamlio import load_yaml_file

pytestmark = pytest.mark.slow  # a fit and its resume (two epochs of a 100-row table)


class _StopAfterFirstEpoch:
    @mmcore.hookimpl
    def mmcore_epoch_end(self, epoch):
        raise KeyboardInterrupt


def _rows(n: int, split: str, rng) -> list[dict]:
    out = []
    for _ in range(n):
        label = str(rng.choice(["alpha", "beta"]))
        filler = " ".join(rng.choice(["the", "a", "one", "some", "new", "old", "big", "small"], size=3))
        out.append({"note": f"{filler} {label} item", "reading": round(float(rng.normal()), 3), "y": label, "split": split})
    return out


def test_a_resumed_fit_chooses_its_experts_and_its_summary_says_how_it_ended(tmp_path, capsys):
    rng = np.random.default_rng(0)
    table = write_jsonl(tmp_path / "t.jsonl", _rows(60, "train", rng) + _rows(30, "val", rng) + _rows(10, "test", rng))
    run = tmp_path / "run"
    with mmcore.register_plugin(_StopAfterFirstEpoch(), name="stop"), pytest.raises(RunInterrupted):
        mmcore.fit(table, target="y", time_limit="10m", preset="fast", max_epochs=2, run_dir=run, verbose=False)
    interrupted = json.loads((run / "fit_summary.json").read_text())
    assert interrupted["status"] == "interrupted" and interrupted["epochs_run"] == 1
    assert load_yaml_file(run / "config.yaml")["model"]["head"]["name"] == "unimodal_ensemble"

    assert main(["train", str(run / "config.yaml"), "--resume", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    summary = json.loads((run / "fit_summary.json").read_text())
    assert summary["status"] == report["status"] == "completed" and summary["epochs_run"] == report["epochs_run"] == 2
    assert summary["test"] == report["test"] and summary["best_epoch"] == report["best_epoch"] and "resume" not in summary
    assert summary["resumed"]["after_epoch"] == 1 and "interrupted after epoch 1" in summary["resumed"]["note"]
    experts = summary["experts"]  # fit's choice ran on the resumed run, before its test pass
    assert experts is not None and set(experts["val_by_expert"]) == {"note", "tabular"}
    chosen = {s: w for s, w in experts["weights"].items() if w != 1.0}
    assert load_yaml_file(run / "config.yaml")["model"]["head"].get("expert_weights", {}) == chosen
    assert json.loads((run / "best" / "model.json").read_text())["spec"]["head"].get("expert_weights", {}) == chosen
    # resumed once more (nothing left to train) or trained elsewhere: a finished summary is left alone
    assert main(["train", str(run / "config.yaml"), f"trainer.run_dir={tmp_path / 'again'}", "trainer.epochs=1"]) == 0
    assert json.loads((run / "fit_summary.json").read_text()) == summary
