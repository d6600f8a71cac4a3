"""Tabular encoders: numeric columns -> standardised vector -> MLP."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

import mmcore
from mmcore import Features, Processor


class TabularProcessor(Processor):
    """A row of numbers (sequence, array, or mapping column -> value) -> standardised float tensor.

    Standardisation statistics are fitted on the training split (``fit``) and saved with the
    model (``state_dict``). A missing row (None) is carried as ``present=False``.
    """

    def __init__(self, num_features: int, columns: Sequence[str] | None = None) -> None:
        self.num_features = num_features
        self.columns = list(columns) if columns is not None else None
        self.mean = torch.zeros(num_features)
        self.std = torch.ones(num_features)

    def _row(self, raw: Any) -> torch.Tensor:
        if isinstance(raw, Mapping):
            if self.columns is None:
                raise TypeError("this tabular processor was built without `columns`, so rows must be sequences, got a mapping")
            missing = [c for c in self.columns if c not in raw]
            if missing:
                raise ValueError(f"row lacks column(s) {missing}; expected columns {self.columns}")
            values = [raw[c] for c in self.columns]
        elif isinstance(raw, torch.Tensor):
            values = raw.detach().flatten().tolist()
        elif isinstance(raw, (str, bytes)) or not hasattr(raw, "__len__"):
            raise TypeError(f"a tabular row must be a sequence of {self.num_features} numbers or a mapping, got {type(raw).__name__}")
        else:
            values = list(raw.tolist() if hasattr(raw, "tolist") else raw)
        if len(values) != self.num_features:
            raise ValueError(f"a tabular row must have {self.num_features} values, got {len(values)}")
        out = []
        for i, value in enumerate(values):
            name = self.columns[i] if self.columns else f"#{i}"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"column {name}: expected a number, got {type(value).__name__} {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"column {name}: expected a finite number, got {value!r}")
            out.append(float(value))
        return torch.tensor(out, dtype=torch.float32)

    def __call__(self, raw: Any) -> torch.Tensor:
        return (self._row(raw) - self.mean) / self.std

    def fit(self, raws: Sequence[Any]) -> None:
        rows = [self._row(r) for r in raws if r is not None]
        if len(rows) < 2:
            return
        data = torch.stack(rows)
        self.mean = data.mean(0)
        # A constant column keeps std 1 so it maps to 0 instead of dividing by zero.
        std = data.std(0)
        self.std = torch.where(std > 1e-8, std, torch.ones_like(std))

    def collate(self, items: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        present = torch.tensor([item is not None for item in items], dtype=torch.bool)
        zeros = torch.zeros(self.num_features)
        values = torch.stack([item if item is not None else zeros for item in items])
        return {"values": values, "present": present}

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean = torch.tensor(state["mean"], dtype=torch.float32)
        self.std = torch.tensor(state["std"], dtype=torch.float32)

    def example(self, generator: torch.Generator) -> list[float]:
        return torch.randn(self.num_features, generator=generator).tolist()


class MLPTabularEncoder(mmcore.Encoder):
    """MLP over standardised numeric columns; one pooled vector per sample."""

    modality = "tabular"

    def __init__(
        self,
        num_features: int,
        dim: int = 128,
        hidden: list[int] | None = None,
        dropout: float = 0.1,
        columns: list[str] | None = None,
    ) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"num_features must be positive, got {num_features}")
        if columns is not None and len(columns) != num_features:
            raise ValueError(f"columns names {len(columns)} columns but num_features is {num_features}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_features, self.dim, self.columns = num_features, dim, columns
        widths = [num_features, *(hidden if hidden is not None else [2 * dim]), dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers += [nn.GELU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers)

    def processor(self) -> TabularProcessor:
        return TabularProcessor(self.num_features, self.columns)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        values, present = batch["values"], batch["present"].to(torch.bool)
        if values.dim() != 2 or values.shape[1] != self.num_features:
            raise ValueError(f"expected values [B, {self.num_features}], got {list(values.shape)}")
        return Features.from_pooled(self.net(values), present=present)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_encoder("tabular_mlp", MLPTabularEncoder, modality="tabular", example_options={"num_features": 5, "dim": 16})
