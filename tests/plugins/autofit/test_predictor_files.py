"""A fit run read back and saved keeps the old promises (issue 20.10, issue 28): the plan in
autofit.json is validated like model.json and must fit the model; Predictor.save never follows a
link; a damaged fit_summary.json is a named error."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from autofit_helpers import tabular_rows, write_jsonl

import mmcore
from mmcore.engine.artefacts import CheckpointError
from mmcore.engine.atomic import UnsafePathError
from mmcore.errors import UserInputError


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One small fit (classification of 'high'/'low'), shared: each test works on a copy of its run."""
    root = tmp_path_factory.mktemp("fitted")
    train = write_jsonl(root / "train.jsonl", tabular_rows(60, seed=0))
    write_jsonl(root / "test.jsonl", tabular_rows(12, seed=1))
    mmcore.fit(train, target="y", time_limit="10m", max_epochs=2, preset="fast", run_dir=root / "run", verbose=False)
    return root


@pytest.fixture
def run(fitted, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(fitted / "run", copy)
    return copy


def _plan_edit(change):
    def edit(meta):
        change(meta["plan"])
        return json.dumps(meta)
    return edit


PLAN_VARIANTS = {
    "not JSON": lambda meta: "{plan: [",
    "deep nesting": lambda meta: "[" * 100_000 + "]" * 100_000,
    "a list": lambda meta: "[1, 2]",
    "no plan": lambda meta: json.dumps({k: v for k, v in meta.items() if k != "plan"}),
    "a plan that is a list": lambda meta: json.dumps({**meta, "plan": []}),
    "NaN in fill": lambda meta: json.dumps(meta).replace('"fill": {', '"fill": {"zz": NaN, ', 1),
    "fewer classes": _plan_edit(lambda plan: plan.update(classes=plan["classes"][:1])),
    "swapped classes": _plan_edit(lambda plan: plan.update(classes=plan["classes"][::-1])),
    "duplicate classes": _plan_edit(lambda plan: plan.update(classes=[plan["classes"][0]] * 2)),
    "a bogus slot kind": _plan_edit(lambda plan: next(iter(plan["slots"].values())).update(kind="hologram")),
    "a slot of another fit": _plan_edit(lambda plan: plan["slots"].update(other={"kind": "image", "column": "photo"})),
    "an unknown task": _plan_edit(lambda plan: plan.update(task="ranking")),
    "an unknown field": _plan_edit(lambda plan: plan.update(backdoor=True)),
    "a target that is a number": _plan_edit(lambda plan: plan.update(target=7)),
    "numeric columns that are not names": _plan_edit(lambda plan: plan["slots"]["tabular"].update(numeric=[1, 2])),
}


@pytest.mark.parametrize("variant", list(PLAN_VARIANTS))
def test_a_damaged_or_crafted_plan_is_refused_by_load_with_one_named_error(run, variant):
    """Raw JSONDecodeError, RecursionError, IndexError, KeyError -- or swapped classes accepted silently."""
    meta = json.loads((run / "autofit.json").read_text())
    (run / "autofit.json").write_text(PLAN_VARIANTS[variant](meta))
    with pytest.raises(CheckpointError, match="autofit.json") as info:
        mmcore.Predictor.load(run)
    assert "\n" not in str(info.value)


def test_a_plan_that_is_a_fifo_is_refused_without_blocking(run):
    (run / "autofit.json").unlink()
    os.mkfifo(run / "autofit.json")
    with pytest.raises((CheckpointError, mmcore.errors.UserInputError), match="autofit.json"):
        mmcore.Predictor.load(run)


def test_a_damaged_fit_summary_is_a_named_error(run):
    predictor = mmcore.Predictor.load(run)
    assert predictor.summary()["status"] in ("completed", "early_stopping", "stopped")
    (run / "fit_summary.json").write_text("[" * 100_000)
    with pytest.raises(CheckpointError, match="fit_summary.json"):
        predictor.summary()


def test_save_never_follows_a_link_inside_the_run(run, tmp_path, fitted):
    """Predictor.save copied a linked folder's private files into the copy."""
    private = tmp_path / "private"
    private.mkdir()
    (private / "id_rsa").write_text("secret key")
    (run / "attachments").symlink_to(private)
    predictor = mmcore.Predictor.load(run)
    with pytest.raises(UnsafePathError, match="attachments is a symbolic link"):
        predictor.save(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".copy.")], "no temporary left"
    (run / "attachments").unlink()
    saved = predictor.save(tmp_path / "copy")
    rows = str(fitted / "test.jsonl")
    assert mmcore.Predictor.load(saved).predict(rows).equals(predictor.predict(rows))
    assert not list(saved.rglob("id_rsa"))


def test_save_refuses_a_link_at_the_target(run, tmp_path):
    predictor = mmcore.Predictor.load(run)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        predictor.save(tmp_path / "dangling")
    assert not (tmp_path / "nowhere").exists()
    # an input error too (the attack harness met a bare FileExistsError as a traceback): exit 2 from a command
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserInputError, match=r"mine' exists; save into a new folder"):
        predictor.save(tmp_path / "mine")
