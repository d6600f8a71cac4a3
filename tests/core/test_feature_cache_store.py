"""The feature cache's storage (issue 26/27): entries on disk are memory-mapped, not held in the heap as
well; a model reading only pooled vectors gets pooled-only entries (the same outputs, a fraction of the
size); what is read back is checked; the cache reports its size."""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pytest
import torch
from photo_data import dataset, image_model

import mmcore
from mmcore.data import make_dataloader
from mmcore.feature_cache import (
    MAX_ENTRY_BYTES,
    FeatureCache,
    attach_feature_cache,
    disk_bytes,
    precompute_features,
    reads_pooled_only,
    sample_key,
)


def _token_model(**encoder):
    """The photo model with a fusion that reads tokens (a joint transformer)."""
    spec = {"encoders": {"image": {"name": "image_torchvision", "arch": "resnet18", "image_size": 32, "freeze": True, "dim": 8, **encoder},
                         "text": {"name": "text_transformer", "dim": 16, "heads": 2, "layers": 1, "max_length": 16}},
            "fusion": {"name": "joint_transformer", "dim": 16, "heads": 2, "layers": 1},
            "head": {"name": "classification", "num_classes": 3}}
    torch.manual_seed(0)
    return mmcore.build_model(spec)


def _logits(model, data):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(b["inputs"]).logits for b in make_dataloader(data, model, 4)])


def test_entries_on_disk_are_read_through_a_map_not_kept_in_memory(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    rng = torch.Generator().manual_seed(0)
    entries = {sample_key(f"s{i}"): (torch.randn(3 + i % 2, 5, generator=rng), torch.randn(5, generator=rng)) for i in range(40)}
    for key, (tokens, pooled) in entries.items():
        cache.put("f" * 64, key, tokens, pooled)
    assert len(cache) == 40 and cache._memory == {}  # nothing in the heap but the index
    for key, (tokens, pooled) in entries.items():
        got = cache.get("f" * 64, key, 5)
        torch.testing.assert_close(got[0], tokens)
        torch.testing.assert_close(got[1], pooled)
    assert cache.nbytes() == sum((t.numel() + p.numel()) * 4 for t, p in entries.values()) == disk_bytes(tmp_path / "c") - 40 * 56
    # another cache on the folder (a later run, a worker) reads the same entries; a new writer adds files
    later = FeatureCache(tmp_path / "c")
    key = next(iter(entries))
    torch.testing.assert_close(later.get("f" * 64, key)[1], entries[key][1])
    later.put("f" * 64, sample_key("new"), torch.zeros(0, 5), torch.ones(5))
    assert len(list((tmp_path / "c").glob("*/*.bin"))) == 2
    assert FeatureCache(tmp_path / "c").get("f" * 64, sample_key("new"))[0].shape == (0, 5)
    assert cache.get("f" * 64, sample_key("absent")) is None and cache.misses == 1
    in_memory = FeatureCache()
    in_memory.put("f" * 64, key, *entries[key])
    assert in_memory.nbytes() == sum(t.numel() * 4 for t in entries[key]) and len(in_memory) == 1


def test_a_model_reading_pooled_vectors_gets_pooled_only_entries_and_the_same_outputs(tmp_path):
    data = dataset(10)
    pooled_model, token_model = image_model(freeze=True, dim=8), _token_model()
    assert reads_pooled_only(pooled_model, "image") and not reads_pooled_only(token_model, "image")
    sizes = {}
    for name, model in (("pooled", pooled_model), ("tokens", token_model)):
        reference = _logits(model, data)
        cache = FeatureCache(tmp_path / name)
        handle = attach_feature_cache(model, "image", cache)
        assert model.feature_caches["image"].pooled_only is (name == "pooled")
        assert precompute_features(model, "image", data, batch_size=4) == 9
        torch.testing.assert_close(_logits(model, data), reference, atol=1e-5, rtol=1e-5)
        sizes[name] = cache.nbytes()
        handle.remove()
        assert disk_bytes(tmp_path / name) > sizes[name]  # data + index
    # resnet18 at 32 px: a 1 x 1 map, so one token either way; the pooled-only entry holds no token row
    assert sizes["pooled"] == 9 * 512 * 4 and sizes["tokens"] == 9 * 2 * 512 * 4
    # the two kinds of entries never meet: another fingerprint, another folder
    forced = FeatureCache(tmp_path / "pooled")
    attach_feature_cache(token_model, "image", forced, pooled_only=False)
    assert precompute_features(token_model, "image", data, batch_size=4) == 9


def test_entries_mmcore_did_not_write_are_computed_again(tmp_path):
    model, data = image_model(freeze=True, dim=8), dataset(6)
    reference = _logits(model, data)
    handle = attach_feature_cache(model, "image", FeatureCache(tmp_path / "c"))
    precompute_features(model, "image", data, batch_size=4)
    handle.remove()
    (folder,) = [p for p in (tmp_path / "c").iterdir()]
    (index,) = folder.glob("*.idx")
    (data_file,) = folder.glob("*.bin")
    raw = bytearray(data_file.read_bytes())
    raw[:4] = np.array([np.nan], dtype=np.float32).tobytes()  # the first entry now holds a NaN
    data_file.write_bytes(bytes(raw))
    records = bytearray(index.read_bytes())
    records[56 + 32: 56 + 40] = (2**40).to_bytes(8, "little")  # the second points far outside its file
    records[2 * 56 + 44] = 9  # the third has an unknown dtype code
    index.write_bytes(bytes(records) + b"\x00" * 13)  # and a torn record at the end
    cache = FeatureCache(tmp_path / "c")
    attach_feature_cache(model, "image", cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precompute_features(model, "image", data, batch_size=4) == 3  # the three bad ones, computed again
    assert any("did not write" in str(w.message) for w in caught)
    torch.testing.assert_close(_logits(model, data), reference, atol=1e-5, rtol=1e-5)
    assert FeatureCache(tmp_path / "c").get(model.feature_caches["image"].fingerprint, sample_key(data[0]["inputs"]["image"])) is not None
    assert MAX_ENTRY_BYTES >= 2**20


def test_links_are_neither_read_nor_written_through(tmp_path):
    model, data = image_model(freeze=True, dim=8), dataset(4)
    handle = attach_feature_cache(model, "image", FeatureCache(tmp_path / "c"))
    fingerprint = model.feature_caches["image"].fingerprint
    handle.remove()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "c").mkdir()
    os.symlink(elsewhere, tmp_path / "c" / fingerprint[:24])
    attach_feature_cache(model, "image", FeatureCache(tmp_path / "c"))
    with pytest.raises(OSError, match="not a folder of its own"):
        precompute_features(model, "image", data, batch_size=4)
    assert list(elsewhere.iterdir()) == []


def test_a_copy_of_the_cache_reads_in_another_process_the_way_workers_do(tmp_path):
    import pickle

    cache = FeatureCache(tmp_path / "c")
    cache.put("f" * 64, sample_key("a"), torch.ones(2, 3), torch.full((3,), 2.0))
    cache.get("f" * 64, sample_key("a"))  # maps the file
    copy_ = pickle.loads(pickle.dumps(cache))
    torch.testing.assert_close(copy_.get("f" * 64, sample_key("a"))[1], torch.full((3,), 2.0))
    clone = copy.deepcopy(cache)
    assert clone.get("f" * 64, sample_key("a"))[0].shape == (2, 3)
