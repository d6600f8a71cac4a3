"""SampleColumns: samples held as columns come back equal to what was stored, with the same types,
each access a new dict; a large table's samples take a fraction of the memory of the dicts (issue 26)."""

from __future__ import annotations

import pickle
import sys

import pytest

from mmcore.data import SampleDataset
from mmcore.sample_columns import SampleColumns


def _types(value):
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [type(value).__name__, [_types(v) for v in value]]
    return type(value).__name__


COLUMNS = {"file": "t.csv", "row": 0}
MIXED = [
    {"inputs": {"image": "/data/a b.png", "text": "caf\u00e9 \U0001f600", "numbers": [0.5, -1.0], "tab": {"age": 3.0, "city": "x"}},
     "target": 2, "origin": {"file": "t.csv", "row": 1, "columns": COLUMNS}},
    {"inputs": {"image": None, "text": "", "numbers": None, "tab": None},
     "target": 0, "origin": {"file": "t.csv", "row": 2, "columns": COLUMNS}},
    {"inputs": {"image": "bad\udcff.png", "text": "b", "numbers": [float("inf"), 1e-300], "tab": {"age": 4.0, "city": None}},
     "target": -(2**62), "origin": {"file": "t.csv", "row": 3, "columns": COLUMNS}},
]


@pytest.mark.parametrize("targets", [
    [2, 0, -(2**62)],                      # class indices
    [0.5, None, 1.25],                     # regression, one missing
    [[1, 0, 1], [0, 0, 0], [1, 1, 1]],     # multilabel rows of ints
    [[0.5, 1.0], [1.0, 2.0], [2.0, 3.0]],  # rows of floats
    ["cat", "dog", None],                  # text targets
    [True, False, True],                   # bools stay bools (not stored as ints)
    [1, 2.5, "x"],                         # mixed: kept as objects
    [2**70, 1, 2],                         # past int64: kept as objects
    [[1, 2], [3], None],                   # ragged: kept as objects
    [[1, 2.0], [3, 4], [5, 6]],            # ints and floats in one list: kept as they are
])
def test_every_sample_comes_back_equal_with_the_same_types(targets):
    samples = [{**s, "target": t} for s, t in zip(MIXED, targets, strict=True)]
    columns = SampleColumns(samples)
    assert len(columns) == 3
    for i, sample in enumerate(samples):
        got = columns[i]
        assert got == sample and _types(got) == _types(sample)
        assert columns[i - 3] == sample, "negative indices count from the end"
    assert list(columns) == samples and columns[1:] == samples[1:] and columns[::-1] == samples[::-1]
    assert pickle.loads(pickle.dumps(columns))[2] == samples[2], "picklable: a DataLoader worker gets a copy"


def test_nan_cells_and_shared_values():
    samples = [{"inputs": {"x": float("nan"), "v": [float("nan"), 1.0]}, "origin": {"columns": COLUMNS}} for _ in range(3)]
    got = SampleColumns(samples)[1]
    assert got["inputs"]["x"] != got["inputs"]["x"] and got["inputs"]["v"][0] != got["inputs"]["v"][0]
    assert got["origin"]["columns"] is COLUMNS, "a value every sample shares is kept once, itself"


def test_each_access_is_a_new_sample_and_the_stored_one_does_not_change():
    columns = SampleColumns(MIXED)
    first = columns[0]
    first["inputs"]["image"] = None
    first["inputs"]["numbers"].append(9.0)
    first["extra"] = 1
    assert columns[0] == MIXED[0]


def test_bad_indices_are_refused():
    columns = SampleColumns(MIXED)
    with pytest.raises(IndexError, match="index 3 out of range for 3 samples"):
        columns[3]
    with pytest.raises(IndexError):
        columns[-4]
    with pytest.raises(TypeError, match="integers or slices"):
        columns["0"]
    assert len(SampleColumns([])) == 0 and list(SampleColumns([])) == []


def test_a_tables_samples_take_a_fraction_of_the_memory_of_dicts():
    samples = [{"inputs": {"image": f"/work/scale_data/images/{i // 1000:04d}/{i:07d}.png", "text": f"loud new five {i}",
                           "numbers": [i / 7, i / 3]}, "target": i % 10,
                "origin": {"file": "/work/scale_data/manifest.csv", "row": i + 1, "columns": COLUMNS}} for i in range(2000)]

    def deep(value, seen):
        if id(value) in seen:
            return 0
        seen.add(id(value))
        size = sys.getsizeof(value)
        if isinstance(value, dict):
            size += sum(deep(k, seen) + deep(v, seen) for k, v in value.items())
        elif isinstance(value, list):
            size += sum(deep(v, seen) for v in value)
        return size

    as_dicts = deep(samples, set())
    columns = SampleColumns(samples)
    assert columns.nbytes * 5 < as_dicts, (columns.nbytes, as_dicts)
    assert columns[1234] == samples[1234]


def test_sample_dataset_compact_holds_columns_and_hands_out_equal_samples():
    data = SampleDataset(MIXED, metadata={"n": 3}, compact=True)
    assert isinstance(data.samples, SampleColumns) and len(data) == 3
    assert [data[i] for i in range(3)] == MIXED and data.metadata == {"n": 3}
    with pytest.raises(ValueError, match="sample #1 must be a mapping with an 'inputs' mapping"):
        SampleDataset([MIXED[0], {"target": 1}], compact=True)


# ---------------------------------------------------------------------- batches (a table read batch by batch)
def test_samples_given_in_batches_equal_the_same_samples_given_at_once():
    samples = [{**s, "target": t} for s, t in zip(MIXED * 3, [1, 2, 3, "x", None, 2.5, [1], [2, 3], None], strict=True)]
    whole = SampleColumns(samples)
    batched = SampleColumns()
    for start in (0, 2, 3, 7):  # uneven batches; one column's kind differs from batch to batch
        batched.extend(samples[start:{0: 2, 2: 3, 3: 7, 7: 9}[start]])
    batched.extend([])
    assert len(batched) == len(samples) == 9
    assert list(batched) == list(whole) == samples
    for i, sample in enumerate(samples):
        assert batched[i] == sample and _types(batched[i]) == _types(sample)
        assert batched[i - 9] == sample
    assert batched[2:8] == samples[2:8] and batched[::-1] == samples[::-1]
    assert pickle.loads(pickle.dumps(batched))[8] == samples[8]
    with pytest.raises(IndexError, match="index 9 out of range for 9 samples"):
        batched[9]


def test_field_reads_one_value_without_the_rest_of_the_sample():
    rows = [{"image": "a.png", "label": "cat"}, {"image": "b.png", "label": None}]
    columns = SampleColumns(rows[:1])
    columns.extend([rows[1], {"image": "c.png"}])  # a row without the key: kept as it is
    assert [columns.field(i, "label") for i in range(3)] == ["cat", None, None]
    assert columns.field(2, "label", default="-") == "-" and columns.field(0, "nothing", default=0) == 0
    nested = SampleColumns(MIXED)
    assert nested.field(0, "inputs", "numbers") == [0.5, -1.0] and nested.field(1, "inputs", "tab", "age") is None
    assert nested.field(-1, "origin", "columns") is COLUMNS and nested.field(2, "inputs", "tab", "city") is None
    with pytest.raises(IndexError):
        nested.field(3, "inputs")


def test_sample_dataset_holds_given_columns_as_they_are_and_still_refuses_bad_samples():
    columns = SampleColumns(MIXED[:2])
    columns.extend(MIXED[2:])
    data = SampleDataset(columns, compact=True)
    assert data.samples is columns and [data[i] for i in range(3)] == MIXED
    odd = SampleColumns(MIXED[:2])
    odd.extend([{"inputs": "not a mapping"}])
    with pytest.raises(ValueError, match="sample #2 must be a mapping with an 'inputs' mapping"):
        SampleDataset(odd)


def test_values_reads_one_key_of_every_sample_or_of_some_as_indexing_does():
    rows = [{"image": "a.png", "label": "cat", "x": 1.5}, {"image": "caf\u00e9.png", "label": None, "x": None},
            {"image": None, "label": "dog", "x": 2.0}, {"image": "d.png", "label": "cat", "x": 3.0}]
    columns = SampleColumns(rows[:2])
    columns.extend(rows[2:3])
    columns.extend([rows[3], {"image": "e.png"}])  # one part with a row lacking keys: kept as objects
    everything = [*rows, {"image": "e.png"}]
    for key in ("image", "label", "x", "absent"):
        expected = [r.get(key) for r in everything]
        assert list(columns.values(key)) == expected, key
        for indices in ([0, 2, 3, 4], [4], [], [3, 1, 0], range(5)):
            assert list(columns.values(key, indices)) == [expected[i] for i in indices], (key, indices)
    assert list(columns.values("absent", default="-")) == ["-"] * 5
    with pytest.raises(IndexError):
        list(columns.values("image", [0, 5]))


def test_parts_hand_out_each_batch_equal_to_indexing_it():
    columns = SampleColumns(MIXED[:2])
    columns.extend(MIXED[2:])
    columns.extend([{"image": "x.png", "label": None}, {"image": None, "label": "cat"}])
    columns.extend([{}, {}])
    parts = list(columns.parts())
    assert [start for start, _ in parts] == [0, 2, 3, 5]
    assert [s for _, samples in parts for s in samples] == list(columns) == [*MIXED, {"image": "x.png", "label": None},
                                                                           {"image": None, "label": "cat"}, {}, {}]
