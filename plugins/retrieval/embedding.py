"""Vectors out of a trained model: per-modality pooled features, the fused vector and the head's
embedding space (contrastive), plus reading and writing them with row ids.

``embed(model, samples)`` is the one function everything else uses (``mmcore embed``,
``mmcore search`` for queries, and a Predictor's ``.embed()``). File formats, chosen by the
name's ending:

- ``.parquet`` (pyarrow): one row per sample; columns ``id`` (string), ``target`` (when the data
  has one) and one ``fixed_size_list<float32>[D]`` column per vector name.
- ``.npz``: numpy arrays ``id`` (unicode), ``target`` (when any) and one ``[N, D]`` float32 array
  per vector name.
- ``.npy``: the file holds the fused vectors ``[N, D]`` float32 (``np.load`` it directly); every
  other vector is ``<stem>.<name>.npy`` beside it and ``<file>.json`` lists the ids, targets and
  those files.

Files are written by :func:`mmcore.engine.atomic.write_file` (atomic, unpredictable temporaries,
a link at the name replaced, never followed). An existing output is replaced only with
``overwrite``; a ``.npy`` output's other files, whose names the user did not type, are replaced
only when the existing ``<file>.json`` is mmcore's and lists them -- a file mmcore did not write
is never replaced. Reading back (:func:`read_embeddings`) checks sizes, shapes and dtypes before
anything is allocated: numpy's own header reader for ``.npy`` files and ``.npz`` members (their
shapes must fit the bytes there), strict bounded JSON for the sidecar (its files are names in
the same folder), the Parquet bounds of :mod:`mmcore_plugins.io.tables`.

Vector names: ``fused`` (the fusion's pooled output; with one encoder and no fusion, that
encoder's), ``<slot>`` (an encoder's pooled features), and ``head.<slot>`` for heads that map
each modality into a shared space (``contrastive``: the L2-normalised projections it trains;
these are the vectors for cross-modal search). A row whose sample lacks a modality has NaN in
that modality's vectors (and in ``fused`` when it lacks all of them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmcore.cli_predict import table_inputs, table_reading
from mmcore.errors import ConfigError, ConfigIssue

#: Output formats by file-name ending.
FORMATS = (".parquet", ".npz", ".npy")
#: Vector name of the fusion's output.
FUSED = "fused"
#: Encoder modalities whose manifest cells are file paths.
FILE_MODALITIES = {"image", "audio", "video"}
#: Manifest files ``--data`` reads (the manifest data set's reader).
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".ndjson", ".parquet")


def _target_value(value: Any) -> Any:
    """A manifest cell as a target: ints stay ints (CSV cells are strings), other values as they are."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _raw_inputs(sample: Mapping[str, Any], slots: Sequence[str]) -> Mapping[str, Any]:
    """``{slot: raw}`` from a dataset sample (``{"inputs": {...}, "target": ...}``) or a plain ``{slot: raw}``."""
    inputs = sample.get("inputs") if "inputs" not in slots else None
    return inputs if isinstance(inputs, Mapping) else sample


def _nan_where_absent(vectors: torch.Tensor, present: torch.Tensor) -> np.ndarray:
    out = torch.where(present[:, None], vectors.float(), torch.full((), float("nan"), device=vectors.device))
    return out.cpu().numpy().astype(np.float32, copy=False)


@torch.no_grad()
def embed(model, samples: Sequence[Mapping[str, Any]], *, batch_size: int = 64,
          device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Every vector the model computes for ``samples``: ``{name: float32 array [N, D_name]}``.

    ``samples`` are raw samples, either dataset samples ``{"inputs": {slot: raw}, ...}`` or plain
    ``{slot: raw}`` mappings (file paths, text, arrays: whatever the slot's processor accepts; a
    slot that is absent or None is a missing modality). Names: ``fused``, each slot, and
    ``head.<slot>`` when the head defines ``embed_modalities(features) -> {slot: [B, E]}``
    (see the module docstring). Rows lacking a modality hold NaN in its vectors.

    The model runs in eval mode in batches of ``batch_size`` on ``device``; its processors (with
    the statistics fitted at training) turn the raw inputs into tensors.

    Raises:
        ValueError: ``samples`` is empty, names a slot the model lacks, or a sample has no modality.
    """
    slots = list(model.slots)
    raws = [_raw_inputs(s, slots) for s in samples]
    if not raws:
        raise ValueError("embed needs at least one sample, got none")
    for i, raw in enumerate(raws):
        unknown = sorted(set(raw) - set(slots))
        if unknown:
            raise ValueError(f"sample #{i}: unknown modality slot(s) {unknown}; the model has {slots}")
        if all(raw.get(s) is None for s in slots):
            raise ValueError(f"sample #{i} has none of the model's modalities {slots}")
    from mmcore.engine.evaluation import to_device

    was_training = model.training
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    try:
        for start in range(0, len(raws), batch_size):
            batch = model.collate([{"inputs": dict(r)} for r in raws[start : start + batch_size]])
            inputs, _ = to_device(batch, device)
            features = model.encode(inputs)
            fused = model.fusion(features) if model.fusion is not None else next(iter(features.values()))
            vectors = {FUSED: _nan_where_absent(fused.pooled, fused.present)}
            for slot, f in features.items():
                vectors[slot] = _nan_where_absent(f.pooled, f.present)
            head_embed = getattr(model.head, "embed_modalities", None)
            if callable(head_embed):
                for slot, v in head_embed(features).items():
                    vectors[f"head.{slot}"] = v.float().cpu().numpy()
            for name, v in vectors.items():
                chunks.setdefault(name, []).append(v)
    finally:
        model.train(was_training)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


# ---------------------------------------------------------------------- which rows to embed
def _path_columns(model, columns: Mapping[str, Any]) -> list[str]:
    return [col for slot, col in columns.items()
            if isinstance(col, str) and getattr(model.encoders[slot], "modality", None) in FILE_MODALITIES]


def manifest_rows(model, config: Mapping[str, Any], manifest: str | Path, *, id_column: str | None = None,
                  target: str | None = None, manager=None, run_dir: str | Path | None = None,
                  missing: Sequence[str] = (), strict: bool = False) -> tuple[list[dict[str, Any]], list[str], list[Any] | None]:
    """``(samples, ids, targets)`` of every row of a table (CSV/JSONL/Parquet), read as ``mmcore predict
    --data`` reads it (hook ``mmcore_table_inputs``: the run's column mapping -- a ``fit`` run's column
    plan, whose derived columns are derived again -- else one column per slot).

    The rule of ``predict``: every column the model reads is in the table or declared in ``missing``
    (its slot's cells all empty: missing modalities); any other absent column is an error naming it and
    the closest column the table has. ``strict``: a missing or unreadable file is an error rather than a
    missing modality where the run's rule makes it one.
    Ids: ``id_column`` (default ``id`` when the manifest has it), else the 1-based row number; an
    empty id is an error naming its rows, a repeated one is reported (:func:`repeated_ids`).
    Targets: ``target`` (default: the run's target column, else ``label``) when every row has one,
    as written (integers as ints).

    Raises:
        ConfigError: the file does not exist, is not a table, lacks a column the model reads, has an
            empty id; bad rows (missing files, bad numbers), each with its row and column.
    """
    from mmcore.labels import is_missing
    from mmcore_plugins.datasets.manifest.source import DECIMAL
    from mmcore_plugins.io.tables import read_table

    if manager is None:
        from mmcore.plugin_manager import get_plugin_manager

        manager = get_plugin_manager()
    manifest = Path(manifest).expanduser()
    if manifest.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ConfigError([ConfigIssue("--data", f"{manifest} is not a manifest: expected a file ending in "
                                                 f"{', '.join(MANIFEST_SUFFIXES)} (or omit --data and give --split)")])
    reading = table_reading(manager, Path(run_dir) if run_dir is not None else None, manifest)  # as the run read its table
    try:  # the ids and targets, as written (the model's inputs are the hook's below)
        rows = read_table(manifest, encoding=reading["encoding"], sep=reading["sep"], decimal=DECIMAL)
    except (OSError, ValueError) as exc:
        raise ConfigError([ConfigIssue("--data", str(exc))]) from exc
    if not rows:
        raise ConfigError([ConfigIssue("--data", f"{manifest} has no rows")])
    header = {key for row in rows for key in row}
    data = config.get("data") or {}
    run_target = data.get("target") if data.get("name") == "manifest" and isinstance(data.get("target"), str) else None
    if id_column is not None and id_column not in header:
        raise ConfigError([ConfigIssue("--id-column", f"{manifest} has no column {id_column!r}; it has {sorted(header)}")])
    id_column = id_column or ("id" if "id" in header else None)
    if target is not None and target not in header:
        raise ConfigError([ConfigIssue("--target", f"{manifest} has no column {target!r}; it has {sorted(header)}")])
    target = target or next((t for t in (run_target, "label") if t and t in header), None)
    if target is not None and any(row.get(target) in (None, "") for row in rows):
        target = None  # an unlabelled row: embed without targets rather than refuse
    if id_column is not None:
        empty = [n for n, row in enumerate(rows, start=1) if is_missing(row.get(id_column))]
        if empty:
            raise ConfigError([ConfigIssue("--id-column", f"{manifest}: rows {_rows_listed(empty)} have no "
                                                          f"{id_column!r} id; give every row one, or another --id-column")])
    built = table_inputs(manager, path=manifest, model=model, data=data, **reading,
                         run_dir=Path(run_dir) if run_dir is not None else None, missing=list(missing), strict=strict)
    try:
        built = list(built)  # a plugin may stream the rows; embed keeps every row's vectors anyway
    except (OSError, ValueError) as exc:
        raise ConfigError([ConfigIssue("--data", str(exc))]) from exc
    # a row with no input at all ((None, None, why)): nothing to embed, refused as a bad row is
    problems = [item[1] or (item[2] if len(item) > 2 and item[2] else "no input in this row")
                for item in built if item[1] or item[0] is None]
    if problems:
        more = f" (and {len(problems) - 5} more bad rows)" if len(problems) > 5 else ""
        raise ConfigError([ConfigIssue("--data", f"{manifest}: {p}") for p in problems[:5]]
                          + ([ConfigIssue("--data", more.strip())] if more else []))
    samples = [{"inputs": item[0]} for item in built]
    ids = [str(row[id_column]) if id_column else str(n) for n, row in enumerate(rows, start=1)]
    targets = [_target_value(row[target]) for row in rows] if target else None
    return samples, ids, targets


def _rows_listed(rows: Sequence[int], limit: int = 10) -> str:
    return ", ".join(map(str, rows[:limit])) + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def repeated_ids(ids: Sequence[str]) -> dict[str, list[int]]:
    """``{id: [1-based rows]}`` of every id that more than one row carries (an index returns each of
    those rows under the same id: the report says which, so that no result is silently ambiguous)."""
    rows: dict[str, list[int]] = {}
    for n, value in enumerate(ids, start=1):
        rows.setdefault(value, []).append(n)
    return {value: where for value, where in rows.items() if len(where) > 1}


def split_rows(dataset, split: str) -> tuple[list[dict[str, Any]], list[str], list[Any] | None]:
    """``(samples, ids, targets)`` of a dataset split; ids are ``<split>:<index>`` unless samples carry an ``id``."""
    samples = [dataset[i] for i in range(len(dataset))]
    ids = [str(s["id"]) if isinstance(s, Mapping) and "id" in s else f"{split}:{i}" for i, s in enumerate(samples)]
    targets = [s.get("target") for s in samples]
    return samples, ids, targets if targets and all(t is not None for t in targets) else None


# ---------------------------------------------------------------------- files
def check_format(path: Path, option: str = "--out") -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError([ConfigIssue(option, f"{path}: unknown embedding format {suffix or '(no extension)'!r}; "
                                               f"expected a name ending in {', '.join(FORMATS)}")])
    return suffix


def _targets_array(targets: Sequence[Any]) -> np.ndarray:
    if all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in targets):
        return np.asarray(targets, dtype=np.int64)
    if all(isinstance(t, (int, float, np.number)) and not isinstance(t, bool) for t in targets):
        return np.asarray(targets, dtype=np.float64)
    return np.asarray([json.dumps(t) if not isinstance(t, str) else t for t in targets], dtype=np.str_)


#: A ``.npy`` output's sidecar larger than this is not one mmcore wrote.
MAX_SIDECAR_BYTES = 1 << 30


def output_files(path: str | Path, names: Sequence[str]) -> list[Path]:
    """Every file :func:`write_embeddings` writes for vectors ``names`` into ``path`` (the output first)."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        return [path]
    return [path, *(path.with_name(f"{path.stem}.{n}.npy") for n in names if n != FUSED), path.with_name(path.name + ".json")]


def _listed_by_previous_output(path: Path) -> set[str]:
    """The names an earlier ``.npy`` output of mmcore's at ``path`` consists of (empty when none)."""
    meta = path.with_name(path.name + ".json")
    if meta.is_symlink() or not meta.is_file():
        return set()
    try:
        sidecar = _read_sidecar(meta)
    except (OSError, ValueError):
        return set()
    return {path.name, meta.name, *sidecar["vectors"].values()}


def check_outputs(path: str | Path, names: Sequence[str], *, overwrite: bool = False, option: str = "--out") -> dict[Path, bool]:
    """Whether each file :func:`write_embeddings` would write may be written: ``{file: replace}``.

    ``path`` itself may be replaced with ``overwrite``; its other files (``.npy`` outputs) only
    when ``overwrite`` is given and the existing ``<path>.json`` is mmcore's and lists them.

    Raises:
        ConfigError: an output exists without ``overwrite``, or a file mmcore did not write is in the way.
    """
    path = Path(path)
    files = output_files(path, names)
    ours = _listed_by_previous_output(path)
    plan = {}
    for file in files:
        exists = file.exists() or file.is_symlink()
        if exists and file.is_dir():
            raise ConfigError([ConfigIssue(option, f"{file} is a folder, expected a file")])
        if exists and file != path and file.name not in ours:
            raise ConfigError([ConfigIssue(option, f"{file} exists and mmcore did not write it (it is not listed by an "
                                                   f"earlier {path.name}.json); it is left as it is: move it, or choose "
                                                   "another output name")])
        if exists and not overwrite:
            raise ConfigError([ConfigIssue(option, f"{file} exists; pass --overwrite to replace "
                                                   f"{'it' if file == path else 'the earlier output'}, or choose another name")])
        plan[file] = exists
    return plan


def write_embeddings(path: str | Path, vectors: Mapping[str, np.ndarray], ids: Sequence[str],
                     targets: Sequence[Any] | None = None, *, overwrite: bool = False) -> list[Path]:
    """Write ``vectors`` (``{name: [N, D]}``) with their row ``ids`` (and ``targets``); returns the files written.

    The format follows the file name (module docstring). Each file is written atomically
    (:func:`mmcore.engine.atomic.write_file`). Every file is checked (:func:`check_outputs`)
    before the first is written.

    Raises:
        ConfigError: unknown extension, an existing output without ``overwrite``, a file mmcore did
            not write in the way; ValueError: arrays and ids of different lengths.
    """
    from mmcore.engine.atomic import write_file

    path = Path(path)
    suffix = check_format(path)
    n = len(ids)
    for name, v in vectors.items():
        if v.ndim != 2 or v.shape[0] != n:
            raise ValueError(f"vector {name!r} must be [{n}, D] (one row per id), got {list(v.shape)}")
    if targets is not None and len(targets) != n:
        raise ValueError(f"targets must have one value per id ({n}), got {len(targets)}")
    if FUSED not in vectors:
        raise ValueError(f"vectors must include {FUSED!r}, got {sorted(vectors)}")
    plan = check_outputs(path, list(vectors), overwrite=overwrite)
    ids = [str(i) for i in ids]
    written: list[Path] = []

    def atomic(target: Path, write) -> None:
        # A file checked as mmcore's (or the output itself) is replaced; any other name must be free.
        write_file(target, write, replace=plan.get(target, False) or target == path)
        written.append(target)

    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns: dict[str, Any] = {"id": pa.array(ids, pa.string())}
        if targets is not None:
            columns["target"] = pa.array(_targets_array(targets))
        for name, v in vectors.items():
            flat = pa.array(np.ascontiguousarray(v, dtype=np.float32).reshape(-1))
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, v.shape[1])
        atomic(path, lambda fh: pq.write_table(pa.table(columns), fh))
    elif suffix == ".npz":
        arrays = {"id": np.asarray(ids, dtype=np.str_), **{k: np.asarray(v, np.float32) for k, v in vectors.items()}}
        if targets is not None:
            arrays["target"] = _targets_array(targets)
        atomic(path, lambda fh: np.savez(fh, **arrays))
    else:
        files = {}
        for name, v in vectors.items():
            file = path if name == FUSED else path.with_name(f"{path.stem}.{name}.npy")
            atomic(file, lambda fh, v=v: np.save(fh, np.asarray(v, np.float32)))
            files[name] = file.name
        sidecar = {"ids": ids, "targets": None if targets is None else _targets_array(targets).tolist(), "vectors": files}
        atomic(path.with_name(path.name + ".json"), json.dumps(sidecar))  # last: it lists what is complete
    return written


def _read_sidecar(meta: Path) -> dict[str, Any]:
    """A ``.npy`` output's sidecar, checked: strict bounded JSON with ``ids`` (strings), ``targets``
    (null or one per id) and ``vectors`` (name -> a file name in the same folder). ValueError otherwise."""
    from mmcore.engine.atomic import read_json

    data = read_json(meta, max_bytes=MAX_SIDECAR_BYTES, what="sidecar")
    if not isinstance(data, dict):
        raise ValueError(f"{meta.name} must hold a JSON object, got {type(data).__name__}")
    ids, targets, files = data.get("ids"), data.get("targets"), data.get("vectors")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"{meta.name}: 'ids' must be a list of strings")
    if targets is not None and (not isinstance(targets, list) or len(targets) != len(ids)):
        raise ValueError(f"{meta.name}: 'targets' must be null or list one value per id ({len(ids)})")
    if not isinstance(files, dict) or FUSED not in files:
        raise ValueError(f"{meta.name}: 'vectors' must map each vector name ({FUSED!r} among them) to its file")
    for name, file in files.items():
        # Names in the sidecar's own folder only: never a path elsewhere (../, /etc/...).
        if not isinstance(file, str) or Path(file).name != file or file in ("", ".", "..") or not file.endswith(".npy"):
            raise ValueError(f"{meta.name}: vector {name!r} names {file!r}; expected a .npy file name in the same folder")
    return data


def _npy_header(read, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` from the header of an open ``.npy`` stream (a file or an .npz member), read
    by numpy's own header reader before any data: what the array would need is known first."""
    from numpy.lib import format as npy

    version = npy.read_magic(read)
    header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
    if header is None:
        raise ValueError(f"{what}: .npy format version {version} is not one numpy.save writes here")
    shape, _, dtype = header(read)
    if dtype.hasobject:
        raise ValueError(f"{what} holds Python objects; embeddings are numbers")
    return shape, dtype


def _check_vectors(name: str, shape: tuple, dtype: np.dtype, available: int, what: str) -> None:
    if dtype != np.float32 or len(shape) != 2:
        raise ValueError(f"{what}: vector {name!r} is {dtype} of shape {list(shape)}, expected float32 [N, D]")
    if shape[0] * shape[1] * 4 > available:
        raise ValueError(f"{what}: vector {name!r} claims {list(shape)} float32 values, more than the "
                         f"{available} bytes there")


def _load_npy(path: Path, name: str) -> np.ndarray:
    from mmcore.engine.atomic import check_regular_file

    size = check_regular_file(path, "vector file").st_size
    with open(path, "rb") as fh:
        shape, dtype = _npy_header(fh, path.name)
        _check_vectors(name, shape, dtype, size - fh.tell(), path.name)
    return np.array(np.load(path, mmap_mode="r", allow_pickle=False))


def _load_npz(path: Path, size: int) -> dict[str, np.ndarray]:
    import zipfile

    data = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            # np.savez stores members uncompressed: one larger than the archive is a zip bomb.
            if info.file_size > size:
                raise ValueError(f"member {info.filename} claims {info.file_size} bytes, more than the {size}-byte file")
            with archive.open(info) as member:
                shape, dtype = _npy_header(member, info.filename)
                if key not in ("id", "target"):
                    _check_vectors(key, shape, dtype, info.file_size, path.name)
                elif len(shape) != 1 or dtype.kind not in "Uiuf":
                    raise ValueError(f"{path.name}: {key!r} is {dtype} of shape {list(shape)}, expected a 1-D array")
        with np.load(path, allow_pickle=False) as loaded:
            data = {k: loaded[k] for k in loaded.files}
    return data


def read_embeddings(path: str | Path) -> tuple[dict[str, np.ndarray], list[str], list[Any] | None]:
    """``(vectors, ids, targets)`` from a file :func:`write_embeddings` wrote, checked before it is read
    (module docstring): every vector float32 ``[N, D]`` with one row per id.

    Raises:
        ConfigError: the file (or its ``.npy`` sidecar) does not exist, is not a regular file, or is
            not an embeddings file; its shapes or sizes do not fit.
    """
    from mmcore.engine.atomic import UnsafePathError, check_regular_file

    path = Path(path)
    suffix = check_format(path, "--embeddings")
    if not path.exists():
        raise ConfigError([ConfigIssue("--embeddings", f"{path} does not exist")])
    try:
        size = check_regular_file(path, "embeddings file").st_size
        if suffix == ".parquet":
            from mmcore_plugins.io.tables import read_parquet_table

            table = read_parquet_table(path)
            names = table.column_names
            if "id" not in names or FUSED not in names:
                raise ValueError(f"expected columns 'id' and {FUSED!r}, got {names}")
            vectors = {}
            for name in names:
                if name in ("id", "target"):
                    continue
                column = table.column(name).combine_chunks()
                vectors[name] = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32)
            ids = [str(i) for i in table.column("id").to_pylist()]
            targets = table.column("target").to_pylist() if "target" in names else None
        elif suffix == ".npz":
            data = _load_npz(path, size)
            if "id" not in data or FUSED not in data:
                raise ValueError(f"expected arrays 'id' and {FUSED!r}, got {sorted(data)}")
            ids = [str(i) for i in data.pop("id")]
            targets = data.pop("target").tolist() if "target" in data else None
            vectors = data
        else:
            meta_file = path.with_name(path.name + ".json")
            if not meta_file.exists():
                raise ValueError(f"its sidecar {meta_file.name} (ids and vector files) is missing")
            meta = _read_sidecar(meta_file)
            if meta["vectors"][FUSED] != path.name:
                raise ValueError(f"{meta_file.name} lists {meta['vectors'][FUSED]!r} as the fused vectors, not {path.name!r}")
            vectors = {name: _load_npy(path.with_name(file), name) for name, file in meta["vectors"].items()}
            ids, targets = meta["ids"], meta.get("targets")
        rows = {name: v.shape[0] for name, v in vectors.items() if v.ndim != 2 or v.shape[0] != len(ids)}
        if rows:
            raise ValueError(f"{len(ids)} ids but vector(s) {rows} rows")
        if targets is not None and len(targets) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(targets)} targets")
    except UnsafePathError as exc:
        raise ConfigError([ConfigIssue("--embeddings", str(exc))]) from exc
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ConfigError([ConfigIssue("--embeddings", f"{path} is not an embeddings file written by mmcore embed: {exc}")]) from exc
    return vectors, ids, targets


def finite_rows(vectors: np.ndarray) -> np.ndarray:
    """Bool ``[N]``: rows without NaN/inf (samples that had the modality)."""
    return np.isfinite(vectors).all(axis=1)


def describe(vectors: Mapping[str, np.ndarray]) -> str:
    """``fused [N, D], image [N, D] (3 missing), ...`` for messages."""
    parts = []
    for name, v in vectors.items():
        missing = int((~finite_rows(v)).sum())
        parts.append(f"{name} {list(v.shape)}" + (f" ({missing} missing)" if missing else ""))
    return ", ".join(parts)


__all__ = ["FORMATS", "FUSED", "check_outputs", "describe", "embed", "finite_rows", "manifest_rows", "output_files",
           "read_embeddings", "split_rows", "write_embeddings"]
