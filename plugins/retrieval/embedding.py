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
    from mmcore_plugins.datasets.manifest import read_rows

    if manager is None:
        from mmcore.plugin_manager import get_plugin_manager

        manager = get_plugin_manager()
    manifest = Path(manifest).expanduser()
    if manifest.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ConfigError([ConfigIssue("--data", f"{manifest} is not a manifest: expected a file ending in "
                                                 f"{', '.join(MANIFEST_SUFFIXES)} (or omit --data and give --split)")])
    try:
        rows = read_rows(manifest)
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
    try:
        built = manager.hook.mmcore_table_inputs(path=manifest, encoding="utf-8-sig", model=model, data=dict(data),
                                                 run_dir=Path(run_dir) if run_dir is not None else None,
                                                 missing=list(missing), strict=strict)
    except (OSError, ValueError) as exc:
        raise ConfigError([ConfigIssue("--missing" if "declared missing" in str(exc) else "--data", str(exc))]) from exc
    if built is None:
        raise ConfigError([ConfigIssue("--data", "no installed plugin reads tables into model inputs (hook "
                                                 "mmcore_table_inputs; the built-in one is the manifest plugin)")])
    problems = [item[1] for item in built if item[1]]
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


def write_embeddings(path: str | Path, vectors: Mapping[str, np.ndarray], ids: Sequence[str],
                     targets: Sequence[Any] | None = None) -> list[Path]:
    """Write ``vectors`` (``{name: [N, D]}``) with their row ``ids`` (and ``targets``); returns the files written.

    The format follows the file name (module docstring). Files are written to a temporary name
    and renamed, so a reader never sees half a file.

    Raises:
        ConfigError: unknown extension; ValueError: arrays and ids of different lengths.
    """
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
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [str(i) for i in ids]
    written: list[Path] = []

    def atomic(target: Path, write) -> None:
        tmp = target.with_name(f".{target.name}.tmp{target.suffix}")
        write(tmp)
        tmp.replace(target)
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
        atomic(path, lambda p: pq.write_table(pa.table(columns), p))
    elif suffix == ".npz":
        arrays = {"id": np.asarray(ids, dtype=np.str_), **{k: np.asarray(v, np.float32) for k, v in vectors.items()}}
        if targets is not None:
            arrays["target"] = _targets_array(targets)
        def save_npz(p: Path) -> None:
            with p.open("wb") as f:
                np.savez(f, **arrays)

        atomic(path, save_npz)
    else:
        files = {}
        for name, v in vectors.items():
            file = path if name == FUSED else path.with_name(f"{path.stem}.{name}.npy")
            def save_npy(p: Path, v: np.ndarray = v) -> None:
                with p.open("wb") as f:
                    np.save(f, np.asarray(v, np.float32))

            atomic(file, save_npy)
            files[name] = file.name
        sidecar = {"ids": ids, "targets": None if targets is None else _targets_array(targets).tolist(), "vectors": files}
        meta = path.with_name(path.name + ".json")
        atomic(meta, lambda p: p.write_text(json.dumps(sidecar), encoding="utf-8"))
    return written


def read_embeddings(path: str | Path) -> tuple[dict[str, np.ndarray], list[str], list[Any] | None]:
    """``(vectors, ids, targets)`` from a file :func:`write_embeddings` wrote.

    Raises:
        ConfigError: the file (or its ``.npy`` sidecar) does not exist or is not an embeddings file.
    """
    path = Path(path)
    suffix = check_format(path, "--embeddings")
    if not path.is_file():
        raise ConfigError([ConfigIssue("--embeddings", f"{path} does not exist")])
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
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
            with np.load(path, allow_pickle=False) as archive:
                data = {k: archive[k] for k in archive.files}
            if "id" not in data or FUSED not in data:
                raise ValueError(f"expected arrays 'id' and {FUSED!r}, got {sorted(data)}")
            ids = [str(i) for i in data.pop("id")]
            targets = data.pop("target").tolist() if "target" in data else None
            vectors = data
        else:
            meta_file = path.with_name(path.name + ".json")
            if not meta_file.is_file():
                raise ValueError(f"its sidecar {meta_file.name} (ids and vector files) is missing")
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            vectors = {name: np.load(path.with_name(file), allow_pickle=False) for name, file in meta["vectors"].items()}
            ids, targets = meta["ids"], meta.get("targets")
    except (OSError, ValueError, KeyError) as exc:
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


__all__ = ["FORMATS", "FUSED", "describe", "embed", "finite_rows", "manifest_rows", "read_embeddings", "split_rows",
           "write_embeddings"]
