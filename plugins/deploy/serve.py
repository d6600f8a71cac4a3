"""``mmcore serve``: a run directory or an export folder over HTTP (FastAPI + uvicorn).

Endpoints::

    POST /predict     JSON {"records": [{slot: value, ...}, ...]} (text, numbers, categories), or
                      multipart/form-data for one record with uploads (image / audio files, video
                      frames; text and table fields beside them: "slot" or "slot.column");
                      a `mmcore fit` run's records and fields are the user's own columns
                      ({"Customer Review": ..., "Unit Price (EUR)": ...}; slot names are aliases)
                      -> {"predictions": [{"prediction", "probabilities", "modalities"}, ...]}
                      (a `mmcore fit` run's id columns a record holds come first in its answer, as
                      `mmcore predict --data` writes them: {"sku": "A-113", "prediction": ...}; an id
                      column named "row" as "row (id)")
                      (a record with a category value not seen in training is predicted, that value
                      read as unknown, and its answer says so: "warnings": ["column 'brand': 'Acme'
                      was not seen in training; it was treated as unknown"]; a record with no input
                      at all gets {"prediction": null, "missing": "no input in this record: ..."})
    GET  /            a web page generated from the model's slots
    GET  /metadata    slots, classes, the model's source and format, limits, versions
    GET  /healthz     {"status": "ok", ...}: requests, records, batches and their sizes, queue length
    GET  /docs        OpenAPI documentation (/openapi.json)

Concurrent requests are micro-batched (continuous batching): a request is parsed and checked on
the event loop, decoded and preprocessed in a pool of ``prepare_threads`` threads, then queued; one
loop runs a batch as soon as the model thread is free, with everything that queued meanwhile, at
most ``max_batch`` records (a single request with more runs alone). No fixed delay: a lone request
never waits (it is decoded in the model thread, right before its forward pass), and under load the
batches grow by themselves. ``window_ms`` > 0 lets a batch wait for requests still being decoded.
A batch of a backend that allows it (the eager model of a run directory) is split into parts of at
least :data:`PART_MIN` records run at once on ``batch_threads`` threads, one intra-op thread each:
the small tensor operations of one forward pass do not spread over cores, parts do.
The queue is bounded (``max_queue`` requests): a full queue answers 503 at once rather than
letting latency grow without limit. Each answer's ``Server-Timing`` header says where its time
went (ms): ``read`` (the body), ``parse`` (JSON / multipart and checks), ``prepare`` (decoding and
preprocessing), ``queue`` (waiting for the model), ``model`` (its batch's forward pass), and the
batch's size.

Limits: a request body over ``max_body_bytes`` is refused (413) before it is parsed; a body
without a length is read only up to it. A multipart body is parsed in memory by python-multipart's
parser (:func:`multipart_form`: at most ``MAX_FILES`` files, 1,000 fields, :data:`MAX_FIELD_BYTES` a
text field). Uploads are decoded by :mod:`mmcore_plugins.io` with the limits every file has (Pillow's
decompression-bomb limit, audio header checks, ``max_seconds`` of audio). A request never names a file the server opens. Every bad request gets a 4xx JSON
``{"error": ..., "field": ...}``; the server keeps serving.
"""

# (No `from __future__ import annotations`: FastAPI reads the endpoints' annotations as objects.)
import asyncio
import collections
import errno
import functools
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, NamedTuple

from fastapi import Request

from mmcore.errors import UserInputError
from mmcore_plugins.deploy.backends import (
    Backend,
    FieldError,
    by_column,
    resolve_key,
    unknown_key,
    user_columns,
)

#: Defaults of the command's options.
MAX_BATCH = 64
WINDOW_MS = 0.0
MAX_QUEUE = 256
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_RECORDS = 256
MAX_FILES = 64
#: Fewest records in a part of a split batch: below ~4 records a forward pass costs more per record
#: (demo model, one thread, CPU per record: 6-9 ms at 1 record, 2.3-3.8 ms at 2-4, ~2 ms at 8-16).
PART_MIN = 4


class ApiError(Exception):
    """An HTTP error answered as JSON: ``status``, ``message``, and the ``field`` at fault (or None)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class Busy(Exception):
    """The batch queue is full."""


class MicroBatcher:
    """Collects prepared records from concurrent requests into batches for ``backend.predict``.

    :meth:`enqueue` queues one request's records. One task runs the batches, one at
    a time, in a single model thread. A batch starts as soon as the model is free: a lone request
    never waits, and every request that arrived while the previous batch ran goes into the next one
    (continuous batching: under load the batches grow by themselves, with no fixed delay).
    ``window_ms`` > 0 additionally lets a batch wait that long for requests still being prepared
    (:meth:`preparing`): a trade of latency for larger batches, off by default.

    Decoding and preprocessing (``backend.prepare``) run in their own pool of ``prepare_threads``
    threads, never on the event loop, so the next requests are decoded while a batch runs. A request
    that arrives while nothing else is in flight is decoded in the model thread right before its
    forward pass instead: one hand-over between threads rather than two (each costs a wake-up,
    milliseconds on a busy machine), and there is nothing to overlap with.

    Threads: the model thread runs a lone request with the process's intra-op threads (as a caller of
    ``backend.predict`` alone would). Where ``backend.parallel_parts``, a batch of at least
    ``2 * PART_MIN`` records is split into up to ``batch_threads`` parts (contiguous, in order) run at
    once in a pool of that many threads, each with ``intra-op threads // batch_threads`` (at least 1)
    of its own: at batch sizes of 4-32 the operations are too small for an intra-op team to pay off
    (measured on the demo model: 2 threads no faster than 1 at batch 16), so one forward pass keeps
    about one core busy, and the parts use the others. The decoding threads run their torch
    operations (resampling FFT, resizing) on one intra-op thread each: a record's are too small to
    share, and a team of two on cores the other threads occupy waits for its slowest member.
    """

    def __init__(self, backend: Backend, *, max_batch: int = MAX_BATCH, window_ms: float = WINDOW_MS,
                 max_queue: int = MAX_QUEUE, prepare_threads: int | None = None, batch_threads: int | None = None) -> None:
        import torch

        self.backend, self.max_batch, self.window, self.max_queue = backend, max_batch, window_ms / 1000.0, max_queue
        self.queue: asyncio.Queue | None = None
        intra_op = torch.get_num_threads()  # the process's (--threads), read before any thread below sets its own
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mmcore-model", initializer=torch.set_num_threads,
                                           initargs=(intra_op,))
        self.prepare_threads = prepare_threads or default_prepare_threads()
        self.prepare_executor = ThreadPoolExecutor(self.prepare_threads, thread_name_prefix="mmcore-prepare",
                                                   initializer=torch.set_num_threads, initargs=(1,))
        parallel = getattr(backend, "parallel_parts", False)
        self.batch_threads = (batch_threads or default_batch_threads()) if parallel else 1
        self.part_executor = ThreadPoolExecutor(
            self.batch_threads, thread_name_prefix="mmcore-part", initializer=torch.set_num_threads,
            initargs=(max(1, intra_op // self.batch_threads),)) if self.batch_threads > 1 else None
        self.in_preparation = 0
        self.running = False
        self.batches = self.records = 0
        self.largest = 0
        #: how many batches ran with each number of records (``/healthz`` shows it)
        self.sizes: collections.Counter[int] = collections.Counter()
        self._task: asyncio.Task | None = None
        self._arrived: asyncio.Event | None = None
        self._carry: _Job | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.prepare_executor.shutdown(wait=False, cancel_futures=True)
        if self.part_executor is not None:
            self.part_executor.shutdown(wait=False, cancel_futures=True)

    class preparing:  # noqa: N801 - used as `with batcher.preparing(batcher):`
        """Counts a request as being prepared (a batch with ``window_ms`` > 0 may wait for it)."""

        def __init__(self, batcher: "MicroBatcher") -> None:
            self.batcher = batcher

        def __enter__(self) -> None:
            self.batcher.in_preparation += 1

        def __exit__(self, *exc: Any) -> None:
            self.batcher.in_preparation -= 1
            if self.batcher._arrived is not None:
                self.batcher._arrived.set()

    def _alone(self) -> bool:
        """Nothing else in flight: no batch running or queued, no other request being prepared."""
        return not self.running and self.queue.empty() and self._carry is None and self.in_preparation <= 1

    async def enqueue(self, count: int, prepare: Any, *args: Any) -> asyncio.Future:
        """Queue the ``count`` records that ``prepare(*args)`` gives (a list of prepared items); the future
        gives their results, in order, and how their batch went (:class:`BatchTiming`). ``prepare`` runs in
        the prepare pool (or, for a lone request, in the model thread); its exceptions reach the caller.
        :class:`Busy` when the queue is full."""
        assert self.queue is not None, "start() first"
        loop = asyncio.get_running_loop()
        job = _Job(count, loop.create_future())
        if self._alone():
            job.prepare = functools.partial(prepare, *args)
        else:
            began = time.perf_counter()
            job.items = await loop.run_in_executor(self.prepare_executor, prepare, *args)
            job.prepared = time.perf_counter() - began
        job.queued = time.perf_counter()
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull as exc:
            raise Busy() from exc
        self._arrived.set()
        return job.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first, self._carry = (self._carry, None) if self._carry is not None else (await self.queue.get(), None)
            batch = [first]
            size = first.count
            deadline = loop.time() + self.window
            while size < self.max_batch:
                try:
                    job = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if self.in_preparation == 0 or remaining <= 0:
                        break
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                    continue
                if size + job.count > self.max_batch:
                    self._carry = job  # it starts the next batch, before anything queued after it
                    break
                batch.append(job)
                size += job.count
            self.running = True
            try:
                results, started, spent = await loop.run_in_executor(self.executor, self._run_batch, batch)
            except Exception as exc:  # noqa: BLE001 - every waiting request hears of it
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self.running = False
            done = [job for job in batch if job.error is None]
            records = sum(len(job.items) for job in done)
            if records:
                self.batches += 1
                self.records += records
                self.largest = max(self.largest, records)
                self.sizes[records] += 1
            start = 0
            for job in batch:
                if job.future.done():
                    continue
                if job.error is not None:
                    job.future.set_exception(job.error)
                    continue
                timing = BatchTiming(job.prepared, started - job.queued, spent, records)
                job.future.set_result((results[start : start + len(job.items)], timing))
                start += len(job.items)

    def _run_batch(self, batch: Sequence["_Job"]) -> tuple[list[dict[str, Any]], float, float]:
        """In the model thread: prepare the lone request's records (if any), then one forward pass for all (or,
        for a large batch, one per part, at once: :meth:`_predict`)."""
        for job in batch:
            if job.prepare is not None:
                began = time.perf_counter()
                try:
                    job.items = job.prepare()
                except Exception as exc:  # noqa: BLE001 - that request's own error (a bad upload): it alone hears it
                    job.error = exc
                job.prepared = time.perf_counter() - began
                job.queued += job.prepared  # its wait for the model ends when its preparation does
        flat = [x for job in batch if job.error is None for x in job.items]
        started = time.perf_counter()
        results = self._predict(flat) if flat else []
        return results, started, time.perf_counter() - started

    def _predict(self, flat: Sequence[Any]) -> list[dict[str, Any]]:
        """``backend.predict(flat)``, or the same in ``k`` contiguous parts of at least :data:`PART_MIN` records
        run at once in the part threads (results in order; the first error raised once every part is done)."""
        k = min(self.batch_threads, len(flat) // PART_MIN)
        if k <= 1 or self.part_executor is None:
            return self.backend.predict(flat)
        bounds = [round(i * len(flat) / k) for i in range(k + 1)]
        parts = [self.part_executor.submit(self.backend.predict, flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        wait(parts)
        return [result for part in parts for result in part.result()]


class _Job:
    """One request in the batch queue: its record count, prepared items (or the call that prepares them in the
    model thread), its future, when it was queued, and how long its preparation took."""

    __slots__ = ("count", "error", "future", "items", "prepare", "prepared", "queued")

    def __init__(self, count: int, future: asyncio.Future) -> None:
        self.count, self.future = count, future
        self.items: list[Any] = []
        self.prepare: Any = None
        self.error: Exception | None = None
        self.prepared = self.queued = 0.0


class BatchTiming(NamedTuple):
    """How a request went (seconds): its preparation, its wait for the model, the batch's model call; and
    the number of records in that batch."""

    prepare: float
    queue: float
    model: float
    size: int


def default_batch_threads() -> int:
    """Threads that run the parts of a batch at once unless ``--batch-threads`` says otherwise: 1 (one model call
    per batch). Parts were measured no faster on the 2-core machine, quiet: 32 clients vs one at a time, median
    3.06x with parts vs 3.15x without over 9 alternated rounds each (benchmarks/RESULTS.md, session 10); a
    machine with more cores may gain from them, measured with ``benchmarks/deploy_serve.py --batch-threads N``."""
    return 1


def default_prepare_threads() -> int:
    """Threads that decode and preprocess requests: one per usable CPU, at most 4 (the work holds the GIL
    between library calls, so more threads than cores only contend)."""
    from mmcore.threads import usable_cpus

    return max(1, min(4, usable_cpus()))


# ----------------------------------------------------------------------------------- request parsing
async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (by its Content-Length, before reading)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ApiError(413, f"the request body of {int(declared)} bytes is over the limit of {limit} bytes", "body")
        except ValueError as exc:
            raise ApiError(400, f"Content-Length {declared!r} is not a number", "Content-Length") from exc
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"the request body is over the limit of {limit} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def records_from_json(body: bytes, max_records: int) -> list[Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", "body") from exc
    if not isinstance(data, dict) or "records" not in data:
        raise ApiError(422, 'expected a JSON object {"records": [{slot: value, ...}, ...]}', "records")
    unknown = [k for k in data if k != "records"]
    if unknown:
        raise ApiError(422, 'not a field of the request; it takes "records" only', str(unknown[0]))
    records = data["records"]
    if not isinstance(records, list) or not records:
        raise ApiError(422, f"expected a non-empty list of records, got {type(records).__name__ if not isinstance(records, list) else 'an empty list'}", "records")
    if len(records) > max_records:
        raise ApiError(413, f"{len(records)} records in one request, more than {max_records}", "records")
    return records


async def record_from_form(request: Any, body: bytes, backend: Backend) -> dict[str, Any]:
    """One record from a multipart form: an upload per image/audio slot (several for video), a field
    per text slot, a field per column of a table slot (or one JSON field for the slot); empty = missing.

    A fit run's fields are the user's columns (``Customer Review``, ``Unit Price (EUR)``); its slot names
    (``customer_review``, ``tabular.<column>``) are accepted as aliases. Other runs: ``slot`` and
    ``slot.column``. The record comes back keyed as :meth:`Backend.check` reads it."""
    kind = request.headers.get("content-type", "")
    try:
        if kind.split(";")[0].strip().lower() == "multipart/form-data":
            form = multipart_form(body, kind, max_files=MAX_FILES, max_fields=1000)
        else:  # application/x-www-form-urlencoded: Starlette's form parser
            form = await _urlencoded_form(request, body)
    except Exception as exc:  # noqa: BLE001 - python-multipart / starlette parse errors of a malformed body
        raise ApiError(400, f"the multipart body cannot be parsed: {exc}", "body") from exc
    record: dict[str, Any] = {}
    dotted: dict[str, dict[str, Any]] = {}  # table slot -> {column: value} of its "slot.column" fields
    for key in dict.fromkeys(form.keys()):
        if key in backend.ignored:  # a fit run's training-table column the model does not read (Backend.ignored):
            value = form.getlist(key)[-1]  # kept as given (Backend.check skips it) for an id's echo (Backend.ids)
            if key in backend.id_columns and isinstance(value, str) and value.strip():
                record[key] = value
            continue
        found = resolve_key(backend.slots, key)
        if found is None:
            raise ApiError(422, unknown_key(backend.slots, key).reason, key)
        s, column = found
        values = form.getlist(key)
        if column is not None:  # one cell of a table slot
            value = values[-1] if values else None
            if isinstance(value, str) and value.strip():
                if key == column:  # a fit run's own column: Backend.check finds its slot
                    record[key] = _table_cell(s, column, value, key)
                else:
                    dotted.setdefault(s.name, {})[column] = _table_cell(s, column, value, key)
            continue
        uploads = [v for v in values if isinstance(v, Upload) and (v.filename or v.size)]
        texts = [v for v in values if isinstance(v, str)]
        if s.kind in ("file", "frames"):
            if texts and any(t.strip() for t in texts):
                raise ApiError(422, f"{s.modality} {'columns' if s.column else 'slots'} take an uploaded file, not a text "
                                    "field (a path is never opened)", key)
            if not uploads:
                continue
            if s.kind == "file" and len(uploads) > 1:
                raise ApiError(422, f"one file per {s.modality} {'column' if s.column else 'slot'}, got {len(uploads)}", key)
            data = [u.data for u in uploads]
            if any(not d for d in data):
                raise ApiError(422, "the uploaded file is empty", key)
            record[key] = data[0] if s.kind == "file" else data
        elif s.kind == "text":
            if len(values) > 1:
                raise ApiError(422, f"one value per text {'column' if s.column else 'slot'}, got {len(values)}", key)
            if uploads:  # a text file: its contents, as UTF-8
                try:
                    record[key] = uploads[0].data.decode("utf-8-sig")
                except UnicodeDecodeError as exc:
                    raise ApiError(422, f"the uploaded text file is not UTF-8 ({exc.reason} at byte {exc.start})", key) from exc
            elif texts and texts[0].strip():
                record[key] = texts[0]
        else:  # a table slot given whole, as one JSON field
            whole = values[-1] if values else None
            if isinstance(whole, str) and whole.strip():
                try:
                    record[key] = json.loads(whole)
                except ValueError as exc:
                    raise ApiError(422, f"expected a JSON object {{column: value}} or list of numbers: {exc}", key) from exc
    for s in backend.slots:
        cells = dotted.get(s.name)
        if not cells:
            continue
        empty = [c for c in s.columns if c not in cells]
        if empty and s.derive is None:  # not a fit run's slot: a number left empty is no missing cell
            raise ApiError(422, "missing; fill every number of this slot or none (then the slot counts as missing)",
                           f"{s.name}.{empty[0]}")
        whole = record.get(s.name)
        if whole is not None and not isinstance(whole, dict):
            raise ApiError(422, "given whole and column by column; give its columns one way", s.name)
        for column, value in cells.items():
            if isinstance(whole, dict) and column in whole and whole[column] != value:
                raise ApiError(422, f"given both as {s.name!r} ({whole[column]!r}) and as {s.name}.{column} ({value!r}); "
                                    "give it once", f"{s.name}.{column}")
        record[s.name] = {**cells, **(whole or {})} if s.derive is not None else {
            **{c: None for c in s.categorical}, **cells, **(whole or {})}
    return record


class Upload(NamedTuple):
    """An uploaded file of a multipart form: its file name as sent (may be empty) and its bytes, in memory (the whole
    body is, bounded by ``max_body_bytes``: :func:`read_body`)."""

    filename: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


class Form:
    """A parsed form's fields in order: ``keys()`` (each once, in order of first appearance) and ``getlist(key)``
    (the field's values: ``str`` for a text field, :class:`Upload` for a file), as Starlette's ``FormData``."""

    def __init__(self, items: Sequence[tuple[str, "str | Upload"]]) -> None:
        self.fields: dict[str, list[str | Upload]] = {}
        for key, value in items:
            self.fields.setdefault(key, []).append(value)

    def keys(self) -> list[str]:
        return list(self.fields)

    def getlist(self, key: str) -> list["str | Upload"]:
        return list(self.fields.get(key, ()))


#: Largest text field of a multipart form (bytes; Starlette's limit for a part that is not a file).
MAX_FIELD_BYTES = 1024 * 1024


def multipart_form(body: bytes, content_type: str, *, max_files: int, max_fields: int) -> Form:
    """A ``multipart/form-data`` body (all in memory) -> its fields, parsed by python-multipart's ``MultipartParser``
    with the rules of Starlette's form parser (``Content-Disposition`` ``name`` required; a part with a ``filename``
    is a file, any other a text field decoded with the body's charset, at most :data:`MAX_FIELD_BYTES`; at most
    ``max_files`` files and ``max_fields`` fields), but the files kept as bytes (:class:`Upload`) rather than spooled
    to temporary files: the body is in memory already, and the form is parsed on the event loop, per request.

    Raises ``ValueError`` (a missing boundary or name, too many files or fields, a field too large) or
    python-multipart's ``FormParserError`` (malformed data).
    """
    import codecs

    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    charset = params.get(b"charset", b"utf-8")
    try:
        charset = codecs.lookup(charset.decode("latin-1")).name
    except LookupError:
        charset = "latin-1"
    boundary = params.get(b"boundary")
    if not boundary:
        raise ValueError("missing boundary in multipart/form-data")
    items: list[tuple[str, str | Upload]] = []
    part: dict[str, Any] = {}
    counts = {"files": 0, "fields": 0}

    def on_part_begin() -> None:
        part.clear()
        part.update(headers={}, name=b"", value=b"", data=[], size=0)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def on_header_end() -> None:
        part["headers"][part["name"].lower()] = part["value"]
        part["name"] = part["value"] = b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if b"name" not in options:
            raise ValueError('the Content-Disposition header field "name" must be provided')
        part["field"] = _decode_form_text(options[b"name"], charset)
        part["filename"] = _decode_form_text(options[b"filename"], charset) if b"filename" in options else None
        kind = "files" if part["filename"] is not None else "fields"
        counts[kind] += 1
        limit = max_files if kind == "files" else max_fields
        if counts[kind] > limit:
            raise ValueError(f"too many {kind}: at most {limit}")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part["size"] += end - start
        if part["filename"] is None and part["size"] > MAX_FIELD_BYTES:
            raise ValueError(f"a text field is over {MAX_FIELD_BYTES} bytes")
        part["data"].append(data[start:end])

    def on_part_end() -> None:
        data = b"".join(part["data"])
        items.append((part["field"], Upload(part["filename"], data) if part["filename"] is not None
                      else _decode_form_text(data, charset)))

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
                                        "on_part_end": on_part_end})
    parser.write(body)
    parser.finalize()
    return Form(items)


def _decode_form_text(value: bytes, charset: str) -> str:
    """A form's name or text value as Starlette decodes it: in ``charset``, else Latin-1 (never an error)."""
    try:
        return value.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return value.decode("latin-1")


async def _urlencoded_form(request: Any, body: bytes) -> Form:
    """An ``application/x-www-form-urlencoded`` body -> its fields (Starlette's parser: every value a ``str``)."""
    from starlette.requests import Request

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=MAX_FILES, max_fields=1000)
    return Form([(k, v) for k, v in form.multi_items() if isinstance(v, str)])


def _table_cell(s: Any, column: str, value: str, key: str) -> Any:
    """A table cell of a form (text) as its slot takes it: a number for a number column; a fit run's cell as
    it came (:meth:`Backend.check` reads it by the table reader's rule, as a JSON record's)."""
    if column not in s.columns or s.derive is not None:
        return value
    try:
        return float(value)
    except ValueError as exc:
        raise ApiError(422, f"expected a number, got {value!r}", key) from exc


# ----------------------------------------------------------------------------------- the app
PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["records"], "properties": {
                "records": {"type": "array", "minItems": 1, "items": {"type": "object", "additionalProperties": True,
                            "description": "{slot: value}: text for text slots, {column: value} for table slots; "
                                           "a missing slot is a missing modality"}}}}},
            "multipart/form-data": {"schema": {"type": "object", "additionalProperties": True,
                                               "description": "one record: a file per image/audio slot (several image "
                                                              "files for video), 'slot' for text, 'slot.column' for "
                                                              "table columns; empty fields are missing"}},
        },
    },
    "responses": {"200": {"description": "one prediction per record"},
                  "400": {"description": "malformed body"}, "413": {"description": "body over the size limit"},
                  "415": {"description": "not JSON or multipart"}, "422": {"description": "a field is wrong; 'field' names it"},
                  "503": {"description": "the batch queue is full; retry"}},
}


def predict_openapi(backend: Backend) -> dict[str, Any]:
    """The OpenAPI description of ``POST /predict`` for ``backend``: a fit run's records are the user's own
    columns (each listed with what it takes); other runs' records name the slots."""
    if not by_column(backend.slots):
        return PREDICT_OPENAPI
    properties: dict[str, Any] = {}
    for s in backend.slots:
        if s.kind == "text":
            properties[s.label] = {"type": "string", "description": f"text (slot {s.name!r}, an alias)"}
        elif s.kind in ("file", "frames"):
            properties[s.label] = {"type": "string", "format": "binary", "description": f"{s.modality}: an uploaded "
                                   f"file, multipart/form-data only (slot {s.name!r}, an alias)"}
        else:
            for c in s.columns:
                properties[c] = {"type": ["number", "string", "null"],
                                 "description": "a number, or its text as a table cell holds it (\"0.75\", \"1e3\"); left "
                                                "out, null, empty, \"N/A\" or infinite: a missing cell"}
            for c in s.categorical:
                properties[c] = {"type": ["string", "null"], "description": "a category or date (left out: a missing cell)"}
    for c in sorted(backend.ignored):
        properties.setdefault(c, {"description": "a column of the training table the model does not read (its target, "
                                                 "an id): accepted and ignored"})
    record = {"type": "object", "properties": properties, "additionalProperties": False,
              "description": "one row {column: value}, the columns named as in the training table; a column left "
                             "out is a missing cell (slot names are accepted as aliases)"}
    out = json.loads(json.dumps(PREDICT_OPENAPI))
    content = out["requestBody"]["content"]
    content["application/json"]["schema"]["properties"]["records"]["items"] = record
    content["multipart/form-data"]["schema"] = {"type": "object", "properties": properties, "additionalProperties": False,
                                                "description": "one record: a field per column, named as in the "
                                                               "training table; empty fields are missing"}
    return out


def create_app(backend: Backend, *, max_batch: int = MAX_BATCH, window_ms: float = WINDOW_MS, max_queue: int = MAX_QUEUE,
               max_body_bytes: int = MAX_BODY_BYTES, max_records: int = MAX_RECORDS, prepare_threads: int | None = None,
               batch_threads: int | None = None) -> Any:
    """The FastAPI app serving ``backend`` (see the module docstring)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from mmcore_plugins.deploy.page import render_page

    batcher = MicroBatcher(backend, max_batch=max_batch, window_ms=window_ms, max_queue=max_queue,
                           prepare_threads=prepare_threads, batch_threads=batch_threads)
    counts = {"requests": 0, "predicted": 0, "rejected": 0}
    lock = threading.Lock()
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="mmcore serve", version="1", lifespan=lifespan,
                  description="Predictions of one mmcore model: POST /predict; the page at /.")
    app.state.backend, app.state.batcher = backend, batcher

    def error(status: int, message: str, field: str | None) -> JSONResponse:
        with lock:
            counts["rejected"] += 1
        return JSONResponse({"error": message, "field": field}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error(exc.status, exc.message, exc.field)

    @app.exception_handler(FieldError)
    async def _field_error(request: Request, exc: FieldError):
        return error(422, exc.reason, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return error(422, first.get("msg", "invalid request"), ".".join(str(p) for p in first.get("loc", [])) or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), None)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):  # a bug: JSON, no traceback, the server goes on
        return JSONResponse({"error": f"internal error: {type(exc).__name__}", "field": None}, status_code=500)

    def metadata() -> dict[str, Any]:
        columns = {"columns": user_columns(backend.slots),  # a fit run: what records name, and what they may hold unread
                   "ignored_columns": sorted(backend.ignored)} if by_column(backend.slots) else {}
        return {**columns, "slots": [s.to_json() for s in backend.slots], "head": backend.head, "model": backend.description,
                "limits": {"max_body_bytes": max_body_bytes, "max_records": max_records, "max_files": MAX_FILES},
                "batching": {"max_batch": max_batch, "window_ms": window_ms, "max_queue": max_queue,
                             "prepare_threads": batcher.prepare_threads, "batch_threads": batcher.batch_threads},
                "versions": _versions()}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: ``status`` ok, requests answered, records predicted, batches run, queue length."""
        return {"status": "ok", "uptime_s": round(time.time() - started, 1), **counts, "batches": batcher.batches,
                "largest_batch": batcher.largest,
                "batch_sizes": {str(k): v for k, v in sorted(batcher.sizes.items())}, "queued": batcher.queue.qsize() if batcher.queue else 0}

    @app.get("/metadata")
    async def get_metadata() -> dict[str, Any]:
        """The model's slots (what each takes), head and classes, source and format, limits, versions."""
        return metadata()

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        """A web page with a field per slot; it posts to /predict and shows the class and probabilities."""
        return HTMLResponse(render_page(metadata()))

    @app.post("/predict", openapi_extra=predict_openapi(backend))
    async def predict(request: Request) -> JSONResponse:
        """Predict records (JSON) or one record with uploads (multipart); see the module docstring."""
        began = time.perf_counter()
        with lock:
            counts["requests"] += 1
        with MicroBatcher.preparing(batcher):
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind not in ("application/json", "multipart/form-data", "application/x-www-form-urlencoded"):
                raise ApiError(415, f"expected Content-Type application/json or multipart/form-data, got {kind or 'none'!r}",
                               "Content-Type")
            body = await read_body(request, max_body_bytes)
            read = time.perf_counter()
            if kind == "application/json":
                raws = records_from_json(body, max_records)
                where = [f"records[{i}]" for i in range(len(raws))]
            else:
                raws, where = [await record_from_form(request, body, backend)], [""]
            checked = [backend.check(r, w) for r, w in zip(raws, where, strict=True)]
            # a record with no input at all gets no prediction (Predictor's and predict --data's rule), not the model
            given = [i for i, (r, w) in enumerate(zip(raws, where, strict=True)) if backend.has_input(r, w)]
            parsed = time.perf_counter()
            timing = BatchTiming(0.0, 0.0, 0.0, 0)
            if given:
                try:
                    answer = await batcher.enqueue(len(given), _prepare_all, backend, [checked[i] for i in given],
                                                   [where[i] for i in given])
                except Busy as exc:
                    raise ApiError(503, f"the server's queue is full ({max_queue} requests waiting); retry shortly", None) from exc
        found: list[dict[str, Any]] = []
        if given:
            found, timing = await answer
        results = [{"prediction": None, "missing": backend.no_input_note()} for _ in checked]
        for i, result in zip(given, found, strict=True):
            results[i] = result
        for result, record in zip(results, checked, strict=True):  # a category not seen in training: said, not refused
            notes = backend.warnings(record)
            if notes:
                result["warnings"] = notes
        # a fit run's id columns the record holds, first, as predict --data writes them: answers join back to rows
        results = [{**backend.ids(raw), **result} for raw, result in zip(raws, results, strict=True)]
        with lock:
            counts["predicted"] += len(found)
        # Server-Timing (W3C): where this request's time went, in ms -- read by benchmarks and browsers' devtools
        stages = (("read", read - began), ("parse", parsed - read), ("prepare", timing.prepare),
                  ("queue", timing.queue), ("model", timing.model))
        header = ", ".join(f"{name};dur={1000 * seconds:.3f}" for name, seconds in stages)
        return JSONResponse({"predictions": results},
                            headers={"Server-Timing": f'{header}, batch;desc="{timing.size} records"'})

    return app


def _prepare_all(backend: Backend, records: Sequence[Mapping[str, Any]], where: Sequence[str]) -> list[Any]:
    out = []
    for record, prefix in zip(records, where, strict=True):
        try:
            out.append(backend.prepare(record))
        except FieldError as exc:
            raise FieldError(f"{prefix}.{exc.field}" if prefix else exc.field, exc.reason) from exc
    return out


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("mmcore", "torch", "onnxruntime", "fastapi", "uvicorn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


# ----------------------------------------------------------------------------------- running
ENVIRONMENT = "MMCORE_SERVE_OPTIONS"
#: onnxruntime's idle intra-op threads spin-wait by default: fastest for one caller alone, but in a server
#: they take the cores the event loop and the decoding threads need between model calls.
ORT_SPINNING = False


def app_from_environment() -> Any:
    """The app a uvicorn worker process builds (``--workers N``): options from ``MMCORE_SERVE_OPTIONS``."""
    options = json.loads(os.environ[ENVIRONMENT])
    return _build(options)


def _build(options: Mapping[str, Any]) -> Any:
    from mmcore_plugins.deploy.backends import open_backend

    _threads(options.get("threads"))
    backend = open_backend(options["path"], graph=options.get("graph"), threads=options.get("threads"), spinning=ORT_SPINNING)
    return create_app(backend, max_batch=options["max_batch"], window_ms=options["window_ms"], max_queue=options["max_queue"],
                      max_body_bytes=options["max_body_bytes"], max_records=options["max_records"],
                      prepare_threads=options.get("prepare_threads"), batch_threads=options.get("batch_threads"))


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


class AddressInUse(UserInputError):
    """``--host``/``--port`` cannot be listened on (the port is taken, the address is not this machine's)."""


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` as uvicorn binds one (IPv6 when ``host`` holds ':',
    SO_REUSEADDR), for the server to listen on: bound before the model is loaded, and the very socket
    the server then uses, so a port taken meanwhile cannot make the server fail after the check.

    Raises :class:`AddressInUse` naming host and port (the port in use, or the OS's reason).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise address_error(host, port, exc) from exc
    return sock


def address_error(host: str, port: int, exc: OSError) -> AddressInUse:
    if exc.errno == errno.EADDRINUSE:
        return AddressInUse(f"cannot listen on {host}:{port}: the port is already in use (another server?); "
                            f"choose another --port")
    reason = exc.strerror or str(exc)
    return AddressInUse(f"cannot listen on {host}:{port}: {reason}; choose another --host or --port")


def serve(options: Mapping[str, Any], *, workers: int = 1, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info", sock: socket.socket | None = None) -> None:
    """Run the server until interrupted: in this process, or ``workers`` uvicorn worker processes.

    ``sock``: a socket bound to ``host:port`` (:func:`listen_socket`; bound here when None). With one
    process the server listens on it; ``workers`` > 1 binds again in uvicorn's supervisor (the
    socket is closed first), and a port taken in between is :class:`AddressInUse` too."""
    import uvicorn

    sock = sock if sock is not None else listen_socket(host, port)
    if workers > 1:
        sock.close()
        os.environ[ENVIRONMENT] = json.dumps(dict(options))
        try:
            uvicorn.run("mmcore_plugins.deploy.serve:app_from_environment", factory=True, host=host, port=port,
                        workers=workers, log_level=log_level)
        except SystemExit as exc:  # uvicorn exits 1 when its own bind fails: say which address, in one line
            if exc.code not in (0, None):
                listen_socket(host, port).close()
            raise
        return
    try:
        server = uvicorn.Server(uvicorn.Config(_build(options), host=host, port=port, log_level=log_level))
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:  # as uvicorn.run: a startup that failed (its lifespan) is exit 3
        sys.exit(3)
