"""``mmcore fit`` checks every table it is given -- the training table, ``--val`` and ``--test`` -- before the
run folder is claimed (issue 20): a bad --val/--test table (a missing column, a file that does not exist
under ``--strict``, a target value the task cannot use) is exit 2 with one line naming file, row and column,
and the run folder does not exist afterwards (or, an existing folder of the user's, is untouched)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from autofit_helpers import write_csv, write_png

from mmcore.cli import main


def _rows(n: int, seed: int, regression: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = float(rng.standard_normal())
        out.append({"a": round(a, 3), "photo": f"img/{i % 3}.png", "y": round(2 * a, 3) if regression else "ab"[a > 0]})
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for k in range(3):
        write_png(tmp_path / "img" / f"{k}.png", k)
    write_csv(tmp_path / "train.csv", _rows(30, 0))
    write_csv(tmp_path / "train_r.csv", _rows(30, 0, regression=True))
    return tmp_path


def _bad_tables(folder: Path) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """name -> (training table, bad --val table, what the one line must name)"""
    renamed = [{("b" if k == "a" else k): v for k, v in r.items()} for r in _rows(8, 1)]
    gone = _rows(8, 1)
    gone[4]["photo"] = "img/nope.png"
    wrong = _rows(8, 1, regression=True)
    wrong[2]["y"] = "lots"
    return {
        "missing column": ("train.csv", str(write_csv(folder / "v_col.csv", renamed)), ("v_col.csv", "no column 'a'", "'b'")),
        "missing file": ("train.csv", str(write_csv(folder / "v_file.csv", gone)), ("v_file.csv", "row 5", "'photo'", "nope.png")),
        "wrong target": ("train_r.csv", str(write_csv(folder / "v_y.csv", wrong)), ("v_y.csv", "row 3", "'y'", "'lots'")),
    }


def _listing(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("bad", ["missing column", "missing file", "wrong target"])
@pytest.mark.parametrize("option", ["--val", "--test"])
def test_a_bad_val_or_test_table_is_refused_before_the_run_folder_is_claimed(folder, capsys, bad, option):
    train, table, needles = _bad_tables(folder)[bad]
    run = folder / "run"
    args = ["fit", str(folder / train), "--target", "y", option, table, "--strict", "--time-limit", "10m",
            "--max-epochs", "1", "--preset", "fast", "--run-dir", str(run)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(n in err for n in needles), err
    assert not run.exists() and not os.path.lexists(run)
    # a folder of the user's given with --overwrite: untouched, not even marked as a run
    mine = folder / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine", encoding="utf-8")
    before = _listing(mine)
    assert main([*args[:-1], str(mine), "--overwrite"]) == 2
    capsys.readouterr()
    assert _listing(mine) == before
