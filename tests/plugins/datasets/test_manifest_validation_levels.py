"""The manifest's validation levels (issue 26): ``decode`` decodes, ``header`` opens each file once
and decodes nothing, ``exists`` stats it, ``none`` touches nothing on disk; each file checked once
however many rows name it; paths resolved by the one rule, each folder once."""

import os

import numpy as np
import pytest
from PIL import Image

import mmcore_plugins.datasets.manifest.rows as rows_module
from mmcore_plugins.datasets.manifest import BadSampleError, load_manifest
from mmcore_plugins.io.paths import CellPaths, OutsidePathError, resolve_cell_path


def png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def manifest(folder, cells, name="m.csv"):
    lines = ["image,label"] + [f"{c},{i % 2}" for i, c in enumerate(cells)]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


KW = {"columns": {"image": "image"}, "target": "label", "path_columns": ["image"], "val_fraction": 0, "test_fraction": 0,
      "slot_modalities": {"image": "image"}}


def test_truncated_image_passes_the_header_check_and_fails_the_decoding_one(tmp_path):
    png(tmp_path / "a.png")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # header intact, half the pixels gone
    m = manifest(tmp_path, ["a.png", "cut.png"])
    assert len(load_manifest("train", str(m), validate="header", **KW)) == 2
    with pytest.raises(BadSampleError, match=r"row 2, column 'image': cannot read image .*cut.png.*decoding failed"):
        load_manifest("train", str(m), validate="decode", **KW)


def test_a_file_that_is_no_image_fails_the_header_check(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not an image at all")
    m = manifest(tmp_path, ["a.png", "b.png"])
    with pytest.raises(BadSampleError, match=r"row 2, column 'image': cannot read image .*b.png.*not an image format"):
        load_manifest("train", str(m), validate="header", **KW)
    assert len(load_manifest("train", str(m), validate="exists", **KW)) == 2


@pytest.mark.parametrize("level", ["header", "decode"])
def test_each_file_is_opened_once_however_many_rows_name_it(tmp_path, monkeypatch, level):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png", 255)
    m = manifest(tmp_path, ["a.png", "b.png", "a.png", "./a.png", "b.png"])
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(os.fspath(fp)) or real_open(fp, *a, **k))
    assert len(load_manifest("train", str(m), validate=level, **KW)) == 5
    assert sorted(opened) == sorted(str((tmp_path / n).resolve()) for n in ("a.png", "b.png"))


def test_validate_none_touches_nothing_on_disk(tmp_path, monkeypatch):
    m = manifest(tmp_path, ["missing.png", "sub/also_missing.png"])
    calls = []
    for name in ("stat", "lstat"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda p, *a, _real=real, **k: calls.append(os.fspath(p)) or _real(p, *a, **k))
    data = load_manifest("train", str(m), validate="none", **KW)
    assert [s["inputs"]["image"] for s in data.samples] == [str(tmp_path.resolve() / "missing.png"),
                                                           str(tmp_path.resolve() / "sub" / "also_missing.png")]
    assert not [c for c in calls if "missing" in c], calls
    with pytest.raises(BadSampleError, match="does not exist"):
        load_manifest("train", str(m), validate="exists", **KW)


def test_validate_none_still_refuses_a_path_that_escapes_by_name(tmp_path):
    (tmp_path / "sub").mkdir()
    m = manifest(tmp_path / "sub", ["../x.png"])
    with pytest.raises(BadSampleError, match="escapes the table's folder"):
        load_manifest("train", str(m), validate="none", **KW)


def test_an_unknown_level_is_refused_naming_the_levels(tmp_path):
    with pytest.raises(ValueError, match="validate must be one of 'decode', 'header', 'exists', 'none', got 'all'"):
        load_manifest("train", str(manifest(tmp_path, ["a.png"])), validate="all", **KW)


def test_progress_line_past_the_threshold(tmp_path, monkeypatch, capsys):
    files = [png(tmp_path / f"{i}.png", i) for i in range(3)]
    monkeypatch.setattr(rows_module, "PROGRESS_AFTER_S", -1.0)
    assert rows_module.check_files(files, decode=False, workers=2) == {}
    assert "checking files (headers): 3 of 3" in capsys.readouterr().err


def test_check_files_reports_each_failure_with_one_worker_or_several(tmp_path):
    files = [png(tmp_path / f"{i}.png", i % 256) for i in range(600)]
    files[300].write_bytes(b"junk")
    for workers in (1, 4):
        errors = rows_module.check_files(files, decode=True, workers=workers)
        assert list(errors) == [files[300]] and "300.png" in errors[files[300]]


# ---------------------------------------------------------------------- CellPaths: the one rule, faster
def layout(tmp_path):
    root = tmp_path / "table"
    png(root / "img" / "a.png")
    outside = png(tmp_path / "secret" / "s.png")
    (root / "link_out.png").symlink_to(outside)
    (root / "dir_out").symlink_to(tmp_path / "secret", target_is_directory=True)
    (root / "link_in.png").symlink_to(root / "img" / "a.png")
    (root / "img" / "deep").mkdir()
    (root / "up").symlink_to(root / "img" / "deep", target_is_directory=True)
    return root


CELLS = ["img/a.png", "./img//a.png", "link_in.png", "link_out.png", "dir_out/s.png", "img/missing.png",
         "up/../a.png", "up/../../img/a.png", "../table/img/a.png", "../secret/s.png", "img/../../secret/s.png"]


@pytest.mark.parametrize("allow", [False, True])
def test_cell_paths_agree_with_resolve_cell_path(tmp_path, allow):
    root = layout(tmp_path)
    fast = CellPaths(root, allow_outside=allow)
    for cell in CELLS:
        try:
            expected = resolve_cell_path(cell, root, allow_outside=allow)
        except OutsidePathError:
            with pytest.raises(OutsidePathError):
                fast(cell)
            continue
        assert fast(cell) == expected, cell


def test_cell_paths_without_links_judge_the_name_only(tmp_path):
    root = layout(tmp_path)
    lexical = CellPaths(root, follow_links=False)
    assert lexical("img/./a.png") == root.resolve() / "img" / "a.png"
    assert lexical("link_out.png") == root.resolve() / "link_out.png"  # not followed: documented
    with pytest.raises(OutsidePathError):
        lexical("img/../../secret/s.png")


def test_validate_none_refuses_a_link_leading_outside_when_the_file_is_read(tmp_path):
    """``validate: none`` judges names by their text while reading the table; a link planted in the
    table's folder that leads outside is caught when the file is read (one realpath per file read):
    a sample naming it is refused as it is handed out, a text file's contents are never read."""
    table, secret = tmp_path / "table", tmp_path / "secret"
    png(table / "img" / "a.png")
    png(secret / "s.png")
    (secret / "s.txt").write_text("outside text")
    (table / "img" / "out.png").symlink_to(secret / "s.png")
    (table / "img" / "in.png").symlink_to(table / "img" / "a.png")  # a link inside the folder: fine
    m = manifest(table, ["img/a.png", "img/in.png", "img/out.png"])
    data = load_manifest("train", str(m), validate="none", **KW)
    assert [data[i]["inputs"]["image"] for i in range(2)] == [str(table / "img" / "a.png"), str(table / "img" / "in.png")]
    with pytest.raises(OutsidePathError, match=r"out\.png' is a link leading to .*secret/s\.png', outside the table's folder"):
        data[2]
    assert load_manifest("train", str(m), validate="none", allow_outside_paths=True, **KW)[2]["inputs"]["image"].endswith("out.png")

    (table / "t.txt").symlink_to(secret / "s.txt")
    (table / "m2.csv").write_text("note,label\nt.txt,0\n")
    kw = {"columns": {"note": "note"}, "target": "label", "path_columns": ["note"], "val_fraction": 0, "test_fraction": 0,
          "slot_modalities": {"note": "text"}}
    with pytest.raises(BadSampleError, match=r"t\.txt' is a link leading to .*outside the table's folder"):
        load_manifest("train", str(table / "m2.csv"), validate="none", **kw)


# ---------------------------------------------------------------------- one copy of each sample
def test_the_splits_share_one_parse_and_none_of_it_outlives_them(tmp_path, monkeypatch):
    import mmcore_plugins.datasets.manifest.dataset as dataset_module

    for i in range(10):
        png(tmp_path / f"{i}.png", i)
    m = manifest(tmp_path, [f"{i}.png" for i in range(10)])
    checked = []
    real_check = rows_module.check_files
    monkeypatch.setattr(rows_module, "check_files", lambda files, **k: checked.append(len(files)) or real_check(files, **k))
    kw = {**KW, "val_fraction": 0.2, "test_fraction": 0.2}
    built = {split: load_manifest(split, str(m), validate="header", **kw) for split in ("train", "val", "test")}
    assert [len(d) for d in built.values()] == [6, 2, 2]
    assert checked == [10], "the three splits are built from one reading of the table"
    assert not [p for p in dataset_module._CACHE.values() if p.names["main"] == str(m)], "a parse outlived its splits"
    again = load_manifest("train", str(m), validate="header", **kw)  # read again, not shared with the first
    assert checked == [10, 10]
    assert list(again.samples) == list(built["train"].samples) and again.samples is not built["train"].samples
    again.samples[0]["inputs"]["image"] = "changed"
    assert built["train"].samples[0]["inputs"]["image"] != "changed"
