"""mmcore.feature_cache: sample keys, encoder fingerprints and the frozen-feature cache served through
the model's explicit path, on real images (scikit-learn's bundled photos) through real encoders."""

from __future__ import annotations

import copy
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from photo_data import dataset, image_model

import mmcore
from mmcore.data import SampleDataset, make_dataloader
from mmcore.feature_cache import (
    CACHED,
    FeatureCache,
    attach_feature_cache,
    encoder_fingerprint,
    is_cacheable,
    precompute_features,
    sample_key,
)


def test_sample_keys_follow_content_and_files(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert sample_key(a) == sample_key(a.copy()) != sample_key(a + 1)
    assert sample_key(torch.tensor(a)) != sample_key(a), "a tensor and an array are different raw inputs"
    assert sample_key("seven") != sample_key("sept")
    assert sample_key({"x": 1.0, "city": "Oslo"}) == sample_key({"city": "Oslo", "x": 1.0})
    file = tmp_path / "a.wav"
    file.write_bytes(b"one")
    key = sample_key(str(file))
    assert sample_key(file) == key
    file.write_bytes(b"other")
    os.utime(file, ns=(1, 1))
    assert sample_key(str(file)) != key, "an edited file is a new sample"
    with pytest.raises(TypeError, match="cannot make a cache key"):
        sample_key(object())


def test_sample_keys_do_not_collide_on_look_alike_inputs(tmp_path, monkeypatch):
    from PIL import Image

    assert sample_key(["a;str:b", "c"]) != sample_key(["a", "b;str:c"]), "strings carry their length"
    assert sample_key({1: 2.0}) != sample_key({"1": 2.0}), "a key's type is part of it"
    red, blue = Image.new("P", (2, 2), 0), Image.new("P", (2, 2), 0)
    red.putpalette([255, 0, 0] * 256)
    blue.putpalette([0, 0, 255] * 256)
    assert sample_key(red) != sample_key(blue), "palette images are keyed with their palette"
    # A folder (e.g. a video's frames) is keyed by its files: editing a frame makes a new sample.
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "0.png").write_bytes(b"frame")
    key = sample_key(str(clip))
    assert sample_key(clip) == key
    (clip / "0.png").write_bytes(b"other frame")
    assert sample_key(str(clip)) != key
    # ... but a word of text that happens to name a folder in the working directory is text.
    monkeypatch.chdir(tmp_path)
    assert sample_key("clip") == sample_key("clip ".strip()) != sample_key(str(clip))


def test_fingerprint_covers_frozen_weights_and_processor_not_the_trainable_tail():
    model = image_model(freeze=True, dim=8)
    encoder, processor = model.encoders["image"], model.processors["image"]
    before = encoder_fingerprint(encoder, processor)
    with torch.no_grad():
        encoder.project.weight.add_(1.0)  # trainable tail: not part of the cached stage
    assert encoder_fingerprint(encoder, processor) == before
    with torch.no_grad():
        encoder.backbone.conv1.weight.add_(1.0)
    assert encoder_fingerprint(encoder, processor) != before
    other = image_model(freeze=True, dim=8, image_size=64)
    assert encoder_fingerprint(other.encoders["image"], other.processors["image"]) != before
    # The encoder's own settings count too (e.g. how it pools), not only its weights.
    pooled_otherwise = image_model(freeze=True, dim=8)
    pooled_otherwise.encoders["image"].load_state_dict(encoder.state_dict())
    assert encoder_fingerprint(pooled_otherwise.encoders["image"], processor) == encoder_fingerprint(encoder, processor)
    pooled_otherwise.encoders["image"].pool_setting = "cls"
    assert encoder_fingerprint(pooled_otherwise.encoders["image"], processor) != encoder_fingerprint(encoder, processor)


def test_misses_are_stored_as_eval_mode_features_even_during_training():
    torch.manual_seed(0)
    model = mmcore.build_model({"encoders": {"t": {"name": "tabular_mlp", "num_features": 3, "dim": 8, "dropout": 0.5}},
                                "head": {"name": "classification", "num_classes": 2}})
    model.encoders["t"].requires_grad_(False)  # frozen whole: cached whole, dropout and all
    data = SampleDataset([{"inputs": {"t": [float(i), 1.0, -1.0]}, "target": i % 2} for i in range(6)])
    model.eval()
    with torch.no_grad():
        reference = model.encoders["t"](model.collate(list(data))["inputs"]["t"]).pooled
    attach_feature_cache(model, "t", FeatureCache())
    model.train()  # misses computed on the fly in a training step
    with torch.no_grad():
        model(model.collate(list(data))["inputs"])
    model.eval()
    with torch.no_grad():
        served = model.encode(model.collate(list(data))["inputs"])["t"].pooled
    torch.testing.assert_close(served, reference)


def test_cached_features_equal_recomputed_ones_and_skip_the_backbone(tmp_path):
    model, data = image_model(freeze=True, dim=8), dataset(10)
    model.eval()
    reference = [model(b["inputs"]).logits for b in make_dataloader(data, model, 4)]
    assert is_cacheable(model.encoders["image"], model.processors["image"])
    cache = FeatureCache(tmp_path / "cache")
    processor, state = model.processors["image"], copy.deepcopy(model.state_dict())
    handle = attach_feature_cache(model, "image", cache)
    assert model.processors["image"] is processor, "the processor is not swapped"
    assert "forward" not in vars(model.encoders["image"]), "the encoder's forward is not patched"
    assert model.state_dict().keys() == state.keys()
    assert precompute_features(model, "image", data, batch_size=4) == 9  # one sample lacks the image
    calls = []
    hook = model.encoders["image"].backbone.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        cached = [model(b["inputs"]).logits for b in make_dataloader(data, model, 4)]
    hook.remove()
    assert not calls, "every sample was a cache hit: the backbone never ran"
    for a, b in zip(reference, cached, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # A new cache on the same folder (a later run) finds the files.
    handle.remove()
    assert model.feature_caches == {} and CACHED not in model.collate(data.samples[:2])["inputs"]["image"]
    attach_feature_cache(model, "image", FeatureCache(tmp_path / "cache"))
    assert precompute_features(model, "image", data, batch_size=4) == 0


def test_mixed_batches_of_hits_misses_and_absent_samples_match_and_train():
    model, data = image_model(freeze=True, dim=8), dataset(8)
    model.eval()
    batch = model.collate(data.samples)
    reference = model(batch["inputs"]).logits
    cache = FeatureCache()
    attach_feature_cache(model, "image", cache)
    precompute_features(model, "image", SampleDataset(data.samples[:2]))  # samples 0, 1 cached
    mixed = model.collate(data.samples)
    assert mixed["inputs"]["image"]["cache.hit"].tolist() == [True, True] + [False] * 6
    torch.testing.assert_close(model(mixed["inputs"]).logits, reference, atol=1e-5, rtol=1e-5)
    assert len(cache) == 7, "the misses were stored on the way"
    model.train()
    out = model(model.collate(data.samples)["inputs"], torch.tensor([s["target"] for s in data.samples]))
    out.loss.backward()
    assert model.encoders["image"].project.weight.grad is not None, "the trainable tail still learns"
    assert model.encoders["image"].backbone.conv1.weight.grad is None


def test_trainable_or_augmenting_encoders_are_refused():
    model = image_model(freeze=2, dim=8)
    with pytest.raises(ValueError, match="not cacheable"):
        attach_feature_cache(model, "image", FeatureCache())
    model = image_model(freeze=True, augment=True)
    with pytest.raises(ValueError, match="augments at train time"):
        attach_feature_cache(model, "image", FeatureCache())


class _RowProcessor(mmcore.Processor):
    """A row of 3 numbers -> a float tensor."""

    def __call__(self, raw):
        return torch.tensor(raw, dtype=torch.float32)

    def collate(self, items):
        return {"x": torch.stack([torch.zeros(3) if i is None else i for i in items]),
                "present": torch.tensor([i is not None for i in items])}


class _RecordingEncoder(mmcore.Encoder):
    """A frozen (cached whole) tabular encoder that records the keys of every batch it is given."""

    modality, dim = "tabular", 4

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 4).requires_grad_(False)
        self.seen: list[set[str]] = []

    def processor(self):
        return _RowProcessor()

    def forward(self, batch):
        self.seen.append(set(batch))
        return mmcore.Features.from_pooled(self.linear(batch["x"]), batch["present"])


def test_an_encoder_only_ever_sees_batches_of_its_own_processor():
    torch.manual_seed(0)
    encoder = _RecordingEncoder()
    model = mmcore.MultimodalModel({"t": encoder}, None, _head())
    data = SampleDataset([{"inputs": {"t": [float(i), 1.0, -1.0] if i != 4 else None}, "target": i % 2}
                          for i in range(6)])
    reference = model(model.collate(data.samples)["inputs"]).logits
    attach_feature_cache(model, "t", FeatureCache())
    assert precompute_features(model, "t", SampleDataset(data.samples[:3])) == 3
    batch = model.collate(data.samples)
    assert batch["inputs"]["t"][CACHED].tolist() == [True, True, True, False, False, False]
    encoder.seen.clear()
    torch.testing.assert_close(model(batch["inputs"]).logits, reference)
    assert encoder.seen and all(not any(k.startswith("cache.") for k in keys) for keys in encoder.seen)
    assert "forward" not in vars(encoder)
    # A model with a cache attached still pickles (DataLoader workers) and deep-copies.
    pickle.loads(pickle.dumps(model))
    copy.deepcopy(model)


def test_attaching_needs_a_model_and_precomputing_needs_a_cache():
    import types

    with pytest.raises(TypeError, match="must be an mmcore.MultimodalModel"):
        attach_feature_cache(types.SimpleNamespace(encoders={}, processors={}), "t", FeatureCache())
    model = mmcore.MultimodalModel({"t": _RecordingEncoder()}, None, _head())
    with pytest.raises(ValueError, match="attach a feature cache to slot 't' first"):
        precompute_features(model, "t", SampleDataset([{"inputs": {"t": [1.0, 2.0, 3.0]}, "target": 0}]))
    attach_feature_cache(model, "t", FeatureCache())
    with pytest.raises(ValueError, match="already has a feature cache attached"):
        attach_feature_cache(model, "t", FeatureCache())
    # A batch collated without the cache (e.g. by the processor directly) still goes to the encoder.
    plain = {"t": model.processors["t"].collate([model.processors["t"]([1.0, 2.0, 3.0])])}
    assert model.encode(plain)["t"].pooled.shape == (1, 4)


def _head():
    from mmcore_plugins.heads.classification import ClassificationHead

    return ClassificationHead(input_dim=4, num_classes=2)


def _crafted_packs(victim, width=512):
    """Every variant of on-disk entries that mmcore did not write (issue 28), for the append-only
    pack layout (``*.idx`` records pointing into ``*.bin`` data): each variant rewrites the pair
    written for the first samples, by name of the problem (``width``: the slot's)."""

    def records(edit):
        def write(index, data):
            raw = bytearray(index.read_bytes())
            for k in range(len(raw) // 56):
                edit(raw, 56 * k)
            index.unlink()
            index.write_bytes(bytes(raw))
        return write

    def set_offset(value):
        return records(lambda raw, at: raw.__setitem__(slice(at + 32, at + 40), value.to_bytes(8, "little")))

    def link(index, data):
        data.unlink()
        data.symlink_to(victim)

    def fifo(index, data):
        data.unlink()
        os.mkfifo(data)

    def truncated(index, data):
        data.write_bytes(b"\x08\x00\x00")

    def nan(index, data):
        n = data.stat().st_size // 4
        data.write_bytes(np.full(n, np.nan, dtype=np.float32).tobytes())

    return {
        "a link": link,
        "a fifo": fifo,
        "truncated": truncated,
        "a record claiming 10**15 bytes": records(lambda raw, at: raw.__setitem__(slice(at + 40, at + 44), (2**31).to_bytes(4, "little"))),
        "offsets beyond the file": set_offset(2**40),
        "the wrong width": records(lambda raw, at: raw.__setitem__(slice(at + 44, at + 48), (5).to_bytes(4, "little"))),
        "an unknown dtype": records(lambda raw, at: raw.__setitem__(at + 48, 9)),
        "NaN": nan,
        "a link as index": lambda index, data: (index.unlink(), index.symlink_to(victim)),
    }


@pytest.mark.parametrize("variant", list(_crafted_packs(None)))
def test_a_crafted_or_damaged_entry_on_disk_is_refused_recomputed_and_replaced(tmp_path, variant):
    """Issue 28: feature-cache files were read back unchecked. Every variant is refused (one warning
    where an entry was indexed), the features are computed again and stored anew, the outputs equal
    the uncached model's, and the user's file a link pointed to is neither read into the model nor written."""
    model, data = image_model(freeze=True, dim=8), dataset(3)
    model.eval()
    with torch.no_grad():
        reference = model(model.collate(list(data))["inputs"]).logits
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"the user's file")
    cache_dir = tmp_path / "cache"
    attach_feature_cache(model, "image", FeatureCache(cache_dir))
    precompute_features(model, "image", data)
    model.feature_caches["image"].cache.clear()
    (index,) = sorted(cache_dir.rglob("*.idx"))
    width = model.feature_caches["image"].entry_width
    assert width == 512, "the encoder declares the width of what it stores"
    _crafted_packs(victim, width)[variant](index, index.with_suffix(".bin"))
    model.feature_caches.clear()
    attach_feature_cache(model, "image", FeatureCache(cache_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning is asserted in test_feature_cache_store
        with torch.no_grad():
            served = model(model.collate(list(data))["inputs"]).logits
    torch.testing.assert_close(served, reference, atol=1e-5, rtol=1e-5)
    assert victim.read_bytes() == b"the user's file"
    assert precompute_features(model, "image", data) == 0, "computed again and stored anew"
