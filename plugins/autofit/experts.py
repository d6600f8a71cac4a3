"""Which experts of a uni-modal ensemble vote: chosen on the validation split after training.

The ``unimodal_ensemble`` head multiplies its experts' class probabilities. An expert no better
than chance (a column that says nothing about the target: a date, a free-text hint that rarely
names the class) still has a trained classifier whose near-uniform but not uniform votes are noise
in every product: on issue 27's digits it cost 2 points of test accuracy. ``fit`` therefore measures
each expert alone on the validation rows that have its modality and leaves out (weight 0, see
``expert_weights`` of the head) an expert that both

* is not better than always answering the commonest validation class on those rows by two
  binomial standard errors (``CHANCE_SE``), i.e. indistinguishable from chance, and
* does not lower the product's validation accuracy when left out.

Only dropping is chosen this way, never up-weighting: the validation split of such a table may
share what the test does not (the training speakers), and weights fitted to it (a logarithmic
opinion pool, temperature per expert) trusted the speaker-bound audio expert and lost 11 points of
test accuracy on the digits where the uniform product kept them. An expert that clearly beats
chance is always kept, even when the others make it look redundant on validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

#: An expert is "at chance" unless its validation accuracy beats the commonest class's share of its
#: rows by this many binomial standard errors (two: a one-sided ~2.3% chance of calling chance skill).
CHANCE_SE = 2.0
#: Fewer validation rows with the modality than this: never dropped (too little evidence).
MIN_ROWS = 30


@dataclass
class ExpertOutputs:
    """Per-expert log-probabilities on one split: ``log_probs[slot]`` ``[N, C]`` float32,
    ``present[slot]`` ``[N]`` bool (rows that have the modality), ``targets`` ``[N]`` int64."""

    log_probs: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    targets: torch.Tensor

    def combined(self, weights: Mapping[str, float]) -> torch.Tensor:
        """``[N, C]`` the weighted sum of the present experts' log-probabilities (zeros: none present),
        as the head combines them."""
        out = torch.zeros_like(next(iter(self.log_probs.values())))
        for slot, lp in self.log_probs.items():
            out = out + float(weights.get(slot, 1.0)) * torch.where(self.present[slot][:, None], lp, torch.zeros_like(lp))
        return out

    def accuracy(self, weights: Mapping[str, float]) -> float:
        """Accuracy of the weighted product over every row (0.0 without rows)."""
        if not len(self.targets):
            return 0.0
        return float((self.combined(weights).argmax(-1) == self.targets).float().mean())

    def alone(self, slot: str) -> tuple[float, float, int]:
        """``(accuracy, chance, rows)`` of expert ``slot`` alone on the rows that have its modality;
        ``chance`` is the commonest class's share of those rows."""
        rows = self.present[slot]
        n = int(rows.sum())
        if not n:
            return 0.0, 0.0, 0
        targets = self.targets[rows]
        accuracy = float((self.log_probs[slot][rows].argmax(-1) == targets).float().mean())
        chance = float(torch.bincount(targets).max()) / n
        return accuracy, chance, n


@dataclass
class ExpertChoice:
    """The measured choice: ``weights`` ``{slot: 1.0 or 0.0}``, per expert ``(accuracy, chance,
    rows)`` alone on validation, the product's validation accuracy with every expert and as chosen."""

    weights: dict[str, float]
    alone: dict[str, tuple[float, float, int]]
    accuracy_all: float
    accuracy_chosen: float
    why: str

    @property
    def dropped(self) -> list[str]:
        return [slot for slot, w in self.weights.items() if w == 0.0]

    def to_json(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "dropped": self.dropped,
                "val_by_expert": {s: {"accuracy": round(a, 4), "chance": round(c, 4), "rows": n}
                                  for s, (a, c, n) in self.alone.items()},
                "val_accuracy_all": round(self.accuracy_all, 4), "val_accuracy_chosen": round(self.accuracy_chosen, 4),
                "why": self.why}


def at_chance(accuracy: float, chance: float, rows: int, *, se: float = CHANCE_SE) -> bool:
    """Whether ``accuracy`` on ``rows`` rows is within ``se`` binomial standard errors of ``chance``
    (never with fewer than ``MIN_ROWS`` rows)."""
    if rows < MIN_ROWS:
        return False
    return accuracy <= chance + se * math.sqrt(max(chance * (1.0 - chance), 1e-12) / rows)


def choose_experts(val: ExpertOutputs) -> ExpertChoice:
    """Leave out, one at a time from the weakest, every expert at chance on ``val`` whose absence does
    not lower the product's validation accuracy; at least one expert always votes.

    Raises ValueError for outputs without experts or rows.
    """
    slots = list(val.log_probs)
    if not slots or not len(val.targets):
        raise ValueError("choosing experts needs at least one expert and one validation row")
    weights = {s: 1.0 for s in slots}
    alone = {s: val.alone(s) for s in slots}
    everything = current = val.accuracy(weights)
    notes = []
    for slot in sorted(slots, key=lambda s: alone[s][0] - alone[s][1]):
        accuracy, chance, rows = alone[slot]
        if not at_chance(accuracy, chance, rows) or sum(w > 0 for w in weights.values()) <= 1:
            continue
        trial = {**weights, slot: 0.0}
        without = val.accuracy(trial)
        if without >= current:
            weights, current = trial, without
            notes.append(f"{slot} left out ({accuracy:.3f} alone on {rows} val rows, chance {chance:.3f}; "
                         f"the product {without:.3f} without it)")
    why = ("; ".join(notes) + f"; with every expert {everything:.3f}") if notes else \
        f"every expert kept (val accuracy {everything:.3f}; " + ", ".join(
            f"{s} {a:.3f} alone, chance {c:.3f}" for s, (a, c, _) in alone.items()) + ")"
    return ExpertChoice(weights=weights, alone=alone, accuracy_all=everything, accuracy_chosen=current, why=why)


@torch.no_grad()
def expert_outputs(model, dataset, *, batch_size: int = 128, device: str | torch.device = "cpu") -> ExpertOutputs:
    """Every expert's log-probabilities on ``dataset`` (the model's samples, with targets), for a model
    whose head is ``unimodal_ensemble``: one forward pass in eval mode.

    Raises ValueError for a head without experts or a data set without targets.
    """
    from mmcore.data import make_dataloader
    from mmcore.engine.evaluation import to_device

    experts = getattr(model.head, "experts", None)
    if not experts:
        raise ValueError(f"choosing experts needs a unimodal_ensemble head, got {type(model.head).__name__}")
    was_training = model.training
    model.eval()
    log_probs: dict[str, list[torch.Tensor]] = {s: [] for s in experts}
    present: dict[str, list[torch.Tensor]] = {s: [] for s in experts}
    targets: list[torch.Tensor] = []
    try:
        for batch in make_dataloader(dataset, model, batch_size):
            inputs, y = to_device(batch, device)
            if y is None:
                raise ValueError("choosing experts needs rows with targets")
            features = model.encode(inputs)
            for slot in experts:
                log_probs[slot].append(experts[slot](features[slot].pooled).log_softmax(-1).float().cpu())
                present[slot].append(features[slot].present.to(torch.bool).cpu())
            targets.append(y.cpu())
    finally:
        model.train(was_training)
    return ExpertOutputs(log_probs={s: torch.cat(v) for s, v in log_probs.items()},
                         present={s: torch.cat(v) for s, v in present.items()}, targets=torch.cat(targets).long())


def split_metrics(model, outputs: ExpertOutputs, weights: Mapping[str, float]) -> dict[str, float]:
    """The head's own metrics (accuracy, macro F1, ...) of the weighted product on ``outputs``."""
    from mmcore.engine.metrics import as_float

    predictions = outputs.combined(weights).argmax(-1)
    out = {}
    for name, metric in model.head.metrics().items():
        metric.update(predictions, outputs.targets)
        out[name] = as_float(metric.compute())
    return out
