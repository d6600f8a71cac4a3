"""The one writer every mmcore output goes through: atomic, never through a symbolic link, with
unpredictable temporaries created exclusively; and the regular-file check of readers (issue 28)."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from mmcore.engine import atomic as files
from mmcore.engine.atomic import (
    TEMPORARY,
    CheckpointWriteError,
    UnsafePathError,
    atomic_write,
    check_regular_file,
    ensure_folder,
    write_file,
)


@pytest.fixture
def victim(tmp_path):
    """A file of the user's, outside the folder being written."""
    path = tmp_path / "elsewhere" / "loss.png"
    path.parent.mkdir()
    path.write_bytes(b"the user's own plot")
    return path


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if TEMPORARY.match(p.name))


def test_a_file_is_written_whole_with_the_umask_and_no_temporary_left(tmp_path):
    target = tmp_path / "run" / "report.json"
    assert write_file(target, '{"a": 1}') == target
    assert target.read_text() == '{"a": 1}'
    write_file(target, b"second")
    write_file(target, lambda fh: fh.write(b"third"))
    assert target.read_bytes() == b"third"
    umask = files.current_umask()
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert leftovers(target.parent) == []


def test_a_link_at_the_target_is_replaced_never_written_through(tmp_path, victim):
    target = tmp_path / "out.jsonl"
    target.symlink_to(victim)
    write_file(target, "predictions\n")
    assert not target.is_symlink() and target.read_text() == "predictions\n"
    assert victim.read_bytes() == b"the user's own plot"


@pytest.mark.parametrize("planted", ["link", "dangling link", "file"])
def test_a_linked_or_misplaced_folder_below_the_root_is_refused(tmp_path, victim, planted):
    run = tmp_path / "run"
    run.mkdir()
    plots = run / "plots"
    if planted == "link":
        plots.symlink_to(victim.parent)
    elif planted == "dangling link":
        plots.symlink_to(tmp_path / "nowhere")
    else:
        plots.write_text("a file where mmcore's folder belongs")
    with pytest.raises(UnsafePathError, match=r"plots (is a symbolic link|is not a folder)"):
        write_file(plots / "loss.png", b"png", root=run)
    with pytest.raises(UnsafePathError):
        ensure_folder(plots, root=run)
    with pytest.raises(UnsafePathError):
        atomic_write(plots / "loss.png", lambda p: p.write_bytes(b"png"), root=run)
    assert victim.read_bytes() == b"the user's own plot" and sorted(p.name for p in victim.parent.iterdir()) == ["loss.png"]
    assert not (tmp_path / "nowhere").exists()


def test_a_link_deeper_below_the_root_is_refused_too(tmp_path, victim):
    run = tmp_path / "cache"
    (run / "ab").mkdir(parents=True)
    (run / "ab" / "cd").symlink_to(victim.parent)
    with pytest.raises(UnsafePathError, match="cd is a symbolic link"):
        write_file(run / "ab" / "cd" / "x.safetensors", b"x", root=run)
    write_file(run / "ef" / "gh" / "x.safetensors", b"x", root=run)  # missing folders are created, real ones
    assert (run / "ef" / "gh" / "x.safetensors").read_bytes() == b"x" and not (run / "ef").is_symlink()


def test_the_root_itself_is_the_users_path_and_is_followed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "runs").symlink_to(real)
    write_file(tmp_path / "runs" / "plots" / "loss.png", b"png", root=tmp_path / "runs")
    assert (real / "plots" / "loss.png").read_bytes() == b"png"


def test_temporary_names_are_unpredictable_and_never_followed(tmp_path, victim, monkeypatch):
    target = tmp_path / "e.npz"
    # The names earlier versions used: a link planted there is never opened.
    for old in (".e.npz.tmp", ".e.npz.tmp.npz", f".e.npz.{os.getpid()}.tmp"):
        (tmp_path / old).symlink_to(victim)
    names = {files.temporary_name("e.npz") for _ in range(50)}
    assert len(names) == 50 and all(TEMPORARY.match(n) for n in names)
    # Even a link planted under the very name drawn is not followed: another name is drawn.
    drawn = iter([".e.npz.aaaaaaaa.tmp", ".e.npz.bbbbbbbb.tmp"])
    (tmp_path / ".e.npz.aaaaaaaa.tmp").symlink_to(victim)
    monkeypatch.setattr(files, "temporary_name", lambda name: next(drawn))
    write_file(target, b"vectors")
    assert target.read_bytes() == b"vectors" and victim.read_bytes() == b"the user's own plot"
    assert (tmp_path / ".e.npz.aaaaaaaa.tmp").is_symlink() and not (tmp_path / ".e.npz.bbbbbbbb.tmp").exists()


def test_replace_false_refuses_an_existing_file_and_leaves_it(tmp_path, victim):
    sidecar = tmp_path / "emb.image.npy"
    sidecar.write_bytes(b"the user's own vectors")
    with pytest.raises(UnsafePathError, match="emb.image.npy exists and mmcore did not write it"):
        write_file(sidecar, b"new", replace=False)
    assert sidecar.read_bytes() == b"the user's own vectors" and leftovers(tmp_path) == []
    link = tmp_path / "emb.text.npy"
    link.symlink_to(victim)
    with pytest.raises(UnsafePathError):
        write_file(link, b"new", replace=False)
    assert link.is_symlink() and victim.read_bytes() == b"the user's own plot"
    write_file(tmp_path / "emb.audio.npy", b"new", replace=False)
    assert (tmp_path / "emb.audio.npy").read_bytes() == b"new"


def test_a_temporary_swapped_for_a_link_while_a_library_writes_it_is_refused(tmp_path, victim):
    target = tmp_path / "index.faiss"
    target.write_bytes(b"previous")

    def library(tmp):
        tmp.unlink()
        tmp.symlink_to(victim)

    with pytest.raises(UnsafePathError, match="replaced while it was written"):
        atomic_write(target, library)
    assert target.read_bytes() == b"previous" and victim.read_bytes() == b"the user's own plot"
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "metrics.csv"
    target.write_text("epoch\n1\n")

    def full(fh):
        fh.write(b"epoch\n1\n2")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointWriteError, match=r"^no space left on device writing metrics.csv; the previous metrics.csv is kept$"):
        write_file(target, full)

    def broken(fh):
        raise RuntimeError("a bug in the writer")

    with pytest.raises(RuntimeError):
        write_file(target, broken)
    assert target.read_text() == "epoch\n1\n" and leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "socket"])
def test_check_regular_file_refuses_what_is_not_a_regular_file(tmp_path, kind):
    import socket

    if kind == "fifo":
        path = tmp_path / "photo.png"
        os.mkfifo(path)
    elif kind == "device":
        path = "/dev/zero"
    elif kind == "folder":
        path = tmp_path
    else:
        path = tmp_path / "s.wav"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
    expected = {"fifo": "FIFO", "device": "device", "folder": "folder", "socket": "socket"}[kind]
    with pytest.raises(UnsafePathError, match=expected):
        check_regular_file(path, "image")
    regular = tmp_path / "a.txt"
    regular.write_text("x")
    (tmp_path / "link.txt").symlink_to(regular)
    assert check_regular_file(tmp_path / "link.txt").st_size == 1  # a link to a regular file is a regular file
