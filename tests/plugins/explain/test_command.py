"""``mmcore explain`` on a trained run: records from the run's split, a table or the command line; JSON
lines, waterfall PNGs and the summary; bad arguments are one line and exit code 2."""

import copy
import json

import pytest

from mmcore.cli import main

WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "missing_rate": 0.2, "seed": 0},
    "model": {
        "encoders": {
            "first": {"name": "tabular_mlp", "num_features": 6, "dim": 16},
            "second": {"name": "tabular_mlp", "num_features": 7, "dim": 16},
        },
        "fusion": {"name": "gated", "dim": 16},
        "head": {"name": "classification", "num_classes": 3},
    },
    "trainer": {"epochs": 2, "batch_size": 16, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from mmcore.engine.trainer import Trainer

    config = copy.deepcopy(WINE)
    config["trainer"]["run_dir"] = str(tmp_path_factory.mktemp("explain") / "run")
    Trainer(config).fit()
    return config["trainer"]["run_dir"]


def test_json_lines_for_records_of_a_split_with_pngs_and_a_summary(run, capsys):
    from pathlib import Path

    assert main(["explain", run, "--split", "test", "--limit", "4", "--json", "--plots", "2"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["record"] for r in lines] == [1, 2, 3, 4]
    for r in lines:
        assert set(r["shapley"]) == {"first", "second"} and r["value"] == "log_probability" and r["exact"]
        assert sum(r["shapley"].values()) == pytest.approx(r["full"] - r["empty"], abs=1e-5)
        assert r["full"] <= 0 and r["prediction"] in (0, 1, 2)
    summary = json.loads(captured.err.strip().splitlines()[-1])["summary"]
    assert summary["records"] == 4 and set(summary["mean_abs"]) == {"first", "second"}
    folder = Path(run) / "explain"
    assert sorted(p.name for p in folder.iterdir()) == ["record_1.png", "record_2.png", "summary.json", "summary.png"]
    assert json.loads((folder / "summary.json").read_text())["records"] == 4


def test_one_record_from_the_command_line_and_a_table(run, tmp_path, capsys):
    first, second = "[13.2, 1.8, 2.1, 17.0, 100.0, 2.5]", "[2.4, 0.3, 1.6, 5.0, 1.0, 3.0, 700.0]"
    assert main(["explain", run, f"first={first}", f"second={second}", "--out", str(tmp_path / "one")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("record 1: prediction") and "mean |Shapley value| over 1 record" in out
    assert (tmp_path / "one" / "record_1.png").is_file()
    table = tmp_path / "rows.jsonl"
    table.write_text(json.dumps({"first": json.loads(first), "second": json.loads(second)}) + "\n"
                     + json.dumps({"first": json.loads(first), "second": None}) + "\n")
    assert main(["explain", run, "--data", str(table), "--json", "--plots", "0", "--out", str(tmp_path / "t")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and rows[1]["shapley"]["second"] == 0.0 and rows[1]["present"] == ["first"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--split", "test", "--data", "x.csv"], "give exactly one of"),
    ([], "give exactly one of"),
    (["--split", "test", "--limit", "0"], "--limit: must be an int >= 1"),
    (["--split", "holdout"], "--split: expected train, val or test"),
    (["--split", "test", "--pairs", "1"], "--pairs: must be an int >= 2"),
])
def test_bad_arguments_are_one_line_and_exit_2(run, capsys, argv, message):
    assert main(["explain", run, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "invalid configuration" not in err, "an argument's error reads as what it is"


@pytest.mark.slow  # the shared fit run (tests/plugins/conftest.py: one epoch of a 40-row table)
def test_a_fit_runs_records_are_named_by_their_id_values(cp1252_fit_run, cp1252_table, tmp_path, capsys):
    """A fit run's id columns ('Kundennr', 'row') name each explained row in the printed report (as predict
    carries them into its lines); a row whose id cells are empty keeps 'record N'; --json keeps predict's keys."""
    table = cp1252_table(tmp_path / "new.csv", 3, seed=5)
    lines = table.read_bytes().decode("cp1252").splitlines()
    lines[2] = ";;" + lines[2].split(";", 2)[2]  # the second row: both id cells empty
    table.write_bytes(("\n".join(lines) + "\n").encode("cp1252"))
    argv = ["explain", str(cp1252_fit_run), "--data", str(table), "--plots", "0", "--out", str(tmp_path / "x")]
    assert main(argv) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if ": prediction " in line]
    assert [h.split(": prediction ")[0] for h in heads] == ["Kundennr=K1000, row=1100", "record 2", "Kundennr=K1002, row=1102"]
    assert main([*argv[:-1], str(tmp_path / "j"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["record"], r["Kundennr"], r["row"]) for r in rows] == [(1, "K1000", "1100"), (2, "", ""),
                                                                     (3, "K1002", "1102")]  # as the CSV held them
