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

An index is saved with ``faiss.write_index`` and a JSON sidecar ``<index>.json`` (the row ids,
targets, which vector it holds, kind, nlist/nprobe, the model's weights digest).
FAISS is imported only here, when an index is built or read.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
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


def save_index(path: str | Path, index: Any, meta: Mapping[str, Any]) -> tuple[Path, Path]:
    """``faiss.write_index`` to ``path`` and ``meta`` (ids, vector name, settings) to ``<path>.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    _faiss().write_index(index, str(tmp))
    tmp.replace(path)
    sidecar = path.with_name(path.name + ".json")
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **meta}), encoding="utf-8")
    tmp.replace(sidecar)
    return path, sidecar


def load_index(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(index, meta)`` saved by :func:`save_index`.

    Raises:
        ConfigError: the index or its sidecar is missing, or they disagree.
    """
    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    if not path.is_file():
        raise ConfigError([ConfigIssue("--index", f"{path} does not exist (build one with mmcore embed ... --index {path})")])
    if not sidecar.is_file():
        raise ConfigError([ConfigIssue("--index", f"{path} has no sidecar {sidecar.name} (row ids and vector name); "
                                                  "rebuild it with mmcore embed --index")])
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        index = _faiss().read_index(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError([ConfigIssue("--index", f"{path} is not an index written by mmcore: {exc}")]) from exc
    if index.ntotal != len(meta.get("ids", [])):
        raise ConfigError([ConfigIssue("--index", f"{path} holds {index.ntotal} vectors but {sidecar.name} lists "
                                                  f"{len(meta.get('ids', []))} ids; rebuild it")])
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
