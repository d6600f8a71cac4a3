"""The `mmcore` commands on a tiny tabular run: train, eval (+ robustness), predict, compare; exit codes."""

import copy
import json

import pytest
import torch
import yaml

import mmcore
from mmcore.cli import main

#: scikit-learn's wine data (178 rows) split into two modalities; trains in about a second.
WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "missing_rate": 0.2, "seed": 0},
    "model": {
        "encoders": {"first": {"name": "tabular_mlp", "num_features": 6, "dim": 16},
                     "second": {"name": "tabular_mlp", "num_features": 7, "dim": 16}},
        "fusion": {"name": "concat", "dim": 16},
        "head": {"name": "classification", "num_classes": 3},
    },
    "trainer": {"epochs": 3, "batch_size": 16, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False},
}


def write_config(path, **trainer):
    config = copy.deepcopy(WINE)
    config["trainer"].update(trainer)
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One trained run directory, shared by the read-only tests below."""
    folder = tmp_path_factory.mktemp("cli")
    config = write_config(folder / "wine.yaml", run_dir=str(folder / "run"), epochs=4)
    assert main(["train", config]) == 0
    return folder / "run"


def test_train_prints_a_summary_and_writes_the_run(run, capsys):
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "completed" and report["test"]["accuracy"] > 0.6
    assert (run / "config.yaml").is_file() and (run / "best" / "model.safetensors").is_file()


def test_train_reports_every_config_problem_with_paths_and_exit_code_2(capsys):
    code = main(["train", "configs/tabular.yaml", "model.fusion.dimm=3", "trainer.epochz=2", "data.dataset=iris", "trainer.lr=fast"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "model.fusion.dimm: unknown option of fusion 'concat'; did you mean 'dim'?" in err
    assert "trainer.epochz: unknown trainer option; did you mean 'epochs'?" in err
    assert "data.dataset: option of dataset 'sklearn_tabular' expects one of 'wine', 'breast_cancer', got str 'iris'" in err
    assert "trainer.lr: trainer option expects float, got str 'fast'" in err
    assert main(["train", "no/such/config.yaml"]) == 2


def test_resume_of_a_folder_without_a_checkpoint_is_a_usage_error(tmp_path, capsys):
    assert main(["train", write_config(tmp_path / "c.yaml"), "--resume", str(tmp_path), "trainer.epochs=2"]) == 2
    assert "holds no checkpoint to resume" in capsys.readouterr().err
    assert main(["train", write_config(tmp_path / "c.yaml"), "--resume", str(tmp_path), "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_an_unrecognized_option_is_one_line_with_the_closest_option(capsys):
    assert main(["train", "c.yaml", "--resme", "RUN"]) == 2
    err = capsys.readouterr().err
    assert err == "mmcore train: unrecognized arguments: --resme RUN; did you mean --resume?\n", err
    assert main(["train", "c.yaml", "--zzz"]) == 2
    assert capsys.readouterr().err == "mmcore train: unrecognized arguments: --zzz; see mmcore train --help\n"
    assert main(["--zzz"]) == 2 and capsys.readouterr().err == "mmcore: unrecognized arguments: --zzz; see mmcore --help\n"


def test_a_nan_loss_exits_1_with_the_step(tmp_path, capsys):
    class Poison:
        @mmcore.hookimpl
        def mmcore_train_step_end(self, trainer, step):
            with torch.no_grad():
                trainer.model.head.net[-1].bias.fill_(float("inf"))

    config = write_config(tmp_path / "c.yaml", run_dir=str(tmp_path / "run"), epochs=1)
    with mmcore.register_plugin(Poison(), name="poison"):
        assert main(["train", config]) == 1
    err = capsys.readouterr().err
    assert "the training loss became NaN or infinite at step 2 (epoch 1)" in err and "Traceback" not in err


def test_eval_uses_the_best_checkpoint_and_takes_data_overrides(run, capsys):
    report = json.loads((run / "report.json").read_text())
    assert main(["eval", str(run)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(report["test"]["accuracy"], abs=1e-6)
    assert main(["eval", str(run), "--split", "val", "--data", "missing_rate=0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "val"
    assert main(["eval", str(run.parent)]) == 2
    capsys.readouterr()
    # a bare TABLE is for a run whose plugin reads the user's tables (mmcore fit's); this run's dataset
    # reads its own option, said in one line; --missing / --strict go with a TABLE
    assert main(["eval", str(run), "--data", str(run / "new.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--data path={run / 'new.csv'}" in err, err
    assert main(["eval", str(run), "--strict"]) == 2
    assert "--strict: goes with --data TABLE" in capsys.readouterr().err


def test_eval_robustness_table_json_and_plot(run, capsys):
    assert main(["eval", str(run), "--robustness", "--perturbations", "feature_noise"]) == 0
    out = capsys.readouterr().out
    assert "first + second" in out and "feature_noise" in out and "relative" in out
    report = json.loads((run / "robustness" / "test.json").read_text())
    assert [row["present"] for row in report["missing"]] == [["first", "second"], ["first"], ["second"]]
    assert report["removed"] == {"first": report["missing"][2]["accuracy"], "second": report["missing"][1]["accuracy"]}
    rows = report["perturbed"]
    assert {r["slot"] for r in rows} == {"first", "second"} and len(rows) == 8
    for row in rows:
        assert row["relative"] == pytest.approx(row["accuracy"] / report["clean"])
        assert row["effective"] == pytest.approx(row["accuracy"] - report["removed"][row["slot"]])
    strongest = [r["accuracy"] for r in rows if r["slot"] == "first"]
    assert strongest[-1] <= strongest[0] + 0.05, "more noise does not help"
    assert (run / "robustness" / "test.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["eval", str(run), "--robustness", "--perturbations", "nope"]) == 2


def test_predict_prints_json_for_raw_inputs_and_rejects_bad_ones(run, capsys):
    row = ",".join(["1.0"] * 6)
    assert main(["predict", str(run), f"first=[{row}]"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prediction"] in (0, 1, 2) and result["missing"] == ["second"]
    assert len(result["probabilities"]) == 3 and sum(result["probabilities"]) == pytest.approx(1, abs=1e-3)
    assert main(["predict", str(run), "first=not-a-row"]) == 2
    assert "a tabular row must be a sequence of 6 numbers" in capsys.readouterr().err
    assert main(["predict", str(run), "nope=1"]) == 2
    assert "unknown modality slot(s) ['nope']" in capsys.readouterr().err
    # A value too long to be a file name is a value, not a crash in the file-system lookup.
    assert main(["predict", str(run), "first=" + "a" * 300]) == 2
    assert "a tabular row must be a sequence of 6 numbers" in capsys.readouterr().err


def test_robustness_direction_follows_the_metric_mode(run):
    from mmcore.engine.checkpoint import load_model
    from mmcore.engine.robustness import robustness_report
    from mmcore.engine.trainer import load_datasets

    model, _ = load_model(run / "best")
    config = yaml.safe_load((run / "config.yaml").read_text())
    test = load_datasets(config, mmcore.get_plugin_manager(), splits=("test",))["test"]
    reports = {mode: robustness_report(model, test, mmcore.get_plugin_manager().registry, perturbations=["feature_noise"],
                                       levels={"feature_noise": [1.0]}, mode=mode) for mode in ("max", "min")}
    for high, low in zip(reports["max"]["perturbed"], reports["min"]["perturbed"], strict=True):
        assert high["accuracy"] == low["accuracy"]
        assert high["effective"] == pytest.approx(-low["effective"])
    with pytest.raises(ValueError, match="mode must be 'auto', 'max' or 'min', got 'up'"):
        robustness_report(model, test, mmcore.get_plugin_manager().registry, mode="up")


def test_compare_trains_each_fusion_and_reports_cost(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", run_dir=str(tmp_path / "run"), epochs=1)
    assert main(["compare", config, "--fusions", "concat,mean", "trainer.epochs=1"]) == 0  # overrides after options
    out = capsys.readouterr().out
    assert "concat" in out and "mean" in out and "MFLOPs/sample" in out
    summary = json.loads((tmp_path / "run" / "compare" / "compare.json").read_text())["fusions"]
    assert list(summary) == ["concat", "mean"]
    for result in summary.values():
        assert 0 <= result["value"] <= 1 and result["parameters"] > 0 and result["flops_per_sample"] > 0
        assert result["latency_ms"] > 0 and result["peak_memory_mb"] > 0
    assert summary["concat"]["parameters"] != summary["mean"]["parameters"]
    assert (tmp_path / "run" / "compare" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", config, "--fusions", "concatt"]) == 2
    assert "unknown fusion 'concatt'; did you mean 'concat'?" in capsys.readouterr().err


def test_the_cpu_memory_estimate_counts_the_weights_once():
    from mmcore.engine.compare import _training_memory

    model = mmcore.build_model({"encoders": {"x": {"name": "tabular_mlp", "num_features": 4, "dim": 256, "hidden": [1024, 1024]}},
                                "head": {"name": "classification", "num_classes": 3}})
    batch = model.collate([{"inputs": {"x": [0.1, 0.2, 0.3, 0.4]}, "target": 1}] * 2)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    estimate, estimated = _training_memory(model, batch["inputs"], batch["targets"], torch.device("cpu"))
    # weights + gradients + two AdamW moments, plus a few kilobytes of activations for 2 samples
    assert estimated and 4 * weights <= estimate < 4 * weights + 100_000


def test_bench_runs_the_repository_script_and_says_where_it_is_when_there_is_none(tmp_path, monkeypatch, capsys):
    """The kernel benchmark is benchmarks/kernel_bench.py of the checkout, not part of the installed packages."""
    from pathlib import Path

    import mmcore.cli as cli

    root = Path(__file__).resolve().parents[2]
    assert cli.kernel_bench_script() == root / "benchmarks" / "kernel_bench.py"
    with pytest.raises(SystemExit) as info:  # the script's own argument check: it really ran
        main(["bench", "--ops", "matmul"])
    assert info.value.code == 2 and "invalid choice: 'matmul'" in capsys.readouterr().err
    # Without a checkout (a wheel install, run from elsewhere): exit 2 and one line saying where it lives.
    monkeypatch.setattr(cli, "KERNEL_BENCH", Path("benchmarks") / "no_such_bench.py")
    monkeypatch.chdir(tmp_path)
    assert main(["bench"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmcore bench: the kernel benchmark is a script of mmcore's source repository") and "\n" not in err


def test_renaming_a_component_whose_kept_options_it_rejects_shows_the_mapping_override(tmp_path, capsys):
    """`model.fusion.name=X` keeps the config's other fusion options (dropout): the error says how to
    replace the whole mapping; nothing is trained."""
    from pathlib import Path

    class NoDropout(mmcore.Fusion):
        def __init__(self, input_dims, dim: int = 8):
            super().__init__(input_dims, dim)

        def forward(self, features):  # pragma: no cover - never built
            raise AssertionError

    config = Path(__file__).resolve().parents[2] / "configs" / "tabular.yaml"
    mmcore.register_fusion("no_dropout_fusion")(NoDropout)  # on the default manager, reset after the test
    code = main(["train", str(config), "model.fusion.name=no_dropout_fusion", f"trainer.run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and "model.fusion.dropout: unknown option of fusion 'no_dropout_fusion'" in err
    assert ("model.fusion.name=no_dropout_fusion kept the config's other model.fusion options (dim, dropout); to give "
            "'no_dropout_fusion' its own, override the whole mapping: 'model.fusion={name: no_dropout_fusion, ...}'") in err
    assert not (tmp_path / "run").exists()
