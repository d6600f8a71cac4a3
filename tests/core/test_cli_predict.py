"""Class names in and out, end to end: a manifest with cat/dog labels trained for one epoch, then
`mmcore eval` and `mmcore predict` (a text file, a tabular mapping, a whole table with --data/--out);
label and split problems stop `mmcore train` before anything is trained."""

import json

import pytest
import yaml

from mmcore.cli import main

ROWS = [("meow purr", 21 + i % 5, "oslo" if i % 3 else "rome", "cat" if i % 2 else "dog", ["train", "Train", "train", "validation", "Test"][i % 5])
        for i in range(30)]


def write_manifest(folder, rows=ROWS):
    lines = ["note,age,city,label,split"]
    for note, age, city, label, split in rows:
        lines.append(f"{note if label == 'cat' else 'woof bark'},{age},{city},{label},{split}")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    return folder / "m.csv"


def write_config(folder, manifest, head=None, **data):
    config = {
        "data": {"name": "manifest", "path": str(manifest), "target": "label", "split_column": "split",
                 "columns": {"note": "note", "profile": {"numeric": ["age"], "categorical": ["city"]}}, **data},
        "model": {"encoders": {"note": {"name": "text_transformer", "dim": 16, "heads": 2, "layers": 1, "max_length": 16},
                               "profile": {"name": "tabular_mlp", "num_features": 1, "columns": ["age"],
                                           "categorical": ["city"], "dim": 16}},
                  "fusion": {"name": "concat", "dim": 16}, "head": head or {"name": "classification"}},
        "trainer": {"epochs": 1, "batch_size": 8, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False,
                    "run_dir": str(folder / "run")},
    }
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    return str(folder / "c.yaml")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("names")
    assert main(["train", write_config(folder, write_manifest(folder))]) == 0
    return folder / "run"


def test_string_labels_train_and_the_run_carries_the_class_names(run, capsys):
    head = yaml.safe_load((run / "config.yaml").read_text())["model"]["head"]
    assert head == {"name": "classification", "classes": ["cat", "dog"], "num_classes": 2}
    assert json.loads((run / "best" / "model.json").read_text())["spec"]["head"]["classes"] == ["cat", "dog"]
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "completed" and 0.0 <= report["test"]["accuracy"] <= 1.0
    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 6, "the 'Test' rows"


def test_predict_speaks_class_names_from_a_text_file_and_a_tabular_mapping(run, tmp_path, capsys):
    note = tmp_path / "note.txt"
    note.write_text("meow purr", encoding="utf-8")
    assert main(["predict", str(run), f"note={note}", "profile={age: 22, city: oslo}"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["inputs"] == {"note": "meow purr", "profile": {"age": 22, "city": "oslo"}}, "the file's contents, not its name"
    assert result["prediction"] in ("cat", "dog") and result["missing"] == []
    assert set(result["probabilities"]) == {"cat", "dog"} and sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    # a bare .txt path goes to the text slot, read as its contents; JSON works like YAML
    assert main(["predict", str(run), str(note), 'profile={"age": 30, "city": "no"}']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["inputs"]["note"] == "meow purr" and result["inputs"]["profile"] == {"age": 30, "city": "no"}
    assert main(["predict", str(run), "profile={age: 22, city: [oops"]) == 2
    assert "is not a valid [list] or {mapping}" in capsys.readouterr().err
    # the same safe loader as configs: a tag is refused by name, never silently dropped
    assert main(["predict", str(run), "profile={age: !!python/object/apply:os.system [ls], city: oslo}"]) == 2
    assert "tag !!python/object/apply:os.system is not allowed" in capsys.readouterr().err


def test_predict_a_whole_table_one_json_line_per_row_bad_rows_in_their_line(run, tmp_path, capsys):
    data = tmp_path / "new.csv"
    data.write_text("note,age,city\nwoof bark,21,rome\nmeow,x,oslo\n,,\nmeow purr,25,\n")
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", str(run), "--data", str(data), "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["row"] for line in lines] == [1, 2, 3, 4]
    assert lines[0]["prediction"] in ("cat", "dog") and set(lines[0]["probabilities"]) == {"cat", "dog"}
    assert lines[1] == {"row": 2, "error": "row 2, column 'age': expected a number, got 'x'"}
    assert "no modality" in lines[2]["error"]
    assert lines[3]["prediction"] in ("cat", "dog")
    before = out.read_text()
    assert main(["predict", str(run), "--data", str(data), "--out", str(out)]) == 2
    assert "exists; choose another file or pass --overwrite" in capsys.readouterr().err and out.read_text() == before
    out.write_text("old")
    assert main(["predict", str(run), "--data", str(data), "--out", str(out), "--overwrite"]) == 0
    assert len(out.read_text().splitlines()) == 4
    # JSON Lines with the columns named after the slots when the run's config has no such mapping works too;
    # without --out the lines go to stdout
    jl = tmp_path / "new.jsonl"
    jl.write_text(json.dumps({"note": "meow purr", "age": 23, "city": "oslo"}) + "\n")
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(jl)]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] in ("cat", "dog")
    assert main(["predict", str(run), "--data", str(tmp_path / "missing.csv")]) == 2


def test_predict_out_never_follows_a_planted_link_at_a_temporary_or_the_final_name(run, tmp_path):
    """Issue 28.5: the old fixed '.predictions.jsonl.tmp' name was followed when a link was planted
    there; and a link at --out itself is replaced (with --overwrite), its target left alone."""
    data = tmp_path / "new.csv"
    data.write_text("note,age,city\nwoof bark,21,rome\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "predictions.jsonl"
    (tmp_path / ".predictions.jsonl.tmp").symlink_to(victim)
    assert main(["predict", str(run), "--data", str(data), "--out", str(out)]) == 0
    assert victim.read_text() == "precious" and json.loads(out.read_text())["row"] == 1
    out.unlink()
    out.symlink_to(victim)
    assert main(["predict", str(run), "--data", str(data), "--out", str(out), "--overwrite"]) == 0
    assert victim.read_text() == "precious" and not out.is_symlink() and json.loads(out.read_text())["row"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".predictions.jsonl.tmp"] == []


def test_predict_reads_tables_and_text_files_through_plugins_that_can_be_blocked(run, tmp_path, capsys, monkeypatch):
    """The core reads no file itself: a table is the manifest plugin's (hook mmcore_table_inputs), a
    text file the modalities plugin's (hook mmcore_file_input). Blocking the manifest really removes
    its part; another plugin can take it over."""
    import mmcore

    data = tmp_path / "new.csv"
    data.write_text("note,age,city\nwoof bark,21,rome\n")
    monkeypatch.setenv("MMCORE_DISABLE_PLUGINS", "manifest")
    mmcore.reset_plugin_manager()
    assert main(["predict", str(run), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "--data: no installed plugin reads tables into model inputs" in err and "manifest" in err
    assert main(["predict", str(run), "note=meow purr", "profile={age: 22, city: oslo}"]) == 0, "single inputs still work"
    capsys.readouterr()

    class Rows:
        """A stand-in reader: every row gets the same inputs (proves the hook is what predict asks)."""

        @mmcore.hookimpl
        def mmcore_table_inputs(self, path, encoding, model, data):
            assert data["name"] == "manifest" and set(model.slots) == {"note", "profile"}
            return [({"note": "meow purr", "profile": None}, None), (None, "row 2: unreadable")]

    with mmcore.register_plugin(Rows(), name="rows"):
        assert main(["predict", str(run), "--data", str(data)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["prediction"] in ("cat", "dog") and lines[1] == {"row": 2, "error": "row 2: unreadable"}

    # A text file for a text slot is read by the modalities plugin; blocked, the path itself is the input.
    note = tmp_path / "note.txt"
    note.write_bytes(b"meow \xff purr")
    monkeypatch.setenv("MMCORE_DISABLE_PLUGINS", "")
    mmcore.reset_plugin_manager()
    assert main(["predict", str(run), f"note={note}"]) == 2
    assert "is not valid utf-8: byte offset 5" in capsys.readouterr().err
    monkeypatch.setenv("MMCORE_DISABLE_PLUGINS", "modalities")
    mmcore.reset_plugin_manager()
    assert main(["predict", str(run), f"note={note}"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"]["note"] == str(note)


def test_an_unseen_label_in_val_stops_training_before_anything_is_written(tmp_path, capsys):
    rows = [*ROWS[:10], ("x", 30, "oslo", "bird", "validation")]
    config = write_config(tmp_path, write_manifest(tmp_path, rows))
    assert main(["train", config]) == 2
    err = capsys.readouterr().err
    assert "row 11, column 'label': expected one of the labels of the training split ['cat', 'dog'], got 'bird'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "best").exists() and not (tmp_path / "run" / "last").exists()


def test_unknown_split_values_and_a_disagreeing_num_classes_exit_2(tmp_path, capsys):
    rows = [*ROWS[:10], ("x", 30, "oslo", "cat", "holdout")]
    assert main(["train", write_config(tmp_path, write_manifest(tmp_path, rows))]) == 2
    assert "'holdout' x1" in capsys.readouterr().err
    config = write_config(tmp_path, write_manifest(tmp_path), head={"name": "classification", "num_classes": 3})
    assert main(["train", config]) == 2
    assert "model.head.num_classes: is 3, but the training split has 2 classes ['cat', 'dog']" in capsys.readouterr().err


def test_resuming_a_run_whose_classes_were_inferred_is_not_a_config_change(run, capsys):
    config = run.parent / "c.yaml"
    assert "classes" not in yaml.safe_load(config.read_text())["model"]["head"], "the user's config leaves them out"
    assert main(["train", str(config), "--resume", str(run)]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["head"]["classes"] == ["cat", "dog"]


def test_the_model_tells_the_manifest_its_slot_modalities_and_target_type(tmp_path):
    import mmcore
    from mmcore.engine.trainer import load_datasets, model_data_options

    registry = mmcore.get_plugin_manager().registry
    spec = {"encoders": {"photo": {"name": "image_cnn"}, "note": {"name": "text_transformer"}},
            "head": {"name": "classification", "num_classes": 4}}
    assert model_data_options(spec, registry) == {"slot_modalities": {"photo": "image", "note": "text"},
                                                  "target_type": "class", "num_classes": 4}
    (tmp_path / "pics").mkdir()
    (tmp_path / "n.txt").write_text("hello")
    (tmp_path / "m.csv").write_text("photo,note,y,split\npics,n.txt,1,train\n,n.txt,3,val\n")
    config = {"data": {"name": "manifest", "path": str(tmp_path / "m.csv"), "columns": {"photo": "photo", "note": "note"},
                       "path_columns": ["photo", "note"], "target": "y", "split_column": "split", "test_fraction": 0},
              "model": spec}
    with pytest.raises(ValueError) as info:
        load_datasets(config, mmcore.get_plugin_manager())
    assert "row 1, column 'photo':" in str(info.value) and "is a folder, expected an image file" in str(info.value)
    config["data"]["path"] = str(tmp_path / "ok.csv")
    (tmp_path / "ok.csv").write_text("photo,note,y,split\n,n.txt,1,train\n,n.txt,3,val\n")
    data = load_datasets(config, mmcore.get_plugin_manager())
    assert [s["inputs"]["note"] for s in data["val"].samples] == ["hello"], "a text slot's file is read"
    assert [s["target"] for s in data["val"].samples] == [3], "num_classes 4 makes integer labels the class index"


def test_a_manifest_runs_table_needs_each_column_or_a_declared_missing_one(run, tmp_path, capsys):
    """Issue 20.1 for a `mmcore train` run: a renamed header is an error naming the column and the
    closest one; --missing makes its cells empty (a row of numbers missing whole: the slot is missing)."""
    (tmp_path / "renamed.csv").write_text("note,years,city\nmeow purr,22,oslo\nwoof bark,23,rome\n")
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(run), "--data", str(tmp_path / "renamed.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no column 'age'" in err and not out.exists()
    assert main(["predict", str(run), "--data", str(tmp_path / "renamed.csv"), "--out", str(out), "--missing", "age"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [set(r) >= {"row", "prediction"} for r in lines] == [True, True]
    assert main(["predict", str(run), "--data", str(tmp_path / "renamed.csv"), "--missing", "agee"]) == 2
    assert "'agee' is not a column the model reads" in capsys.readouterr().err
