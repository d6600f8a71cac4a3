"""Nearest-neighbour search over embeddings with FAISS (cosine similarity).

Vectors are L2-normalised (``faiss.normalize_L2``) and compared by inner product, so scores are
cosine similarities in [-1, 1]. Index kinds (Johnson, Douze & Jégou, "Billion-scale similarity
search with GPUs", 2017 — the FAISS paper; HNSW: Malkov & Yashunin, 2018):

- ``flat`` (``IndexFlatIP``): exact, brute force. ``auto`` picks it below :data:`FLAT_MAX_VECTORS`
  vectors, where an exhaustive scan is fast and needs no training.
- ``ivf`` (``IndexIVFFlat``): k-means into ``nlist`` cells (default ``4 * sqrt(N)``, FAISS's
  guideline, at most ``N / 39`` so every centroid gets FAISS's minimum of 39 training points),
  a query scans the ``nprobe`` nearest cells (default :func:`default_nprobe`: ``nlist / 16``, at
  least 16; 79 of 1265 cells for 100k vectors) -- approximate; raise ``nprobe`` for recall, lower it for speed. ``auto`` picks it from
  :data:`FLAT_MAX_VECTORS` vectors up.
- ``hnsw`` (``IndexHNSWFlat``, ``M`` = 32 links, ``efSearch`` = 64): approximate, no training,
  more memory; on request only.

An index is saved with FAISS's own serialisation and a JSON sidecar ``<index>.json`` (the row ids,
targets, which vector it holds, kind, nlist/nprobe, the model's weights digest), both through
:func:`mmcore.engine.atomic.write_file` (atomic, unpredictable temporaries; an existing index is
replaced only with ``overwrite``, an existing sidecar only when it is mmcore's). FAISS is imported
only here, when an index is built or read.

Reading an index back (:func:`load_index`) checks it before FAISS allocates anything: the
sidecar is strict JSON of at most :data:`MAX_SIDECAR_BYTES` with the fields mmcore writes
(kind, count, dim, ids, ...); the index file is a regular file whose size fits what the sidecar
says it holds (exactly, for a flat index), whose header (FourCC of the kind, dimension, vector
count) agrees with it, and it is then read from memory under FAISS's own deserialisation limits
(no single array larger than the file, no loop longer than the index's lists or vectors), so a
crafted length field deep inside the file cannot make FAISS allocate more than the file's size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmcore.errors import ConfigError, ConfigIssue

#: ``auto`` builds an exact flat index below this many vectors, IVF from it up. Measured on 2
#: loaded CPU cores, one FAISS thread (benchmarks/bench_retrieval.py, dim 256): a flat scan of 100k
#: vectors takes 0.5 ms per query in batches (4 ms alone) and needs no training; IVF takes 0.3 ms
#: but its k-means 6-10 s, which pays off only for larger galleries or many queries.
FLAT_MAX_VECTORS = 100_000
KINDS = ("auto", "flat", "ivf", "hnsw")
FORMAT = "mmcore-faiss-index/1"
#: A sidecar (row ids, targets) larger than this is not one mmcore wrote for any index it can search.
MAX_SIDECAR_BYTES = 1 << 30
#: The FourCC FAISS writes first for each kind mmcore builds (IndexFlatIP, IndexIVFFlat, IndexHNSWFlat).
FOURCC = {"flat": b"IxFI", "ivf": b"IwFl", "hnsw": b"IHNf"}
#: FAISS's index header after the FourCC: d (int32), ntotal, two dummies (int64), is_trained (uint8),
#: metric_type (int32); 41 bytes in all. A flat index then holds its float vectors as one array.
_HEADER = struct.Struct("<4siqqqBi")


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # a clear message instead of a bare ImportError deep in a command
        raise ConfigError([ConfigIssue("", "vector search needs FAISS: pip install faiss-cpu")]) from exc
    return faiss


def normalized(vectors: np.ndarray) -> np.ndarray:
    """A float32, C-contiguous, row-L2-normalised copy of ``vectors [N, D]`` (zero rows stay zero)."""
    out = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if out.ndim != 2:
        raise ValueError(f"vectors must be [N, D], got shape {list(out.shape)}")
    _faiss().normalize_L2(out)
    return out


def default_nlist(n: int) -> int:
    """IVF cells for ``n`` vectors: ``4 * sqrt(n)``, at most ``n // 39`` (FAISS's minimum points per centroid), >= 1."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 39))


def default_nprobe(nlist: int) -> int:
    """Cells a query scans: ``nlist / 16``, at least 16 (at most ``nlist``): ~6% of the vectors.

    On 100k clustered vectors of dim 256 (1265 cells, nprobe 79) recall@10 against the flat index
    was 1.00 on benchmarks/bench_retrieval.py's data and 0.96 on a set with twice its noise
    (nprobe 8: 0.91, 158: 0.98).
    """
    return min(nlist, max(16, nlist // 16))


def build_index(vectors: np.ndarray, *, kind: Literal["auto", "flat", "ivf", "hnsw"] = "auto", nlist: int | None = None,
                nprobe: int | None = None, hnsw_m: int = 32, ef_search: int = 64, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """A FAISS index over the L2-normalised rows of ``vectors [N, D]`` (cosine similarity); ``(index, settings)``.

    ``settings`` records ``kind`` (resolved from ``auto``), ``count``, ``dim`` and the kind's
    parameters. Row ``i`` of ``vectors`` is FAISS id ``i``.

    Raises:
        ValueError: empty or non-finite vectors, unknown kind, or nlist > N.
    """
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")
    x = normalized(vectors)
    n, d = x.shape
    if n == 0 or d == 0:
        raise ValueError(f"cannot index {n} vectors of dimension {d}")
    if not np.isfinite(x).all():
        raise ValueError("vectors to index must be finite (drop the rows of samples lacking the modality first)")
    faiss = _faiss()
    if kind == "auto":
        kind = "flat" if n < FLAT_MAX_VECTORS else "ivf"
    settings: dict[str, Any] = {"kind": kind, "metric": "cosine", "count": n, "dim": d}
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = default_nlist(n) if nlist is None else nlist
        if not 1 <= nlist <= n:
            raise ValueError(f"nlist must be in 1..{n} (the number of vectors), got {nlist}")
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(x)
        index.nprobe = default_nprobe(nlist) if nprobe is None else max(1, min(nprobe, nlist))
        settings.update(nlist=nlist, nprobe=int(index.nprobe))
    else:
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
        settings.update(hnsw_m=hnsw_m, ef_search=ef_search)
    index.add(x)
    return index, settings


def search(index: Any, queries: np.ndarray, k: int, *, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(scores [Q, k], positions [Q, k])`` of the ``k`` most cosine-similar indexed rows per query row.

    Positions are row numbers of the indexed vectors, -1 (score -inf) where fewer than ``k`` are
    found (an IVF probe reaching fewer rows). ``nprobe`` overrides an IVF index's setting.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    q = normalized(np.atleast_2d(queries))
    if q.shape[1] != index.d:
        raise ValueError(f"queries have dimension {q.shape[1]}, the index {index.d}")
    if nprobe is not None and hasattr(index, "nprobe"):
        index.nprobe = int(nprobe)
    scores, positions = index.search(q, min(k, index.ntotal))
    scores = np.where(positions < 0, -np.inf, scores)
    return scores, positions


def weights_digest(run_checkpoint: str | Path) -> str:
    """SHA-256 of a checkpoint's ``model.safetensors`` (ties an index to the model whose vectors it holds)."""
    h = hashlib.sha256()
    with open(Path(run_checkpoint) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_index_sidecar(path: Path) -> bool:
    """Whether ``path`` is a sidecar :func:`save_index` wrote (a JSON object of this :data:`FORMAT`)."""
    try:
        return _read_sidecar(path).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def save_index(path: str | Path, index: Any, meta: Mapping[str, Any], *, overwrite: bool = False) -> tuple[Path, Path]:
    """The index (FAISS's serialisation) to ``path`` and ``meta`` (ids, vector name, settings) to ``<path>.json``.

    Raises:
        UnsafePathError: ``path`` exists and ``overwrite`` is not given, or ``<path>.json`` exists
            and is not an index sidecar mmcore wrote (it is never replaced).
    """
    from mmcore.engine.atomic import UnsafePathError, write_file

    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    if path.exists() and not overwrite:
        raise UnsafePathError(f"{path} exists; pass --overwrite to replace it, or choose another --index")
    ours = sidecar.is_file() and not sidecar.is_symlink() and is_index_sidecar(sidecar)
    if (sidecar.exists() or sidecar.is_symlink()) and not ours:
        raise UnsafePathError(f"{sidecar} exists and is not an index sidecar mmcore wrote; it is left as it is "
                              "(move it, or choose another --index)")
    data = _faiss().serialize_index(index)  # a uint8 array: written as it is, without a copy
    write_file(path, lambda fh: fh.write(memoryview(data)))
    write_file(sidecar, json.dumps({"format": FORMAT, **meta}), replace=ours)
    return path, sidecar


def _read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar as a JSON object: bounded, strict (no NaN), nesting errors as ValueError."""
    from mmcore.engine.atomic import read_json

    meta = read_json(path, max_bytes=MAX_SIDECAR_BYTES, what="index sidecar")
    if not isinstance(meta, dict):
        raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
    return meta


def _check_meta(meta: Mapping[str, Any]) -> None:
    """The sidecar's fields, as :func:`save_index` writes them (ValueError naming the field)."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")

    def count(name: str, low: int) -> int:
        value = meta.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**40:
            raise ValueError(f"{name!r} must be an integer >= {low}, got {value!r}")
        return value

    if meta.get("kind") not in FOURCC:
        raise ValueError(f"kind {meta.get('kind')!r}, expected one of {sorted(FOURCC)}")
    n = count("count", 1)
    count("dim", 1)
    if meta.get("kind") == "ivf":
        if not 1 <= count("nlist", 1) <= n:
            raise ValueError(f"nlist {meta['nlist']} is more than the {n} vectors")
    if meta.get("kind") == "hnsw" and count("hnsw_m", 1) > 4096:
        raise ValueError(f"hnsw_m {meta['hnsw_m']} is not a graph mmcore builds")
    ids, targets = meta.get("ids"), meta.get("targets")
    if not isinstance(ids, list) or len(ids) != n or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"'ids' must list {n} strings (one per vector), got {type(ids).__name__}"
                         + (f" of {len(ids)}" if isinstance(ids, list) else ""))
    if targets is not None and (not isinstance(targets, list) or len(targets) != n):
        raise ValueError(f"'targets' must be null or list one value per vector ({n})")
    if not isinstance(meta.get("vector"), str):
        raise ValueError(f"'vector' must name the vector indexed, got {meta.get('vector')!r}")


def _size_bound(meta: Mapping[str, Any]) -> tuple[int, int]:
    """``(smallest, largest)`` file size an index of the sidecar's kind, count and dim can have.

    Flat: FourCC + header (41 bytes) + the vector array (its 8-byte length, then n * d float32s),
    exactly. IVF: the flat quantizer's nlist centroids and the lists' n vectors and ids, plus room
    for the list headers. HNSW: the flat storage plus the graph (levels, offsets, at most 2M
    neighbours on level 0 and M on each level above, in practice far fewer than M levels).
    """
    n, d, kind = meta["count"], meta["dim"], meta["kind"]
    vectors = n * d * 4
    if kind == "flat":
        return _HEADER.size + 8 + vectors, _HEADER.size + 8 + vectors
    if kind == "ivf":
        nlist = meta["nlist"]
        return vectors, 2 * _HEADER.size + 4096 + nlist * (d * 4 + 64) + n * (d * 4 + 8)
    m = meta["hnsw_m"]
    return vectors, 2 * _HEADER.size + 4096 + vectors + n * (8 * m * 4 + 64)


@contextlib.contextmanager
def _deserialization_limits(faiss: Any, max_bytes: int, max_loop: int) -> Iterator[None]:
    """FAISS's own limits on what one read may allocate and loop over, for one read (then restored)."""
    get_bytes = getattr(faiss, "get_deserialization_vector_byte_limit", None)
    get_loop = getattr(faiss, "get_deserialization_loop_limit", None)
    saved = (get_bytes() if get_bytes else None, get_loop() if get_loop else None)
    if get_bytes:
        faiss.set_deserialization_vector_byte_limit(max(1, max_bytes))
    if get_loop:
        faiss.set_deserialization_loop_limit(max(1, max_loop))
    try:
        yield
    finally:
        if get_bytes:
            faiss.set_deserialization_vector_byte_limit(saved[0])
        if get_loop:
            faiss.set_deserialization_loop_limit(saved[1])


def load_index(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(index, meta)`` saved by :func:`save_index`, checked before FAISS reads it (module docstring).

    Raises:
        ConfigError: the index or its sidecar is missing, is not a regular file, is not what
            :func:`save_index` writes (kind, header, size), or they disagree.
    """
    from mmcore.engine.atomic import UnsafePathError, check_regular_file

    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    if not path.exists():
        raise ConfigError([ConfigIssue("--index", f"{path} does not exist (build one with mmcore embed ... --index {path})")])
    if not sidecar.exists():
        raise ConfigError([ConfigIssue("--index", f"{path} has no sidecar {sidecar.name} (row ids and vector name); "
                                                  "rebuild it with mmcore embed --index")])
    try:
        meta = _read_sidecar(sidecar)
        _check_meta(meta)
    except (OSError, ValueError) as exc:
        raise ConfigError([ConfigIssue("--index", f"{sidecar} is not an index sidecar written by mmcore: {exc}")]) from exc
    try:
        size = check_regular_file(path, "index").st_size
        low, high = _size_bound(meta)
        if not low <= size <= high:
            raise ValueError(f"{size} bytes, but a {meta['kind']} index of {meta['count']} vectors of dimension "
                             f"{meta['dim']} (as {sidecar.name} says) has " + (f"{low}" if low == high else f"{low} to {high}"))
        with open(path, "rb") as fh:
            data = fh.read(high + 1)
        if len(data) != size:
            raise ValueError("it changed while it was read")
        fourcc, d, ntotal, _, _, _, metric = _HEADER.unpack_from(data) if len(data) >= _HEADER.size else (b"",) + (0,) * 6
        expected = (FOURCC[meta["kind"]], meta["dim"], meta["count"], 0)
        if (fourcc, d, ntotal, metric) != expected:
            raise ValueError(f"its header says {fourcc!r}, dimension {d}, {ntotal} vectors, metric {metric}; "
                             f"{sidecar.name} says {expected[0]!r} ({meta['kind']}), {expected[1]}, {expected[2]}, 0 "
                             "(inner product)")
        if meta["kind"] == "flat" and struct.unpack_from("<q", data, _HEADER.size)[0] != meta["count"] * meta["dim"]:
            raise ValueError("its vector array's length does not match its header")
        faiss = _faiss()
        import numpy as np

        with _deserialization_limits(faiss, size, max(meta["count"], meta.get("nlist", 0), 64)):
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        del data
    except UnsafePathError as exc:
        raise ConfigError([ConfigIssue("--index", str(exc))]) from exc
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:
        # FAISS's messages start with the C++ function and source line; the reason follows "failed: ".
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = reason.split("failed: ", 1)[-1] if isinstance(exc, RuntimeError) else reason
        raise ConfigError([ConfigIssue("--index", f"{path} is not an index written by mmcore: {reason}")]) from exc
    if index.ntotal != meta["count"] or index.d != meta["dim"]:
        raise ConfigError([ConfigIssue("--index", f"{path} holds {index.ntotal} vectors of dimension {index.d} but "
                                                  f"{sidecar.name} lists {meta['count']} of {meta['dim']}; rebuild it")])
    return index, meta


def brute_force_topk(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k in numpy (the reference the tests hold FAISS to): ``(scores, positions)``."""
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    q = np.atleast_2d(queries)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    sims = q @ g.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


__all__ = ["FLAT_MAX_VECTORS", "KINDS", "brute_force_topk", "build_index", "default_nlist", "default_nprobe",
           "load_index", "normalized", "save_index", "search", "weights_digest"]
