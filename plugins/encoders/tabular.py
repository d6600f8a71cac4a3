"""Tabular encoders: numeric columns (standardised with statistics fitted on the training split) and
categorical columns (vocabularies fitted on the training split, embedded) -> ``tabular_mlp`` (an MLP,
one vector per sample) or ``tabular_ft`` (FT-Transformer: one token per column + CLS)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

import mmcore
from mmcore import Features, Processor

_FLOAT = {float}  # the types of a row of numbers read from a table


class _TabularFit(mmcore.PartialFit):
    """:meth:`TabularProcessor.fit` in chunks (see :meth:`TabularProcessor.partial_fitter`)."""

    def __init__(self, processor: TabularProcessor) -> None:
        self.processor, self.blocks, self.rows = processor, [], 0
        self.counts: list[Counter] = [Counter() for _ in processor.categorical]

    def update(self, raws: Sequence[Any]) -> None:
        rows = [self.processor._row(r) for r in raws if r is not None]
        self.rows += len(rows)
        if rows and self.processor.num_features:
            # One tensor per chunk, not one per row (a million-row split: ~1 us a row less); the same
            # float32 values as stacking the rows' tensors.
            self.blocks.append(torch.tensor([values for values, _ in rows], dtype=torch.float32))
        for j, counts in enumerate(self.counts):
            counts.update(cats[j] for _, cats in rows if cats[j] is not None)

    def finish(self) -> None:
        processor = self.processor
        if self.rows >= 2 and processor.num_features:
            data = torch.cat(self.blocks) if len(self.blocks) > 1 else self.blocks[0]
            self.blocks = []
            processor.mean = data.mean(0)
            # A constant column keeps std 1 so it maps to 0 instead of dividing by zero.
            std = data.std(0)
            processor.std = torch.where(std > 1e-8, std, torch.ones_like(std))
        for column, counts in zip(processor.categorical, self.counts, strict=True):
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: processor.max_categories - 1]
            processor.vocabularies[column] = {value: i + 1 for i, (value, _) in enumerate(ranked)}


class TabularProcessor(Processor):
    """A row -> standardised numeric values and categorical indices.

    Rows are a sequence of ``num_features`` numbers, or a mapping column -> value (needs
    ``columns``, the numeric column names, and holds the ``categorical`` columns too).
    Standardisation statistics and category vocabularies are fitted on the training split
    (``fit``) and saved with the model (``state_dict``). Category index 0 stands for a value
    unseen in training (or empty); the ``max_categories - 1`` most frequent values get 1.. .
    A missing row (None) is carried as ``present=False``.
    """

    def __init__(self, num_features: int, columns: Sequence[str] | None = None,
                 categorical: Sequence[str] | None = None, max_categories: int = 64) -> None:
        self.num_features = num_features
        self.columns = list(columns) if columns is not None else None
        self.categorical = list(categorical or [])
        self.max_categories = max_categories
        self.mean = torch.zeros(num_features)
        self.std = torch.ones(num_features)
        self.vocabularies: dict[str, dict[str, int]] = {c: {} for c in self.categorical}

    def _split(self, raw: Any) -> tuple[torch.Tensor, list[str | None]]:
        values, categories = self._row(raw)
        return torch.tensor(values, dtype=torch.float32), categories

    def _row(self, raw: Any) -> tuple[list[float], list[str | None]]:
        """A row's numeric values (checked: numbers, finite) as Python floats, and its categories."""
        if (type(raw) is list and not self.categorical and len(raw) == self.num_features and set(map(type, raw)) <= _FLOAT
                and all(map(math.isfinite, raw))):
            return list(raw), []  # the common row (a manifest's numbers): what the checks below give, in C
        if isinstance(raw, Mapping):
            if self.columns is None and self.num_features:
                raise TypeError("this tabular processor was built without `columns`, so rows must be sequences, got a mapping")
            names = [*(self.columns or []), *self.categorical]
            missing = [c for c in names if c not in raw]
            if missing:
                raise ValueError(f"row lacks column(s) {missing}; expected columns {names}")
            values = [raw[c] for c in (self.columns or [])]
            categories = [None if raw[c] is None else str(raw[c]) for c in self.categorical]
        elif self.categorical:
            raise TypeError(f"rows must be mappings column -> value when there are categorical columns "
                            f"({self.categorical}), got {type(raw).__name__}")
        elif isinstance(raw, torch.Tensor):
            values, categories = raw.detach().flatten().tolist(), []
        elif isinstance(raw, (str, bytes)) or not hasattr(raw, "__len__"):
            raise TypeError(f"a tabular row must be a sequence of {self.num_features} numbers or a mapping, got {type(raw).__name__}")
        else:
            values, categories = list(raw.tolist() if hasattr(raw, "tolist") else raw), []
        if len(values) != self.num_features:
            raise ValueError(f"a tabular row must have {self.num_features} values, got {len(values)}")
        out = []
        for i, value in enumerate(values):
            name = self.columns[i] if self.columns else f"#{i}"
            if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a NumPy or torch scalar
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"column {name}: expected a number, got {type(value).__name__} {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"column {name}: expected a finite number, got {value!r}")
            out.append(float(value))
        return out, categories

    def __call__(self, raw: Any) -> dict[str, torch.Tensor]:
        values, categories = self._split(raw)
        index = [self.vocabularies[c].get(v, 0) if v is not None else 0 for c, v in zip(self.categorical, categories, strict=True)]
        return {"values": (values - self.mean) / self.std, "categories": torch.tensor(index, dtype=torch.long)}

    def unseen(self, raw: Any) -> dict[str, str]:
        """``{column: value}`` of the row's categorical cells that get index 0 though not empty: a value not
        in the column's vocabulary (not seen in training, or too rare there to be one of the ``max_categories
        - 1`` values kept). The same lookup as :meth:`__call__` (``str(value)``)."""
        if not isinstance(raw, Mapping):
            return {}
        out = {}
        for column in self.categorical:
            value = raw.get(column)
            if value is not None and str(value) not in self.vocabularies.get(column, {}):
                out[column] = str(value)
        return out

    def unseen_reason(self, column: str) -> str:
        full = len(self.vocabularies.get(column, {})) >= self.max_categories - 1  # rare training values fell out too
        return "not seen in training" + (f" (or too rare there to be one of its {self.max_categories - 1} kept values)"
                                         if full else "")

    def fit(self, raws: Sequence[Any]) -> None:
        fitter = self.partial_fitter()
        fitter.update(raws)
        fitter.finish()

    def partial_fitter(self) -> mmcore.PartialFit:
        """The numeric values as float32 blocks (4 bytes a number: the mean and std are taken over
        them at the end by the same reductions as over the whole split, so the result is the same to
        the bit) and a Counter per categorical column; the rows themselves are not kept."""
        return _TabularFit(self)

    def collate(self, items: Sequence[dict[str, torch.Tensor] | None]) -> dict[str, torch.Tensor]:
        present = torch.tensor([item is not None for item in items], dtype=torch.bool)
        zeros = torch.zeros(self.num_features)
        no_category = torch.zeros(len(self.categorical), dtype=torch.long)
        values = torch.stack([item["values"] if item is not None else zeros for item in items])
        categories = torch.stack([item["categories"] if item is not None else no_category for item in items])
        return {"values": values, "categories": categories, "present": present}

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(),
                "vocabularies": {c: sorted(v, key=v.__getitem__) for c, v in self.vocabularies.items()}}

    def check_state(self, state: Mapping[str, Any]) -> None:
        """Each column's saved vocabulary fits the embedding table (``max_categories - 1`` values)."""
        columns, limit = state.get("vocabularies"), self.max_categories
        if isinstance(columns, dict):
            for column, values in columns.items():
                if not isinstance(values, list) or len(values) > limit - 1:
                    raise ValueError(f"vocabularies.{column}: expected a list of at most {limit - 1} values "
                                     f"(max_categories {limit}), got {values if not isinstance(values, list) else len(values)!r}")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean = torch.tensor(state["mean"], dtype=torch.float32).view(self.num_features)
        self.std = torch.tensor(state["std"], dtype=torch.float32).view(self.num_features)
        for column, values in state.get("vocabularies", {}).items():
            self.vocabularies[column] = {v: i + 1 for i, v in enumerate(values)}

    def example(self, generator: torch.Generator) -> Any:
        numbers = torch.randn(self.num_features, generator=generator).tolist()
        if not self.categorical:
            return numbers
        names = self.columns or []
        row: dict[str, Any] = dict(zip(names, numbers, strict=True))
        for c in self.categorical:
            row[c] = "abc"[int(torch.randint(3, (1,), generator=generator))]
        return row


def _check_columns(num_features: int, columns: list[str] | None, categorical: list[str] | None, max_categories: int) -> None:
    if num_features < 0 or (num_features == 0 and not categorical):
        raise ValueError(f"num_features must be positive (or 0 with categorical columns), got {num_features}")
    if columns is not None and len(columns) != num_features:
        raise ValueError(f"columns names {len(columns)} columns but num_features is {num_features}")
    if categorical and columns is None and num_features:
        raise ValueError("with categorical columns, rows are mappings: name the numeric columns in `columns` too")
    if max_categories < 2:
        raise ValueError(f"max_categories must be at least 2 (unknown + one value), got {max_categories}")


class MLPTabularEncoder(mmcore.Encoder):
    """MLP over standardised numeric columns and embedded categorical columns; one pooled vector per sample.

    ``hidden``: the hidden layers' widths (default one layer of ``2 * dim``)."""

    modality = "tabular"
    #: options ``mmcore prune`` may shrink (option -> the multiple it keeps): the hidden widths
    prunable_options = {"hidden": 4}

    def __init__(
        self,
        num_features: int,
        dim: int = 128,
        hidden: list[int] | None = None,
        dropout: float = 0.1,
        columns: list[str] | None = None,
        categorical: list[str] | None = None,
        max_categories: int = 64,
        embed_dim: int = 8,
    ) -> None:
        super().__init__()
        _check_columns(num_features, columns, categorical, max_categories)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_features, self.dim, self.columns = num_features, dim, columns
        self.categorical, self.max_categories = list(categorical or []), max_categories
        # One table for every categorical column, each column owning max_categories rows.
        self.embedding = nn.Embedding(len(self.categorical) * max_categories, embed_dim) if self.categorical else None
        width_in = num_features + len(self.categorical) * embed_dim
        self.hidden = list(hidden) if hidden is not None else [2 * dim]
        widths = [width_in, *self.hidden, dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers += [nn.GELU(), nn.Dropout(dropout) if dropout > 0 else nn.Identity()]
        self.net = nn.Sequential(*layers)

    def processor(self) -> TabularProcessor:
        return TabularProcessor(self.num_features, self.columns, self.categorical, self.max_categories)

    def pruning_groups(self) -> list[list[tuple[str, int, int]]]:
        """The coupled dimensions ``mmcore prune`` may shrink (``hidden``): each hidden layer's units."""
        linears = [name for name, m in self.net.named_children() if isinstance(m, nn.Linear)]
        return [[(f"net.{a}.weight", 0, 1), (f"net.{a}.bias", 0, 1), (f"net.{b}.weight", 1, 1)]
                for a, b in zip(linears[:-1], linears[1:], strict=True)]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        values = batch["values"]
        if values.dim() != 2 or values.shape[1] != self.num_features:
            raise ValueError(f"expected values [B, {self.num_features}], got {list(values.shape)}")
        x = values
        if self.embedding is not None:
            offsets = torch.arange(len(self.categorical), device=values.device) * self.max_categories
            x = torch.cat([values, self.embedding(batch["categories"] + offsets).flatten(1)], 1)
        return Features.from_pooled(self.net(x), present=batch["present"])


class FTTransformerEncoder(mmcore.Encoder):
    """FT-Transformer: one token per column (numeric: value * w + b; categorical: embedding) + CLS; pooled = CLS."""

    modality = "tabular"

    def __init__(
        self,
        num_features: int,
        dim: int = 64,
        heads: int = 4,
        layers: int = 2,
        dropout: float = 0.1,
        columns: list[str] | None = None,
        categorical: list[str] | None = None,
        max_categories: int = 64,
    ) -> None:
        super().__init__()
        _check_columns(num_features, columns, categorical, max_categories)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.num_features, self.dim, self.columns = num_features, dim, columns
        self.categorical, self.max_categories = list(categorical or []), max_categories
        self.weight = nn.Parameter(torch.randn(num_features, dim) * 0.1)
        self.bias = nn.Parameter(torch.zeros(num_features, dim))
        self.embedding = nn.Embedding(len(self.categorical) * max_categories, dim) if self.categorical else None
        self.category_bias = nn.Parameter(torch.zeros(len(self.categorical), dim))
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def processor(self) -> TabularProcessor:
        return TabularProcessor(self.num_features, self.columns, self.categorical, self.max_categories)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        values, present = batch["values"], batch["present"].to(torch.bool)
        if values.dim() != 2 or values.shape[1] != self.num_features:
            raise ValueError(f"expected values [B, {self.num_features}], got {list(values.shape)}")
        b = values.shape[0]
        parts = [self.cls.expand(b, 1, -1), values[..., None] * self.weight + self.bias]
        if self.embedding is not None:
            offsets = torch.arange(len(self.categorical), device=values.device) * self.max_categories
            parts.append(self.embedding(batch["categories"] + offsets) + self.category_bias)
        tokens = self.norm(self.encoder(torch.cat(parts, 1)))  # every column is real: no padding mask
        features = Features.from_tokens(tokens, present=present)
        features.pooled = tokens[:, 0] * present[:, None].to(tokens.dtype)
        return features


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_encoder("tabular_mlp", MLPTabularEncoder, modality="tabular", example_options={"num_features": 5, "dim": 16})
    registry.add_encoder("tabular_ft", FTTransformerEncoder, modality="tabular",
                         example_options={"num_features": 3, "dim": 16, "heads": 2, "layers": 1, "columns": ["a", "b", "c"],
                                          "categorical": ["city"], "max_categories": 4})
