"""Text: ``text_transformer``, a small byte-level transformer trained from scratch (any language, no vocabulary)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

import mmcore
from mmcore import Features

PAD = 256  # byte values are 0..255


class ByteTokenizer(mmcore.Processor):
    """A string -> its UTF-8 bytes as token ids (truncated to ``max_length``); needs no fitting."""

    def __init__(self, max_length: int = 64) -> None:
        self.max_length = max_length

    def __call__(self, raw: str) -> torch.Tensor:
        if not isinstance(raw, str):
            raise TypeError(f"text must be a string, got {type(raw).__name__}")
        data = raw.encode("utf-8")[: self.max_length] or b" "
        return torch.tensor(list(data), dtype=torch.long)

    def collate(self, items: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        length = max((len(i) for i in items if i is not None), default=1)
        ids = torch.full((len(items), length), PAD, dtype=torch.long)
        for row, item in enumerate(items):
            if item is not None:
                ids[row, : len(item)] = item
        return {"ids": ids, "mask": ids != PAD, "present": torch.tensor([i is not None for i in items])}

    def example(self, generator: torch.Generator) -> str:
        words = ["seven", "sieben", "sept", "siete", "sette", "7"]
        return " ".join(words[int(i)] for i in torch.randint(0, len(words), (2,), generator=generator))


class ByteTransformerEncoder(mmcore.Encoder):
    """Byte-level transformer encoder from scratch; tokens = bytes, pooled = mean over real bytes."""

    modality = "text"

    def __init__(self, dim: int = 128, heads: int = 4, layers: int = 2, max_length: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.max_length = dim, max_length
        self.embed = nn.Embedding(PAD + 1, dim, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def processor(self) -> ByteTokenizer:
        return ByteTokenizer(self.max_length)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        ids, mask, present = batch["ids"], batch["mask"], batch["present"].bool()
        # Absent samples have no real byte; give them one unmasked key so attention stays finite
        # (Features.from_tokens zeroes them afterwards).
        keys = mask | (~mask.any(1, keepdim=True) & (torch.arange(ids.shape[1]) == 0))
        x = self.embed(ids) + self.position[: ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=~keys)
        return Features.from_tokens(x, mask, present)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_encoder("text_transformer", ByteTransformerEncoder, modality="text",
                         example_options={"dim": 16, "heads": 2, "layers": 1, "max_length": 16})
