"""``Predictor.explain``: exact per-slot Shapley values for each row of a table, as a DataFrame."""

from __future__ import annotations

from pathlib import Path

import pytest
from autofit_helpers import write_csv, write_png

import mmcore


def test_explain_a_table_of_images_and_numbers(tmp_path: Path):
    rows = []
    for i in range(24):
        write_png(tmp_path / "img" / f"{i}.png", i)
        rows.append({"photo": f"img/{i}.png" if i % 5 else "", "n": i % 5, "y": "odd" if i % 2 else "even"})
    table = write_csv(tmp_path / "t.csv", rows)
    predictor = mmcore.fit(table, target="y", time_limit="10m", max_epochs=2, preset="fast", run_dir=tmp_path / "run", verbose=False)
    frame = predictor.explain(table, plots=tmp_path / "plots")
    slots = list(predictor.config["model"]["encoders"])
    assert len(slots) == 2 and list(frame.columns) == ["prediction", "full", "empty", *slots]
    assert list(frame["prediction"]) == list(predictor.predict(table))
    assert ((frame[slots].sum(axis=1) - (frame["full"] - frame["empty"])).abs() < 1e-5).all()
    photo = next(s for s in slots if s != "tabular")
    assert (frame.loc[[i for i in range(24) if i % 5 == 0], photo] == 0.0).all(), "rows without a photo: 0"
    summary = frame.attrs["summary"]
    assert summary["records"] == 24 and summary["mean_abs"][photo] == pytest.approx(frame[photo].abs().mean())
    assert (tmp_path / "plots" / "record_1.png").is_file() and (tmp_path / "plots" / "summary.png").is_file()
