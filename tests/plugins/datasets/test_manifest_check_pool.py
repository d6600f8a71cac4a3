"""A large table's file checks in worker processes (check_pool): the same samples and the same problems
(file, row, column, message) as the checks in this process, each distinct file sent once, and a worker
that dies costs nothing but time (its files are checked in this process)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image

import mmcore_plugins.datasets.manifest.check_pool as check_pool
import mmcore_plugins.datasets.manifest.dataset as dataset_module
from mmcore_plugins.datasets.manifest import ManifestError, load_manifest

KW = {"columns": {"image": "image"}, "target": "label", "path_columns": ["image"], "val_fraction": 0, "test_fraction": 0,
      "slot_modalities": {"image": "image"}, "on_bad_sample": "skip"}


def table(folder):
    """11 rows: good PNGs (one named by three rows), a file that is no image, a PNG whose header is cut,
    a missing file, an empty file."""
    for i in range(6):
        Image.fromarray(np.full((6, 5, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "text.png").write_bytes(b"not an image at all")
    (folder / "cut.png").write_bytes((folder / "0.png").read_bytes()[:20])
    (folder / "empty.png").write_bytes(b"")
    cells = ["0.png", "1.png", "text.png", "2.png", "0.png", "cut.png", "3.png", "missing.png", "./0.png", "empty.png", "5.png"]
    path = folder / "m.csv"
    path.write_text("image,label\n" + "".join(f"{c},{i % 2}\n" for i, c in enumerate(cells)))
    return path


def load(path, level):
    """(the good rows' numbers with on_bad_sample: skip, every problem's message with on_bad_sample: error)"""
    dataset_module._CACHE.clear()  # noqa: SLF001 - each load reads and checks the table again
    rows = [data["origin"]["row"] for data in load_manifest("train", str(path), validate=level, **KW)]
    dataset_module._CACHE.clear()  # noqa: SLF001
    with pytest.raises(ManifestError) as info:
        load_manifest("train", str(path), validate=level, **{**KW, "on_bad_sample": "error"})
    return rows, str(info.value)


@pytest.fixture
def pooled(monkeypatch):
    """Every table counts as large, tasks of 2 files, one worker; records what is sent to the pool."""
    monkeypatch.setattr(dataset_module, "POOL_MIN_ROWS", 0)
    monkeypatch.setattr(dataset_module, "CHUNK_FILES", 2)
    monkeypatch.setattr(check_pool, "CHUNK_FILES", 2)
    monkeypatch.setattr(check_pool, "worker_count", lambda idle=None: 1)
    sent = []
    real_submit = check_pool.FileCheckPool.submit

    def submit(self, files):
        sent.extend(files)
        return real_submit(self, files)

    monkeypatch.setattr(check_pool.FileCheckPool, "submit", submit)
    return sent


@pytest.mark.parametrize("level", ["header", "decode"])
def test_worker_processes_give_the_in_process_checks_samples_and_problems(tmp_path, monkeypatch, pooled, level):
    path = table(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(check_pool, "worker_count", lambda idle=None: 0)  # no CPU to spare: checked here
        here = load(path, level)
    assert pooled == []
    there = load(path, level)
    assert there == here
    assert here[0] == [1, 2, 4, 5, 7, 9, 11]  # the good rows
    for file in ("text.png", "cut.png", "missing.png", "empty.png"):
        assert file in here[1]
    # two loads (skip, error), each sending every distinct existing file once (0.png and ./0.png are one file;
    # missing.png fails its stat before any check)
    assert len(pooled) == 2 * len(set(pooled)) == 2 * 8


_PARENT: list[int] = []  # the test's process
_HERE: list[str] = []  # files checked in it
_REAL_CHECK_PART = check_pool.check_part


def _dies_in_a_worker(files, decode):
    if os.getpid() not in _PARENT:
        os._exit(9)  # killed, as the OOM killer would
    _HERE.extend(files)
    return _REAL_CHECK_PART(files, decode)


def test_a_worker_that_dies_leaves_its_files_to_this_process(tmp_path, monkeypatch, pooled):
    path = table(tmp_path)
    expected = load(path, "header")
    _PARENT[:] = [os.getpid()]
    monkeypatch.setattr(check_pool, "check_part", _dies_in_a_worker)
    assert load(path, "header") == expected
    assert sorted(set(_HERE)) == sorted(set(pooled)), "every file the dead worker had was checked here"


def test_no_spare_cpu_means_no_worker():
    assert check_pool.worker_count(idle=0.3) == 0 and check_pool.worker_count(idle=1.4) == 0
    assert check_pool.worker_count(idle=1.6) == 1 and check_pool.worker_count(idle=40) == 8


_FLAG: list[str] = []  # a file whose existence lets the worker go on


def _worker_waits_for_this_process(files, decode):
    """In the worker: wait (at most 60 s) until this process has checked a task of its own. Here: record the files."""
    if os.getpid() not in _PARENT:
        for _ in range(6000):
            if os.path.exists(_FLAG[0]):
                break
            time.sleep(0.01)
    else:
        _HERE.extend(files)
        open(_FLAG[0], "w").close()
    return _REAL_CHECK_PART(files, decode)


def test_this_process_checks_the_tasks_no_worker_has_taken_while_it_waits(tmp_path, monkeypatch):
    table(tmp_path)
    files = [str(tmp_path / f) for f in ("0.png", "1.png", "text.png", "2.png", "cut.png", "3.png", "4.png", "empty.png",
                                         "5.png", "0.png")]
    expected = dict(_REAL_CHECK_PART(files, False))
    assert set(expected) == {str(tmp_path / f) for f in ("text.png", "cut.png", "empty.png")}
    _PARENT[:] = [os.getpid()]
    _HERE.clear()
    _FLAG[:] = [str(tmp_path / "go")]
    monkeypatch.setattr(check_pool, "check_part", _worker_waits_for_this_process)
    monkeypatch.setattr(check_pool, "CHUNK_FILES", 2)
    pool = check_pool.FileCheckPool(decode=False, workers=1)
    try:
        pool.submit(files)  # five tasks of two, three sent to the one worker, which blocks until this process has checked one
        seen = []
        assert pool.collect(lambda done, total: seen.append((done, total))) == expected
    finally:
        pool.close()
    assert _HERE, "this process took tasks instead of only waiting"
    assert sorted(_HERE) == sorted(files[len(files) - len(_HERE):]), "the tasks taken here are the last ones queued"
    assert len(_HERE) < len(files), "the worker checked the first"
    assert seen[-1] == (10, 10) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def _collector_state(files, decode):
    import gc

    return [(f, str(gc.isenabled())) for f in files]


def test_workers_forked_while_the_collector_is_paused_run_with_it_on(tmp_path, monkeypatch):
    import gc

    from mmcore.bulk import collector_paused

    monkeypatch.setattr(check_pool, "check_part", _collector_state)
    with collector_paused():  # as the manifest's parse forks them
        pool = check_pool.FileCheckPool(decode=False, workers=1)
        try:
            pool.submit([str(tmp_path / "a.png")])
            pool._feed()  # noqa: SLF001 - sent to the worker, not taken back by collect
            state = pool._tasks[0][1].result(timeout=60)  # noqa: SLF001
        finally:
            pool.close()
    assert gc.isenabled()
    assert state == [(str(tmp_path / "a.png"), "True")]
