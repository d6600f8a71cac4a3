"""`regression`: MSE / Huber loss with target standardisation. (`multilabel` lives beside `classification`.)"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

import mmcore
from mmcore import Features, HeadOutput
from mmcore_plugins.layers.mlp import mlp


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

    reads_tokens = False  # pooled vectors only

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
        self.net = mlp(input_dim, num_targets, hidden, dropout)

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

    def distillation_loss(self, logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """Mean squared difference of the standardised predictions ``[B, num_targets]`` from the teacher's
        (the regression form of distillation: the teacher's outputs as targets; ``temperature`` does
        not apply). Teacher and student standardise with the statistics of the same training split."""
        return F.mse_loss(logits.float(), teacher_logits.float())

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


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_head("regression", RegressionHead, example_options={"num_targets": 2, "loss": "huber"})
