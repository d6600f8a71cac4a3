"""Run directories: a user's files are never touched, one writer at a time, kills at the rename
points leave a loadable checkpoint, temporaries are cleaned, files follow the umask, a full disk
keeps the previous checkpoint, relative paths give the same run from any folder."""

from __future__ import annotations

import copy
import csv
import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import mmcore
from mmcore.cli import main
from mmcore.engine.checkpoint import CheckpointWriteError, load_model, load_training_state, save_checkpoint
from mmcore.engine.rundir import RunDir, RunDirError
from mmcore.engine.trainer import Trainer


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every name under ``folder`` with its kind, modification time and contents."""
    out = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        out[str(path.relative_to(folder))] = (path.is_dir(), info.st_mtime_ns, None if path.is_dir() else path.read_bytes())
    return out


def users_folder(root: Path) -> Path:
    """A folder of the user's holding names mmcore also uses."""
    folder = root / "mine"
    for sub in ("best", "last", "data", "plots"):
        (folder / sub).mkdir(parents=True)
    (folder / "best" / "thesis.tex").write_text("chapter 1")
    (folder / "last" / "model.safetensors").write_bytes(b"my own file")
    (folder / "config.yaml").write_text("my: settings\n")
    (folder / "notes.txt").write_text("do not lose me")
    (folder / "data" / "rows.csv").write_text("a,b\n1,2\n")
    (folder / "plots" / "loss.png").write_bytes(b"my plot")
    return folder


def write_config(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


# ------------------------------------------------------------------------------ a user's files
def test_an_existing_folder_of_the_users_is_refused_and_left_untouched(wine_config, tmp_path, capsys):
    folder = users_folder(tmp_path)
    before = snapshot(folder)
    wine_config["trainer"]["run_dir"] = str(folder)
    with pytest.raises(RunDirError, match=r"mine' exists, is not empty and is not an mmcore run .*pass --overwrite"):
        Trainer(wine_config)
    assert main(["train", write_config(tmp_path / "c.yaml", wine_config)]) == 2
    err = capsys.readouterr().err
    assert "is not an mmcore run" in err and str(folder) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert snapshot(folder) == before


def test_overwrite_writes_only_mmcores_files_and_refuses_a_users_checkpoint_folder(wine_config, tmp_path):
    folder = users_folder(tmp_path)
    wine_config["trainer"].update(run_dir=str(folder), epochs=1, plots=True)
    with pytest.raises(RunDirError, match=r"best/ holds files mmcore did not write \(thesis.tex\)"):
        Trainer(wine_config, overwrite=True)
    (folder / "best" / "thesis.tex").rename(folder / "thesis.tex")
    kept = {name: value for name, value in snapshot(folder).items()
            if name in ("notes.txt", "thesis.tex", "data", "data/rows.csv")}
    report = Trainer(wine_config, overwrite=True).fit()
    assert report["status"] == "completed"
    after = snapshot(folder)
    assert {name: after[name] for name in kept} == kept, "the user's other files are untouched"
    assert (folder / RunDir.MARKER).is_file() and load_model(folder / "best")[0] is not None
    assert (folder / "plots" / "loss.png").read_bytes()[:4] == b"\x89PNG"  # mmcore's own name: replaced


@pytest.mark.parametrize("path", ["", "  ", "/", "~"])
def test_empty_root_and_home_paths_are_refused(path, wine_config):
    with pytest.raises(RunDirError, match="empty|root of the file system|home folder"):
        RunDir.check(path, overwrite=True)
    wine_config["trainer"]["run_dir"] = path
    with pytest.raises(RunDirError):
        Trainer(wine_config)


def test_the_current_folder_is_refused_when_it_holds_files(wine_config, tmp_path, monkeypatch, capsys):
    here = tmp_path / "work"
    (here / "best").mkdir(parents=True)
    (here / "best" / "keep.txt").write_text("mine")
    monkeypatch.chdir(here)
    before = snapshot(here)
    for path in (".", str(here)):
        with pytest.raises(RunDirError, match="is the current folder"):
            RunDir.check(path, overwrite=True)
    config = write_config(tmp_path / "c.yaml", wine_config)
    assert main(["train", config, "trainer.run_dir="]) == 2
    assert main(["train", config, "trainer.run_dir=.", "--overwrite"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert snapshot(here) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert RunDir.check(".").path == Path(".")  # an empty current folder is fine


def test_a_run_is_marked_and_a_new_run_may_reuse_it(wine_config, tmp_path):
    wine_config["trainer"]["epochs"] = 1
    Trainer(wine_config).fit()
    run = tmp_path / "run"
    assert json.loads((run / RunDir.MARKER).read_text())["mmcore"] == mmcore.__version__
    assert Trainer(wine_config).fit()["status"] == "completed", "rerunning into one's own run directory is allowed"


# ------------------------------------------------------------------------------ resume
def test_resume_without_config_yaml_is_refused(wine_config, tmp_path, capsys):
    wine_config["trainer"]["epochs"] = 1
    Trainer(wine_config).fit()
    run = tmp_path / "run"
    (run / "config.yaml").unlink()
    with pytest.raises(RunDirError, match=r"config.yaml is missing, so the config cannot be checked"):
        Trainer(wine_config, resume=run)
    assert main(["train", write_config(tmp_path / "c.yaml", wine_config), "--resume", str(run)]) == 2
    assert "config.yaml is missing" in capsys.readouterr().err


def test_a_run_written_before_the_marker_existed_resumes_and_gets_marked(wine_config, tmp_path):
    wine_config["trainer"]["epochs"] = 2
    with mmcore.register_plugin(_StopAfter(1), name="stop"), pytest.raises(KeyboardInterrupt):
        Trainer(wine_config).fit()
    run = tmp_path / "run"
    (run / RunDir.MARKER).unlink()
    assert Trainer(wine_config, resume=run).fit()["epochs_run"] == 2
    assert (run / RunDir.MARKER).is_file()


class _StopAfter:
    """Interrupts training at the end of an epoch, as a killed process would."""

    def __init__(self, epoch):
        self.epoch = epoch

    @mmcore.hookimpl
    def mmcore_epoch_end(self, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


# ------------------------------------------------------------------------------ one writer
def test_a_second_process_is_refused_naming_the_first_ones_pid(wine_config, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom mmcore.engine.rundir import RunDir\nrun = RunDir.create(sys.argv[1])\n"
                               "print('locked', flush=True)\nsys.stdin.read()\n", str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        wine_config["trainer"]["epochs"] = 1
        with pytest.raises(RunDirError, match=rf"run directory .*run is in use by process {holder.pid}\b"):
            Trainer(wine_config).fit()
        assert main(["train", write_config(tmp_path / "c.yaml", wine_config)]) == 2
        assert f"in use by process {holder.pid}" in capsys.readouterr().err
        assert not (run / "last").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert Trainer(wine_config).fit()["status"] == "completed", "the lock goes with the process that held it"
    assert (run / RunDir.LOCK).read_text() == "", "a released lock names no process"


def _marked_run(root: Path) -> Path:
    """An (empty) mmcore run directory: created, marked, released."""
    RunDir.create(root / "run").release()
    return root / "run"


@pytest.mark.parametrize("planted", ["link", "dangling link", "hard link", "fifo"])
@pytest.mark.parametrize("resume", [False, True])
def test_a_lock_file_that_is_not_mmcores_own_is_refused_and_its_target_untouched(wine_config, tmp_path, capsys,
                                                                                  planted, resume):
    """Issue 28.2: a ``.mmcore-lock`` link made train/--resume truncate its target to 0 bytes."""
    if resume:
        wine_config["trainer"]["epochs"] = 1
        Trainer(wine_config).fit()
        run = tmp_path / "run"
    else:
        run = _marked_run(tmp_path)
    target = tmp_path / "thesis.tex"
    target.write_text("five years of work")
    lock = run / RunDir.LOCK
    lock.unlink(missing_ok=True)
    if planted == "link":
        lock.symlink_to(target)
    elif planted == "dangling link":
        lock.symlink_to(tmp_path / "created-by-mmcore.txt")
    elif planted == "hard link":
        os.link(target, lock)
    else:
        os.mkfifo(lock)
    with pytest.raises(RunDirError, match=r"\.mmcore-lock is (a symbolic link|a file with 2 names|not a regular file)"):
        RunDir.create(run, resume=resume)
    args = ["train", write_config(tmp_path / "c.yaml", wine_config)] + (["--resume", str(run)] if resume else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert ".mmcore-lock" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert target.read_text() == "five years of work"
    assert not (tmp_path / "created-by-mmcore.txt").exists()


@pytest.mark.parametrize("name", [RunDir.PLOTS, RunDir.TENSORBOARD, RunDir.ROBUSTNESS, RunDir.BEST, RunDir.LAST,
                                  RunDir.CONFIG, RunDir.METRICS, RunDir.REPORT])
def test_a_link_in_place_of_one_of_mmcores_names_is_refused_before_any_work(wine_config, tmp_path, name):
    """Issue 28.3: a linked plots/ (tensorboard/, robustness/, ...) received mmcore's files."""
    run = _marked_run(tmp_path)
    users = tmp_path / "users"
    users.mkdir()
    (users / "loss.png").write_bytes(b"my plot")
    (run / name).symlink_to(users if name in RunDir.FOLDERS else users / "loss.png")
    wine_config["trainer"]["plots"] = True
    with pytest.raises(RunDirError, match=rf"run/{name} is a symbolic link .*never through a link"):
        Trainer(wine_config)
    with pytest.raises(RunDirError, match="symbolic link"):
        RunDir.create(run, overwrite=True)
    assert [p.name for p in users.iterdir()] == ["loss.png"] and (users / "loss.png").read_bytes() == b"my plot"


def test_eval_robustness_never_writes_through_a_linked_robustness_folder(wine_config, tmp_path, capsys):
    """``mmcore eval --robustness`` writes into a run it does not create: the write itself refuses the link."""
    wine_config["trainer"]["epochs"] = 1
    Trainer(wine_config).fit()
    run, users = tmp_path / "run", tmp_path / "users"
    users.mkdir()
    (users / "test.json").write_text("my results")
    (run / RunDir.ROBUSTNESS).symlink_to(users)
    assert main(["eval", str(run), "--robustness", "--perturbations", "feature_noise"]) == 2
    err = capsys.readouterr().err
    assert "robustness is a symbolic link" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in users.iterdir()] == ["test.json"] and (users / "test.json").read_text() == "my results"


def test_hold_keeps_the_lock_for_a_trainer_inside_and_after_it(wine_config, tmp_path):
    """Issue 28.7: a command preparing a run and then training it holds the lock throughout."""
    run = tmp_path / "run"
    probe = [sys.executable, "-c", "import sys\nfrom mmcore.engine.rundir import RunDir, RunDirError\n"
             "try:\n    RunDir.create(sys.argv[1]).release()\nexcept RunDirError as e:\n    print(e)\n", str(run)]
    wine_config["trainer"]["epochs"] = 1
    with RunDir.hold(run, files=("data.jsonl",)) as held:
        assert held.locked
        report = Trainer(wine_config).fit()  # shares the lock instead of failing on it
        assert report["status"] == "completed" and held.locked, "the trainer leaves the lock to the holder"
        refused = subprocess.run(probe, capture_output=True, text=True, timeout=120).stdout
        assert f"in use by process {os.getpid()}" in refused
    assert not held.locked
    assert subprocess.run(probe, capture_output=True, text=True, timeout=120).stdout == ""


def test_overwrite_refuses_a_users_file_with_a_name_the_command_writes(tmp_path):
    """Issue 28.4: ``fit --overwrite`` replaced a user's data.jsonl (even the training table itself)."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "data.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(RunDirError, match=r"project/data.jsonl is a file of yours; .*never replaces a file it did not write"):
        RunDir.create(folder, overwrite=True, files=("data.jsonl", "autofit.json"))
    assert (folder / "data.jsonl").read_text() == '{"x": 1}\n' and sorted(p.name for p in folder.iterdir()) == ["data.jsonl"]
    RunDir.create(folder, overwrite=True, files=("autofit.json",)).release()  # names not there: allowed


# ------------------------------------------------------------------------------ kills and temporaries
_KILLER = textwrap.dedent("""
    # One interpreter (torch imported once) forks a child per kill point: each child trains its own
    # run and is killed -9 at that point of its second save of last/; the parent prints the exit codes.
    import json, os, signal, sys, yaml
    from mmcore.engine.trainer import Trainer

    def train_and_kill(config, point):
        real, swaps = os.replace, []

        def replace(src, dst):
            src, dst = str(src), str(dst)
            into_last = os.path.basename(dst) == "last" and os.path.basename(src).startswith(".last.") and src.endswith(".tmp")
            if len(swaps) == 1:  # the second epoch's save of last/
                if point == "first" and dst.endswith(".last.old"):
                    os.kill(os.getpid(), signal.SIGKILL)  # the new checkpoint is written, the old one not yet moved aside
                if point == "second" and into_last:
                    os.kill(os.getpid(), signal.SIGKILL)  # between the two renames: only .last.old is complete
            real(src, dst)
            if into_last:
                swaps.append(dst)
                if len(swaps) == 2 and point == "after":
                    os.kill(os.getpid(), signal.SIGKILL)  # after the swap, before .last.old is removed

        os.replace = replace
        Trainer(config).fit()

    config, codes = yaml.safe_load(open(sys.argv[1])), {}
    for point in sys.argv[2:]:
        pid = os.fork()
        if pid == 0:
            try:
                config["trainer"]["run_dir"] = os.path.join(config["trainer"]["run_dir"], point)
                train_and_kill(config, point)
            finally:
                os._exit(0)  # not killed: the test fails on the exit code
        codes[point] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    print(json.dumps(codes))
""")
_KILL_POINTS = ("first", "second", "after")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The report of a 3-epoch run that was never killed (the kill tests' reference)."""
    config = {
        "data": {"name": "sklearn_tabular", "dataset": "wine", "missing_rate": 0.2, "seed": 0},
        "model": {"encoders": {"first": {"name": "tabular_mlp", "num_features": 6, "dim": 8, "dropout": 0.1},
                               "second": {"name": "tabular_mlp", "num_features": 7, "dim": 8, "dropout": 0.1}},
                  "fusion": {"name": "concat", "dim": 8, "dropout": 0.1}, "head": {"name": "classification", "num_classes": 3}},
        "trainer": {"epochs": 3, "batch_size": 32, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False,
                    "loggers": ["csv"], "modality_dropout": 0.2, "run_dir": str(tmp_path_factory.mktemp("straight") / "run")},
    }
    return config, Trainer(copy.deepcopy(config)).fit()


@pytest.fixture(scope="module")
def killed(uninterrupted, tmp_path_factory):
    """``{point: run folder}``: one subprocess killed -9 at each rename point (one interpreter, a fork per point)."""
    folder = tmp_path_factory.mktemp("killed")
    config = copy.deepcopy(uninterrupted[0])
    config["trainer"]["run_dir"] = str(folder)
    result = subprocess.run([sys.executable, "-c", _KILLER, write_config(folder / "c.yaml", config), *_KILL_POINTS],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == dict.fromkeys(_KILL_POINTS, -9), result.stderr[-2000:]
    return {point: folder / point for point in _KILL_POINTS}


@pytest.mark.parametrize("point", _KILL_POINTS)
def test_a_kill_at_a_rename_point_leaves_a_checkpoint_that_loads_and_resumes(point, uninterrupted, killed):
    wine_config, expected = copy.deepcopy(uninterrupted)
    run = killed[point]
    wine_config["trainer"]["run_dir"] = str(run)
    model, meta = load_model(run / "last")  # the previous or the new checkpoint, whichever is complete
    assert meta["epoch"] in (1, 2) and load_training_state(run / "last")["epoch"] == meta["epoch"]
    if point != "after":
        assert any(p.name.endswith(".tmp") for p in run.iterdir()), "the kill left a temporary folder"

    report = Trainer(wine_config, resume=run).fit()
    leftovers = [p.name for p in run.iterdir() if p.name.endswith((".tmp", ".old"))]
    assert leftovers == [], "resuming cleans what the kill left"
    assert report["epochs_run"] == 3
    assert [round(r["train/loss"], 5) for r in report["history"]] == [round(r["train/loss"], 5) for r in expected["history"]]


def test_stale_temporaries_are_removed_when_the_run_is_next_opened(wine_config, tmp_path):
    wine_config["trainer"]["epochs"] = 1
    Trainer(wine_config).fit()
    run = tmp_path / "run"
    (run / ".last.abcd1234.tmp").mkdir()
    (run / ".last.abcd1234.tmp" / "model.safetensors").write_bytes(b"half")
    (run / ".metrics.csv.k2j4h5g6.tmp").write_text("half")
    (run / "plots").mkdir(exist_ok=True)
    (run / "plots" / ".loss.png.zz99yy88.tmp").write_bytes(b"half")
    (run / ".notes.abcd1234.tmp").write_text("the user's")  # not a name mmcore writes: kept
    with RunDir.create(run, resume=True) as opened:
        assert opened.locked
    names = sorted(p.name for p in run.iterdir() if p.name.startswith("."))
    assert names == [RunDir.LOCK, RunDir.MARKER, ".notes.abcd1234.tmp"]
    assert list((run / "plots").iterdir()) == []


# ------------------------------------------------------------------------------ permissions, disk full
def test_every_file_and_folder_follows_the_umask(wine_config, tmp_path):
    old = os.umask(0o027)
    try:
        wine_config["trainer"].update(epochs=1, plots=True)
        Trainer(wine_config).fit()
    finally:
        os.umask(old)
    run = tmp_path / "run"
    files = [p for p in run.rglob("*") if p.is_file() and p.name != RunDir.LOCK]
    assert {p.relative_to(run).as_posix() for p in files} >= {"best/model.safetensors", "last/state.pt", "report.json"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~0o027, path
    for path in (run / "best", run / "last"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~0o027, path


def _full_disk_torch_save(obj, fh, *args, **kwargs):
    fh.write(b"PK\x03\x04 partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_previous_checkpoint_with_one_line(wine_config, tmp_path, monkeypatch, capsys):
    wine_config["trainer"]["epochs"] = 1
    trainer = Trainer(wine_config)
    trainer.fit()
    run = tmp_path / "run"
    before = snapshot(run / "last")
    monkeypatch.setattr(torch, "save", _full_disk_torch_save)
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(trainer.model, run / "last", training_state={"epoch": 99})
    assert str(info.value) == "no space left on device writing last/state.pt; the previous checkpoint is kept"
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert snapshot(run / "last") == before and not [p for p in run.iterdir() if p.name.endswith(".tmp")]

    wine_config["trainer"].update(epochs=2, run_dir=str(tmp_path / "full"))
    assert main(["train", write_config(tmp_path / "c.yaml", wine_config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("no space left on device writing last/state.pt; the previous checkpoint is kept")
    assert len(err.splitlines()) == 1


def test_a_quota_error_writing_a_file_keeps_the_previous_file(tmp_path):
    from mmcore.engine.checkpoint import atomic_write

    target = tmp_path / "metrics.csv"
    target.write_text("epoch\n1\n")

    def write(path):
        path.write_text("epoch\n1\n2")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    with pytest.raises(CheckpointWriteError, match=r"^disk quota exceeded writing metrics.csv; the previous metrics.csv is kept$"):
        atomic_write(target, write)
    assert target.read_text() == "epoch\n1\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


# ------------------------------------------------------------------------------ relative paths
class _CsvRows:
    """A dataset reading numbers from the CSV file ``path`` (its last column is the class)."""

    @mmcore.hookimpl
    def mmcore_register(self, registry):
        from mmcore.data import SampleDataset

        def csv_rows(split: str, path: str):
            with open(path, newline="") as fh:
                rows = [[float(v) for v in row] for row in csv.reader(fh)]
            chosen = rows if split == "train" else rows[: len(rows) // 2]
            return SampleDataset([{"inputs": {"x": row[:-1]}, "target": int(row[-1])} for row in chosen])

        registry.add_dataset("csv_rows_for_test", csv_rows)


def test_eval_gives_the_same_metrics_from_any_working_folder(tmp_path, monkeypatch, capsys):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data").mkdir(parents=True)
    elsewhere.mkdir()
    generator = torch.Generator().manual_seed(0)
    with open(project / "data" / "rows.csv", "w", newline="") as fh:
        for _ in range(60):
            x = torch.randn(3, generator=generator)
            csv.writer(fh).writerow([*(round(float(v), 4) for v in x), int(x.sum() > 0)])
    # A decoy with the same relative name elsewhere: read only if the path were resolved late.
    (elsewhere / "data").mkdir()
    (elsewhere / "data" / "rows.csv").write_text("5,5,5,0\n" * 10 + "-5,-5,-5,1\n" * 10)
    config = {
        "data": {"name": "csv_rows_for_test", "path": "data/rows.csv"},
        "model": {"encoders": {"x": {"name": "tabular_mlp", "num_features": 3, "dim": 8}},
                  "head": {"name": "classification", "num_classes": 2}},
        "trainer": {"epochs": 2, "batch_size": 16, "progress": False, "plots": False, "tensorboard": False, "run_dir": "runs/r"},
    }
    with mmcore.register_plugin(_CsvRows(), name="csv_rows_for_test"):
        monkeypatch.chdir(project)
        assert main(["train", write_config(project / "c.yaml", config)]) == 0
        saved = yaml.safe_load((project / "runs" / "r" / "config.yaml").read_text())
        assert saved["data"]["path"] == str(project / "data" / "rows.csv"), "path options are stored absolute"
        capsys.readouterr()
        assert main(["eval", "runs/r"]) == 0
        here = json.loads(capsys.readouterr().out)
        monkeypatch.chdir(elsewhere)
        assert main(["eval", str(project / "runs" / "r")]) == 0
        there = json.loads(capsys.readouterr().out)
    assert here == there and here["samples"] == 30


def test_a_folder_another_process_is_claiming_right_now_is_not_a_users_folder(tmp_path):
    """Under torchrun, rank 0 creates, locks and marks the run while the other ranks still check it:
    the lock and the marker's temporary are mmcore's own claim in progress, not a user's files (a
    rank once refused the run naming '..mmcore-run.2qo4crks.tmp, .mmcore-lock'). A user's file
    beside them is still refused."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / RunDir.LOCK).touch()
    (folder / f".{RunDir.MARKER}.2qo4crks.tmp").touch()
    assert RunDir.check(folder).path == folder
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="is not an mmcore run"):
        RunDir.check(folder)


def test_a_start_that_fails_on_its_data_leaves_no_empty_run_folder(tmp_path, capsys):
    """Bad data is found after the run folder is created, marked and locked: the folder this start made, holding
    only those two files, is removed; one that existed before, or holds anything else, is left as it was."""
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "ok.png")
    (tmp_path / "t.csv").write_text("image,label\nok.png,a\nok.png,b\nmissing.png,a\nok.png,b\n")
    config = {"data": {"name": "manifest", "path": str(tmp_path / "t.csv"), "columns": {"image": "image"},
                       "target": "label", "path_columns": ["image"]},
              "model": {"encoders": {"image": {"name": "image_cnn", "image_size": 8, "width": 4, "dim": 8}},
                        "fusion": {"name": "concat", "dim": 8}, "head": {"name": "classification"}},
              "trainer": {"epochs": 1, "batch_size": 2, "run_dir": str(tmp_path / "runs" / "new"), "progress": False,
                          "plots": False, "tensorboard": False}}
    assert main(["train", write_config(tmp_path / "c.yaml", config)]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "new").exists() and (tmp_path / "runs").is_dir()  # the parent it made stays
    (tmp_path / "runs" / "yours").mkdir()  # an empty folder of the user's, named as the run: left, marked as before
    config["trainer"]["run_dir"] = str(tmp_path / "runs" / "yours")
    assert main(["train", write_config(tmp_path / "c.yaml", config)]) == 2
    assert (tmp_path / "runs" / "yours").is_dir()
