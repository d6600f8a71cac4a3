"""FAISS indexes (flat, IVF, HNSW) against brute-force numpy top-k on the same vectors; save/load."""

from __future__ import annotations

import json
import os

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
    with pytest.raises(ConfigError, match="'ids' must list 100 strings"):
        load_index(path)
    sidecar.unlink()
    with pytest.raises(ConfigError, match="no sidecar"):
        load_index(path)
    (tmp_path / "junk.faiss").write_text("not an index")
    (tmp_path / "junk.faiss.json").write_text(json.dumps({"format": "mmcore-faiss-index/1", "ids": []}))
    with pytest.raises(ConfigError, match="not an index"):
        load_index(tmp_path / "junk.faiss")


# ---------------------------------------------------------------------------- crafted indexes (issue 28)
def _saved(folder, kind: str):
    gallery = clustered(200, 8, seed=3)
    index, settings = build_index(gallery, kind=kind, nlist=4 if kind == "ivf" else None)
    return save_index(folder / f"{kind}.faiss", index, {"vector": "fused", **settings, "ids": [f"r{i}" for i in range(200)]})


def _patch(path, offset: int, value: int, fmt: str = "<q") -> None:
    import struct

    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


def _crafted_index(path, variant: str) -> None:
    """Damage an index file the way a hostile or broken one would be (the sidecar stays mmcore's)."""
    if variant == "ntotal in the header":
        _patch(path, 8, 10**12)
    elif variant == "dimension in the header":
        _patch(path, 4, 4096, "<i")
    elif variant == "another kind's FourCC":
        _patch(path, 0, int.from_bytes(b"IxF2", "little"), "<I")
    elif variant == "the flat array's length":
        _patch(path, 41, 2**30)
    elif variant == "an inverted list's length":
        _patch(path, path.read_bytes().find(b"ilar") + 32, 2**30 // 40)
    elif variant == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif variant == "junk appended":
        path.write_bytes(path.read_bytes() + b"\0" * 10**6)
    elif variant == "a FIFO":
        path.unlink()
        os.mkfifo(path)
    else:
        raise AssertionError(variant)


CRAFTED_INDEX = {"ntotal in the header": "flat", "dimension in the header": "hnsw", "another kind's FourCC": "flat",
                 "the flat array's length": "flat", "an inverted list's length": "ivf", "truncated": "hnsw",
                 "junk appended": "flat", "a FIFO": "ivf"}


@pytest.mark.parametrize("variant", list(CRAFTED_INDEX))
def test_a_crafted_index_is_refused_before_faiss_allocates_what_it_claims(tmp_path, variant):
    """Crafted FAISS files were read back unchecked: a length field deep inside made FAISS allocate it."""
    import subprocess
    import sys

    path, _ = _saved(tmp_path, CRAFTED_INDEX[variant])
    _crafted_index(path, variant)
    # In a fresh process, so that its peak memory (ru_maxrss) shows whether anything was allocated.
    probe = ("import json, resource, sys\nfrom mmcore_plugins.retrieval.index import load_index, _faiss\n_faiss()\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "try:\n    load_index(sys.argv[1]); error = None\nexcept Exception as exc:\n    error = f'{type(exc).__name__}: {exc}'\n"
             "print(json.dumps({'error': error, 'grew_mb': (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))")
    result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=120)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["error"] is not None and outcome["error"].startswith("ConfigError: --index:"), outcome
    assert "\n" not in outcome["error"]
    assert outcome["grew_mb"] < 64, f"{variant}: {outcome['grew_mb']:.0f} MB allocated before the refusal"


def _sidecar_variants():
    deep = "[" * 100_000 + "]" * 100_000
    return {"not JSON": "{ids: [", "deep nesting": deep, "a list": "[]", "NaN": '{"count": NaN}',
            "a boolean count": {"count": True}, "a count of 2**50": {"count": 2**50}, "an unknown kind": {"kind": "pq"},
            "ids of another length": {"ids": ["a"]}, "ids that are not strings": {"ids": list(range(200))},
            "nlist above the count": {"kind": "ivf", "nlist": 10**6}, "no format": {"format": None}}


@pytest.mark.parametrize("variant", list(_sidecar_variants()))
def test_a_crafted_sidecar_is_refused_in_one_line(tmp_path, variant):
    path, sidecar = _saved(tmp_path, "flat")
    change = _sidecar_variants()[variant]
    if isinstance(change, dict):
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **change}))
    else:
        sidecar.write_text(change)
    with pytest.raises(ConfigError, match=r"g?\.faiss\.json is not an index sidecar written by mmcore") as info:
        load_index(path)
    assert "\n" not in str(info.value)


def test_save_index_never_replaces_what_mmcore_did_not_write(tmp_path):
    path, sidecar = _saved(tmp_path, "flat")
    index, meta = load_index(path)
    with pytest.raises(ValueError, match="exists; pass --overwrite"):
        save_index(path, index, meta)
    save_index(path, index, meta, overwrite=True)  # mmcore's own index and sidecar: replaced
    other = tmp_path / "mine.faiss"
    (tmp_path / "mine.faiss.json").write_text('{"my": "settings"}')
    with pytest.raises(ValueError, match="mine.faiss.json exists and is not an index sidecar mmcore wrote"):
        save_index(other, index, meta, overwrite=True)
    assert (tmp_path / "mine.faiss.json").read_text() == '{"my": "settings"}' and not other.exists()
