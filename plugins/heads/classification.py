"""`classification` (single label: cross-entropy or focal loss) and `multilabel` (BCE, per-label thresholds)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import mmcore
from mmcore import Features, HeadOutput
from mmcore.labels import ClassIndex
from mmcore_plugins.heads._labels import check_classes, class_index, fill_from_data
from mmcore_plugins.layers.mlp import mlp


class ClassificationHead(mmcore.Head):
    """Single-label classifier: cross-entropy with label smoothing, class weights or focal loss.

    ``classes`` (names, index = class) and ``num_classes``: one of them is enough; the trainer fills
    both from the training split's labels when neither is given, and a given one that disagrees
    with the data is an error. With ``classes`` known, targets may be class names as well as
    indices, and ``format_predictions`` returns names. ``extras["probabilities"]`` (softmax of the
    logits) is reported in eval mode.

    Loss: cross-entropy (``label_smoothing`` as in Szegedy et al. 2016, ``class_weights`` per
    class); with ``focal_gamma > 0`` the focal loss of Lin et al. 2017,
    ``-sum_c w_c q_c (1 - p_c)^gamma log p_c`` averaged over the batch, where ``q`` is the
    (label-smoothed, if ``label_smoothing > 0``) target distribution: every option applies in
    every combination.
    """

    reads_tokens = False  # pooled vectors only
    #: options ``mmcore prune`` may shrink (option -> the multiple it keeps): the hidden layer
    prunable_options = {"hidden": 8}

    def __init__(
        self,
        input_dim: int,
        num_classes: int | None = None,
        hidden: int | None = None,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        focal_gamma: float = 0.0,
        classes: list[str] | None = None,
    ) -> None:
        super().__init__(input_dim)
        self.classes, num_classes = check_classes(classes, num_classes, "num_classes")
        self._class_index = ClassIndex(self.classes) if self.classes is not None else None
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not (focal_gamma >= 0 and math.isfinite(focal_gamma)):
            raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if hidden is not None and (isinstance(hidden, bool) or hidden < 1):
            raise ValueError(f"hidden must be a positive int (or null for no hidden layer), got {hidden!r}")
        if class_weights is not None:
            if len(class_weights) != num_classes:
                raise ValueError(f"class_weights must have num_classes={num_classes} entries, got {len(class_weights)}")
            if not all(math.isfinite(w) and w >= 0 for w in class_weights) or not any(w > 0 for w in class_weights):
                raise ValueError(f"class_weights must be finite, >= 0 and not all 0, got {class_weights}")
        self.num_classes, self.hidden = num_classes, hidden
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

    def pruning_groups(self) -> list[list[tuple[str, int, int]]]:
        """The coupled dimensions ``mmcore prune`` may shrink (``hidden``): the hidden layer's units (if any)."""
        linears = [name for name, m in self.net.named_children() if isinstance(m, nn.Linear)]
        return [[(f"net.{a}.weight", 0, 1), (f"net.{a}.bias", 0, 1), (f"net.{b}.weight", 1, 1)]
                for a, b in zip(linears[:-1], linears[1:], strict=True)]

    @staticmethod
    def dataset_options(options: Mapping[str, Any]) -> dict[str, Any]:
        """What a data set should know of this head: class targets, and the classes if given."""
        out: dict[str, Any] = {"target_type": "class"}
        for name in ("classes", "num_classes"):
            if options.get(name) is not None:
                out[name] = options[name]
        return out

    @staticmethod
    def options_from_data(options: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` with ``classes``/``num_classes`` filled from the training split's metadata
        (ConfigError, with the option's name as path, when a given one disagrees)."""
        return fill_from_data(options, metadata, "num_classes")

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
        # Focal loss (Lin et al. 2017) on the smoothed target distribution q: each class's log-
        # probability is down-weighted by (1 - p_c)^gamma. With no smoothing q is one-hot and this is
        # -w_y (1 - p_y)^gamma log p_y.
        log_p = F.log_softmax(logits.float(), dim=-1)
        q = F.one_hot(targets, self.num_classes).to(log_p.dtype)
        if self.label_smoothing:
            q = q * (1 - self.label_smoothing) + self.label_smoothing / self.num_classes
        if weight is not None:
            q = q * weight.float()
        per_sample = -(q * (1 - log_p.exp()) ** self.focal_gamma * log_p).sum(-1)
        return per_sample.mean()

    def distillation_loss(self, logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """``T^2 * KL(softmax(t / T) || softmax(s / T))``, the mean over the batch of the KL divergence
        of the student's tempered class distribution from the teacher's (Hinton et al. 2015): 0 when
        they agree; ``T^2`` keeps the gradients' size independent of ``T``. ``logits`` and
        ``teacher_logits``: ``[B, num_classes]``."""
        student = F.log_softmax(logits.float() / temperature, dim=-1)
        teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
        return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2

    def metrics(self) -> dict[str, Any]:
        from torchmetrics.classification import MulticlassAccuracy

        from mmcore_plugins.heads.metrics import MulticlassMacroF1

        # Both O(num_classes) in memory: micro accuracy counts matches; torchmetrics' own macro F1
        # would build a num_classes^2 confusion matrix (20 GB for 50k classes).
        return {
            "accuracy": MulticlassAccuracy(num_classes=self.num_classes, average="micro"),
            "macro_f1": MulticlassMacroF1(num_classes=self.num_classes),
        }

    def collate_targets(self, targets: Sequence[Any]) -> torch.Tensor:
        """Class indices (ints, integral floats) or, with ``classes`` known, class names -> ``[B]`` int64."""
        out = []
        for i, target in enumerate(targets):
            value = target.item() if isinstance(target, torch.Tensor) else target
            out.append(class_index(value, i, self._class_index, self.num_classes, "classification"))
        return torch.tensor(out, dtype=torch.long)

    def format_predictions(self, output: HeadOutput) -> list[Any]:
        """Per sample: the class name when ``classes`` are known, else the class index."""
        indices = output.predictions.detach().cpu().tolist()
        return [self.classes[i] for i in indices] if self.classes is not None else indices

    def example_targets(self, batch_size: int, generator: torch.Generator) -> list[int]:
        return torch.randint(0, self.num_classes, (batch_size,), generator=generator).tolist()


class MultilabelHead(mmcore.Head):
    """Multi-label classification: binary cross-entropy per label, per-label decision thresholds.

    ``classes`` (label names, index = position in the multi-hot target) and ``num_labels``: one is
    enough; the trainer fills both from the training split when neither is given. Targets are
    multi-hot lists of 0/1, or with ``classes`` known, lists of label names; ``format_predictions``
    gives the predicted names per sample when ``classes`` are known, else the 0/1 list.
    """

    reads_tokens = False  # pooled vectors only

    def __init__(
        self, input_dim: int, num_labels: int | None = None, thresholds: list[float] | None = None,
        pos_weight: list[float] | None = None, hidden: int | None = None, dropout: float = 0.0,
        classes: list[str] | None = None,
    ) -> None:
        super().__init__(input_dim)
        self.classes, num_labels = check_classes(classes, num_labels, "num_labels")
        self._class_index = ClassIndex(self.classes) if self.classes is not None else None
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
        self.net = mlp(input_dim, num_labels, hidden, dropout)

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

    def distillation_loss(self, logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """``T^2`` times the mean over samples and labels of the KL divergence between the teacher's and
        the student's tempered Bernoulli distributions, ``sigmoid(t / T)`` and ``sigmoid(s / T)`` (the
        multi-label form of Hinton et al. 2015): 0 when they agree. ``[B, num_labels]`` each."""
        student, teacher = logits.float() / temperature, teacher_logits.float() / temperature
        q = torch.sigmoid(teacher)
        # BCE with soft targets minus the targets' own entropy: the KL divergence, 0 at agreement.
        kl = F.binary_cross_entropy_with_logits(student, q, reduction="none") - F.binary_cross_entropy_with_logits(teacher, q, reduction="none")
        return kl.mean() * temperature**2

    def metrics(self) -> dict[str, Any]:
        from torchmetrics.classification import MultilabelAccuracy, MultilabelF1Score

        return {"accuracy": MultilabelAccuracy(num_labels=self.num_labels), "macro_f1": MultilabelF1Score(num_labels=self.num_labels, average="macro")}

    def collate_targets(self, targets: Sequence[Any]) -> torch.Tensor:
        rows = []
        for i, target in enumerate(targets):
            value = target.tolist() if isinstance(target, torch.Tensor) else list(target) if isinstance(target, (list, tuple)) else None
            if value is not None and self._class_index is not None and (not value or all(isinstance(v, str) for v in value)):
                found = [self._class_index.get(v) for v in value]
                unknown = [v for v, k in zip(value, found, strict=True) if k is None]
                if unknown:
                    raise ValueError(f"multilabel target #{i}: {unknown} are not among the classes {self.classes}")
                value = [int(k in found) for k in range(len(self.classes))]
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
    registry.add_head("classification", ClassificationHead, example_options={"num_classes": 3})
    registry.add_head("multilabel", MultilabelHead, example_options={"num_labels": 4})
