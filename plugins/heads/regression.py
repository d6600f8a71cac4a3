"""`regression` (MSE / Huber with target standardisation) and `multilabel` (BCE, per-label thresholds)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

import mmcore
from mmcore import Features, HeadOutput
from mmcore_plugins.heads._labels import check_classes, fill_from_data


def _mlp(input_dim: int, output_dim: int, hidden: int | None, dropout: float) -> nn.Sequential:
    if hidden is not None and (isinstance(hidden, bool) or hidden < 1):
        raise ValueError(f"hidden must be a positive int (or null for no hidden layer), got {hidden!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if hidden:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, output_dim))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim, output_dim))


class RegressionHead(mmcore.Head):
    """Regression of one or more targets: MSE or Huber loss on standardised targets.

    The network predicts standardised targets ``(y - target_mean) / target_std`` and the loss is
    taken there (so targets in the thousands train like targets near 0); ``predictions`` are in
    the original units. The statistics are settable as options (``target_mean``/``target_std``,
    one value per target) or fitted on the training split by ``fit_targets(targets)``, which
    ``MultimodalModel.fit_processors`` (and so the trainer) calls; a statistic given as an option
    is kept, only the others are fitted. They are buffers, saved with the model's weights.
    ``huber_delta`` (default 1.0, in standardised units) applies to ``loss: huber`` only; giving it
    with ``loss: mse`` is refused rather than ignored.
    """

    def __init__(
        self, input_dim: int, num_targets: int = 1, loss: Literal["mse", "huber"] = "mse", huber_delta: float | None = None,
        hidden: int | None = None, dropout: float = 0.0,
        target_mean: list[float] | None = None, target_std: list[float] | None = None,
    ) -> None:
        super().__init__(input_dim)
        if num_targets < 1:
            raise ValueError(f"num_targets must be at least 1, got {num_targets}")
        if loss not in ("mse", "huber"):
            raise ValueError(f"loss must be 'mse' or 'huber', got {loss!r}")
        for name, stats in (("target_mean", target_mean), ("target_std", target_std)):
            if stats is not None and len(stats) != num_targets:
                raise ValueError(f"{name} must have num_targets={num_targets} values, got {len(stats)}")
        if target_std is not None and min(target_std) <= 0:
            raise ValueError(f"target_std must be positive, got {target_std}")
        if huber_delta is not None and loss != "huber":
            raise ValueError(f"huber_delta applies to loss: huber only; with loss: {loss} it would be ignored")
        huber_delta = 1.0 if huber_delta is None else huber_delta
        if not (huber_delta > 0 and math.isfinite(huber_delta)):
            raise ValueError(f"huber_delta must be positive, got {huber_delta}")
        self.num_targets, self.loss_kind, self.huber_delta = num_targets, loss, huber_delta
        self.fixed_statistics = {"mean": target_mean is not None, "std": target_std is not None}
        self.register_buffer("target_mean", torch.tensor(target_mean or [0.0] * num_targets))
        self.register_buffer("target_std", torch.tensor(target_std or [1.0] * num_targets))
        self.net = _mlp(input_dim, num_targets, hidden, dropout)

    @staticmethod
    def dataset_options(options: Mapping[str, Any]) -> dict[str, Any]:
        """What a data set should know of this head: numeric targets."""
        return {"target_type": "regression"}

    def fit_targets(self, targets: Sequence[Any]) -> None:
        """Set ``target_mean``/``target_std`` (those not given as options) to the targets' mean and std."""
        values = self.collate_targets(targets)
        if len(values) < 2:
            return
        if not self.fixed_statistics["mean"]:
            self.target_mean.copy_(values.mean(0))
        if not self.fixed_statistics["std"]:
            std = values.std(0)
            self.target_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def forward(self, fused: Features, targets: torch.Tensor | None = None, features: Mapping[str, Features] | None = None) -> HeadOutput:
        standardised = self.net(fused.pooled)
        predictions = standardised * self.target_std + self.target_mean
        loss = None
        if targets is not None:
            if targets.shape != standardised.shape:
                raise ValueError(f"targets must have shape {list(standardised.shape)}, got {list(targets.shape)}")
            goal = (targets.to(standardised.dtype) - self.target_mean) / self.target_std
            if self.loss_kind == "mse":
                loss = F.mse_loss(standardised, goal)
            else:
                loss = F.huber_loss(standardised, goal, delta=self.huber_delta)
        return HeadOutput(logits=standardised, predictions=predictions, loss=loss)

    def metrics(self) -> dict[str, Any]:
        from torchmetrics import MeanAbsoluteError, MeanSquaredError

        return {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}

    def collate_targets(self, targets: Sequence[Any]) -> torch.Tensor:
        rows = []
        for i, target in enumerate(targets):
            value = target.tolist() if isinstance(target, torch.Tensor) else target
            value = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
            if not isinstance(value, (list, tuple)) or len(value) != self.num_targets or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
            ):
                raise TypeError(f"regression target #{i} must be {self.num_targets} number(s), got {target!r}")
            if not all(math.isfinite(v) for v in value):
                raise ValueError(f"regression target #{i} must be finite, got {target!r}")
            rows.append([float(v) for v in value])
        return torch.tensor(rows, dtype=torch.float32)

    def example_targets(self, batch_size: int, generator: torch.Generator) -> list[list[float]]:
        return torch.randn(batch_size, self.num_targets, generator=generator).tolist()


class MultilabelHead(mmcore.Head):
    """Multi-label classification: binary cross-entropy per label, per-label decision thresholds.

    ``classes`` (label names, index = position in the multi-hot target) and ``num_labels``: one is
    enough; the trainer fills both from the training split when neither is given. Targets are
    multi-hot lists of 0/1, or with ``classes`` known, lists of label names; ``format_predictions``
    gives the predicted names per sample when ``classes`` are known, else the 0/1 list.
    """

    def __init__(
        self, input_dim: int, num_labels: int | None = None, thresholds: list[float] | None = None,
        pos_weight: list[float] | None = None, hidden: int | None = None, dropout: float = 0.0,
        classes: list[str] | None = None,
    ) -> None:
        super().__init__(input_dim)
        self.classes, num_labels = check_classes(classes, num_labels, "num_labels")
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        for name, values in (("thresholds", thresholds), ("pos_weight", pos_weight)):
            if values is not None and len(values) != num_labels:
                raise ValueError(f"{name} must have num_labels={num_labels} values, got {len(values)}")
        if thresholds is not None and not all(0.0 < t < 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be in (0, 1), got {thresholds}")
        if pos_weight is not None and not all(math.isfinite(w) and w > 0 for w in pos_weight):
            raise ValueError(f"pos_weight must be finite and positive, got {pos_weight}")
        self.num_labels = num_labels
        self.register_buffer("thresholds", torch.tensor(thresholds or [0.5] * num_labels))
        self.register_buffer("pos_weight", torch.tensor(pos_weight) if pos_weight is not None else None, persistent=False)
        self.net = _mlp(input_dim, num_labels, hidden, dropout)

    @staticmethod
    def dataset_options(options: Mapping[str, Any]) -> dict[str, Any]:
        """What a data set should know of this head: multilabel targets, and the classes if given."""
        out: dict[str, Any] = {"target_type": "multilabel"}
        if options.get("classes") is not None:
            out["classes"] = options["classes"]
        if options.get("num_labels") is not None:
            out["num_classes"] = options["num_labels"]
        return out

    @staticmethod
    def options_from_data(options: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` with ``classes``/``num_labels`` filled from the training split's metadata."""
        return fill_from_data(options, metadata, "num_labels")

    def forward(self, fused: Features, targets: torch.Tensor | None = None, features: Mapping[str, Features] | None = None) -> HeadOutput:
        logits = self.net(fused.pooled)
        probabilities = torch.sigmoid(logits)
        loss = None
        if targets is not None:
            if targets.shape != logits.shape:
                raise ValueError(f"targets must have shape {list(logits.shape)}, got {list(targets.shape)}")
            loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=self.pos_weight)
        predictions = (probabilities >= self.thresholds).long()
        return HeadOutput(logits=logits, predictions=predictions, loss=loss, extras={"probabilities": probabilities.detach()})

    def metrics(self) -> dict[str, Any]:
        from torchmetrics.classification import MultilabelAccuracy, MultilabelF1Score

        return {"accuracy": MultilabelAccuracy(num_labels=self.num_labels), "macro_f1": MultilabelF1Score(num_labels=self.num_labels, average="macro")}

    def collate_targets(self, targets: Sequence[Any]) -> torch.Tensor:
        rows = []
        for i, target in enumerate(targets):
            value = target.tolist() if isinstance(target, torch.Tensor) else list(target) if isinstance(target, (list, tuple)) else None
            if value is not None and self.classes is not None and (not value or all(isinstance(v, str) for v in value)):
                unknown = [v for v in value if v not in self.classes]
                if unknown:
                    raise ValueError(f"multilabel target #{i}: {unknown} are not among the classes {self.classes}")
                value = [int(name in value) for name in self.classes]
            if value is None or len(value) != self.num_labels or any(v not in (0, 1, True, False) for v in value):
                raise ValueError(f"multilabel target #{i} must be {self.num_labels} values of 0/1, got {target!r}")
            rows.append([int(v) for v in value])
        return torch.tensor(rows, dtype=torch.long)

    def format_predictions(self, output: HeadOutput) -> list[Any]:
        """Per sample: the list of predicted class names when ``classes`` are known, else the 0/1 list."""
        rows = output.predictions.detach().cpu().tolist()
        if self.classes is None:
            return rows
        return [[name for name, hit in zip(self.classes, row, strict=True) if hit] for row in rows]

    def example_targets(self, batch_size: int, generator: torch.Generator) -> list[list[int]]:
        return torch.randint(0, 2, (batch_size, self.num_labels), generator=generator).tolist()


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_head("regression", RegressionHead, example_options={"num_targets": 2, "loss": "huber"})
    registry.add_head("multilabel", MultilabelHead, example_options={"num_labels": 4})
