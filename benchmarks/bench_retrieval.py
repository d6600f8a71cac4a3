"""Vector search for `mmcore search`: building and querying FAISS indexes over 100k vectors of dim 256.

    python benchmarks/bench_retrieval.py                    # one table: build s, query ms, recall@10
    python -m pytest benchmarks/bench_retrieval.py --benchmark-only

Vectors are clustered (1000 Gaussian centres, noise of the centres' scale), the structure real
embeddings have; queries are fresh draws. ``flat`` is exact (IndexFlatIP on L2-normalised
vectors); ``ivf`` uses the defaults of :func:`mmcore_plugins.retrieval.index.build_index`
(nlist = 4 sqrt(N), nprobe = nlist / 16) and its recall@10 is measured against the flat index.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

N, DIM, QUERIES, K = 100_000, 256, 1000, 10


def clustered(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, centres.shape[1]))).astype(np.float32)


def data(n: int = N, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(0).standard_normal((1000, dim)).astype(np.float32)
    return clustered(n, 1, centres), clustered(QUERIES, 2, centres)


def run(n: int = N, dim: int = DIM) -> list[dict]:
    from mmcore_plugins.retrieval.index import build_index, search

    gallery, queries = data(n, dim)
    rows, exact = [], None
    for kind in ("flat", "ivf", "hnsw"):
        start = time.perf_counter()
        index, settings = build_index(gallery, kind=kind)
        build = time.perf_counter() - start
        start = time.perf_counter()
        _, found = search(index, queries, K)
        batch = time.perf_counter() - start
        start = time.perf_counter()
        for q in queries[:100]:
            search(index, q[None], K)
        single = (time.perf_counter() - start) / 100
        if exact is None:
            exact = found
        recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, exact, strict=True)]))
        rows.append({"kind": kind, "build_s": build, "batch_query_ms": 1000 * batch / len(queries),
                     "single_query_ms": 1000 * single, "recall@10": recall,
                     "settings": {k: v for k, v in settings.items() if k in ("nlist", "nprobe", "hnsw_m", "ef_search")}})
    return rows


@pytest.fixture(scope="module")
def vectors():
    pytest.importorskip("faiss")
    return data()


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_build(benchmark, vectors, kind):
    from mmcore_plugins.retrieval.index import build_index

    benchmark.pedantic(build_index, args=(vectors[0],), kwargs={"kind": kind}, rounds=1, iterations=1)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_query_1000(benchmark, vectors, kind):
    from mmcore_plugins.retrieval.index import build_index, search

    index, _ = build_index(vectors[0], kind=kind)
    benchmark.pedantic(search, args=(index, vectors[1], K), rounds=3, iterations=1)


if __name__ == "__main__":
    import os

    import faiss

    print(f"{N} vectors of dim {DIM}, {QUERIES} queries, k={K}; faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs")
    print(f"{'index':<6} {'build s':>8} {'ms/query (batch of 1000)':>25} {'ms/query (one at a time)':>25} {'recall@10':>10}  settings")
    for r in run():
        print(f"{r['kind']:<6} {r['build_s']:8.2f} {r['batch_query_ms']:25.3f} {r['single_query_ms']:25.3f} "
              f"{r['recall@10']:10.3f}  {r['settings']}")
