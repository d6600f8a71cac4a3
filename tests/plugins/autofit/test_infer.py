"""Column inference from content: every input kind, every target kind, overrides, bad columns."""

from __future__ import annotations

from pathlib import Path

import pytest
from autofit_helpers import write_csv, write_png, write_wav

from mmcore_plugins.autofit.infer import ColumnError, format_table, infer_columns, infer_target
from mmcore_plugins.io.tables import read_table


def _kinds(infos):
    return {i.name: i.kind for i in infos}


def test_every_column_kind_is_inferred_from_content(media_table: Path):
    rows = read_table(media_table)
    infos = infer_columns(rows, target="label", base=media_table.parent)
    assert _kinds(infos) == {
        "image": "image", "audio": "audio", "clip": "video", "note": "text", "colour": "categorical",
        "size": "numeric", "row": "ignore", "code": "ignore", "label": "classification",
    }
    by = {i.name: i for i in infos}
    assert by["image"].missing == pytest.approx(4 / 24)  # every 6th image cell is empty
    assert by["audio"].details["rate"] == 8000 and by["image"].details["side"] == 8
    assert by["label"].details["classes"] == ["no", "yes"]
    table = format_table(infos)
    assert "target: classification" in table and "identifier" in table and "17%" in table


def test_names_do_not_decide(tmp_path: Path):
    """A column called 'image' holding numbers is numeric; one called 'id' holding sentences is text."""
    rows = [{"image": str(i * 0.37), "id": f"the sentence number {i} says something", "y": i % 2} for i in range(30)]
    kinds = _kinds(infer_columns(rows, target="y", base=tmp_path))
    assert kinds == {"image": "numeric", "id": "text", "y": "classification"}


@pytest.mark.parametrize(("values", "kind", "extra"), [
    ([0, 1, 2, 1, 0, 2] * 5, "classification", {"classes": ["0", "1", "2"]}),
    (["cat", "dog", "cat", "bird"] * 5, "classification", {"classes": ["bird", "cat", "dog"]}),
    ([0.5 + 0.731 * i for i in range(40)], "regression", {}),
    ([["a", "b"], ["b"], [], ["c", "a"]] * 5, "multilabel", {"labels": ["a", "b", "c"]}),
    (["a|b", "b", "c|a", "a"] * 5, "multilabel", {"labels": ["a", "b", "c"], "delimiter": "|"}),
])
def test_target_kinds(values, kind, extra):
    info = infer_target("y", values)
    assert info.kind == kind and info.role == "target"
    for key, value in extra.items():
        assert info.details[key] == value


def test_target_that_cannot_be_learned_is_refused():
    with pytest.raises(ColumnError, match="'y'.*at least 2 classes"):
        infer_target("y", ["same"] * 10)
    with pytest.raises(ColumnError, match="'y'.*empty in every row"):
        infer_target("y", [None, ""] * 5)


def test_column_overrides(media_table: Path):
    rows = read_table(media_table)
    infos = infer_columns(rows, target="label", base=media_table.parent,
                          overrides={"colour": "text", "size": "categorical", "image": "ignore"})
    kinds = _kinds(infos)
    assert (kinds["colour"], kinds["size"], kinds["image"]) == ("text", "categorical", "ignore")
    assert {i.name: i.why for i in infos}["colour"] == "--column override"
    numeric_target = [{"x": i, "y": i % 3} for i in range(30)]
    assert _kinds(infer_columns(numeric_target, target="y", overrides={"y": "regression"}))["y"] == "regression"
    with pytest.raises(ColumnError, match="--column colour=picture: expected one of image"):
        infer_columns(rows, target="label", base=media_table.parent, overrides={"colour": "picture"})
    with pytest.raises(ColumnError, match="no column 'colur'"):
        infer_columns(rows, target="label", base=media_table.parent, overrides={"colur": "text"})
    with pytest.raises(ColumnError, match="--target: the table has no column 'lable'; did you mean 'label'"):
        infer_columns(rows, target="lable", base=media_table.parent)


def test_unreadable_files_count_as_missing_but_a_column_of_only_bad_files_is_an_error(tmp_path: Path):
    write_png(tmp_path / "good.png", 0)
    write_wav(tmp_path / "good.wav", 0)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    rows = [{"photo": "good.png" if i % 4 else "broken.png", "y": i % 2} for i in range(20)]
    info = {i.name: i for i in infer_columns(rows, target="y", base=tmp_path)}["photo"]
    assert info.kind == "image" and info.missing == pytest.approx(5 / 20)
    assert "5 missing/unreadable" in info.why and len(info.details["unusable"]) == 5

    all_bad = [{"photo": "broken.png", "sound": "good.wav", "y": i % 2} for i in range(10)]
    with pytest.raises(ColumnError, match="column 'photo' \\(image\\): none of its 10 files can be read"):
        infer_columns(all_bad, target="y", base=tmp_path)
    all_bad_audio = [{"sound": "broken.wav", "y": i % 2} for i in range(10)]
    with pytest.raises(ColumnError, match="column 'sound' \\(audio\\): none of its 10 files"):
        infer_columns(all_bad_audio, target="y", base=tmp_path, overrides={"sound": "audio"})
    all_missing = [{"photo": f"gone/{i}.png", "y": i % 2} for i in range(10)]
    with pytest.raises(ColumnError, match="column 'photo': all 10 non-empty cells name files that do not exist"):
        infer_columns(all_missing, target="y", base=tmp_path)
    empty = [{"photo": "", "x": i, "y": i % 2} for i in range(10)]
    with pytest.raises(ColumnError, match="column 'photo' is empty in every row"):
        infer_columns(empty, target="y", base=tmp_path)


def test_bad_column_is_reported_by_the_command_before_training(tmp_path: Path, capsys):
    from mmcore.cli import main

    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    table = write_csv(tmp_path / "t.csv", [{"photo": "broken.png", "x": i, "y": i % 2} for i in range(12)])
    run = tmp_path / "run"
    code = main(["fit", str(table), "--target", "y", "--column", "photo=image", "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2
    assert "photo" in err and "none of its 12 files can be read" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()  # nothing was created, let alone trained


# ---------------------------------------------------------------------------- issue 28: paths and wide tables
def _outside_table(tmp_path):
    """A table in proj/ whose cells reach outside it three ways: ../, an absolute path, a link."""
    proj = tmp_path / "proj"
    proj.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's private notes")
    (proj / "inside.txt").write_text("a note of the table's own")
    (proj / "link.txt").symlink_to(secret)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("more private notes")
    (proj / "shared").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a folder link: its files lie outside
    return proj, ["inside.txt", "../secret.txt", str(secret), "link.txt", "shared/notes.txt"]


@pytest.mark.parametrize("outside", [1, 2, 3, 4], ids=["dot-dot", "absolute", "a link inside", "a folder link inside"])
def test_fit_refuses_paths_outside_the_tables_folder_like_train(tmp_path, outside):
    """fit followed ../ and absolute paths and copied outside text into the run (train refused)."""
    proj, cells = _outside_table(tmp_path)
    rows = [{"note": cells[0] if i % 4 else cells[outside], "y": "a" if i % 2 else "b"} for i in range(24)]
    # (a text column holding one such string is text, not a file: nothing is read from it)
    text = [{"note": f"a note with words {i}" if i % 4 else cells[outside], "y": "a" if i % 2 else "b"} for i in range(24)]
    assert {i.name: i.kind for i in infer_columns(text, target="y", base=proj)}["note"] == "text"
    with pytest.raises(ColumnError, match=r"column 'note': row 1: path .* escapes the table's folder .*--allow-outside-paths"):
        infer_columns(rows, target="y", base=proj)
    infos = infer_columns(rows, target="y", base=proj, allow_outside_paths=True)
    assert {i.name: i.kind for i in infos}["note"] == "text"


def test_column_discovery_is_linear_in_the_columns(tmp_path):
    """A 100k-column CSV ran for more than 300 s: each row's columns were looked up in a list."""

    class Name(str):
        comparisons = 0

        def __eq__(self, other):
            type(self).comparisons += 1
            return str.__eq__(self, other)

        __hash__ = str.__hash__

    names = [Name(f"c{i}") for i in range(3000)]
    rows = [{**{n: f"{i + j / 7:.3f}" for j, n in enumerate(names)}, "y": "ab"[i % 2]} for i in range(4)]
    Name.comparisons = 0
    infos = infer_columns(rows, target="y", base=tmp_path)
    assert len(infos) == 3001
    assert Name.comparisons < 20 * len(names), Name.comparisons


def test_preparing_targets_looks_class_names_up_without_scanning_them(tmp_path):
    from mmcore_plugins.autofit.prepare import Plan, Preparer

    class Unscannable(list):
        def __contains__(self, item):
            raise AssertionError("the class list was scanned")

        def index(self, *args):
            raise AssertionError("the class list was scanned")

    classes = Unscannable(f"c{i}" for i in range(50_000))
    plan = Plan(target="y", task="classification", slots={"t": {"kind": "text", "column": "x"}}, classes=classes)
    preparer = Preparer(plan, tmp_path)
    assert [preparer.target({"y": f"c{i}"}, i) for i in (0, 49_999, 7)] == [0, 49_999, 7]
    with pytest.raises(ColumnError, match=r"class 'zz' was not in the training table \(known: c0, c1, .*, \.\.\.\)"):
        preparer.target({"y": "zz"}, 3)
