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
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

#: rows of a table below which its files are checked in this process (a pool's start costs more than it saves)
POOL_MIN_ROWS = 10_000
#: files per task sent to a worker: large enough that the round trip (~0.1 ms) is noise, small enough to
#: keep the workers busy while the batch's rows are still being parsed
CHUNK_FILES = 1024


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
    verdict since the last call. Use as a context manager or call :meth:`close`."""

    def __init__(self, *, decode: bool, workers: int) -> None:
        self.decode = decode
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._started = self._forked = False
        self._tasks: list[tuple[list[str], Future | None]] = []

    @staticmethod
    def available() -> bool:
        return "fork" in multiprocessing.get_all_start_methods()

    def _start(self) -> ProcessPoolExecutor | None:
        if not self._started:
            self._started = True
            if self.available() and self.workers > 0:
                self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("fork"))
        return self._pool

    def submit(self, files: Sequence[str]) -> None:
        """Queue ``files`` (distinct) for checking, in tasks of :data:`CHUNK_FILES`."""
        for i in range(0, len(files), CHUNK_FILES):
            part = list(files[i:i + CHUNK_FILES])
            pool = self._start()
            future = None
            if pool is not None:
                first, self._forked = not self._forked, True
                if first:  # the workers are forked on the first submit: the parent's objects stay out of their gc
                    gc.freeze()
                try:
                    future = pool.submit(check_part, part, self.decode)
                except (BrokenProcessPool, RuntimeError, OSError):
                    self._abandon()
                finally:
                    if first:
                        gc.unfreeze()
            self._tasks.append((part, future))

    def collect(self, progress: Any = None) -> dict[str, str]:
        """Wait for every file submitted since the last call; ``{file: error message}`` for those that failed.
        ``progress(done, total)`` is called as tasks finish (files done, files in all)."""
        tasks, self._tasks = self._tasks, []
        total = sum(len(part) for part, _ in tasks)
        errors: dict[str, str] = {}
        done = 0
        for part, future in tasks:
            failed = None
            if future is not None:
                try:
                    failed = future.result()
                except (BrokenProcessPool, OSError):  # a worker died (killed, out of memory): check here instead
                    self._abandon()
            if failed is None:
                failed = check_part(part, self.decode)
            errors.update(failed)
            done += len(part)
            if progress is not None:
                progress(done, total)
        return errors

    def _abandon(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._tasks = []

    def __enter__(self) -> FileCheckPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
