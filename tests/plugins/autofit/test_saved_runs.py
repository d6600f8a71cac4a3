"""A saved or copied fit run is its own run (issue 20.5, 20.8): `Predictor.save(COPY)` of an interrupted
fit, then `mmcore train COPY/config.yaml --resume COPY`, continues the copy on the copy's own
data.jsonl and never writes the original; training a finished copy's config again without saying where
is refused; a copy's data that changed is named on resume."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
from autofit_helpers import tabular_rows, write_csv

import mmcore
from mmcore.cli import main
from mmcore.errors import RunInterrupted
from mmcore_plugins.autofit.predictor import PartialRunWarning, Predictor


def _digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".mmcore-lock"}


class _StopAfterFirstEpoch:
    @mmcore.hookimpl
    def mmcore_epoch_end(self, epoch):
        raise KeyboardInterrupt


def test_a_saved_partial_fit_resumes_as_itself(tmp_path, capsys):
    table = write_csv(tmp_path / "t.csv", tabular_rows(60))
    run = tmp_path / "run"
    with mmcore.register_plugin(_StopAfterFirstEpoch(), name="stop"), pytest.raises(RunInterrupted):
        mmcore.fit(str(table), target="y", time_limit="10m", max_epochs=2, preset="fast", run_dir=run, verbose=False)
    with pytest.warns(PartialRunWarning):
        predictor = Predictor.load(run)
    copy = predictor.save(tmp_path / "copy")
    original = _digest(run)
    assert main(["train", str(copy / "config.yaml"), "--resume", str(copy)]) == 0
    assert _digest(run) == original, "the original run is never written"
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialRunWarning)
        again = Predictor.load(copy)
    assert again.partial is None and len(again.predict(str(table))) == 60
    # finished: training its config again must say where
    assert main(["train", str(copy / "config.yaml")]) == 2
    assert f"--resume {copy}" in capsys.readouterr().err
    assert _digest(run) == original


def test_resume_of_a_copy_whose_data_changed_names_its_file(tmp_path, capsys):
    table = write_csv(tmp_path / "t.csv", tabular_rows(60))
    run = tmp_path / "run"
    with mmcore.register_plugin(_StopAfterFirstEpoch(), name="stop"), pytest.raises(RunInterrupted):
        mmcore.fit(str(table), target="y", time_limit="10m", max_epochs=2, preset="fast", run_dir=run, verbose=False)
    data = run / "data.jsonl"
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:-5]))
    assert main(["train", str(run / "config.yaml"), "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "the data changed since the run started" in err and "data.jsonl" in err and "5 removed" in err
