"""Metric values as numbers, and which direction of a metric is better.

One function, :func:`as_float`, turns whatever a metric's ``compute()`` returns into the number
that training, evaluation, ``metrics.csv`` and ``report.json`` show. The direction of a metric
comes from the metric object itself -- torchmetrics' ``Metric.higher_is_better`` class attribute
(``MeanSquaredError``, ``WordErrorRate``, ``MeanAbsolutePercentageError``: False; accuracy, F1,
BLEU: True) -- never from its name. A metric that is not a torchmetrics ``Metric`` declares it
the same way: a ``higher_is_better`` attribute set to True or False. The loss is always lower-is-better.

Also the trainer's per-epoch accumulator (:class:`EpochAccumulator`) and the lazy ``metrics`` of
``mmcore_train_step_end`` (:class:`StepMetrics`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import torch

from mmcore.errors import ConfigError, ConfigIssue

#: ``trainer.monitor_mode`` / ``robustness_report(mode=...)`` values.
Mode = Literal["auto", "max", "min"]


def as_float(value: Any) -> float:
    """A metric's ``compute()`` result as one float.

    A one-element tensor or a Python number is that number; a tensor of several values (e.g.
    per-class scores) is their mean; a mapping (torchmetrics metrics that return several named
    numbers, e.g. ROUGE) is the mean of its values, each reduced the same way.

    :raises TypeError: a value that is none of these (names its type).
    """
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean()) if value.numel() != 1 else float(value.detach())
    if isinstance(value, Mapping):  # several numbers: report their mean
        return float(sum(as_float(v) for v in value.values()) / max(1, len(value)))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:  # numpy scalars and other number-likes
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"a metric returned {type(value).__name__} {value!r}; expected a number, a tensor or a "
                        "mapping of them") from None


def declared_higher_is_better(metric: Any) -> bool | None:
    """``metric.higher_is_better`` when it is True or False (torchmetrics declares it per class), else None."""
    value = getattr(metric, "higher_is_better", None)
    return value if isinstance(value, bool) else None


def metric_directions(metrics: Mapping[str, Any]) -> dict[str, bool | None]:
    """``{name: higher_is_better}`` for a head's metrics (``Head.metrics()``) and ``loss`` (False);
    None where a metric declares no direction."""
    out: dict[str, bool | None] = {"loss": False}
    out.update({name: declared_higher_is_better(m) for name, m in metrics.items()})
    return out


def lower_is_better(metric: str, mode: str = "auto", *, metrics: Mapping[str, Any] | None = None,
                    option: str = "trainer.monitor_mode") -> bool:
    """Whether smaller values of the metric named ``metric`` are better.

    ``mode`` ``"min"``/``"max"`` decides; ``"auto"`` asks the metric object in ``metrics`` (the
    head's ``metrics()``) for its ``higher_is_better``; ``loss`` is lower-is-better.

    :raises ConfigError: ``mode`` is auto but the metric declares no direction (or is not in
        ``metrics``): the message names ``option`` and asks for ``min`` or ``max``.
    """
    if mode not in ("auto", "max", "min"):
        raise ConfigError([ConfigIssue(option, f"must be 'auto', 'max' or 'min', got {mode!r}")])
    if mode != "auto":
        return mode == "min"
    if metric == "loss":
        return True
    higher = declared_higher_is_better((metrics or {}).get(metric))
    if higher is None:
        why = "is not among the head's metrics" if metric not in (metrics or {}) else \
            "declares no direction (no higher_is_better attribute set to True or False)"
        raise ConfigError([ConfigIssue(option, f"metric {metric!r} {why}; set {option} to 'min' or 'max'")])
    return not higher


@dataclasses.dataclass
class EpochAccumulator:
    """One training epoch's running sums on this process: the loss (summed per sample, on the
    device or on the host), the samples seen, the first non-finite step, and the head's metrics,
    updated in chunks of predictions (torchmetrics' per-call checks cost more than a small step)."""

    epoch: int
    metrics: dict[str, Any]
    loss_sum: torch.Tensor
    first_bad: torch.Tensor
    step_counter: torch.Tensor
    check_every: int
    step_hooks: bool
    seen: int = 0
    #: the loss sum kept on the host where the loss is read every step anyway (one CPU process)
    loss_sum_host: float = 0.0
    pending: list = dataclasses.field(default_factory=list)
    #: whether plugins add loss terms (mmcore_train_loss) / change gradients (mmcore_before_optimizer_step)
    loss_hooks: bool = False
    grad_hooks: bool = False
    #: per-sample sums of the plugins' loss terms, by name, on the device
    term_sums: dict = dataclasses.field(default_factory=dict)

    def total_loss(self) -> float:
        return float(self.loss_sum) + self.loss_sum_host

    def flush_metrics(self) -> None:
        if not self.pending:
            return
        with torch.no_grad():
            try:
                predictions = torch.cat([p for p, _ in self.pending])
                targets = torch.cat([t for _, t in self.pending])
                chunks = [(predictions, targets)]
            except RuntimeError:  # shapes that do not concatenate (e.g. ragged sequences): one by one
                chunks = self.pending
            for metric in self.metrics.values():
                for p, t in chunks:
                    metric.update(p, t)
        self.pending = []


class StepMetrics(Mapping):
    """``mmcore_train_step_end``'s ``metrics``: ``{"loss": float, "lr": float}``, the loss read
    from the device only when a hook asks for it."""

    def __init__(self, loss: torch.Tensor, lr: float) -> None:
        self._loss, self._lr = loss, lr

    def __getitem__(self, key: str) -> float:
        if key == "loss":
            return float(self._loss)
        if key == "lr":
            return self._lr
        raise KeyError(key)

    def __iter__(self):
        return iter(("loss", "lr"))

    def __len__(self) -> int:
        return 2
