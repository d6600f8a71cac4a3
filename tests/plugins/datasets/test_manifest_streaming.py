"""A manifest is read in batches into columns and its rows become samples chunk by chunk (issue 26:
a million-row table never held whole as dicts): whatever the batch and chunk sizes, the samples, the
metadata and every error (naming its row) are those of a one-batch read."""

import json
import tracemalloc

import numpy as np
import pytest
from PIL import Image

import mmcore_plugins.datasets.manifest.dataset as dataset_module
import mmcore_plugins.datasets.manifest.rows as rows_module
import mmcore_plugins.datasets.manifest.source as source_module
from mmcore_plugins.datasets.manifest import ManifestError, load_manifest

SPLITS = ("train", "val", "test")


def png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def read_all(path, monkeypatch, size, **kw):
    """The three splits (samples and metadata) read with batches and chunks of ``size`` rows."""
    monkeypatch.setattr(source_module, "BATCH_ROWS", size)
    monkeypatch.setattr(dataset_module, "CHUNK_ROWS", size)
    data = {s: load_manifest(s, str(path), **kw) for s in SPLITS}
    return {s: (list(d.samples), d.metadata) for s, d in data.items()}


def problems(path, monkeypatch, size, **kw):
    monkeypatch.setattr(source_module, "BATCH_ROWS", size)
    monkeypatch.setattr(dataset_module, "CHUNK_ROWS", size)
    with pytest.raises(ManifestError) as info:
        load_manifest("train", str(path), **kw)
    return info.value.problems


CSV_KW = {"columns": {"image": "image", "text": "text", "numbers": ["x1", "x2"]}, "target": "label",
          "path_columns": ["image"], "split_column": "split", "slot_modalities": {"image": "image", "text": "text"}}


def table(tmp_path, rows=23, broken=()):
    for i in range(4):
        png(tmp_path / "img" / f"{i}.png", 60 * i)
    lines = ["image,text,x1,x2,label,split"]
    for i in range(rows):
        image = "" if i % 7 == 3 else f"img/{i % 4}.png"  # some rows lack the image: a missing modality
        x1 = "oops" if i in broken else f"{i / 3:.3f}"
        lines.append(f"{image},word {i} caf\u00e9,{x1},{-i},{'cat' if i % 3 else 'dog'},{('train', 'val', 'test')[i % 3 % 2 if i % 5 else 2]}")
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("validate", ["header", "none"])
def test_small_batches_and_chunks_give_the_samples_and_metadata_of_one_batch(tmp_path, monkeypatch, validate):
    path = table(tmp_path)
    whole = read_all(path, monkeypatch, 10**6, validate=validate, **CSV_KW)
    assert sum(len(samples) for samples, _ in whole.values()) == 23
    assert whole["train"][1]["missing"]["image"] > 0, "the table has rows without an image"
    for size in (1, 4, 5):
        assert read_all(path, monkeypatch, size, validate=validate, **CSV_KW) == whole, size


def test_errors_name_their_rows_in_file_order_across_chunks_and_skip_drops_the_same_rows(tmp_path, monkeypatch):
    path = table(tmp_path, broken=(2, 3, 9, 17))
    (tmp_path / "img" / "2.png").write_bytes(b"no image")  # rows 3, 7, 11, ... fail the header check
    whole = problems(path, monkeypatch, 10**6, **CSV_KW)
    assert len(whole) > 6 and any("row 4, column 'x1'" in p for p in whole) and any("2.png" in p for p in whole)
    rows = [int(p.split(": row ")[1].split(",")[0]) for p in whole]
    assert rows == sorted(rows), "listed in file order"
    for size in (2, 3, 7):
        assert problems(path, monkeypatch, size, **CSV_KW) == whole, size
    skipped = read_all(path, monkeypatch, 10**6, on_bad_sample="skip", **CSV_KW)
    assert sum(meta["skipped"] for _, meta in skipped.values()) == len(set(rows))
    assert read_all(path, monkeypatch, 3, on_bad_sample="skip", **CSV_KW) == skipped


def test_ragged_rows_of_numbers_are_found_across_chunks(tmp_path, monkeypatch):
    cells = [[1, 2], [3, 4], [5], [6, 7], None, [8, 9, 10], [1, 1], [2, 2], [3, 3]]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"v": v, "t": f"t{i}", "label": i % 2}) + "\n" for i, v in enumerate(cells)))
    kw = {"columns": {"v": "v", "t": "t"}, "target": "label", "val_fraction": 0, "test_fraction": 0}
    whole = problems(path, monkeypatch, 10**6, **kw)
    assert whole == [f"{path}: row 3, column 'v': expected 2 numbers (as most rows have), got 1",
                     f"{path}: row 6, column 'v': expected 2 numbers (as most rows have), got 3"]
    for size in (1, 2, 4):
        assert problems(path, monkeypatch, size, **kw) == whole, size
    skipped = read_all(path, monkeypatch, 10**6, on_bad_sample="skip", **kw)
    assert [s["inputs"]["v"] for s in skipped["train"][0]] == [v for v in cells if v is None or len(v) == 2]
    assert skipped["train"][1]["missing"] == {"v": 1, "t": 0} and skipped["train"][1]["skipped"] == 2
    for size in (1, 4):
        assert read_all(path, monkeypatch, size, on_bad_sample="skip", **kw) == skipped, size


def test_one_progress_line_counts_rows_across_chunks(tmp_path, monkeypatch, capsys):
    path = table(tmp_path, rows=6)
    monkeypatch.setattr(rows_module, "PROGRESS_AFTER_S", -1.0)
    read_all(path, monkeypatch, 2, validate="header", **CSV_KW)
    err = capsys.readouterr().err
    assert "checking files (headers): 6 of 6 rows" in err and "of 2" not in err


def test_the_parse_never_holds_the_table_as_dicts(tmp_path, monkeypatch):
    """Peak memory of the parse, traced, above that of a 30-row table (fixed costs: the digest's read
    buffer, ...): read in chunks of 64 rows it stays well under reading the 3,000 rows in one batch
    (which holds every row and every sample as dicts at once)."""
    path, small = tmp_path / "m.csv", tmp_path / "small.csv"
    lines = ["text,x1,x2,label\n"] + [f"some words {i},{i / 7:.4f},{-i},{i % 5}\n" for i in range(3000)]
    path.write_text("".join(lines))
    small.write_text("".join(lines[:31]))
    kw = {"columns": {"text": "text", "numbers": ["x1", "x2"]}, "target": "label", "val_fraction": 0.1, "test_fraction": 0.1,
          "validate": "none"}

    def peak(table, size):
        monkeypatch.setattr(source_module, "BATCH_ROWS", size)
        monkeypatch.setattr(dataset_module, "CHUNK_ROWS", size)
        tracemalloc.start()
        try:
            data = {s: load_manifest(s, str(table), **kw) for s in SPLITS}
            top = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return top, {s: list(d.samples) for s, d in data.items()}

    read_all(small, monkeypatch, 8, **kw)  # imports and first-call caches outside the trace
    fixed, _ = peak(small, 64)
    whole_peak, whole = peak(path, 10**6)
    chunked_peak, chunked = peak(path, 64)
    assert chunked == whole
    assert chunked_peak - fixed < 0.3 * (whole_peak - fixed), (chunked_peak, whole_peak, fixed)


def test_a_tie_of_lengths_is_broken_in_split_order_as_before_not_in_file_order(tmp_path, monkeypatch):
    """Rows are read in file order; the commonest length (ties: the first seen, train rows before val
    rows) is still the one the split-by-split reading found."""
    cells = [("val", [1, 2, 3]), ("train", [1, 2]), ("train", [4, 5, 6]), ("val", [7, 8]), ("train", [9, 9])]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"v": v, "label": 0, "split": s}) + "\n" for s, v in cells[:4]))
    kw = {"columns": {"v": "v"}, "target": "label", "split_column": "split", "test_fraction": 0}
    assert problems(path, monkeypatch, 10**6, **kw) == [
        f"{path}: row 1, column 'v': expected 2 numbers (as most rows have), got 3",
        f"{path}: row 3, column 'v': expected 2 numbers (as most rows have), got 3"]
