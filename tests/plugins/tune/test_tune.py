"""``mmcore tune`` (plugins/tune): the search space, trials as runs, pruning, best.yaml, Pareto sets,
the time-limit promise, and resuming a study killed with SIGKILL (no trial lost, none twice)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from mmcore.cli import main
from mmcore.engine.trainer import Trainer
from mmcore.errors import ConfigError
from mmcore_plugins.tune import study as study_module
from mmcore_plugins.tune.space import apply_params, check_space, decode, encode, parse_space
from mmcore_plugins.tune.study import StudyOptions, TuneError, run_study

#: scikit-learn's wine data in two modalities: a trial trains in about a second.
WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "missing_rate": 0.2, "seed": 0},
    "model": {
        "encoders": {"first": {"name": "tabular_mlp", "num_features": 6, "dim": 8},
                     "second": {"name": "tabular_mlp", "num_features": 7, "dim": 8}},
        "fusion": {"name": "concat", "dim": 8},
        "head": {"name": "classification", "num_classes": 3},
    },
    "trainer": {"epochs": 3, "batch_size": 32, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False},
}
SPACE = {"trainer.lr": {"low": 1e-3, "high": 3e-2, "log": True}, "model.fusion.dim": {"low": 4, "high": 16, "step": 4},
         "model.fusion.name": ["concat", "gated"]}


def _options(tmp_path, trials, **kw):
    return StudyOptions(trials=trials, out=tmp_path / "study", **kw)


def _lines():
    seen = []
    return seen, seen.append


# ------------------------------------------------------------------ the space
def test_a_space_reads_floats_ints_and_choices_of_any_value():
    dims = {d.key: d for d in parse_space({**SPACE, "model.fusion": {"choices": [{"name": "gated", "dim": 8}, None]}})}
    assert isinstance(dims["trainer.lr"].distribution(), optuna.distributions.FloatDistribution)
    assert dims["trainer.lr"].distribution().log
    assert isinstance(dims["model.fusion.dim"].distribution(), optuna.distributions.IntDistribution)
    assert dims["model.fusion.name"].choices == ("concat", "gated")
    section = dims["model.fusion"]
    assert section.distribution().choices == ('{"dim": 8, "name": "gated"}', None)
    assert decode(encode({"name": "gated", "dim": 8})) == {"name": "gated", "dim": 8}
    config = apply_params(WINE, list(dims.values()), {"trainer.lr": 0.002, "model.fusion.dim": 12, "model.fusion.name": "gated",
                                                      "model.fusion": '{"dim": 8, "name": "gated"}'})
    assert config["trainer"]["lr"] == 0.002 and config["model"]["fusion"] == {"dim": 8, "name": "gated"}
    assert WINE["model"]["fusion"] == {"name": "concat", "dim": 8}, "the base config is not changed"


@pytest.mark.parametrize(("entry", "message"), [
    ({"trainer.lr": {"low": 0.1, "high": 0.01}}, r"trainer.lr: low must be below high"),
    ({"trainer.lr": {"low": 0.0, "high": 0.1, "log": True}}, r"a log scale needs low > 0"),
    ({"trainer.lr": {"low": 0.001, "hihg": 0.1}}, r"unknown field\(s\) \['hihg'\]"),
    ({"model.fusion.name": []}, r"choices must be a non-empty list"),
    ({"model.fusion.name": ["a", "a"]}, r"choices must differ"),
    ({"lr": {"low": 0.1, "high": 1.0}}, r"lr: a searched key is a dotted config path starting with data, model or trainer"),
    ({"trainer.lr": 0.01}, r"expected \{low, high"),
    ({"trainer.lr": {"low": "a", "high": 1}}, r"low and high must be numbers"),
])
def test_a_malformed_space_is_refused_with_every_problem(entry, message):
    with pytest.raises(ConfigError, match=message):
        parse_space(entry, source="space.yaml")


def test_the_configs_own_values_make_the_baseline_trial_when_they_lie_in_the_space(manager):
    from mmcore_plugins.tune.space import baseline_params

    config = copy.deepcopy(WINE)
    dims = parse_space({**SPACE, "trainer.weight_decay": {"low": 0.001, "high": 0.1, "log": True},
                        "model.fusion.dropout": [0.0, 0.1]})
    params, why = baseline_params(config, dims, manager.registry)
    assert why == "" and params["trainer.weight_decay"] == 0.01 and params["model.fusion.dropout"] == 0.0, \
        "left out of the config: the trainer's and the component's defaults"
    config["trainer"]["lr"] = 0.5
    assert baseline_params(config, dims, manager.registry) == (None, "trainer.lr=0.5 is outside [0.001, 0.03]")
    config["trainer"]["lr"] = 0.01
    config["model"]["fusion"]["dim"] = 6
    assert "not on its grid" in baseline_params(config, dims, manager.registry)[1]


def test_a_value_the_config_refuses_is_found_before_any_trial(manager):
    dims = parse_space({"model.fusion.name": ["concat", "no_such_fusion"], "model.fusion.dimm": [4]})
    with pytest.raises(ConfigError) as info:
        check_space(copy.deepcopy(WINE) | {"trainer": {**WINE["trainer"], "run_dir": "x"}}, dims, manager.registry)
    text = str(info.value)
    assert "no_such_fusion" in text and "dimm" in text and "from the search space" in text


# ------------------------------------------------------------------ a study
def test_trials_are_runs_and_best_yaml_trains_the_best_trial_again(tmp_path, manager):
    config = copy.deepcopy(WINE)
    seen, log = _lines()
    summary = run_study(config, parse_space(SPACE), _options(tmp_path, 3, pruner="none"), manager=manager, log=log)
    out = tmp_path / "study"
    assert [t["number"] for t in summary["trials"]] == [0, 1, 2]
    assert all(t["state"] == "complete" for t in summary["trials"])
    first = summary["trials"][0]
    assert first["baseline"] and first["params"] == {"trainer.lr": 0.01, "model.fusion.dim": 8, "model.fusion.name": "concat"}, \
        "the config as given is trial 0"
    for t in summary["trials"]:
        report = json.loads((out / f"trial-{t['number']:03d}" / "report.json").read_text())
        assert report["status"] == "completed" and report["test"] == t["test"]
        assert t["values"] == [report["best_value"]] and t["cost"]["parameters"] == report["parameters"]
    assert json.loads((out / "study.json").read_text())["best"] == summary["best"]
    best = summary["trials"][summary["best"][0]]
    assert best["values"][0] == max(t["values"][0] for t in summary["trials"])
    again = yaml.safe_load((out / "best.yaml").read_text())
    assert again["model"]["fusion"]["name"] == best["params"]["model.fusion.name"]
    report = Trainer(again, manager=manager).fit()
    assert report["test"] == best["test"], "mmcore train best.yaml reproduces the best trial exactly"
    assert any("one trial: about" in line for line in seen)
    lead = summary["lead_over_baseline"]  # accuracy is the objective and trial 0 the config as given
    assert lead["baseline_trial"] == 0 and lead["trial"] == best["number"]
    assert lead["records"] == summary["estimate"]["val_rows"] > 0


class _PruneFromTrial(optuna.pruners.BasePruner):
    """Prunes every trial from number ``first`` on, as soon as it has reported step ``at``."""

    def __init__(self, first, at):
        self.first, self.at = first, at

    def prune(self, study, trial):
        return trial.number >= self.first and trial.last_step is not None and trial.last_step >= self.at


def test_a_pruned_trial_stops_at_the_end_of_the_epoch_it_was_judged(tmp_path, manager, monkeypatch):
    monkeypatch.setattr(study_module, "make_pruner", lambda name, epochs: _PruneFromTrial(1, 2))
    config = copy.deepcopy(WINE)
    config["trainer"]["epochs"] = 5
    summary = run_study(config, parse_space(SPACE), _options(tmp_path, 3), manager=manager, log=lambda s: None)
    states = [t["state"] for t in summary["trials"]]
    assert states == ["complete", "pruned", "pruned"]
    for t in summary["trials"][1:]:
        report = json.loads((tmp_path / "study" / f"trial-{t['number']:03d}" / "report.json").read_text())
        assert report["epochs_run"] == 2 and t["pruned_after_epoch"] == 2, "stopped after the epoch that was judged"
        assert report["status"] == "stopped" and report["stop_reason"].startswith("pruned by optuna")
    study = optuna.load_study(study_name="mmcore-tune", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "PRUNED"]
    assert sorted(study.trials[1].intermediate_values) == [1, 2]


def test_several_objectives_give_a_pareto_set(tmp_path, manager):
    summary = run_study(copy.deepcopy(WINE), parse_space(SPACE), _options(tmp_path, 4, objective="accuracy,parameters"),
                        manager=manager, log=lambda s: None)
    assert [o["name"] for o in summary["objectives"]] == ["accuracy", "parameters"]
    trials = {t["number"]: t for t in summary["trials"]}
    front = summary["best"]
    assert front and all(trials[n]["state"] == "complete" for n in front)
    for n in front:  # no trial of the front is dominated by another trial
        acc, params = trials[n]["values"]
        assert not any(t["values"][0] >= acc and t["values"][1] <= params and t["values"] != [acc, params]
                       for t in trials.values() if t["values"])
        assert (tmp_path / "study" / "pareto" / f"trial-{n:03d}.yaml").is_file()
    assert (tmp_path / "study" / "best.yaml").is_file()


def test_a_time_limit_that_cannot_hold_the_trials_is_refused_with_the_estimate(tmp_path, manager):
    with pytest.raises(ConfigError, match=r"--time-limit: 1 s cannot hold the 50 trial\(s\) left: at about \d+ s each"):
        run_study(copy.deepcopy(WINE), parse_space(SPACE), _options(tmp_path, 50, time_limit=1.0), manager=manager,
                  log=lambda s: None)
    assert not list((tmp_path / "study").glob("trial-*")), "refused before any trial"


def test_a_trial_that_would_pass_the_deadline_stops_at_an_epochs_end(tmp_path, manager, monkeypatch):
    real_probe = study_module.probe

    def hurried(*args, **kwargs):  # a trial looks nearly free up front, but its test would take 1000 s
        estimate, metric, lower = real_probe(*args, **kwargs)
        estimate.trial, estimate.after_training = 0.001, 1000.0
        return estimate, metric, lower

    monkeypatch.setattr(study_module, "probe", hurried)
    summary = run_study(copy.deepcopy(WINE), parse_space(SPACE), _options(tmp_path, 2, time_limit=600.0, pruner="none"),
                        manager=manager, log=lambda s: None)
    for t in summary["trials"]:
        assert t["state"] == "complete" and t["epochs_run"] == 1
        assert t["stop_reason"].startswith("the study's time limit"), "kept: stopped where another epoch would pass it"


def test_a_resumed_study_must_be_the_same_study(tmp_path, manager):
    run_study(copy.deepcopy(WINE), parse_space(SPACE), _options(tmp_path, 1, pruner="none"), manager=manager, log=lambda s: None)
    other = {**SPACE, "trainer.lr": {"low": 1e-4, "high": 1e-2, "log": True}}
    with pytest.raises(TuneError, match="started with another config, space or objective"):
        run_study(copy.deepcopy(WINE), parse_space(other), _options(tmp_path, 2), manager=manager, log=lambda s: None)
    summary = run_study(copy.deepcopy(WINE), parse_space(SPACE), _options(tmp_path, 2, pruner="none"), manager=manager,
                        log=lambda s: None)
    assert [t["number"] for t in summary["trials"]] == [0, 1], "the same study continues: one more trial"


def test_a_resumed_study_draws_values_of_its_own_not_the_first_processs_again(tmp_path, manager):
    # The sampler's generator restarts in every process; seeded with --seed alone, the process that
    # resumes a study would draw trial 1's values again as trial 2 (found on the demo study: trial 3 = trial 1).
    quiet = {"manager": manager, "log": lambda s: None}
    run_study(copy.deepcopy(WINE), parse_space(SPACE), _options(tmp_path, 2, pruner="none"), **quiet)
    resumed = run_study(copy.deepcopy(WINE), parse_space(SPACE), _options(tmp_path, 4, pruner="none"), **quiet)
    lrs = [t["params"]["trainer.lr"] for t in resumed["trials"]]
    assert len(lrs) == 4 and len(set(lrs)) == 4, f"a resumed study repeated a draw: {lrs}"
    again = run_study(copy.deepcopy(WINE), parse_space(SPACE), _options(tmp_path / "again", 2, pruner="none"), **quiet)
    assert [t["params"] for t in again["trials"]] == [t["params"] for t in resumed["trials"][:2]], \
        "a new study with the same --seed still draws the same values"
    assert study_module.sampler_seed(0, 0) == 0 and study_module.sampler_seed(0, 2) == study_module.sampler_seed(0, 2) \
        != study_module.sampler_seed(1, 2)


def _trial(number, value, baseline=False, state="complete"):
    return {"number": number, "state": state, "values": [value], "baseline": baseline}


@pytest.mark.parametrize(("best", "baseline", "records", "within"), [
    (0.969, 0.9496, 258, True),    # the demo study: +1.94 points, standard error ~1.74
    (0.99, 0.80, 1000, False),     # +19 points on 1,000 records
    (0.96, 0.95, 100_000, False),  # +1 point on 100,000 records (standard error ~0.09)
])
def test_the_best_trials_lead_over_the_config_as_given_is_weighed_against_its_noise(best, baseline, records, within):
    objectives = [study_module.Objective("accuracy", "maximize", metric="accuracy")]
    lead = study_module.lead_over_baseline([_trial(0, baseline, True), _trial(1, best)], [1], objectives, records)
    se = (best * (1 - best) / records + baseline * (1 - baseline) / records) ** 0.5
    assert lead["trial"] == 1 and lead["baseline_trial"] == 0 and lead["records"] == records
    assert lead["points"] == pytest.approx(100 * (best - baseline)) and lead["standard_error_points"] == pytest.approx(100 * se)
    assert lead["within_noise"] is within
    text = study_module.format_summary({"objectives": [{"name": "accuracy"}], "trials": [], "best": [1], "seconds": 60.0,
                                        "stopped_by_time_limit": False, "lead_over_baseline": lead})
    assert f"trial 1 leads the config as given (trial 0) by {100 * (best - baseline):.2f} points" in text
    assert ("within noise" in text) is within and ("more than twice its standard error" in text) is (not within)


def test_no_lead_is_claimed_where_it_cannot_be_weighed():
    accuracy = [study_module.Objective("accuracy", "maximize", metric="accuracy")]
    trials = [_trial(0, 0.9, True), _trial(1, 0.95)]
    assert study_module.lead_over_baseline(trials, [1], [study_module.Objective("loss", "minimize", metric="loss")], 100) is None
    assert study_module.lead_over_baseline([_trial(0, 0.9), _trial(1, 0.95)], [1], accuracy, 100) is None, "no baseline trial"
    assert study_module.lead_over_baseline([_trial(0, 0.9, True, "pruned"), _trial(1, 0.95)], [1], accuracy, 100) is None
    assert study_module.lead_over_baseline(trials, [1], [*accuracy, study_module.Objective("latency", "minimize")], 100) is None
    same = study_module.lead_over_baseline(trials, [0], accuracy, 100)
    assert same["points"] == 0 and same["within_noise"] is False
    text = study_module.format_summary({"objectives": [{"name": "accuracy"}], "trials": [], "best": [0], "seconds": 1.0,
                                        "stopped_by_time_limit": False, "lead_over_baseline": same})
    assert "the config as given (trial 0) is the best trial" in text


def test_mlflow_logs_a_parent_run_and_a_child_per_trial(tmp_path, manager, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient

    store = tmp_path / "mlruns"
    run_study(copy.deepcopy(WINE), parse_space(SPACE), _options(tmp_path, 2, pruner="none", use_mlflow=True, mlflow=str(store)),
              manager=manager, log=lambda s: None)
    client = MlflowClient(store.as_uri())
    experiment = client.get_experiment_by_name("mmcore-tune")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and sorted(r.info.run_name for r in children) == ["trial-000", "trial-001"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {m.step for m in client.get_metric_history(parents[0].info.run_id, "trial/accuracy")} == {0, 1}
    assert "study.json" in [a.path for a in client.list_artifacts(parents[0].info.run_id)]


# ------------------------------------------------------------------ the command line
def _files(tmp_path, config=None, space=None):
    config_path, space_path = tmp_path / "wine.yaml", tmp_path / "space.yaml"
    cfg = copy.deepcopy(config or WINE)
    cfg["trainer"]["run_dir"] = str(tmp_path / "run")
    config_path.write_text(yaml.safe_dump(cfg))
    space_path.write_text(yaml.safe_dump(space or SPACE))
    return str(config_path), str(space_path)


@pytest.mark.parametrize(("extra", "message"), [
    (["--trials", "0"], "--trials: must be at least 1"),
    (["--trials", "2", "--objective", "latency"], "--objective: name a validation metric"),
    (["--trials", "2", "--time-limit", "soon"], "--time-limit"),
])
def test_bad_command_lines_exit_2_with_one_line(tmp_path, capsys, extra, message):
    config, space = _files(tmp_path)
    assert main(["tune", config, "--space", space, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["tune", config, "--space", str(tmp_path / "none.yaml"), "--trials", "2"]) == 2
    assert "--space" in capsys.readouterr().err


def test_overrides_after_the_config_apply_to_every_trial(tmp_path, capsys):
    grown = copy.deepcopy(WINE)
    grown["trainer"]["schedule_extensions"] = [[1, 2, 3]]  # a run that grew (a fit run's config.yaml): trials plan anew
    config, space = _files(tmp_path, grown)
    out = tmp_path / "study"
    assert main(["tune", config, "trainer.epochs=2", "--space", space, "--trials", "2", "--out", str(out), "--pruner", "none"]) == 0
    for n in (0, 1):
        assert json.loads((out / f"trial-00{n}" / "report.json").read_text())["epochs_run"] == 2
    assert yaml.safe_load((out / "best.yaml").read_text())["trainer"]["epochs"] == 2
    assert "best config" in capsys.readouterr().out


@pytest.mark.slow
def test_kill_9_mid_study_then_resume_gives_every_trial_once(tmp_path, capsys, monkeypatch, keep_threads):
    config = copy.deepcopy(WINE)
    config["trainer"]["epochs"] = 6
    config_path, space_path = _files(tmp_path, config)
    out = tmp_path / "study"
    command = [sys.executable, "-m", "mmcore", "tune", config_path, "--space", space_path, "--trials", "3", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    # Kill it while trial 1 (the second) is training: it has a checkpoint but no report yet.
    deadline = time.monotonic() + 600
    victim = out / "trial-001"
    while time.monotonic() < deadline and process.poll() is None:
        if (victim / "last" / "model.safetensors").is_file() and not (victim / "report.json").exists():
            break
        time.sleep(0.02)
    assert process.poll() is None, "the study ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (victim / "report.json").exists()
    killed_at = json.loads((victim / "last" / "model.json").read_text())["epoch"]
    # The same command resumes it, here in the test's process (only the killed run needs one of its own).
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(command[3:]) == 0, capsys.readouterr().err
    assert "trial 1 (resumed)" in capsys.readouterr().out
    study = optuna.load_study(study_name="mmcore-tune", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2], "three trials, none twice"
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-00{n}" for n in range(3)]
    report = json.loads((victim / "report.json").read_text())
    epochs = [row["epoch"] for row in report["history"]]
    assert epochs == list(range(1, report["epochs_run"] + 1)) and report["epochs_run"] > killed_at >= 1, \
        "the killed trial continued from its checkpoint: every epoch once"
