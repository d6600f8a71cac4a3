"""A run trained with ``mmcore train`` from a ``fit`` run's ``config.yaml`` (edited: another fusion and head)
keeps fit's contract (issue 20.2 beyond fit's own runs): ``Predictor``, ``mmcore predict --data`` /
``column=value``, ``mmcore eval`` and an export's front end take the user's own columns, never the ones fit
derived (``"x missing"``); the run is self-contained (a copy predicts) and its own config.yaml reproduces it;
an edit the fit's column plan does not fit is refused in one line naming the key, before any training.

One small fit (module scope: 40 rows, one epoch) and one training from its config, in-process; a third
party's fusion (registered at run time) on the same config keeps the contract too."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from autofit_helpers import write_csv

import mmcore
from mmcore.cli import main
from mmcore.engine.config import load_config
from mmcore_plugins.autofit.fitting import PLAN_FILE


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        y = "hi" if i % 2 else "lo"
        rows.append({"x": "" if i % 4 == 0 else (1.0 if y == "hi" else -1.0) + 0.01 * i, "color": ["red", "blue", "red"][i % 3],
                     "note": ("sunny warm" if y == "hi" else "rainy cold") + f" {i}", "y": y})
    return rows


#: what users give at predict time: their own columns only (an empty number among them)
NEW = [{"x": 0.9, "color": "red", "note": "sunny warm"}, {"x": None, "color": "blue", "note": "rainy cold"}]
#: overrides a user makes to "go further": another fusion and head, small dims, one epoch
EDITS = ["model.fusion={name: concat, dim: 16}", "model.head={name: classification}", "trainer.epochs=1",
         "trainer.plots=false", "trainer.tensorboard=false", "trainer.progress=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train_from_fit")
    write_csv(folder / "train.csv", _rows(40))
    mmcore.fit(str(folder / "train.csv"), target="y", time_limit="10m", max_epochs=1, preset="fast",
               run_dir=folder / "fit", verbose=False)
    again = folder / "again"
    assert main(["train", str(folder / "fit" / "config.yaml"), f"trainer.run_dir={again}", *EDITS]) == 0
    return folder, folder / "fit", again


def test_the_fit_config_names_derived_columns_that_users_never_give(runs):
    _, fit, _ = runs
    config = load_config(fit / "config.yaml")
    assert "x missing" in config["data"]["columns"]["tabular"]["numeric"]  # what the new run trains on


def test_the_trained_run_takes_the_users_own_columns(runs, tmp_path, capsys):
    folder, fit, again = runs
    predictor = mmcore.Predictor.load(again)
    assert predictor.plan is not None and predictor.plan.target == "y"
    assert predictor.config["model"]["fusion"]["name"] == "concat"  # the edit took effect
    predictions = predictor.predict(NEW)
    assert len(predictions) == 2 and set(predictions) <= {"hi", "lo"}
    assert predictor.evaluate([{**r, "y": y} for r, y in zip(NEW, ["hi", "lo"], strict=True)])["rows"] == 2
    # the command line: a table of the user's columns, and column=value
    write_csv(tmp_path / "new.csv", [{k: "" if v is None else v for k, v in r.items()} for r in NEW])
    capsys.readouterr()
    assert main(["predict", str(again), "--data", str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [line["prediction"] for line in lines] == list(predictions)
    assert main(["predict", str(again), "x=0.9", "color=red", "note=sunny warm"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["prediction"] == predictions[0]
    assert main(["eval", str(again), "--data", str(folder / "train.csv")]) == 0


def test_the_trained_run_is_self_contained_and_reproducible(runs, tmp_path):
    _, fit, again = runs
    stored = json.loads((again / PLAN_FILE).read_text())
    assert stored["plan"] == json.loads((fit / PLAN_FILE).read_text())["plan"]
    copied = shutil.copytree(again, tmp_path / "elsewhere" / "copy", ignore=shutil.ignore_patterns(".mmcore-lock"))
    assert mmcore.Predictor.load(copied).predict(NEW).equals(mmcore.Predictor.load(again).predict(NEW))
    # its own config.yaml trains the same kind of run again (fit's prepared table, the plan copied)
    assert main(["train", str(again / "config.yaml"), f"trainer.run_dir={tmp_path / 'third'}"]) == 0
    third = mmcore.Predictor.load(tmp_path / "third")
    assert third.plan == mmcore.Predictor.load(again).plan and len(third.predict(NEW)) == 2


class _OwnMean(mmcore.Fusion):
    """A third party's fusion: the mean of each present slot's projected pooled features."""

    def __init__(self, input_dims, dim):
        super().__init__(input_dims, dim)
        self.proj = torch.nn.ModuleDict({slot: torch.nn.Linear(width, dim) for slot, width in input_dims.items()})

    def forward(self, features):
        present = torch.stack([f.present for f in features.values()]).float()  # [M, B]
        pooled = torch.stack([self.proj[s](f.pooled) for s, f in features.items()])  # [M, B, dim]
        mean = (pooled * present[..., None]).sum(0) / present.sum(0).clamp(min=1)[:, None]
        return mmcore.Features.from_pooled(mean, present.sum(0) > 0)


class _OwnPlugin:
    @mmcore.hookimpl
    def mmcore_register(self, registry):
        registry.add_fusion("own_mean", _OwnMean)


def test_a_third_party_fusion_on_fits_config_keeps_the_contract(runs, tmp_path):
    _, fit, _ = runs
    with mmcore.register_plugin(_OwnPlugin(), "own-fusion"):
        assert main(["train", str(fit / "config.yaml"), f"trainer.run_dir={tmp_path / 'own'}",
                     "model.fusion={name: own_mean, dim: 8}", *EDITS[1:]]) == 0
        predictor = mmcore.Predictor.load(tmp_path / "own")
        assert predictor.config["model"]["fusion"]["name"] == "own_mean"
        assert set(predictor.predict(NEW)) <= {"hi", "lo"}


def test_an_exports_front_end_takes_the_users_rows(runs):
    """The export's manifest gets the run's column plan (hook mmcore_export_columns) and its front end derives
    the model's inputs from raw rows as the Predictor does (no graph is written: the front end alone)."""
    from mmcore_plugins.deploy import export, frontend

    _, _, again = runs
    predictor = mmcore.Predictor.load(again)
    columns = mmcore.get_plugin_manager().hook.mmcore_export_columns(run_dir=again)  # what `mmcore export` writes
    front = frontend.Columns(json.loads(json.dumps(columns)), {s.slot: s.frontend for s in export.plan(predictor.model)})
    assert "x missing" not in front.input_columns and set(front.input_columns) == {"x", "color", "note"}
    samples, *_ = predictor._prepare(NEW)
    for i, row in enumerate(NEW):
        assert front.record(row, i, ".") == samples[i]["inputs"]


def _edited(fit: Path, tmp_path: Path, edit) -> Path:
    config = load_config(fit / "config.yaml")
    config["trainer"].pop("run_dir")
    edit(config)
    path = tmp_path / f"edited-{edit.__name__}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def drop_slot(c):
    del c["model"]["encoders"]["note"], c["data"]["columns"]["note"]
    c["trainer"]["augment"].pop("note", None)
    c["model"]["head"] = {"name": "classification"}


def text_as_image(c):
    c["model"]["encoders"]["note"] = {"name": "image_cnn", "dim": 16}
    c["trainer"]["augment"].pop("note", None)


def fewer_columns(c):
    c["data"]["columns"]["tabular"]["numeric"] = ["x"]
    c["model"]["encoders"]["tabular"].update(columns=["x"], num_features=1)


def encoder_columns(c):
    c["model"]["encoders"]["tabular"].update(columns=["x"], num_features=1)


def other_class_order(c):
    c["data"]["classes"] = list(reversed(c["data"]["classes"]))
    c["model"]["head"].pop("classes", None)


@pytest.mark.parametrize(("edit", "key"), [(drop_slot, "model.encoders.note"), (text_as_image, "model.encoders.note.name"),
                                           (fewer_columns, "data.columns.tabular"), (encoder_columns, "model.encoders.tabular.columns"),
                                           (other_class_order, "data.classes")])
def test_an_edit_the_plan_does_not_fit_is_refused_in_one_line(runs, tmp_path, capsys, edit, key):
    _, fit, _ = runs
    config = _edited(fit, tmp_path, edit)
    capsys.readouterr()
    assert main(["train", str(config), f"trainer.run_dir={tmp_path / 'run'}", *EDITS[2:]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f": {key}: " in err and "column plan" in err, err
    assert not (tmp_path / "run" / "best").exists() and not (tmp_path / "run" / PLAN_FILE).exists()


def test_a_config_reading_another_table_is_left_alone(runs, tmp_path):
    """A copy of fit's prepared table outside the fit run is the user's own table: an ordinary run."""
    _, fit, _ = runs
    shutil.copy(fit / "data.jsonl", tmp_path / "data.jsonl")
    config = copy.deepcopy(load_config(fit / "config.yaml"))
    config["data"]["path"] = str(tmp_path / "data.jsonl")
    config["trainer"]["run_dir"] = str(tmp_path / "run")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "c.yaml"), *EDITS]) == 0
    assert not (tmp_path / "run" / PLAN_FILE).exists()
    assert mmcore.Predictor.load(tmp_path / "run").plan is None


def test_a_fusion_edit_the_ensemble_head_does_not_use_is_named_once_at_start(runs, tmp_path, capsys):
    """newcomer 3 item 4: fit's head (unimodal_ensemble, joint_weight 0) does not use the fused vector,
    so another fusion alone trained the same model silently: ``mmcore train`` warns once as the run starts."""
    _, fit, _ = runs
    assert load_config(fit / "config.yaml")["model"]["head"]["name"] == "unimodal_ensemble"
    capsys.readouterr()
    assert main(["train", str(fit / "config.yaml"), f"trainer.run_dir={tmp_path / 'run'}", EDITS[0], *EDITS[2:]]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: model.fusion (concat) changes nothing in this run: model.head.joint_weight is 0") == 1, err
    assert main(["train", str(fit / "config.yaml"), f"trainer.run_dir={tmp_path / 'joint'}", EDITS[0],
                 "model.head.joint_weight=0.5", *EDITS[2:]]) == 0
    assert "changes nothing" not in capsys.readouterr().err
