"""FAISS indexes (flat, IVF, HNSW) against brute-force numpy top-k on the same vectors; save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmcore.errors import ConfigError
from mmcore_plugins.retrieval.index import (
    brute_force_topk,
    build_index,
    default_nlist,
    default_nprobe,
    load_index,
    save_index,
    search,
)

pytest.importorskip("faiss")


def clustered(n: int, d: int, seed: int, clusters: int = 40, noise: float = 1.0) -> np.ndarray:
    """Vectors around random centres: the structure real embeddings have (uniform noise has none to index)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    return (centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("n, d", [(1, 3), (57, 8), (2000, 32)])
def test_flat_index_equals_brute_force_topk(n, d):
    gallery, queries = clustered(n, d, seed=n), clustered(20, d, seed=n + 1)
    gallery[0] *= 50.0  # a long vector: cosine must ignore the length
    index, settings = build_index(gallery, kind="auto")
    assert settings["kind"] == "flat" and settings["count"] == n
    k = min(10, n)
    scores, positions = search(index, queries, k)
    ref_scores, ref_positions = brute_force_topk(gallery, queries, k)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    # Equal positions wherever the scores are not tied.
    untied = np.abs(np.diff(ref_scores, axis=1, append=-np.inf)) > 1e-5
    assert (positions[untied] == ref_positions[untied]).all()
    assert np.all(scores <= 1.0 + 1e-5) and np.all(np.diff(scores, axis=1) <= 1e-6), "cosine, best first"


def test_k_larger_than_the_gallery_returns_every_row_once():
    gallery = clustered(4, 6, seed=0)
    scores, positions = search(build_index(gallery)[0], gallery[:1], 10)
    assert sorted(positions[0].tolist()) == [0, 1, 2, 3] and positions[0][0] == 0
    assert scores[0][0] == pytest.approx(1.0, abs=1e-5)


def test_ivf_recall_against_exact_search_is_high_and_rises_with_nprobe():
    gallery = clustered(6000, 32, seed=3, clusters=60, noise=0.5)
    queries = clustered(200, 32, seed=4, clusters=60, noise=0.5)
    index, settings = build_index(gallery, kind="ivf")
    assert settings["nlist"] == default_nlist(6000) == min(round(4 * 6000**0.5), 6000 // 39)
    assert settings["nprobe"] == default_nprobe(settings["nlist"])
    exact = brute_force_topk(gallery, queries, 10)[1]

    def recall(nprobe):
        found = search(index, queries, 10, nprobe=nprobe)[1]
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])

    low, default, full = recall(1), recall(settings["nprobe"]), recall(settings["nlist"])
    assert default >= 0.9, f"recall@10 {default} at the default nprobe"
    assert full == pytest.approx(1.0), "scanning every cell is exhaustive"
    assert low <= default <= full


def test_hnsw_finds_almost_all_true_neighbours():
    gallery, queries = clustered(3000, 16, seed=5), clustered(100, 16, seed=6)
    index, settings = build_index(gallery, kind="hnsw")
    exact = brute_force_topk(gallery, queries, 5)[1]
    found = search(index, queries, 5)[1]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found, exact, strict=True)]) >= 0.9


def test_bad_inputs_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="finite"):
        build_index(np.array([[1.0, np.nan]], dtype=np.float32))
    with pytest.raises(ValueError, match="kind"):
        build_index(np.ones((3, 2)), kind="lsh")
    with pytest.raises(ValueError, match="nlist"):
        build_index(clustered(50, 4, seed=0), kind="ivf", nlist=80)
    index = build_index(np.ones((3, 2)))[0]
    with pytest.raises(ValueError, match="dimension 3"):
        search(index, np.ones((1, 3)), 2)
    with pytest.raises(ValueError, match="k must"):
        search(index, np.ones((1, 2)), 0)


def test_save_and_load_round_trip_and_damaged_sidecars(tmp_path):
    gallery = clustered(100, 8, seed=7)
    index, settings = build_index(gallery)
    path, sidecar = save_index(tmp_path / "g.faiss", index, {"vector": "fused", **settings, "ids": [f"r{i}" for i in range(100)]})
    loaded, meta = load_index(path)
    assert meta["vector"] == "fused" and meta["ids"][3] == "r3" and loaded.ntotal == 100
    np.testing.assert_array_equal(search(loaded, gallery[:5], 3)[1], search(index, gallery[:5], 3)[1])
    with pytest.raises(ConfigError, match="does not exist"):
        load_index(tmp_path / "nope.faiss")
    meta["ids"] = meta["ids"][:-1]
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="100 vectors but"):
        load_index(path)
    sidecar.unlink()
    with pytest.raises(ConfigError, match="no sidecar"):
        load_index(path)
    (tmp_path / "junk.faiss").write_text("not an index")
    (tmp_path / "junk.faiss.json").write_text(json.dumps({"format": "mmcore-faiss-index/1", "ids": []}))
    with pytest.raises(ConfigError, match="not an index"):
        load_index(tmp_path / "junk.faiss")
