"""Image encoders: ``image_cnn``, a small CNN trained from scratch for small images (8x8 to 64x64)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

import mmcore
from mmcore import Features
from mmcore.features import readable_now
from mmcore_plugins.io import check_background, read_image
from mmcore_plugins.layers.pooling import MaxPool2x2

#: Default ``background`` of the image encoders: white, the colour viewers show transparency as.
WHITE = (255, 255, 255)


class ImageProcessor(mmcore.Processor):
    """Any image -> resized ``[C, S, S]`` tensor normalised to mean 0.5 / std 0.5; optional light augmentation.

    Images are read by :func:`mmcore_plugins.io.read_image` (files through Pillow, as a viewer
    shows them; arrays and tensors by dtype range): transparent pixels are composited onto
    ``background`` (an ``(R, G, B)`` triple or grey level in 0..255, default white).
    """

    def __init__(self, image_size: int, channels: int, augment: bool = False,
                 background: int | tuple[int, int, int] = WHITE) -> None:
        check_background(background)
        self.image_size, self.channels, self.augment = image_size, channels, augment
        self.background = tuple(background) if isinstance(background, (list, tuple)) else background
        self.training = False

    def __call__(self, raw: Any) -> torch.Tensor:
        return (self.decode(raw) - 0.5) / 0.5

    def decode(self, raw: Any) -> torch.Tensor:
        """The image read and resized to ``[C, S, S]`` in [0, 1] (augmented while training): ``__call__`` before
        the normalisation."""
        # max_side: a huge picture is reduced right after decoding, before the float conversions.
        x = read_image(raw, channels=self.channels, background=self.background, max_side=self.image_size)
        x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)[0]
        if self.augment and self.training:
            # Small random shifts (up to 1/16 of the side, at least a pixel): robust to where the
            # object sits, cheap on CPU. Drawn from torch's global generator, which the trainer
            # and mmcore.data.make_dataloader seed per worker.
            reach = max(1, self.image_size // 16)
            dx, dy = torch.randint(-reach, reach + 1, (2,)).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(1, 2))
        return x

    def collate(self, items: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        present = torch.tensor([i is not None for i in items])
        blank = torch.zeros(self.channels, self.image_size, self.image_size)
        return {"pixels": torch.stack([blank if i is None else i for i in items]), "present": present}

    def batch_steps(self) -> tuple[Any, Any] | None:
        """``(decode, collate_decoded)``: ``__call__`` split into its per-record half (reading, resizing) and a
        batched one (the normalisation), so that ``collate_decoded([decode(raw), ...])`` equals ``collate([self(raw),
        ...])``; None for a subclass that changes ``__call__``, ``decode`` or ``collate`` (its own steps hold)."""
        if any(getattr(type(self), name) is not getattr(ImageProcessor, name) for name in ("__call__", "decode", "collate")):
            return None
        return self.decode, self.collate_decoded

    def collate_decoded(self, items: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        """``collate([(x - 0.5) / 0.5 for x in items])`` (None = missing: zeros), normalised as one batch."""
        present = torch.tensor([i is not None for i in items])
        blank = torch.zeros(self.channels, self.image_size, self.image_size)
        pixels = (torch.stack([blank if i is None else i for i in items]) - 0.5) / 0.5
        if not present.all():
            pixels[~present] = 0.0
        return {"pixels": pixels, "present": present}

    def example(self, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(self.channels, 12, 12, generator=generator)


class SmallCNNEncoder(mmcore.Encoder):
    """Small CNN from scratch for small images; spatial tokens [B, h*w, dim] and a pooled vector.

    Tokens carry a learned position embedding (a digit's strokes mean different things in
    different places). ``pool="flatten"`` (default) makes the pooled vector a projection of the
    whole feature map, which keeps where each feature is; ``pool="mean"`` averages the tokens
    (translation-invariant, for larger images whose object may be anywhere). On the demo's
    noisy 8x8 digits, flatten beats mean by about 10 points of image-only accuracy.

    ``background``: the colour transparent pixels (PNG alpha, palette transparency) are shown on,
    an ``[R, G, B]`` triple or a grey level in 0..255; default white, as image viewers show them.
    """

    modality = "image"
    #: options ``mmcore prune`` may shrink (option -> the multiple it keeps): the conv channels
    prunable_options = {"width": 8}

    def __init__(self, dim: int = 128, image_size: int = 32, channels: int = 1, width: int = 32,
                 dropout: float = 0.1, augment: bool = False, pool: Literal["flatten", "mean"] = "flatten",
                 background: int | tuple[int, int, int] = WHITE) -> None:
        super().__init__()
        check_background(background)
        self.background = tuple(background) if isinstance(background, (list, tuple)) else background
        if pool not in ("flatten", "mean"):
            raise ValueError(f"pool must be 'flatten' or 'mean', got {pool!r}")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}")
        if width % 8:
            raise ValueError(f"width must be a multiple of 8 (group normalisation in groups of 8), got {width}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        self.dim, self.image_size, self.channels, self.augment, self.width = dim, image_size, channels, augment, width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU(), MaxPool2x2())

        self.net = nn.Sequential(block(channels, width), block(width, 2 * width), nn.Dropout(dropout))
        self.project = nn.Linear(2 * width, dim)
        side = image_size // 4  # two 2x2 max pools
        self.position = nn.Parameter(torch.zeros(1, side * side, dim))
        self.pool = pool
        self.flatten_project = nn.Linear(2 * width * side * side, dim) if pool == "flatten" else None

    def processor(self) -> ImageProcessor:
        return ImageProcessor(self.image_size, self.channels, self.augment, self.background)

    def pruning_groups(self) -> list[list[tuple[str, int, int]]]:
        """The coupled channel dimensions ``mmcore prune`` may shrink (``width``): per conv layer, its
        output channels with its norm and the input channels of whatever reads them -- the next conv,
        or the token projection and the flattened map's projection (``side * side`` inputs per channel)."""
        convs = ["net.0.0", "net.0.3", "net.1.0", "net.1.3"]
        norms = ["net.0.1", "net.0.4", "net.1.1", "net.1.4"]
        groups = []
        for i, (conv, norm) in enumerate(zip(convs, norms, strict=True)):
            group = [(f"{conv}.weight", 0, 1), (f"{conv}.bias", 0, 1), (f"{norm}.weight", 0, 1), (f"{norm}.bias", 0, 1)]
            if i + 1 < len(convs):
                group.append((f"{convs[i + 1]}.weight", 1, 1))
            else:
                group.append(("project.weight", 1, 1))
                if self.flatten_project is not None:
                    group.append(("flatten_project.weight", 1, (self.image_size // 4) ** 2))
            groups.append(group)
        return groups

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        present = batch["present"]
        if present.dtype is not torch.bool:
            present = present.to(torch.bool)
        maps = self.net(batch["pixels"])  # [B, C, h, w]
        tokens = self.project(maps.flatten(2).transpose(1, 2)) + self.position
        if self.flatten_project is None:
            return Features.from_tokens(tokens, present=present)
        mask = present.unsqueeze(1).expand(-1, tokens.shape[1]).clone()
        pooled = self.flatten_project(maps.flatten(1))
        if readable_now(present) and bool(present.all()):
            # All present: multiplying by ones (in the tokens' dtype) changes no value, only (under autocast)
            # pooled's dtype, which the cast does exactly.
            pooled = pooled.to(torch.promote_types(pooled.dtype, tokens.dtype))
        else:
            keep = present.unsqueeze(1).to(tokens.dtype)
            tokens, pooled = tokens * keep.unsqueeze(-1), pooled * keep
        return Features(tokens=tokens, mask=mask, pooled=pooled, present=present)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_encoder("image_cnn", SmallCNNEncoder, modality="image",
                         example_options={"dim": 16, "image_size": 8, "width": 8})
