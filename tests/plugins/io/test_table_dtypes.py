"""Every Arrow / pandas type of a table read as what it is (issue 20 item 7, the reading half): each
type a real Parquet file written by pyarrow (or a DataFrame), read back whole and streamed."""

import datetime as dt
import decimal
import zoneinfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmcore_plugins.io.tables import iter_table, read_table

PARIS = zoneinfo.ZoneInfo("Europe/Paris")

# (name, arrow array of [value, null], the value expected back)
ARROW = [
    ("decimal", pa.array([decimal.Decimal("1.50"), None], pa.decimal128(5, 2)), decimal.Decimal("1.50")),
    ("decimal256", pa.array([decimal.Decimal("12345678901234567890.5"), None], pa.decimal256(40, 1)),
     decimal.Decimal("12345678901234567890.5")),
    ("int64", pa.array([-(2**62), None], pa.int64()), -(2**62)),
    ("uint64", pa.array([2**64 - 1, None], pa.uint64()), 2**64 - 1),
    ("int8", pa.array([-7, None], pa.int8()), -7),
    ("bool", pa.array([False, None], pa.bool_()), False),
    ("float32", pa.array([1.5, None], pa.float32()), 1.5),
    ("float64 nan", pa.array([2.25, float("nan")], pa.float64()), 2.25),
    ("dictionary", pa.array(["cat", None]).dictionary_encode(), "cat"),
    ("dictionary of ints", pa.array([3, None]).dictionary_encode(), 3),
    ("timestamp", pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, 6)], pa.timestamp("us")).fill_null(None),
     dt.datetime(2024, 1, 2, 3, 4, 5, 6)),
    ("timestamp ns", pa.array([1704164645123456789, None], pa.timestamp("ns")), dt.datetime(2024, 1, 2, 3, 4, 5, 123456)),
    ("timestamp tz", pa.array([dt.datetime(2024, 1, 2, 3, 4, 5), None], pa.timestamp("ms", tz="Europe/Paris")),
     dt.datetime(2024, 1, 2, 4, 4, 5, tzinfo=PARIS)),
    ("date32", pa.array([dt.date(2024, 2, 29), None], pa.date32()), dt.date(2024, 2, 29)),
    ("date64", pa.array([dt.date(1999, 12, 31), None], pa.date64()), dt.date(1999, 12, 31)),
    ("time64", pa.array([dt.time(1, 2, 3, 4), None], pa.time64("us")), dt.time(1, 2, 3, 4)),
    ("duration s", pa.array([dt.timedelta(seconds=90), None], pa.duration("s")), dt.timedelta(seconds=90)),
    ("duration ns", pa.array([1_000_001_000, None], pa.duration("ns")), dt.timedelta(seconds=1, microseconds=1)),
    ("large string", pa.array(["héllo", None], pa.large_string()), "héllo"),
    ("binary", pa.array([b"\x00\xff", None], pa.binary()), b"\x00\xff"),
    ("list", pa.array([[1, 2], None], pa.list_(pa.int32())), [1, 2]),
    ("large list", pa.array([["a", "b"], None], pa.large_list(pa.string())), ["a", "b"]),
    ("list of floats", pa.array([[0.5, 1.5], None], pa.list_(pa.float32())), [0.5, 1.5]),
    ("struct", pa.array([{"x": 1, "y": "z"}, None]), {"x": 1, "y": "z"}),
]


def same(a, b):
    return type(a) is type(b) and a == b and (not isinstance(a, dt.datetime) or a.utcoffset() == b.utcoffset())


@pytest.mark.parametrize(("name", "array", "expected"), ARROW, ids=[c[0] for c in ARROW])
def test_each_parquet_type_is_read_as_what_it_is(tmp_path, name, array, expected):
    path = tmp_path / "t.parquet"
    if len(array) == 1:
        array = pa.concat_arrays([array, pa.nulls(1, array.type)])
    pq.write_table(pa.table({"c": array, "n": [1, 2]}), path)
    rows = read_table(path)
    assert same(rows[0]["c"], expected), (rows[0]["c"], expected)
    assert rows[1]["c"] is None or (name == "float64 nan" and rows[1]["c"] is None)
    streamed = [r for batch in iter_table(path, batch_rows=1) for r in batch]
    assert all(same(a["c"], b["c"]) or a["c"] is b["c"] is None for a, b in zip(rows, streamed, strict=True))


FRAME = [
    ("Int64", pd.array([4, None], dtype="Int64"), 4),
    ("boolean", pd.array([True, None], dtype="boolean"), True),
    ("category", pd.Categorical(["b", None]), "b"),
    ("datetime64[ns]", pd.to_datetime(["2024-01-02 03:04:05.000007008", None]), dt.datetime(2024, 1, 2, 3, 4, 5, 7)),
    ("datetime tz", pd.to_datetime(["2024-01-02 03:04", None]).tz_localize("Europe/Paris"),
     dt.datetime(2024, 1, 2, 3, 4, tzinfo=PARIS)),
    ("timedelta64", pd.to_timedelta(["90s", None]), dt.timedelta(seconds=90)),
    ("string", pd.array(["x", None], dtype="string"), "x"),
    ("object datetime64", pd.Series([np.datetime64("2024-01-01T00:00:00.000001001"), None], dtype=object),
     dt.datetime(2024, 1, 1, 0, 0, 0, 1)),
    ("object timedelta64", pd.Series([np.timedelta64(1500, "ms"), np.timedelta64("NaT")], dtype=object),
     dt.timedelta(seconds=1.5)),
    ("arrow decimal", pd.array([decimal.Decimal("0.1"), None], dtype=pd.ArrowDtype(pa.decimal128(3, 1))), decimal.Decimal("0.1")),
    ("float nan", pd.array([0.5, np.nan]), 0.5),
]


@pytest.mark.parametrize(("name", "column", "expected"), FRAME, ids=[c[0] for c in FRAME])
def test_each_dataframe_type_is_read_as_what_it_is(name, column, expected):
    rows = read_table(pd.DataFrame({"c": column, "n": [1, 2]}))
    assert same(rows[0]["c"], expected), (rows[0]["c"], expected)
    assert rows[1]["c"] is None


def test_a_parquet_file_pandas_wrote_reads_like_the_frame(tmp_path):
    frame = pd.DataFrame({c[0]: c[1] for c in FRAME if not c[0].startswith("object")})
    frame.to_parquet(tmp_path / "f.parquet")
    rows = read_table(tmp_path / "f.parquet")
    for name, _, expected in FRAME:
        if not name.startswith("object"):
            assert same(rows[0][name], expected), (name, rows[0][name])
            assert rows[1][name] is None, name
