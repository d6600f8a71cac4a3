"""`mmcore fit` and its run directory (issue 28, issue 20.10): the lock held for the whole fit, a
user's files never replaced under --overwrite (the training table included), links refused, the
path rule of `mmcore train` with the same opt-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from autofit_helpers import tabular_rows, write_jsonl

import mmcore
from mmcore.cli import main
from mmcore.engine.rundir import RunDir


def _fit_args(table: Path, run: Path, *extra: str) -> list[str]:
    return ["fit", str(table), "--target", "y", "--time-limit", "10m", "--max-epochs", "2", "--preset", "fast", "--run-dir", str(run), *extra]


@pytest.mark.slow  # two fits in fresh processes
def test_two_fits_on_one_run_folder_a_moment_apart_the_second_is_refused(tmp_path):
    """The lock was released before the probe: both fits wrote, and Predictor.load(...).predict raised IndexError."""
    first_table = write_jsonl(tmp_path / "a.jsonl", tabular_rows(60, seed=0))
    rows = tabular_rows(60, seed=2)
    for row in rows:  # another fit: three classes, another vocabulary
        row["y"] = ["red", "green", "blue"][int(row["id"]) % 3]
    second_table = write_jsonl(tmp_path / "b.jsonl", rows)
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMCORE_")}
    first = subprocess.Popen([sys.executable, "-m", "mmcore", *_fit_args(first_table, run, "--time-limit", "10m", "--max-epochs", "30")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        for _ in range(600):  # until the first fit has claimed the folder (its prepared table is written)
            if (run / "data.jsonl").exists() or first.poll() is not None:
                break
            time.sleep(0.2)
        second = subprocess.run([sys.executable, "-m", "mmcore", *_fit_args(second_table, run)], capture_output=True,
                                text=True, cwd=tmp_path, env=env, timeout=600)
    finally:
        _, first_err = first.communicate(timeout=900)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 2 and f"is in use by process {first.pid}" in second.stderr, second.stderr
    predictor = mmcore.Predictor.load(run)
    assert set(predictor.predict(str(first_table))) <= {"high", "low"}
    assert json.loads((run / "autofit.json").read_text())["plan"]["classes"] == ["high", "low"]


@pytest.mark.parametrize("name", ["data.jsonl", "autofit.json", "fit_summary.json"])
def test_overwrite_never_replaces_a_users_file_with_one_of_fits_names(tmp_path, capsys, name):
    """fit --overwrite replaced the user's data.jsonl, autofit.json, fit_summary.json."""
    folder = tmp_path / "project"
    folder.mkdir()
    mine = folder / name
    mine.write_text("the user's own\n")
    table = write_jsonl(folder / "table.jsonl", tabular_rows(40))
    assert main(_fit_args(table, folder, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert f"{name} is a file of yours" in err and len(err.strip().splitlines()) == 1
    assert mine.read_text() == "the user's own\n"
    assert sorted(p.name for p in folder.iterdir()) == sorted([name, "table.jsonl"]), "nothing written"


def test_the_training_table_itself_is_never_replaced(tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    table = write_jsonl(folder / "data.jsonl", tabular_rows(40))
    before = table.read_bytes()
    assert main(_fit_args(table, folder, "--overwrite")) == 2  # a folder of the user's: data.jsonl is theirs
    assert "data.jsonl" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["data.jsonl"]
    run = tmp_path / "run"
    assert main(_fit_args(table, run)) == 0
    capsys.readouterr()
    assert table.read_bytes() == before
    again = run / "data.jsonl"  # a fit of the run's own prepared table into that same run
    assert main(["fit", str(again), "--target", "y", "--time-limit", "10m", "--preset", "fast", "--run-dir", str(run)]) == 2
    assert "is the run directory's own data.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["autofit.json", "fit_summary.json", "data.jsonl"])
def test_a_link_in_place_of_one_of_fits_files_is_refused_and_its_target_untouched(tmp_path, capsys, name):
    """fit wrote autofit.json / fit_summary.json through links with a plain, non-atomic write."""
    run = tmp_path / "run"
    RunDir.create(run).release()  # an mmcore run, as an earlier fit leaves it
    victim = tmp_path / "loss.png"
    victim.write_bytes(b"the user's plot")
    (run / name).symlink_to(victim)
    table = write_jsonl(tmp_path / "t.jsonl", tabular_rows(40))
    assert main(_fit_args(table, run)) == 2
    assert f"{name} is a symbolic link" in capsys.readouterr().err
    assert victim.read_bytes() == b"the user's plot" and (run / name).is_symlink()


def _outside(tmp_path: Path) -> Path:
    """A table whose text-file column names one file outside its folder (row 4)."""
    proj = tmp_path / "proj"
    (proj / "notes").mkdir(parents=True)
    (tmp_path / "private.txt").write_text("outside the table's folder")
    rows = tabular_rows(40)
    for i, row in enumerate(rows):
        (proj / "notes" / f"{i}.txt").write_text(f"note {i % 5} of the table")
        row["note"] = "../private.txt" if i == 3 else f"notes/{i}.txt"
    return write_jsonl(proj / "t.jsonl", rows)


def test_fit_refuses_paths_outside_the_tables_folder_unless_allowed(tmp_path, capsys):
    """fit followed ../ out of the table's folder and copied the text into the run (train refuses)."""
    table = _outside(tmp_path)
    run = tmp_path / "run"
    assert main(_fit_args(table, run)) == 2
    err = capsys.readouterr().err
    assert "column 'note': row 4: path '../private.txt' escapes the table's folder" in err and "--allow-outside-paths" in err
    assert not run.exists()
    assert main(_fit_args(table, run, "--allow-outside-paths")) == 0
    capsys.readouterr()
    assert "outside the table's folder" in (run / "data.jsonl").read_text()
