"""`classification`: single-label classification with cross-entropy (or focal loss)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import mmcore
from mmcore import Features, HeadOutput


class ClassificationHead(mmcore.Head):
    """Single-label classifier: cross-entropy with label smoothing, class weights or focal loss.

    ``extras["probabilities"]`` (softmax of the logits) is reported in eval mode.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden: int | None = None,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        focal_gamma: float = 0.0,
    ) -> None:
        super().__init__(input_dim)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights must have num_classes={num_classes} entries, got {len(class_weights)}")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.focal_gamma = focal_gamma
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        if hidden:
            layers += [nn.Linear(input_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)]
        else:
            layers.append(nn.Linear(input_dim, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(
        self,
        fused: Features,
        targets: torch.Tensor | None = None,
        features: Mapping[str, Features] | None = None,
    ) -> HeadOutput:
        logits = self.net(fused.pooled)
        loss = None
        if targets is not None:
            loss = self.loss(logits, targets)
        # Class probabilities for evaluation and prediction (eval mode); a training step's
        # metrics need only the predictions, and the softmax would cost it two more ops.
        extras = {} if self.training else {"probabilities": logits.detach().softmax(-1)}
        return HeadOutput(logits=logits, predictions=logits.argmax(dim=-1), loss=loss, extras=extras)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.shape != logits.shape[:1]:
            raise ValueError(f"targets must have shape [{logits.shape[0]}], got {list(targets.shape)}")
        weight = self.class_weights.to(logits.dtype) if self.class_weights is not None else None
        if self.focal_gamma == 0:
            return F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.label_smoothing)
        # Focal loss: down-weight easy examples by (1 - p_t)^gamma.
        log_p = F.log_softmax(logits.float(), dim=-1)
        ce = F.nll_loss(log_p, targets, weight=weight, reduction="none")
        p_t = log_p.gather(1, targets[:, None]).squeeze(1).exp()
        return ((1 - p_t) ** self.focal_gamma * ce).mean()

    def metrics(self) -> dict[str, Any]:
        from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

        return {
            "accuracy": MulticlassAccuracy(num_classes=self.num_classes, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes=self.num_classes, average="macro"),
        }

    def collate_targets(self, targets: Sequence[Any]) -> torch.Tensor:
        out = []
        for i, target in enumerate(targets):
            value = target.item() if isinstance(target, torch.Tensor) else target
            if isinstance(value, bool) or not isinstance(value, int) and not (hasattr(value, "__index__")):
                raise TypeError(f"classification target #{i} must be an int class index, got {type(value).__name__} {value!r}")
            value = int(value)
            if not 0 <= value < self.num_classes:
                raise ValueError(f"classification target #{i} must be in [0, {self.num_classes}), got {value}")
            out.append(value)
        return torch.tensor(out, dtype=torch.long)

    def example_targets(self, batch_size: int, generator: torch.Generator) -> list[int]:
        return torch.randint(0, self.num_classes, (batch_size,), generator=generator).tolist()


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_head("classification", ClassificationHead, example_options={"num_classes": 3})
