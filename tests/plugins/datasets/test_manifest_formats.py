"""Manifest files as users have them: Excel's cp1252 CSV, long cells, duplicate columns, JSON Lines
that are not objects, Parquet, pandas DataFrames (mmcore_plugins.io.read_table underneath)."""

import re

import numpy as np
import pytest

from mmcore_plugins.datasets.manifest import load_manifest
from mmcore_plugins.io import TableError, read_table

KW = {"columns": {"text": "text"}, "target": "label", "val_fraction": 0, "test_fraction": 0}


def test_an_excel_cp1252_csv_reads_with_its_encoding_and_without_it_the_error_names_file_line_and_byte(tmp_path):
    m = tmp_path / "excel.csv"
    m.write_bytes("text,label\r\nplain,a\r\ncaf\u00e9 cr\u00e8me \u20ac5,b\r\n".encode("cp1252"))
    data = load_manifest("train", str(m), encoding="cp1252", **KW)
    assert [s["inputs"]["text"] for s in data.samples] == ["plain", "caf\u00e9 cr\u00e8me \u20ac5"]
    with pytest.raises(TableError) as info:
        load_manifest("train", str(m), **KW)
    message = str(info.value)
    assert message.startswith(f"{m}: line 3, byte offset 24: b'\\xe9")
    assert "encoding: cp1252" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(TableError, match="unknown encoding 'klingon'"):
        load_manifest("train", str(m), encoding="klingon", **KW)


def test_a_cell_longer_than_csvs_default_limit_is_read(tmp_path):
    long_text = "word " * 60_000  # 300,000 characters: over csv's 131,072 default
    m = tmp_path / "long.csv"
    m.write_text(f'text,label\n"{long_text}",a\nshort,b\n')
    data = load_manifest("train", str(m), **KW)
    assert len(data.samples[0]["inputs"]["text"]) == len(long_text)
    import csv

    assert csv.field_size_limit() == 131072, "the module-wide limit is restored"


def test_duplicate_column_names_are_refused_not_last_one_wins(tmp_path):
    m = tmp_path / "dup.csv"
    m.write_text("text,label,label\nhello,cat,dog\n")
    with pytest.raises(TableError, match=re.escape(f"{m}: duplicate column name(s) 'label' (columns 2 and 3)")):
        load_manifest("train", str(m), **KW)
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame([["a", "x", "y"]], columns=["text", "label", "label"])
    with pytest.raises(TableError, match=r"duplicate column name\(s\) \['label'\]"):
        load_manifest("train", frame, **KW)


def test_csv_rows_with_extra_fields_and_unnamed_columns_holding_data_are_named_errors(tmp_path):
    m = tmp_path / "extra.csv"
    m.write_text("text,label\nhello, world,a\n")
    with pytest.raises(TableError, match=rf"{re.escape(str(m))}: line 2 has 3 fields, the header 2 \(text, label\)"):
        read_table(m)
    m.write_text("text,label,\nhello,a,\nbye,b,oops\n")
    with pytest.raises(TableError, match=r"column 3 has no name in the header but holds 'oops'"):
        read_table(m)
    m.write_text("text,label,\nhello,a,\nbye,b\n")  # Excel's trailing empty column, a short row
    assert read_table(m) == [{"text": "hello", "label": "a"}, {"text": "bye", "label": "b"}]


def test_json_lines_that_are_not_objects_and_a_json_array(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"text": "a", "label": "x"}\n[1, 2]\n')
    with pytest.raises(TableError, match=rf"{re.escape(str(m))}: line 2 must hold a JSON object, got list"):
        load_manifest("train", str(m), **KW)
    m.write_text('{"text": "a", "label": "x"}\n{"text": \n')
    with pytest.raises(TableError, match="line 2 is not valid JSON"):
        load_manifest("train", str(m), **KW)
    j = tmp_path / "m.json"
    j.write_text('[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]')
    assert len(load_manifest("train", str(j), **KW)) == 2


def test_a_parquet_manifest_with_missing_cells(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"text": ["a", None, "c"], "x": [1.0, 2.0, float("nan")], "label": ["cat", "dog", "cat"],
                      "split": ["train", "train", "validation"]})
    pq.write_table(table, tmp_path / "m.parquet")
    kwargs = {"columns": {"text": "text", "num": ["x"]}, "target": "label", "split_column": "split", "test_fraction": 0}
    train = load_manifest("train", str(tmp_path / "m.parquet"), **kwargs)
    val = load_manifest("val", str(tmp_path / "m.parquet"), **kwargs)
    assert [s["inputs"] for s in train.samples] == [{"text": "a", "num": [1.0]}, {"text": None, "num": [2.0]}]
    assert [s["inputs"] for s in val.samples] == [{"text": "c", "num": None}], "NaN is a missing cell"
    assert train.metadata["classes"] == ["cat", "dog"] and [s["target"] for s in val.samples] == [0]
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(TableError, match="broken.parquet: not a readable Parquet file"):
        load_manifest("train", str(tmp_path / "broken.parquet"), **kwargs)


def test_a_pandas_dataframe_manifest_with_paths_relative_to_root(tmp_path):
    pd = pytest.importorskip("pandas")
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "a.png")
    frame = pd.DataFrame({"img": ["a.png", None, "a.png"], "age": [30, 41, np.nan], "city": ["oslo", pd.NA, None],
                          "label": [0.0, 1.0, 1.0]})
    data = load_manifest("train", frame, columns={"image": "img", "profile": {"numeric": ["age"], "categorical": ["city"]}},
                         target="label", path_columns=["img"], root=str(tmp_path), val_fraction=0, test_fraction=0)
    assert [s["inputs"]["image"] for s in data.samples] == [str((tmp_path / "a.png").resolve()), None, str((tmp_path / "a.png").resolve())]
    assert [s["inputs"]["profile"] for s in data.samples] == [{"age": 30.0, "city": "oslo"}, {"age": 41.0, "city": None}, None]
    # float labels are classes named as Python prints them (mmcore.labels), as the frame's CSV would hold them
    assert data.metadata["classes"] == ["0.0", "1.0"] and [s["target"] for s in data.samples] == [0, 1, 1]
    assert data.metadata["manifest"] == "<DataFrame>"


def test_tab_separated_files(tmp_path):
    m = tmp_path / "m.tsv"
    m.write_text("text\tlabel\nhello, world\ta\n")
    assert read_table(m) == [{"text": "hello, world", "label": "a"}]
    with pytest.raises(TableError, match=r"expected a .* file, got \.xlsx"):
        read_table(tmp_path / "x.xlsx") if (tmp_path / "x.xlsx").write_bytes(b"PK") else None
