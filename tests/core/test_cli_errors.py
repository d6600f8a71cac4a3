"""The CLI's error contract: every error a user can fix -> exit 2, one line (or a short block) on
stderr, no traceback, nothing trained or written; --debug shows the traceback; a bug -> exit 1 with
a short report; Ctrl-C -> 130."""

from __future__ import annotations

import copy
import errno
import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

import mmcore
from mmcore.cli import main
from mmcore.engine import trainer as trainer_module

WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "seed": 0,
             "modalities": {"first": ["alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols"]}},
    "model": {
        "encoders": {"first": {"name": "tabular_mlp", "num_features": 6, "dim": 8}},
        "head": {"name": "classification", "num_classes": 3},
    },
    "trainer": {"epochs": 1, "batch_size": 32, "progress": False, "plots": False, "tensorboard": False},
}


def wine_text(run_dir) -> str:
    config = copy.deepcopy(WINE)
    config["trainer"]["run_dir"] = str(run_dir)
    return yaml.safe_dump(config, sort_keys=False)


def billion_laughs() -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def write_png(path, value: int) -> None:
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8), mode="L").save(path)


def image_manifest(tmp, run) -> list[str]:
    """A manifest of 12 real PNGs whose row 5 names a folder instead of an image."""
    rows = ["image,f1,label"]
    for i in range(12):
        name = f"img{i}.png"
        if i == 5:
            (tmp / "a_folder.png").mkdir()
            name = "a_folder.png"
        else:
            write_png(tmp / name, 20 * i)
        rows.append(f"{name},{i / 10},{i % 2}")
    (tmp / "m.csv").write_text("\n".join(rows) + "\n")
    config = {
        "data": {"name": "manifest", "path": str(tmp / "m.csv"), "columns": {"image": "image", "num": ["f1"]},
                 "path_columns": ["image"], "target": "label", "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"encoders": {"image": {"name": "image_cnn", "image_size": 8, "width": 4, "dim": 8},
                               "num": {"name": "tabular_mlp", "num_features": 1, "dim": 8}},
                  "fusion": {"name": "concat", "dim": 8}, "head": {"name": "classification", "num_classes": 2}},
        "trainer": {**WINE["trainer"], "run_dir": str(run)},
    }
    (tmp / "c.yaml").write_text(yaml.safe_dump(config))
    return [str(tmp / "c.yaml")]


def _write(tmp, name, text):
    (tmp / name).write_text(text)
    return str(tmp / name)


# Each case: (id, build(tmp, run) -> argv after "train", words the one message must contain).
CASES = [
    ("bad yaml syntax", lambda t, r: [_write(t, "c.yaml", wine_text(r) + "model: [unclosed\n")],
     ["is not valid YAML (line"]),
    ("python tag in the file", lambda t, r: [_write(t, "c.yaml", wine_text(r) + "x: !!python/object/apply:os.system ['touch pwned']\n")],
     ["the tag !!python/object/apply:os.system is not allowed", f"line {len(wine_text('x').splitlines()) + 1}, column 4"]),
    ("python tag in an override", lambda t, r: [_write(t, "c.yaml", wine_text(r)),
                                                "trainer.run_dir=!!python/object/apply:os.system ['touch pwned']"],
     ["trainer.run_dir", "the tag !!python/object/apply:os.system is not allowed"]),
    ("billion laughs", lambda t, r: [_write(t, "c.yaml", wine_text(r) + billion_laughs())],
     ["aliases expand this document by more than 10000 nodes"]),
    ("duplicate key", lambda t, r: [_write(t, "c.yaml", wine_text(r) + "data: {name: sklearn_tabular}\n")],
     ["duplicate key 'data' (first given on line 1)"]),
    ("not utf-8", lambda t, r: [_write(t, "c.yaml", "") and str((t / "c.yaml").write_bytes(b"data: caf\xe9\n") and t / "c.yaml")],
     ["not UTF-8 text"]),
    ("unknown option", lambda t, r: [_write(t, "c.yaml", wine_text(r)), "trainer.epochz=2"],
     ["trainer.epochz: unknown trainer option; did you mean 'epochs'?"]),
    ("bad option type", lambda t, r: [_write(t, "c.yaml", wine_text(r)), "trainer.lr=fast"],
     ["trainer.lr: trainer option expects float, got str 'fast'"]),
    ("missing config file", lambda t, r: [str(t / "nope.yaml")], ["does not exist"]),
    ("config is a folder", lambda t, r: [str(t)], ["is not a file"]),
    ("config is a list", lambda t, r: [_write(t, "c.yaml", "- 1\n- 2\n")], ["must hold a mapping, got list"]),
    ("missing data file", lambda t, r: [_write(t, "c.yaml", wine_text(r)), "data.name=manifest",
                                        f"data.path={t / 'missing.csv'}", "data.columns={first: [a]}"],
     ["missing.csv"]),
    ("a folder given as an image", image_manifest, ["a_folder.png"]),
]


@pytest.mark.parametrize(("build", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_exits_2_with_one_message_before_any_work(tmp_path, monkeypatch, capsys, build, words):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    argv = ["train", *build(tmp_path, run)]
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and err.startswith("mmcore train: ")
    lines = err.strip().splitlines()
    assert len(lines) <= 25 and all(line.startswith("  ") for line in lines[1:]), err
    for word in words:
        assert word in err, err
    # nothing trained, nothing written, nothing executed
    assert not (run / "last").exists() and not (run / "best").exists() and not (run / "report.json").exists()
    assert not (tmp_path / "pwned").exists() and not list(tmp_path.glob("!!python*"))
    assert out == ""


def test_a_crafted_config_yaml_in_a_run_is_refused_by_resume_and_eval(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    config = _write(tmp_path, "c.yaml", wine_text(run))
    assert main(["train", config]) == 0
    (run / "config.yaml").write_text("data: !!python/object/apply:os.system ['touch pwned']\n")
    capsys.readouterr()
    for argv in (["train", config, "--resume", str(run)], ["eval", str(run)], ["predict", str(run), "first=[1, 2, 3, 4, 5, 6]"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"mmcore {argv[0]}: ") and "Traceback" not in err, err
        assert f"{run / 'config.yaml'}:1:7" in err and "!!python/object/apply:os.system is not allowed" in err, err
    assert not (tmp_path / "pwned").exists()


def test_debug_flag_and_variable_show_the_traceback(tmp_path, monkeypatch, capsys):
    config = _write(tmp_path, "c.yaml", wine_text(tmp_path / "run"))
    assert main(["train", config, "trainer.epochz=2", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err
    assert err.strip().splitlines()[-1].startswith("mmcore train: invalid configuration: trainer.epochz")
    monkeypatch.setenv("MMCORE_DEBUG", "1")
    assert main(["train", config, "trainer.epochz=2"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_an_internal_bug_exits_1_with_a_short_report(tmp_path, monkeypatch, capsys):
    def broken(self):
        raise KeyError("injected bug")

    monkeypatch.setattr(trainer_module.Trainer, "fit", broken)
    config = _write(tmp_path, "c.yaml", wine_text(tmp_path / "run"))
    assert main(["train", config]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0] == "mmcore train: internal error: KeyError: 'injected bug'"
    assert f"mmcore {mmcore.__version__}" in lines[1] and "torch " in lines[1] and "Python 3." in lines[1]
    assert "rerun with --debug for the traceback; please report" in lines[2]
    assert len(lines) == 3 and "Traceback" not in err
    assert main(["--debug", "train", config]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "injected bug" in err


@pytest.mark.parametrize(("exc", "code", "words"), [
    (KeyboardInterrupt(), 130, "mmcore train: interrupted (a training run continues with --resume RUN_DIR)"),
    (OSError(errno.ENOSPC, "No space left on device", "run/last/state.pt"), 2,
     "mmcore train: no space left on device writing 'run/last/state.pt'"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/x.csv"), 2, "mmcore train: '/data/x.csv': permission denied"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/images"), 2, "mmcore train: '/data/images': is a directory"),
    (json.JSONDecodeError("Expecting value", "{", 1), 2, "mmcore train: Expecting value: line 1 column 2 (char 1)"),
])
def test_interrupts_and_path_errors(tmp_path, monkeypatch, capsys, exc, code, words):
    def fail(self):
        raise exc

    monkeypatch.setattr(trainer_module.Trainer, "fit", fail)
    assert main(["train", _write(tmp_path, "c.yaml", wine_text(tmp_path / "run"))]) == code
    err = capsys.readouterr().err
    assert err.strip() == words and "Traceback" not in err


def test_value_errors_while_building_the_data_are_user_errors_elsewhere_bugs(tmp_path, capsys):
    class Plugin:
        @mmcore.hookimpl
        def mmcore_register(self, registry):
            registry.add_dataset("picky", picky)

    def picky(split: str, mode: str = "value"):
        """A dataset whose rows are wrong."""
        if mode == "value":
            raise ValueError("rows.csv: row 3, column 'label': expected a class name, got ''")
        raise RuntimeError("a bug in the dataset plugin")

    config = _write(tmp_path, "c.yaml", wine_text(tmp_path / "run"))
    with mmcore.register_plugin(Plugin(), name="picky"):
        assert main(["train", config, "data={name: picky}"]) == 2
        assert capsys.readouterr().err.strip() == "mmcore train: rows.csv: row 3, column 'label': expected a class name, got ''"
        assert main(["train", config, "data={name: picky, mode: bug}"]) == 1
        err = capsys.readouterr().err
        assert "internal error: RuntimeError: a bug in the dataset plugin" in err
    assert not (tmp_path / "run" / "last").exists()


def test_eval_of_a_folder_that_is_not_a_run_and_unknown_commands(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmcore eval: ") and "is not a run directory" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["no-such-command"]) == 2
    assert main(["train"]) == 2  # argparse: the config is required
    assert "Traceback" not in capsys.readouterr().err


def test_the_exponent_float_trains_from_file_and_override(tmp_path, capsys):
    text = wine_text(tmp_path / "run").replace("epochs: 1", "epochs: 1\n  lr: 1e-3\n  lr_multipliers: {head: 2e0}")
    config = _write(tmp_path, "c.yaml", text)
    assert main(["train", config, "trainer.weight_decay=1E-2"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["trainer"]["lr"] == 1e-3 and saved["trainer"]["weight_decay"] == 0.01
    assert saved["trainer"]["lr_multipliers"] == {"head": 2.0}
    assert os.path.isfile(tmp_path / "run" / "report.json")


@pytest.mark.parametrize("options, option", [(["--batch-size", "0"], "--batch-size"), (["--batch-size", "-3"], "--batch-size"),
                                             (["--robustness", "--perturbations", ","], "--perturbations")])
def test_eval_option_errors_exit_2_naming_the_option(tmp_path, capsys, options, option):
    """Issue 28: option errors exited 1 as internal errors (ValueError: batch_size must be a positive int)."""
    (tmp_path / "c.yaml").write_text(wine_text(tmp_path / "run"))
    assert main(["train", str(tmp_path / "c.yaml")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), *options]) == 2
    err = capsys.readouterr().err
    assert option in err and "internal error" not in err and len(err.strip().splitlines()) == 1
