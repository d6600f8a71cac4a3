"""The file checks of a large table (``validate: header`` / ``decode``) in worker processes, run while
the main process goes on parsing rows.

Checking a small image's header is ~40-80 us of Python (Pillow's open and PNG chunk parse, our
checks around it), under the GIL: threads do not overlap it with the row parsing, which is Python
too. Worker processes do: the parser sends each batch of distinct files to the pool as its rows are
parsed (:meth:`FileCheckPool.submit`) and collects the verdicts when the batch's rows are finished
(:meth:`FileCheckPool.collect`). Every file is still opened and checked once -- nothing is skipped
or sampled -- and a failure names its file exactly as the in-process check would (the same
:func:`~mmcore_plugins.datasets.manifest.rows.check_file`).

The workers are forked (Linux): they share the parent's imported modules (a spawned one would import
PyTorch again, ~2.5 s and ~650 MB each). ``gc.freeze()`` around the fork keeps the parent's objects
out of the children's collections, so collecting does not copy the shared pages. Where fork is not
available, or a worker dies, the files are checked in this process instead (the same result, no
overlap).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

#: rows of a table below which its files are checked in this process (a pool's start costs more than it saves)
POOL_MIN_ROWS = 10_000
#: files per task sent to a worker: large enough that the round trip (~0.1 ms) is noise, small enough to
#: keep the workers busy while the batch's rows are still being parsed
CHUNK_FILES = 1024
#: tasks sent ahead to each worker (the rest wait in this process's queue, where collect can take them)
IN_FLIGHT_PER_WORKER = 3


def check_part(files: Sequence[str | os.PathLike], decode: bool) -> list[tuple[Any, str]]:
    """``[(file, error message)]`` for the files of ``files`` that fail :func:`check_file` (in a worker process,
    or a thread of :func:`~mmcore_plugins.datasets.manifest.rows.check_files`)."""
    from mmcore_plugins.datasets.manifest.rows import check_file

    failed = []
    for file in files:
        try:
            check_file(file, decode=decode)
        except ValueError as exc:  # MediaError: the message names the file
            failed.append((file, str(exc)))
    return failed


def worker_count(idle: float | None = None) -> int:
    """Worker processes worth starting: the CPUs the rest of the machine leaves idle
    (:func:`mmcore.threads.idle_cpus`, measured; ``idle`` given: that), less the one this process
    parses on, at most 8; 0 on a machine with no CPU to spare (the checks then run in this process:
    workers competing with the parser for busy cores only add their cost)."""
    if idle is None:
        from mmcore.threads import idle_cpus, usable_cpus

        idle = idle_cpus()
        if idle is None:  # not measurable here: the load average
            try:
                idle = usable_cpus() - os.getloadavg()[0]
            except (OSError, AttributeError):
                return 0
    return max(0, min(8, int(idle + 0.5) - 1))


class FileCheckPool:
    """Checks files in forked worker processes; :meth:`submit` sends files, :meth:`collect` returns every
    verdict since the last call. Use as a context manager or call :meth:`close`.

    Tasks wait in this process's queue and go to the workers a few at a time (:data:`IN_FLIGHT_PER_WORKER`
    each, topped up at every :meth:`submit` -- the parser calls it every :data:`CHUNK_FILES` files -- and
    while collecting), so that when this process has finished parsing and collects, it checks the tasks no
    worker has taken yet itself, from the back of the queue, instead of only waiting: with one worker on a
    2-CPU machine the checks of a table's last batch run on both CPUs. No task is ever cancelled (a
    cancelled future trips the executor's own bookkeeping when a worker dies)."""

    def __init__(self, *, decode: bool, workers: int) -> None:
        self.decode = decode
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._started = self._forked = False
        #: every task since the last collect, in submission order: [files, future or None (not sent)]
        self._tasks: list[list[Any]] = []
        self._queued: deque[int] = deque()  # indices into _tasks of the tasks not sent to a worker
        self._flying: list[Future] = []

    @staticmethod
    def available() -> bool:
        return "fork" in multiprocessing.get_all_start_methods()

    def _start(self) -> ProcessPoolExecutor | None:
        if not self._started:
            self._started = True
            if self.available() and self.workers > 0:
                # gc.enable: the parse forks the workers with the collector paused (mmcore.bulk), and a
                # worker lives for a whole table of checks
                self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("fork"),
                                                 initializer=gc.enable)
        return self._pool

    def submit(self, files: Sequence[str]) -> None:
        """Queue ``files`` (distinct) for checking, in tasks of :data:`CHUNK_FILES`."""
        for i in range(0, len(files), CHUNK_FILES):
            self._queued.append(len(self._tasks))
            self._tasks.append([list(files[i:i + CHUNK_FILES]), None])
        self._feed()

    def _feed(self) -> None:
        """Send queued tasks, oldest first, until each worker has :data:`IN_FLIGHT_PER_WORKER`."""
        self._flying = [f for f in self._flying if not f.done()]
        while self._queued and len(self._flying) < IN_FLIGHT_PER_WORKER * self.workers:
            pool = self._start()
            if pool is None:
                return
            first, self._forked = not self._forked, True
            if first:  # the workers are forked on the first submit: the parent's objects stay out of their gc
                gc.freeze()
            task = self._tasks[self._queued[0]]
            try:
                task[1] = pool.submit(check_part, task[0], self.decode)
            except (BrokenProcessPool, RuntimeError, OSError):
                self._abandon()
                return
            finally:
                if first:
                    gc.unfreeze()
            self._queued.popleft()
            self._flying.append(task[1])

    def collect(self, progress: Any = None) -> dict[str, str]:
        """Wait for every file submitted since the last call; ``{file: error message}`` for those that failed.
        ``progress(done, total)`` is called as tasks finish (files done, files in all)."""
        tasks = self._tasks
        total = sum(len(part) for part, _ in tasks)
        results: list[list[tuple[Any, str]] | None] = [None] * len(tasks)
        done = 0
        while self._queued:  # the workers take from the front; this process from the back
            self._feed()
            if not self._queued:
                break
            k = self._queued.pop()
            results[k] = check_part(tasks[k][0], self.decode)
            done += len(tasks[k][0])
            if progress is not None:
                progress(done, total)
        errors: dict[str, str] = {}
        for (part, future), failed in zip(tasks, results, strict=True):
            if failed is None:
                if future is not None:
                    try:
                        failed = future.result()
                    except (BrokenProcessPool, OSError):  # a worker died (killed, out of memory): check here instead
                        self._abandon()
                if failed is None:
                    failed = check_part(part, self.decode)
                done += len(part)
                if progress is not None:
                    progress(done, total)
            errors.update(failed)
        self._tasks, self._flying = [], []
        return errors

    def _abandon(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._tasks, self._flying = [], []
        self._queued.clear()

    def __enter__(self) -> FileCheckPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
