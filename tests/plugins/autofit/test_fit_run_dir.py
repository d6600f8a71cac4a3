"""`mmcore fit` and its run directory (issue 28, issue 20.10): the lock held for the whole fit, a
user's files never replaced under --overwrite (the training table included), links refused, the
path rule of `mmcore train` with the same opt-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from autofit_helpers import tabular_rows, write_jsonl

import mmcore
from mmcore.cli import main
from mmcore.engine.rundir import RunDir, RunDirError


def _fit_args(table: Path, run: Path, *extra: str) -> list[str]:
    return ["fit", str(table), "--target", "y", "--time-limit", "10m", "--max-epochs", "2", "--preset", "fast", "--run-dir", str(run), *extra]


# Another process's claim on a run folder, as RunDir.lock takes it (fcntl.flock on RunDir.LOCK), without
# importing mmcore (whose engine brings PyTorch: seconds per process on a busy machine).
_LOCK_PROBE = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
               "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n"
               "    print('is in use by process', os.pread(fd, 32, 0).decode().strip())\n    sys.exit(2)\n")


@pytest.mark.slow  # a second fit in a fresh process (the lock is per process)
def test_two_fits_on_one_run_folder_a_moment_apart_the_second_is_refused(tmp_path, monkeypatch):
    """The lock was released before the probe: both fits wrote, and Predictor.load(...).predict raised IndexError.
    The first fit runs here; while it probes, a second `mmcore fit` on the folder (another process) is refused,
    and while it trains, so is any other process's claim on it; the run is the first fit's, whole."""
    from mmcore_plugins.autofit import fitting

    first_table = write_jsonl(tmp_path / "a.jsonl", tabular_rows(60, seed=0))
    rows = tabular_rows(60, seed=2)
    for row in rows:  # another fit: three classes, another vocabulary
        row["y"] = ["red", "green", "blue"][int(row["id"]) % 3]
    second_table = write_jsonl(tmp_path / "b.jsonl", rows)
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMCORE_")}
    refused: list[str] = []
    measure = fitting.measure_costs

    def probe_then_second_fit(*args, **kwargs):  # the moment the lock used to be released
        if not refused:
            second = subprocess.run([sys.executable, "-m", "mmcore", *_fit_args(second_table, run)], capture_output=True,
                                    text=True, cwd=tmp_path, env=env, timeout=600)
            refused.append(f"{second.returncode} {second.stderr}")
        return measure(*args, **kwargs)

    class Claim:  # at each epoch's end, another process's claim on the folder
        @mmcore.hookimpl
        def mmcore_epoch_end(self, trainer, epoch, metrics):
            probe = subprocess.run([sys.executable, "-S", "-c", _LOCK_PROBE, str(run / RunDir.LOCK)], capture_output=True,
                                   text=True, env=env)
            refused.append(f"{probe.returncode} {probe.stdout}")

    monkeypatch.setattr(fitting, "measure_costs", probe_then_second_fit)
    with mmcore.register_plugin(Claim(), name="claim-at-epoch-end"):
        mmcore.fit(str(first_table), target="y", time_limit="10m", max_epochs=2, preset="fast", run_dir=run, verbose=False)
    assert len(refused) == 3, refused  # the second fit at the probe, a claim after each of the 2 epochs
    assert all(r.startswith("2 ") and f"is in use by process {os.getpid()}" in r for r in refused), refused
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


def test_a_users_folder_is_refused_naming_run_dir_and_fits_own_files(tmp_path, capsys):
    """`mmcore fit --run-dir mine` into a folder of the user's: the message names --run-dir (not the config key
    trainer.run_dir, which fit users never write) and, among the files --overwrite writes, fit's own."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's own\n")
    table = write_jsonl(tmp_path / "table.jsonl", tabular_rows(40))
    assert main(_fit_args(table, folder)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "trainer.run_dir" not in err, err
    assert "choose another --run-dir" in err and "autofit.json" in err and "fit_summary.json" in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    with RunDir.named_by("run_dir"):  # (the option is the caller's to name; outside, trainer.run_dir)
        with pytest.raises(RunDirError, match="choose another run_dir$"):
            RunDir.check(folder)
    with pytest.raises(RunDirError, match="choose another trainer.run_dir$"):
        RunDir.check(folder)
    # the Python API names its own argument; under the command, the command's name is kept
    with pytest.raises(RunDirError, match="choose another run_dir$"):
        mmcore.fit(str(table), target="y", run_dir=folder, time_limit="10m", verbose=False)
    with RunDir.named_by("--run-dir"), RunDir.named_by("run_dir", unless_named=True):
        with pytest.raises(RunDirError, match="choose another --run-dir$"):
            RunDir.check(folder)
