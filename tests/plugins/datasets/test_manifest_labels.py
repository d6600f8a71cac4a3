"""Manifest targets and splits: class names fitted on the training split, multilabel, regression,
split aliases, empty splits, and the whole data set validated (every problem at once) when built."""

import json
import math

import numpy as np
import pytest

from mmcore_plugins.datasets.manifest import BadSampleError, ManifestError, load_manifest


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(str(c) for c in row) + "\n" for row in rows))
    return str(path)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


SPLIT = {"columns": {"text": "text"}, "target": "label", "split_column": "split"}


def test_string_labels_are_fitted_on_the_training_split_and_shared_by_every_split(tmp_path):
    m = write_csv(tmp_path / "m.csv", ["text", "label", "split"],
                  [["a", "dog", "train"], ["b", "cat", "train"], ["c", "dog", "val"], ["d", "cat", "test"], ["e", "cat", "train"]])
    data = {s: load_manifest(s, m, **SPLIT) for s in ("train", "val", "test")}
    for split in data.values():
        assert split.metadata["classes"] == ["cat", "dog"] and split.metadata["num_classes"] == 2
    assert [s["target"] for s in data["train"].samples] == [1, 0, 0]
    assert [s["target"] for s in data["val"].samples] == [1] and [s["target"] for s in data["test"].samples] == [0]
    # fixed classes (given by the user, or by a run's saved model) decide the order
    fixed = load_manifest("train", m, classes=["dog", "cat"], **SPLIT)
    assert fixed.metadata["classes"] == ["dog", "cat"] and [s["target"] for s in fixed.samples] == [0, 1, 1]


def test_float_labels_0_and_1_are_two_classes_named_as_written(tmp_path):
    m = write_csv(tmp_path / "m.csv", ["text", "label"], [["a", "0.0"], ["b", "1.0"], ["c", "1.0"], ["d", "0.0"]])
    data = load_manifest("train", m, columns={"text": "text"}, target="label", val_fraction=0, test_fraction=0)
    assert data.metadata["classes"] == ["0.0", "1.0"] and data.metadata["target_type"] == "class"
    assert [s["target"] for s in data.samples] == [0, 1, 1, 0]
    assert all(type(s["target"]) is int for s in data.samples)


def test_signed_labels_keep_their_sign_and_other_spellings_of_a_value_are_its_class(tmp_path):
    """The fault of issue 24: `+1` became `1` here and stayed `+1` in mmcore fit."""
    m = write_csv(tmp_path / "m.csv", ["text", "label", "split"],
                  [["a", "+1", "train"], ["b", "-1", "train"], ["c", "+1", "train"], ["d", "1", "val"], ["e", "-1.0", "test"]])
    data = {s: load_manifest(s, m, **SPLIT) for s in ("train", "val", "test")}
    assert data["train"].metadata["classes"] == ["-1", "+1"], "numbers in order, each named as the training split writes it"
    assert [s["target"] for s in data["train"].samples] == [1, 0, 1]
    assert [s["target"] for s in data["val"].samples] == [1] and [s["target"] for s in data["test"].samples] == [0]
    # the classes a run saved (a head's classes option) are taken as they are, and any spelling finds them
    fixed = load_manifest("train", m, classes=["-1", "+1"], **SPLIT)
    assert fixed.metadata["classes"] == ["-1", "+1"] and [s["target"] for s in fixed.samples] == [1, 0, 1]
    with pytest.raises(ValueError, match=r"classes: one class named more than once: '1' and '\+1'"):
        load_manifest("train", m, classes=["1", "+1"], **SPLIT)


def test_a_csv_1_and_a_json_lines_1_are_one_class(tmp_path):
    train = write_csv(tmp_path / "train.csv", ["text", "label"], [["a", "1"], ["b", "0"], ["c", "True"]])
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "d", "label": 1}, {"text": "e", "label": 0.0}, {"text": "f", "label": True}])
    kwargs = {"columns": {"text": "text"}, "target": "label", "val_path": val, "test_fraction": 0}
    assert load_manifest("train", train, **kwargs).metadata["classes"] == ["0", "1", "True"]
    assert [s["target"] for s in load_manifest("val", train, **kwargs).samples] == [1, 0, 2]


def test_integer_labels_sort_numerically_and_num_classes_makes_them_indices(tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", [{"t": "a", "y": 10}, {"t": "b", "y": 2}, {"t": "c", "y": 2.0}])
    kwargs = {"columns": {"t": "t"}, "target": "y", "val_fraction": 0, "test_fraction": 0}
    data = load_manifest("train", m, **kwargs)
    assert data.metadata["classes"] == ["2", "10"] and [s["target"] for s in data.samples] == [1, 0, 0]
    indexed = load_manifest("train", m, num_classes=12, target_type="class", **kwargs)
    assert indexed.metadata["num_classes"] == 12 and [s["target"] for s in indexed.samples] == [10, 2, 2]
    with pytest.raises(ManifestError, match=r"row 1, column 'y': expected a class index in \[0, 5\), got 10"):
        load_manifest("train", m, num_classes=5, target_type="class", **kwargs)


def test_a_label_the_training_split_never_had_is_an_error_naming_row_column_and_value(tmp_path):
    m = write_csv(tmp_path / "m.csv", ["text", "label", "split"],
                  [["a", "cat", "train"], ["b", "dog", "train"], ["c", "bird", "val"], ["d", "cat", "test"]])
    for split in ("train", "val", "test"):  # found whichever split is built first
        with pytest.raises(ManifestError) as info:
            load_manifest(split, m, **SPLIT)
        assert f"{m}: row 3, column 'label': expected one of the labels of the training split ['cat', 'dog'], got 'bird'" in str(info.value)
    assert len(load_manifest("train", m, on_bad_sample="skip", **SPLIT)) == 2
    assert load_manifest("val", m, on_bad_sample="skip", **SPLIT).metadata["skipped"] == 1


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-Infinity"])
def test_nan_and_infinite_class_labels_are_data_errors(tmp_path, bad):
    m = write_csv(tmp_path / "m.csv", ["text", "label"], [["a", "1"], ["b", bad], ["c", "0"]])
    # "nan" is a placeholder for no value (mmcore.labels.MISSING_PLACEHOLDERS): an empty target
    expected = "the target is empty" if bad.lower() == "nan" else rf"expected a class label, got {bad!r} \(not a finite number\)"
    with pytest.raises(ManifestError, match=rf"row 2, column 'label': {expected}"):
        load_manifest("train", m, columns={"text": "text"}, target="label", target_type="class", val_fraction=0, test_fraction=0)


def test_fractional_numbers_are_classes_when_the_target_is_classes(tmp_path):
    """Half-star ratings are classes when the head says so; ``auto`` takes them for a regression target."""
    m = write_csv(tmp_path / "m.csv", ["text", "label"], [["a", "1"], ["b", "0.5"], ["c", "1.5"], ["d", "0.5"]])
    kwargs = {"columns": {"text": "text"}, "target": "label", "val_fraction": 0, "test_fraction": 0}
    data = load_manifest("train", m, target_type="class", **kwargs)
    assert data.metadata["classes"] == ["0.5", "1", "1.5"] and [s["target"] for s in data.samples] == [1, 0, 2, 0]
    assert load_manifest("train", m, **kwargs).metadata["target_type"] == "regression"


def test_a_nan_label_in_a_dataframe_is_an_empty_target(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["cat", np.nan, "dog"]})
    with pytest.raises(ManifestError, match=r"<DataFrame>: row 2, column 'label': the target is empty"):
        load_manifest("train", frame, columns={"text": "text"}, target="label", val_fraction=0, test_fraction=0)


def test_multilabel_from_a_list_column_and_from_a_delimited_string(tmp_path):
    rows = [{"t": "a", "tags": ["cat", "dog"]}, {"t": "b", "tags": ["dog"]}, {"t": "c", "tags": []}]
    listed = load_manifest("train", write_jsonl(tmp_path / "m.jsonl", rows), columns={"t": "t"}, target="tags",
                           val_fraction=0, test_fraction=0)
    assert listed.metadata["target_type"] == "multilabel" and listed.metadata["classes"] == ["cat", "dog"]
    assert [s["target"] for s in listed.samples] == [[1, 1], [0, 1], [0, 0]]
    m = write_csv(tmp_path / "m.csv", ["t", "tags"], [["a", "cat|dog"], ["b", " dog "], ["c", "bird|cat"]])
    delimited = load_manifest("train", m, columns={"t": "t"}, target="tags", target_type="multilabel",
                              val_fraction=0, test_fraction=0)
    assert delimited.metadata["classes"] == ["bird", "cat", "dog"]
    assert [s["target"] for s in delimited.samples] == [[0, 1, 1], [0, 0, 1], [1, 1, 0]]
    m2 = write_csv(tmp_path / "m2.csv", ["t", "tags"], [["a", "cat;dog"], ["b", "dog"]])
    semi = load_manifest("train", m2, columns={"t": "t"}, target="tags", target_type="multilabel", label_delimiter=";",
                         val_fraction=0, test_fraction=0)
    assert [s["target"] for s in semi.samples] == [[1, 1], [0, 1]]


def test_multilabel_from_parquet_list_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"t": ["a", "b"], "tags": [["x"], ["x", "y"]]}), tmp_path / "m.parquet")
    data = load_manifest("train", str(tmp_path / "m.parquet"), columns={"t": "t"}, target="tags", val_fraction=0, test_fraction=0)
    assert data.metadata["classes"] == ["x", "y"] and [s["target"] for s in data.samples] == [[1, 0], [1, 1]]


def test_regression_targets_must_be_finite_numbers(tmp_path):
    m = write_csv(tmp_path / "m.csv", ["t", "y"], [["a", "1.5"], ["b", "abc"], ["c", "inf"], ["d", "2"]])
    with pytest.raises(ManifestError) as info:
        load_manifest("train", m, columns={"t": "t"}, target="y", target_type="regression", val_fraction=0, test_fraction=0)
    message = str(info.value)
    assert "row 2, column 'y': expected a finite number (a regression target), got 'abc'" in message
    assert "row 3, column 'y': expected a finite number (a regression target), got 'inf'" in message
    ok = write_csv(tmp_path / "ok.csv", ["t", "y"], [["a", "1.5"], ["b", "2"]])
    data = load_manifest("train", ok, columns={"t": "t"}, target="y", val_fraction=0, test_fraction=0)
    assert data.metadata["target_type"] == "regression" and "classes" not in data.metadata
    assert [s["target"] for s in data.samples] == [1.5, 2.0]


def test_split_aliases_in_any_case(tmp_path):
    m = write_csv(tmp_path / "m.csv", ["text", "label", "split"],
                  [["a", "x", "Train"], ["b", "y", "TRAINING"], ["c", "x", "validation"], ["d", "y", "Valid"],
                   ["e", "x", "dev"], ["f", "y", "Test"], ["g", "x", " testing "], ["h", "y", "val"]])
    sizes = {s: len(load_manifest(s, m, **SPLIT)) for s in ("train", "val", "test")}
    assert sizes == {"train": 2, "val": 4, "test": 2}


def test_unknown_split_values_are_one_error_listing_them_with_counts(tmp_path):
    m = write_csv(tmp_path / "m.csv", ["text", "label", "split"],
                  [["a", "x", "train"], ["b", "y", "holdout"], ["c", "x", "holdout"], ["d", "y", "trian"], ["e", "x", ""]])
    with pytest.raises(ManifestError) as info:
        load_manifest("train", m, **SPLIT)
    message = str(info.value)
    assert "column 'split' holds 4 row(s) with values that name no split: 'holdout' x2, 'trian' x1, (empty) x1" in message
    assert "'validation'" in message, "the accepted values are listed"


def test_an_empty_val_or_test_split_is_an_error_unless_chosen(tmp_path, caplog):
    m = write_csv(tmp_path / "m.csv", ["text", "label", "split"], [[c, "xy"[i % 2], "train"] for i, c in enumerate("abcdefghij")])
    with pytest.raises(ValueError, match=r"val_fraction: the val split is empty \(column 'split' .* holds no val rows\)"):
        load_manifest("train", m, **SPLIT)
    with pytest.raises(ValueError, match="test_fraction: the test split is empty"):
        load_manifest("train", m, val_fraction=0, **SPLIT)
    caplog.set_level("WARNING")
    none = {s: len(load_manifest(s, m, val_fraction=0, test_fraction=0, **SPLIT)) for s in ("train", "val", "test")}
    assert none == {"train": 10, "val": 0, "test": 0}
    assert any("no val split (val_fraction: 0); validation uses the training split" in r.message for r in caplog.records)
    carved = {s: load_manifest(s, m, val_fraction=0.2, test_fraction=0.1, **SPLIT) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in carved.items()} == {"train": 7, "val": 2, "test": 1}
    texts = [s["inputs"]["text"] for d in carved.values() for s in d.samples]
    assert sorted(texts) == list("abcdefghij"), "every row in exactly one split"
    with pytest.raises(ValueError, match=r"val_fraction: 0.15 \(the default\) of the 3 rows .* is no row"):
        load_manifest("train", write_csv(tmp_path / "s.csv", ["text", "label"], [["a", 1], ["b", 0], ["c", 1]]),
                      columns={"text": "text"}, target="label", test_fraction=0)


def test_rows_lacking_every_modality_are_errors_or_skipped_and_counted(tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", [{"t": "a", "x": 1, "y": 0}, {"t": "", "x": None, "y": 1}, {"t": "b", "x": 2, "y": 1},
                                           {"t": None, "x": "", "y": 0}])
    kwargs = {"columns": {"text": "t", "table": ["x"]}, "target": "y", "val_fraction": 0, "test_fraction": 0}
    with pytest.raises(ManifestError) as info:
        load_manifest("train", m, **kwargs)
    assert info.value.problems == [f"{m}: row 2: no modality: every input column (t, x) is empty (a sample needs at least one)",
                                   f"{m}: row 4: no modality: every input column (t, x) is empty (a sample needs at least one)"]
    data = load_manifest("train", m, on_bad_sample="skip", **kwargs)
    assert len(data) == 2 and data.metadata["skipped"] == 2


def test_every_problem_is_reported_together_and_the_listing_is_capped(tmp_path):
    rows = [{"t": "ok", "n": "1", "y": "cat"}] + [{"t": "x", "n": f"bad{i}", "y": "cat"} for i in range(30)]
    rows.append({"t": 5, "n": "2", "y": "dog"})
    m = write_jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(ManifestError) as info:
        load_manifest("train", m, columns={"text": "t", "num": ["n"]}, target="y", slot_modalities={"text": "text"},
                      val_fraction=0, test_fraction=0)
    error = info.value
    assert len(error.problems) == 31
    assert "row 32, column 't': expected text (a string), got int 5" in error.problems[-1]
    message = str(error)
    assert message.startswith("31 problems in the data set:") and message.endswith("... and 11 more")
    assert "row 2, column 'n': expected a number, got 'bad0'" in message
    assert isinstance(error, BadSampleError) and isinstance(error, ValueError)


def test_ragged_rows_of_numbers_are_reported(tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", [{"v": [1, 2, 3], "y": 0}, {"v": [1, 2], "y": 1}, {"v": [4, 5, 6], "y": 1},
                                           {"v": [1, "a", 2], "y": 0}])
    with pytest.raises(ManifestError) as info:
        load_manifest("train", m, columns={"table": "v"}, target="y", val_fraction=0, test_fraction=0)
    assert "row 2, column 'v': expected 3 numbers (as most rows have), got 2" in str(info.value)
    assert "row 4, column 'v': expected a list of finite numbers, got 'a' in it" in str(info.value)


def test_a_folder_given_as_an_image_and_a_text_file_read_as_its_contents(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "note.txt").write_text("caf\u00e9 au lait\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe broken")
    m = write_jsonl(tmp_path / "m.jsonl", [{"img": "pics", "doc": "note.txt", "y": 0}, {"img": "", "doc": "bad.txt", "y": 1}])
    kwargs = {"columns": {"image": "img", "text": "doc"}, "target": "y", "path_columns": ["img", "doc"],
              "slot_modalities": {"image": "image", "text": "text"}, "val_fraction": 0, "test_fraction": 0}
    with pytest.raises(ManifestError) as info:
        load_manifest("train", m, **kwargs)
    message = str(info.value)
    assert "row 1, column 'img':" in message and "is a folder, expected an image file" in message
    assert "row 2, column 'doc':" in message and "byte offset 3" in message
    write_jsonl(tmp_path / "m.jsonl", [{"img": "", "doc": "note.txt", "y": 0}, {"img": "", "doc": "note.txt", "y": 1}])
    data = load_manifest("train", m, **kwargs)
    assert [s["inputs"]["text"] for s in data.samples] == ["caf\u00e9 au lait\n"] * 2, "the file's contents, not its name"
    assert math.isfinite(len(data))


def test_a_repeated_label_gets_one_class_on_every_row_and_a_repeated_bad_one_is_reported_on_every_row(tmp_path):
    # Labels are looked up once per distinct cell text (a table repeats a few labels): the rows
    # after the first must get what the first got, and an unknown label is never remembered as good.
    rows = [[c, lab, "train"] for c, lab in zip("abcdef", ["dog", " dog", "cat", "dog", "NaN", "cat"], strict=True)]
    rows += [["g", "fish", "val"], ["h", "fish", "test"], ["i", "dog", "test"]]
    m = write_csv(tmp_path / "m.csv", ["text", "label", "split"], rows)
    with pytest.raises(ManifestError) as info:
        load_manifest("train", m, **SPLIT)
    message = str(info.value)
    assert "row 7" in message and "row 8" in message and message.count("'fish'") == 2, message
    assert "row 5" in message, "an empty (NaN) label is reported, not taken for a class"
    data = load_manifest("train", m, on_bad_sample="skip", **SPLIT)
    assert data.metadata["classes"] == ["cat", "dog"]
    assert [s["target"] for s in data.samples] == [1, 1, 0, 1, 0], "' dog' and 'dog' are one class on every row"
    assert [s["target"] for s in load_manifest("test", m, on_bad_sample="skip", **SPLIT).samples] == [1]
