"""The manifest data set: missing cells, bad rows (error or skip), paths that escape, CSV and JSONL."""

import json

import pytest

from mmcore_plugins.datasets.manifest import BadSampleError, load_manifest


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    return tmp_path


def test_missing_cells_are_missing_modalities(folder):
    m = write_jsonl(folder / "m.jsonl", [
        {"doc": "a.txt", "text": "hello", "x": 1, "y": "2.5", "label": 1},
        {"doc": "", "text": None, "x": None, "y": "", "label": 0},
    ])
    data = load_manifest("train", str(m), columns={"file": "doc", "text": "text", "table": ["x", "y"]},
                         target="label", path_columns=["doc"], val_fraction=0, test_fraction=0)
    first, second = sorted(data.samples, key=lambda s: -s["target"])
    assert first["inputs"] == {"file": str((folder / "a.txt").resolve()), "text": "hello", "table": [1.0, 2.5]}
    assert second["inputs"] == {"file": None, "text": None, "table": None}


def test_bad_rows_name_manifest_row_and_column_or_are_skipped(folder, caplog):
    m = write_jsonl(folder / "m.jsonl", [
        {"x": "oops", "label": 0},
        {"x": 3, "label": 1},
        {"x": "nan", "label": 1},
    ])
    kwargs = {"columns": {"t": ["x"]}, "target": "label", "val_fraction": 0, "test_fraction": 0}
    with pytest.raises(BadSampleError, match=r"m.jsonl: row \d, column 'x': expected a number, got 'oops'"):
        load_manifest("train", str(m), **kwargs)
    data = load_manifest("train", str(m), on_bad_sample="skip", **kwargs)
    assert [s["inputs"]["t"] for s in data.samples] == [[3.0]]
    assert data.metadata["skipped"] == 2
    assert sum("on_bad_sample=skip" in r.message for r in caplog.records) == 1, "logged once"


def test_paths_escaping_the_manifest_folder_are_refused(folder):
    (folder / "sub").mkdir()
    m = write_jsonl(folder / "sub" / "m.jsonl", [{"doc": "../a.txt", "label": 0}])
    kwargs = {"columns": {"f": "doc"}, "target": "label", "path_columns": ["doc"], "val_fraction": 0, "test_fraction": 0}
    with pytest.raises(BadSampleError, match="escapes the manifest's folder"):
        load_manifest("train", str(m), **kwargs)
    assert len(load_manifest("train", str(m), allow_outside_paths=True, **kwargs)) == 1
    write_jsonl(m, [{"doc": "missing.txt", "label": 0}])
    with pytest.raises(BadSampleError, match="does not exist"):
        load_manifest("train", str(m), **kwargs)


def test_csv_with_split_column(folder):
    m = folder / "m.csv"
    m.write_text("text,label,split\nun,1,train\ndeux,2,test\n,3,train\n")
    train = load_manifest("train", str(m), columns={"text": "text"}, target="label", split_column="split")
    test = load_manifest("test", str(m), columns={"text": "text"}, target="label", split_column="split")
    assert [s["inputs"]["text"] for s in train.samples] == ["un", None]
    assert [s["target"] for s in test.samples] == [2]
