"""One manifest row -> one sample ``{"inputs": {slot: raw | None}, "target": ...}`` and every problem with
it: numeric cells, text cells, ragged rows of numbers, paths escaping the manifest's folder, missing or
undecodable files (:func:`check_file`), rows lacking every modality. :func:`inputs_from_rows` does the
same for ``mmcore predict --data`` tables."""

from __future__ import annotations

import contextlib
import math
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from mmcore_plugins.datasets.manifest.errors import BadSampleError, bad
from mmcore_plugins.datasets.manifest.options import Options, check_columns, columns_spec, named_columns
from mmcore_plugins.datasets.manifest.source import Table
from mmcore_plugins.datasets.manifest.targets import Targets, finite_number, is_empty
from mmcore_plugins.io.paths import CellPaths, OutsidePathError

_TEXT = {str}  # the types of a row of CSV cells


def check_file(file: str | os.PathLike, *, decode: bool = True) -> None:
    """Check an image or audio file the way the processors will read it (:func:`mmcore_plugins.io.check_media`:
    headers checked, decoding bounded; ``decode=False``: the header only, one open, nothing decoded);
    a :class:`~mmcore_plugins.io.MediaError` (ValueError) naming it if not."""
    media = _MEDIA or _media()
    suffix = os.path.splitext(file)[1].lower()  # a million files: no Path object, no import statement each
    if suffix in media["images"] or (suffix not in media["audio"] and media["looks_like_image"](file)):
        media["check"](file, "image", decode=decode)
    elif suffix in media["audio"] or media["looks_like_audio"](file):
        media["check"](file, "audio", decode=decode)


_MEDIA: dict[str, Any] = {}


def _media() -> dict[str, Any]:
    from mmcore_plugins.io import (
        AUDIO_SUFFIXES,
        IMAGE_SUFFIXES,
        check_media,
        looks_like_audio,
        looks_like_image,
    )

    _MEDIA.update(images=IMAGE_SUFFIXES, audio=AUDIO_SUFFIXES, check=check_media, looks_like_image=looks_like_image,
                  looks_like_audio=looks_like_audio)
    return _MEDIA


class RowParser:
    """What turning one row into a sample needs: the options, and the target column(s) (:class:`Targets`)."""

    def __init__(self, opts: Any) -> None:
        self.opts = opts
        self.columns: dict[str, Any] = opts.columns
        self.path_columns = set(opts.path_columns)
        self.modalities: dict[str, str] = opts.modalities
        self.targets = Targets(opts)
        self.list_slots: set[str] = set()  # slots whose cells are lists of numbers (checked for one length)
        #: slot -> the lengths of the list cells handed out so far (what check_lengths counts, kept as the rows come)
        self.list_lengths: dict[str, Counter[int]] = {}
        #: slot -> length -> the smallest ``rank`` a row of that length had (ties of list_lengths broken by it)
        self.list_first: dict[str, dict[int, tuple[int, ...]]] = {}
        #: where the row being read stands in the order ties are broken by (a caller reading rows in
        #: another order than check_lengths sees them sets it: the manifest's parse)
        self.rank: tuple[int, ...] = ()
        #: slot -> the column it reads (one dict shared by every sample's ``origin``)
        self.slot_columns = {slot: spec for slot, spec in self.columns.items() if isinstance(spec, str)}
        self.paths: dict[Path, Any] = {}  # a table's folder -> its CellPaths (each folder resolved once)
        # Files to check (validate: header / decode), run together by run_checks: (problems of the
        # row, table name, row number, column, file). Checked once per file, in parallel.
        self.pending: list[tuple[list[str], str, int, str, str]] = []  # paths as str: a Path a row costs memory
        self._row_files: list[tuple[str, str]] = []
        #: a large table's checks in worker processes (:meth:`submit_checks`), None until then
        self.check_pool = None
        self._submitted: set[str] = set()  # files sent to check_pool since the last run_checks
        self._no_pool = False  # decided once: no CPU to spare for a pool (or no fork)
        self._waiting: list[tuple[list[str], str, int, str, str]] = []  # their pending entries
        #: slots whose cells name files read later, when the table was read without touching the disk
        #: (validate: none) and reading outside is not allowed: each file is confirmed when read
        self.confined_slots: set[str] = set()

    def sample(self, table: Table, row: Mapping[str, Any], number: int) -> tuple[dict[str, Any], list[str]]:
        """The row as a sample, and every problem with it (an empty list for a good row)."""
        problems: list[str] = []
        inputs: dict[str, Any] = {}
        self._row_files = []
        for slot, spec in self.columns.items():
            try:
                inputs[slot] = self.cell(table, row, number, slot, spec)
            except BadSampleError as exc:
                problems.append(str(exc))
                inputs[slot] = None
        if self._row_files:
            self.pending += [(problems, table.name, number, column, file) for column, file in self._row_files]
        value = None
        if self.targets.target is not None:
            try:
                value = self.targets.target_value(row, number, table)
            except BadSampleError as exc:
                problems.append(str(exc))
        if not problems and list(inputs.values()).count(None) == len(inputs):  # every input None (in C: per row)
            cells = sorted({c for _, c in named_columns(self.columns, None, None)})
            problems.append(str(bad(table.name, number, None, f"no modality: every input column ({', '.join(cells)}) is empty "
                                                              "(a sample needs at least one)")))
        # where the sample came from: a file that fails only when training reads it is reported by it
        origin = {"file": table.name, "row": number, "columns": self.slot_columns}
        return {"inputs": inputs, "target": value, "origin": origin}, problems

    def cell(self, table: Table, row: Mapping[str, Any], number: int, slot: str, spec: Any) -> Any:
        if type(spec) is not str:  # a column name is the common spec: tested first (it runs for every cell)
            return self.cells(table, row, number, spec)
        cell = row.get(spec)
        if is_empty(cell):
            return None
        modality = self.modalities.get(slot)
        if spec in self.path_columns:
            if self.opts.validate == "none" and not self.opts.allow_outside_paths and modality != "text":
                self.confined_slots.add(slot)
            return self.file(table, number, spec, cell, modality)
        if modality == "text" and not isinstance(cell, str):
            raise bad(table.name, number, spec, f"expected text (a string), got {type(cell).__name__} {cell!r:.40}")
        if isinstance(cell, (list, tuple)):
            if modality in (None, "tabular") and not any(isinstance(v, (list, tuple, dict)) for v in cell):
                for v in cell:
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                        raise bad(table.name, number, spec, f"expected a list of finite numbers, got {v!r} in it")
                self.list_slots.add(slot)
            self.list_lengths.setdefault(slot, Counter())[len(cell)] += 1
            first = self.list_first.setdefault(slot, {})
            if len(cell) not in first or self.rank < first[len(cell)]:
                first[len(cell)] = self.rank
        return cell

    def cells(self, table: Table, row: Mapping[str, Any], number: int, spec: list[str] | Mapping[str, list[str]]) -> Any:
        """A slot read from several columns: a row of numbers, or ``{column: value}`` (numeric and categorical)."""
        if isinstance(spec, list):  # numeric columns -> one row of numbers
            return self.numbers(table, row, number, spec)
        if isinstance(spec, Mapping):  # {numeric: [...], categorical: [...]} -> {column: value}
            numeric, categorical = spec.get("numeric", []), spec.get("categorical", [])
            cells = [row.get(c) for c in [*numeric, *categorical]]
            if all(is_empty(c) for c in cells):
                return None
            for c in numeric:
                if is_empty(row.get(c)):
                    raise bad(table.name, number, c, "empty numeric cell in a present modality "
                                                     "(leave all of its columns empty to mark the modality missing)")
            values: dict[str, Any] = dict(zip(numeric, self.numbers(table, row, number, numeric) or [], strict=True))
            for c in categorical:
                cell = row.get(c)
                if cell is not None and not isinstance(cell, (str, int, float, bool)):
                    raise bad(table.name, number, c, f"expected a category (a string or number), got {type(cell).__name__} {cell!r:.40}")
                values[c] = None if is_empty(cell) else str(cell).strip()  # an empty category is its own value
            return values
        raise TypeError(f"a slot's columns are a name, a list or a mapping, got {spec!r}")  # columns_spec checked it

    def check_lengths(self, rows: list[tuple[str, Table, int, dict[str, Any], list[str]]]) -> None:
        """Rows of numbers given as one list cell must all have one length (the commonest one)."""
        for slot, spec in self.columns.items():
            if not isinstance(spec, str) or slot not in self.list_slots:
                continue
            lengths = Counter(len(s["inputs"][slot]) for _, _, _, s, _ in rows if isinstance(s["inputs"][slot], (list, tuple)))
            if len(lengths) < 2:
                continue
            common = lengths.most_common(1)[0][0]
            for _, table, number, sample, problems in rows:
                cell = sample["inputs"][slot]
                if isinstance(cell, (list, tuple)) and len(cell) != common:
                    problems.append(str(bad(table.name, number, spec, f"expected {common} numbers (as most rows have), got {len(cell)}")))

    def numbers(self, table: Table, row: Mapping[str, Any], number: int, names: list[str]) -> list[float] | None:
        cells = [row.get(c) for c in names]
        if names and set(map(type, cells)) == _TEXT:
            # The common row (a CSV's numbers): each cell read by float() as finite_number reads it. A cell
            # that fails, or reads as NaN or infinite (also "nan", a placeholder of no value), takes the
            # checks below, which say what is wrong with it.
            try:
                values = [float(c) for c in cells]
            except ValueError:
                pass
            else:
                if all(map(math.isfinite, values)):
                    return values
        empty = [is_empty(c) for c in cells]
        if not names or all(empty):
            return None
        values = []
        for c, cell, blank in zip(names, cells, empty, strict=True):
            if blank:
                raise bad(table.name, number, c, "empty cell among the numeric columns of a present modality "
                                                 "(leave all of them empty to mark the modality missing)")
            try:
                values.append(finite_number(cell))
            except (TypeError, ValueError) as exc:
                raise bad(table.name, number, c, f"expected a number, got {cell!r}") from exc
        return values

    def file(self, table: Table, number: int, column: str, cell: Any, modality: str | None) -> str:
        if not isinstance(cell, str):
            raise bad(table.name, number, column, f"expected a file path, got {type(cell).__name__} {cell!r}")
        resolve = self.paths.get(table.root)
        if resolve is None:  # the one rule for a table's paths (mmcore fit follows it too)
            resolve = self.paths[table.root] = CellPaths(table.root, allow_outside=self.opts.allow_outside_paths,
                                                         follow_links=self.opts.validate != "none")
        try:
            file = resolve.text(cell)
        except OutsidePathError as exc:
            raise bad(table.name, number, column, str(exc)) from exc
        except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a loop of links
            raise bad(table.name, number, column, f"path {cell!r} cannot be resolved: {exc}") from exc
        if modality == "text":  # the file's contents are the sample (a text encoder reads strings as text)
            from mmcore_plugins.io import read_text

            try:
                if self.opts.validate == "none":  # the name was judged by its text: a link in the folder may lead out
                    resolve.confirm(file)
                return read_text(file)
            except ValueError as exc:
                raise bad(table.name, number, column, str(exc)) from exc
        if self.opts.validate == "none":  # nothing on disk is touched (the processors say what fails)
            return file
        try:  # one stat says folder, file or neither
            mode: int | None = os.stat(file).st_mode
        except (OSError, ValueError):
            mode = None
        if mode is not None and stat.S_ISDIR(mode):
            if modality in ("image", "audio"):
                raise bad(table.name, number, column, f"{file!r} is a folder, expected an {modality} file")
            from mmcore_plugins.io import MediaError, video_frames

            try:
                frames = [str(f) for f in video_frames(file)]  # a video clip's frames, as the video encoder reads them
            except MediaError as exc:
                raise bad(table.name, number, column, str(exc)) from exc
            to_check = frames[:1]  # decoding every frame of every clip up front would be slow
        elif mode is not None and stat.S_ISREG(mode):
            to_check = [file]
        else:
            from mmcore_plugins.io.errors import not_a_regular_file

            problem = not_a_regular_file(file)  # a FIFO would block the reader for ever: said, never opened
            raise bad(table.name, number, column, f"file {file!r} does not exist" if problem in (None, "no such file")
                      else f"{file!r}: {problem}")
        if self.opts.validate in ("header", "decode"):
            self._row_files += [(column, item) for item in to_check]  # checked by run_checks, once per file
        return file

    def run_checks(self, progress: CheckProgress | None = None) -> None:
        """Check every file :meth:`sample` queued since the last call (``validate: header`` or
        ``decode``), each distinct file once, in a pool of threads (Pillow and libsndfile release the
        GIL while they read and decode); a failure is added to its rows' problems. A line on stderr
        tells the progress when it takes more than a few seconds (``progress``: one line for checks
        made in several calls, a table's rows chunk by chunk)."""
        decode = self.opts.validate == "decode"
        if self.check_pool is not None:
            self.submit_checks()
            pending, self._waiting, self._submitted = self._waiting, [], set()
            shown = progress if progress is not None else CheckProgress(len(pending), decode=decode)
            errors = self.check_pool.collect(shown.files)
            if progress is None:
                shown.close()
        else:
            pending, self.pending = self.pending, []
            if not pending:
                return
            files = list(dict.fromkeys(item[4] for item in pending))
            errors = check_files(files, decode=decode, progress=progress)
        for problems, name, number, column, file in pending:
            error = errors.get(file)
            if error is not None:
                problems.append(str(bad(name, number, column, error)))


    def submit_checks(self) -> None:
        """Send the files :meth:`sample` queued so far to worker processes
        (:class:`~mmcore_plugins.datasets.manifest.check_pool.FileCheckPool`, started on the first
        call), each distinct file once until :meth:`run_checks` collects the verdicts; meanwhile this
        process parses more rows. For a large table (the caller decides: ``check_pool.POOL_MIN_ROWS``);
        without fork, on a machine with no idle CPU (:func:`~mmcore_plugins.datasets.manifest.check_pool.worker_count`),
        or with ``validate`` other than header/decode, the files stay queued for :meth:`run_checks`.
        Call :meth:`close` when done."""
        if self.opts.validate not in ("header", "decode") or not self.pending:
            return
        if self.check_pool is None:
            from mmcore_plugins.datasets.manifest.check_pool import FileCheckPool, worker_count

            workers = worker_count() if FileCheckPool.available() and not self._no_pool else 0
            if not workers:  # no fork, or no CPU to spare: checked in this process by run_checks
                self._no_pool = True
                return
            self.check_pool = FileCheckPool(decode=self.opts.validate == "decode", workers=workers)
        new = [file for file in dict.fromkeys(item[4] for item in self.pending) if file not in self._submitted]
        self._submitted.update(new)
        self._waiting += self.pending
        self.pending = []
        self.check_pool.submit(new)

    def close(self) -> None:
        """Stop :meth:`submit_checks`'s worker processes, if any."""
        if self.check_pool is not None:
            self.check_pool.close()
            self.check_pool = None


#: Seconds of checking after which check_files reports its progress on stderr.
PROGRESS_AFTER_S = 3.0


class CheckProgress:
    """The progress line of file checks on stderr, past :data:`PROGRESS_AFTER_S` seconds from its start:
    rewritten in place on a terminal, every 10 s otherwise. ``total`` things (files, or a table's rows:
    ``unit=" rows"``) to check; a table checked chunk by chunk sets ``offset`` (rows done before this
    chunk) and ``span`` (the chunk's rows), and :meth:`files` maps the chunk's files done to rows."""

    def __init__(self, total: int, *, decode: bool, unit: str = "") -> None:
        self.total, self.unit = total, unit
        self.kind = "decoding" if decode else "headers"
        self.start = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.offset, self.span = 0, None

    def files(self, done: int, files: int) -> None:
        """``done`` of the ``files`` of one call checked."""
        self.show(done if self.span is None else self.offset + self.span * done // max(1, files))

    def show(self, done: int) -> None:
        now = time.monotonic()
        if now - self.start > PROGRESS_AFTER_S and (self.tty or now - self.last >= 10.0 or done == self.total):
            self.last = now
            left = (now - self.start) / max(1, done) * (self.total - done)
            print(("\r" if self.tty else "") + f"checking files ({self.kind}): {done:,} of {self.total:,}{self.unit}, "
                  f"{now - self.start:.0f} s, about {left:.0f} s left", end="" if self.tty else "\n",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and time.monotonic() - self.start > PROGRESS_AFTER_S:
            print(file=sys.stderr)


def check_files(files: Sequence[str | os.PathLike], *, decode: bool = True, workers: int | None = None,
                progress: CheckProgress | None = None) -> dict[Any, str]:
    """:func:`check_file` on every file of ``files`` in a pool of ``workers`` threads; returns ``{file: error message}`` for those that failed.
    Past :data:`PROGRESS_AFTER_S` seconds a progress line goes to stderr (rewritten in place on a
    terminal, every 10 s otherwise; ``progress``: a line shared by several calls, :class:`CheckProgress`).

    ``workers`` defaults to half the CPUs this process may use (at most 8): small images are checked
    mostly in Python, under the GIL, and on a busy 2-core machine two threads were 4% (header) to
    22% (decode) slower than one on page-cached 32x32 PNGs (benchmarks/bench_scale.py files); a
    pool pays off where reading waits on the disk or the network, or decoding large images in C.
    """
    from concurrent.futures import ThreadPoolExecutor

    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = max(1, min(8, cpus // 2))
    from mmcore_plugins.datasets.manifest.check_pool import check_part

    chunk = 256

    def run(part: Sequence[str | os.PathLike]) -> list[tuple[Any, str]]:
        return check_part(part, decode)

    parts = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    errors: dict[Any, str] = {}
    shown = progress if progress is not None else CheckProgress(len(files), decode=decode)
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) if workers > 1 and len(parts) > 1 else contextlib.nullcontext() as pool:
        results = pool.map(run, parts) if pool is not None else map(run, parts)
        for part, failed in zip(parts, results, strict=True):
            errors.update(failed)
            done += len(part)
            shown.files(done, len(files))
    if progress is None:
        shown.close()
    return errors


def inputs_from_rows(
    rows: Sequence[Mapping[str, Any]], columns: Mapping[str, Any], *, path_columns: Sequence[str] = (),
    root: str | os.PathLike | None = None, name: str = "<table>", modalities: Mapping[str, str] | None = None,
    validate: Literal["decode", "header", "exists", "none"] = "exists", allow_outside_paths: bool = False,
    missing_columns: Sequence[str] = (), first_row: int = 1, header: Sequence[str] | None = None,
) -> list[tuple[dict[str, Any] | None, str | None]]:
    """Each row's model inputs ``{slot: raw}`` as a manifest would build them (for ``mmcore predict
    --data``), or the row's problems: ``[(inputs, None) | (None, "row N, column 'c': ...")]``.

    ``missing_columns``: columns declared missing (every cell empty; they need not be in the table). A
    numeric column of a slot that reads several numbers makes that whole slot missing (a present row
    of numbers needs every one of them); a categorical one is an empty category.

    Raises ValueError (listing them) when a column named in ``columns``/``path_columns`` and not
    declared missing is absent from every row, or a declared column is not one the columns name.

    For a table read in batches: ``first_row`` is the 1-based number of ``rows[0]`` in the file (what
    messages name), ``header`` the whole table's columns (checked instead of these rows' keys).
    """
    spec = columns_spec(columns)
    named = named_columns(spec, None, list(path_columns))
    declared = list(dict.fromkeys(missing_columns))
    unknown = [c for c in declared if c not in {column for _, column in named}]
    if unknown:
        readable = sorted({column for _, column in named})
        raise ValueError(f"declared missing: {', '.join(repr(c) for c in unknown)} "
                         f"{'is not a column' if len(unknown) == 1 else 'are not columns'} the model reads "
                         f"(it reads {', '.join(repr(c) for c in readable)})")
    check_columns(Path(name), [dict.fromkeys(header)] if header is not None else list(rows),
                  [(option, column) for option, column in named if column not in declared])
    if declared:
        blank = set(declared)
        for slot_spec in spec.values():  # a row of numbers is present whole or missing whole
            numeric = slot_spec if isinstance(slot_spec, list) else slot_spec.get("numeric", []) if isinstance(slot_spec, Mapping) else []
            if blank & set(numeric):
                blank |= set(numeric) | set(slot_spec.get("categorical", []) if isinstance(slot_spec, Mapping) else [])
        rows = [{**row, **dict.fromkeys(blank)} for row in rows]
    opts = Options(columns=spec, target=None, path_columns=list(path_columns), target_type="raw", classes=None,
                   num_classes=None, label_delimiter="|", modalities=dict(modalities or {}), validate=validate,
                   allow_outside_paths=allow_outside_paths, empty_labels="none")
    parser = RowParser(opts)
    table = Table.__new__(Table)
    table.source, table.path, table.name, table.rows = None, None, name, list(rows)
    table.root = Path(root).expanduser().resolve() if root is not None else Path.cwd().resolve()
    built = []
    for i, row in enumerate(table.rows):
        sample, problems = parser.sample(table, row, i + first_row)
        built.append(("predict", table, i + first_row, sample, problems))
    parser.run_checks()
    parser.check_lengths(built)
    prefix = f"{name}: "
    return [(None, "; ".join(p.removeprefix(prefix) for p in problems)) if problems else (sample["inputs"], None)
            for *_, sample, problems in built]
