"""fit's rules for a table's target and file cells (issue 20.4 target half, 20.6, 20.9): an empty
multilabel cell is "none of the labels" by default (--empty-labels missing: left out), said in the column
table; an infinite target is no label (left out, counted, rows named), never a class of its own; strict
makes a missing file an error naming row and column before anything is trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
from autofit_helpers import write_csv, write_png

import mmcore
from mmcore_plugins.autofit.infer import ColumnError


def _multilabel(n: int = 40) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        a, b = rng.standard_normal(2)
        labels = [t for t, on in (("pos_a", a > 0.3), ("pos_b", b > 0.3)) if on]
        rows.append({"a": round(float(a), 3), "b": round(float(b), 3), "tags": "|".join(labels)})
    return rows


@pytest.mark.parametrize("empty_labels", ["none", "missing"])
def test_empty_multilabel_cells(tmp_path, capsys, empty_labels):
    rows = _multilabel()
    empties = sum(r["tags"] == "" for r in rows)
    assert 5 < empties < 35
    table = write_csv(tmp_path / "tags.csv", rows)
    predictor = mmcore.fit(str(table), target="tags", time_limit="10m", max_epochs=2, preset="fast", run_dir=tmp_path / "run",
                           empty_labels=empty_labels)
    out = capsys.readouterr().out
    rows_used = sum(predictor.summary()["rows"].values())
    if empty_labels == "none":
        assert f"{empties} empty cells read as no label" in out and rows_used == 40
    else:
        assert f"{empties} empty cells: rows left out" in out and rows_used == 40 - empties
    assert json.loads((tmp_path / "run" / "autofit.json").read_text())["plan"]["empty_labels"] == empty_labels
    evaluated = predictor.evaluate(str(table))["rows"]
    assert evaluated == rows_used, "evaluate applies fit's rule to the same table"
    with pytest.raises(ColumnError, match="--empty-labels must be"):
        mmcore.fit(str(table), target="tags", empty_labels="drop", run_dir=tmp_path / "x", verbose=False)


@pytest.mark.parametrize("bad", ["inf", "-inf", "Infinity"])
def test_an_infinite_price_is_no_label(tmp_path, capsys, bad):
    rng = np.random.default_rng(1)
    rows = [{"size": round(float(s), 3), "price": round(float(40 + 10 * s + rng.standard_normal()), 2)}
            for s in rng.standard_normal(60)]
    rows[7]["price"] = bad
    table = write_csv(tmp_path / "prices.csv", rows)
    predictor = mmcore.fit(str(table), target="price", time_limit="10m", max_epochs=2, preset="fast", run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert predictor.plan.task == "regression"
    assert "1 infinite values (rows 8) left out" in out and "(1 of them infinite)" in out
    assert json.loads((tmp_path / "run" / "autofit.json").read_text())["infinite_targets"] == [8]
    assert sum(predictor.summary()["rows"].values()) == 59
    assert predictor.evaluate(str(table))["rows_left_out"] == 1


def test_strict_refuses_a_missing_file_before_training(tmp_path):
    for k in range(3):
        write_png(tmp_path / "img" / f"{k}.png", k)
    rows = [{"photo": f"img/{i % 3}.png" if i != 5 else "img/nope.png", "y": "ab"[i % 2]} for i in range(24)]
    table = write_csv(tmp_path / "t.csv", rows)
    with pytest.raises(ColumnError, match=r"row 6, column 'photo': .*nope\.png.*\(--strict\)"):
        mmcore.fit(str(table), target="y", time_limit="10m", max_epochs=2, preset="fast", run_dir=tmp_path / "run", strict=True,
                   verbose=False)
    assert not (tmp_path / "run" / "best").exists()


def test_an_interrupted_fit_is_marked_partial_where_predictor_load_sees_it(tmp_path):
    from mmcore.cli import main
    from mmcore.errors import RunInterrupted
    from mmcore_plugins.autofit.predictor import PartialRunWarning, Predictor

    class StopAfterFirstEpoch:
        @mmcore.hookimpl
        def mmcore_epoch_end(self, epoch):
            raise KeyboardInterrupt

    table = write_csv(tmp_path / "t.csv", _multilabel())
    run = tmp_path / "run"
    with mmcore.register_plugin(StopAfterFirstEpoch(), name="stop"), pytest.raises(RunInterrupted) as info:
        mmcore.fit(str(table), target="tags", time_limit="10m", max_epochs=2, preset="fast", run_dir=run, verbose=False)
    assert info.value.resume_hint() == f"mmcore train {run}/config.yaml --resume {run}"
    assert json.loads((run / "fit_summary.json").read_text())["status"] == "interrupted"
    with pytest.warns(PartialRunWarning, match=f"partial run: training interrupted.*--resume {run}"):
        predictor = Predictor.load(run)
    assert predictor.partial == "training interrupted" and len(predictor.predict(str(table))) == 40
    assert main(["train", str(run / "config.yaml"), "--resume", str(run)]) == 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialRunWarning)
        assert Predictor.load(run).partial is None
