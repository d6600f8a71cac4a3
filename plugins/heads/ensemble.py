"""`unimodal_ensemble`: classification by a product of per-modality experts, each trained on its own loss.

Joint training of a fused classifier is greedy: the modality that fits the training data first
(e.g. audio of the few training speakers) takes the loss down, and the others stop learning
(Wu et al., 2022, "Characterizing and overcoming the greedy nature of learning in multi-modal
deep neural networks"); at test time, when that modality shifts (new speakers), the fused model
still trusts it. A uni-modal ensemble avoids both (Du et al., 2023, "On uni-modal feature learning
in supervised multi-modal learning", UME): every modality gets its own classifier and its own
cross-entropy, so each encoder learns as if trained alone, and predictions combine the experts
of the present modalities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import mmcore
from mmcore import Features, HeadOutput
from mmcore_plugins.heads.classification import ClassificationHead


class UnimodalEnsembleHead(ClassificationHead):
    """Per-modality classifiers (LayerNorm -> Linear on each slot's pooled features), combined by summing
    their log-probabilities over the modalities each sample has (a product of experts, uniform prior).

    Loss: the mean over slots of each expert's cross-entropy (with ``label_smoothing``) on the
    samples that have that modality, plus ``joint_weight`` times the cross-entropy of a classifier
    on the fused vector (0 = the fused vector is not used, except as the only expert when the
    model gives no per-slot features). ``logits`` are the combined log-probabilities; a sample
    without any modality gets uniform ones. Label smoothing also bounds each expert's confidence,
    so one shifted modality cannot outvote the others without limit. Metrics: accuracy, macro F1.
    ``classes`` / ``num_classes``: as for ``classification`` (filled from the training split's labels).
    ``expert_weights``: ``{slot: w}``, each ``w >= 0`` (default 1 for every slot) multiplying that
    expert's log-probabilities in the combination -- a weighted product of experts (a logarithmic
    opinion pool); ``0`` leaves an expert out of the predictions (``fit`` does so for an expert no
    better than chance on the validation split), ``w > 1`` sharpens it (an inverse temperature: ``fit``
    sharpens an under-confident expert by its validation calibration, bounded). Training is unchanged: every expert keeps its own
    loss. Raises ValueError for a negative or non-finite weight or a slot the head has no expert for.
    """

    def __init__(self, input_dim: int, num_classes: int | None = None, input_dims: Mapping[str, int] | None = None,
                 label_smoothing: float = 0.1, joint_weight: float = 0.0, dropout: float = 0.1,
                 classes: list[str] | None = None, expert_weights: Mapping[str, float] | None = None) -> None:
        super().__init__(input_dim, num_classes, label_smoothing=label_smoothing, dropout=dropout, classes=classes)
        num_classes = self.num_classes
        if joint_weight < 0:
            raise ValueError(f"joint_weight must be >= 0, got {joint_weight}")
        self.joint_weight = float(joint_weight)
        self.experts = nn.ModuleDict({
            slot: nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, num_classes))
            for slot, width in dict(input_dims or {}).items()
        })
        weights = dict(expert_weights or {})
        unknown = sorted(set(weights) - set(self.experts))
        if unknown:
            raise ValueError(f"expert_weights: no expert for slot(s) {unknown}; the head's experts are {sorted(self.experts)}")
        for slot, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"expert_weights[{slot!r}] must be a finite number >= 0, got {weight!r}")
        #: ``{slot: w}`` for every expert (1.0 unless given)
        self.expert_weights = {slot: float(weights.get(slot, 1.0)) for slot in self.experts}

    @staticmethod
    def fusion_unused(options: Mapping[str, Any]) -> str | None:
        """Why the model's fusion changes nothing under these head options (``joint_weight`` 0: the
        experts read each slot's own features, the fused vector is neither trained nor used), or None.
        ``mmcore train`` says so at start (a fusion edited in such a config would otherwise do nothing)."""
        weight = options.get("joint_weight", 0.0)
        if isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight == 0:
            return ("model.head.joint_weight is 0: the unimodal_ensemble head combines its per-modality experts and "
                    "neither trains nor uses the fused vector; set model.head.joint_weight above 0 (e.g. 0.5) to "
                    "train the fused vector and add it to the predictions")
        return None

    def forward(self, fused: Features, targets: torch.Tensor | None = None,
                features: Mapping[str, Features] | None = None) -> HeadOutput:
        slots = [s for s in self.experts if features is not None and s in features]
        joint = self.net(fused.pooled)
        if not slots:
            combined = joint.log_softmax(-1)
            loss = self.loss(joint, targets) if targets is not None else None
        else:
            combined = torch.zeros_like(joint)
            losses = []
            for slot in slots:
                present = features[slot].present.to(torch.bool)
                logits = self.experts[slot](features[slot].pooled)
                weight = self.expert_weights[slot]
                # Weighted 0, an expert is multiplied out rather than skipped: an exported graph keeps
                # every input it was given (still trained alone: its loss below).
                vote = logits.log_softmax(-1) if weight == 1.0 else weight * logits.log_softmax(-1)
                combined = combined + torch.where(present[:, None], vote, torch.zeros_like(logits))
                if targets is not None and bool(present.any()):
                    losses.append(F.cross_entropy(logits[present], targets[present], label_smoothing=self.label_smoothing))
            if self.joint_weight:  # with or without targets: predictions are those validation measured
                combined = combined + self.joint_weight * joint.log_softmax(-1)
            loss = None
            if targets is not None:
                loss = torch.stack(losses).mean() if losses else joint.sum() * 0.0
                if self.joint_weight:
                    loss = loss + self.joint_weight * self.loss(joint, targets)
        extras: dict[str, Any] = {} if self.training else {"probabilities": combined.detach().softmax(-1)}
        return HeadOutput(logits=combined, predictions=combined.argmax(-1), loss=loss, extras=extras)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_head("unimodal_ensemble", UnimodalEnsembleHead, example_options={"num_classes": 3})
