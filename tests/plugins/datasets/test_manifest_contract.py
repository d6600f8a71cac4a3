"""The manifest's side of issue 20: an empty multilabel cell means "none of the labels" (20.6), one rule
for placeholders such as ``N/A`` (20.9), non-finite targets (20.4), and each sample's origin (20.3)."""

from __future__ import annotations

import json

import pytest

from mmcore_plugins.datasets.manifest import ManifestError, load_manifest

NO_SPLITS = {"val_fraction": 0, "test_fraction": 0}


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(str(c) for c in row) + "\n" for row in rows))
    return str(path)


def test_an_empty_multilabel_cell_is_a_negative_example_by_default(tmp_path, caplog):
    rows = [["a", "cat|dog"], ["b", ""], ["c", "dog"], ["d", "  "], ["e", "N/A"]]
    m = write_csv(tmp_path / "m.csv", ["t", "tags"], rows)
    data = load_manifest("train", m, columns={"t": "t"}, target="tags", target_type="multilabel", **NO_SPLITS)
    assert len(data) == 5, "no negative example is lost"
    assert [s["target"] for s in data.samples] == [[1, 1], [0, 0], [0, 1], [0, 0], [0, 0]]
    assert data.metadata["empty_labels"] == 3
    assert "3 rows with an empty 'tags' cell read as no label" in caplog.text
    # the flag: an empty cell is an unlabelled row, reported like any empty target
    with pytest.raises(ManifestError, match=r"row 2, column 'tags': the target is empty") as info:
        load_manifest("train", m, columns={"t": "t"}, target="tags", target_type="multilabel", empty_labels="missing",
                      **NO_SPLITS)
    assert "row 4" in str(info.value) and "row 5" in str(info.value)
    skipped = load_manifest("train", m, columns={"t": "t"}, target="tags", target_type="multilabel",
                            empty_labels="missing", on_bad_sample="skip", **NO_SPLITS)
    assert len(skipped) == 2 and skipped.metadata["skipped"] == 3
    with pytest.raises(ValueError, match="empty_labels"):
        load_manifest("train", m, columns={"t": "t"}, target="tags", empty_labels="drop", **NO_SPLITS)


def test_placeholders_are_missing_cells_in_every_column_kind(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    rows = [["x.png", "hello", "1.5", "red", "1", "a"], ["N/A", "n/a", "NA", "#N/A", "2", "b"],
            ["null", "None", "<NA>", "nan", "3", "a"]]
    m = write_csv(tmp_path / "m.csv", ["photo", "note", "size", "colour", "k", "y"], rows)
    data = load_manifest("train", m, columns={"photo": "photo", "note": "note", "num": ["size"],
                                              "cat": {"categorical": ["colour"]}, "k": ["k"]},
                         path_columns=["photo"], target="y", **NO_SPLITS)
    second = data.samples[1]["inputs"]
    assert second == {"photo": None, "note": None, "num": None, "cat": None, "k": [2.0]}
    assert data.metadata["missing"] == {"photo": 2, "note": 2, "num": 2, "cat": 2, "k": 0}
    # a placeholder target is an empty target
    m2 = write_csv(tmp_path / "m2.csv", ["note", "y"], [["a", "cat"], ["b", "N/A"], ["c", "dog"]])
    with pytest.raises(ManifestError, match=r"row 2, column 'y': the target is empty"):
        load_manifest("train", m2, columns={"note": "note"}, target="y", **NO_SPLITS)


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity"])
def test_a_non_finite_regression_target_is_a_data_error_naming_row_and_column(tmp_path, cell):
    m = write_csv(tmp_path / "m.csv", ["x", "price"], [["1", "2.5"], ["2", cell], ["3", "4.25"]])
    with pytest.raises(ManifestError, match=r"row 2, column 'price': expected a finite number"):
        load_manifest("train", m, columns={"x": ["x"]}, target="price", target_type="regression", **NO_SPLITS)
    with pytest.raises(ManifestError, match=r"row 2, column 'price'"):
        load_manifest("train", m, columns={"x": ["x"]}, target="price", target_type="class", **NO_SPLITS)


def test_samples_carry_their_origin(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"t": t, "y": y}) + "\n" for t, y in (("a", 1), ("b", 0), ("c", 1))))
    data = load_manifest("train", str(path), columns={"words": "t"}, target="y", **NO_SPLITS)
    assert [s["origin"]["row"] for s in data.samples] == [1, 2, 3]
    assert data.samples[0]["origin"]["file"] == str(path) and data.samples[0]["origin"]["columns"] == {"words": "t"}


def test_a_manifests_cells_are_taken_as_written_no_decimal_comma_guess(tmp_path):
    """Two integer labels joined by ',' in a quoted cell are two labels, not the number 1.3 (fit guesses
    decimal commas and shows it; a manifest's config already says what each column holds)."""
    (tmp_path / "m.csv").write_text('t,tags\n' + "".join(f'w{i},"{i % 3},{i % 3 + 1}"\n' for i in range(12)))
    data = load_manifest("train", str(tmp_path / "m.csv"), columns={"t": "t"}, target="tags", target_type="multilabel",
                         label_delimiter=",", **NO_SPLITS)
    assert [s["target"] for s in data.samples][:3] == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
