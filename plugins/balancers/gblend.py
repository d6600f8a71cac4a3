"""`gblend`: Gradient-Blending (Wang, Tran & Feiszli, "What Makes Training Multi-Modal Classification
Networks Hard?", CVPR 2020), online, for any number of modalities and with missing ones.

The model is trained on a weighted sum of the fused loss and one uni-modal loss per modality,
``L = w_fused L_fused + sum_m w_m L_m`` (``L_m``: the model's own fusion and head on modality ``m``
alone, over the samples that have ``m``), with weights that favour the objectives that generalise
most per unit of overfitting. For each objective ``k``, from two measurements ``n`` and ``n + d``
epochs apart (``every`` epochs: the paper's super-epoch), with ``O = L_val - L_train``::

    G_k  = L_val,k(n) - L_val,k(n + d)            generalisation gained
    O_k  = O_k(n + d) - O_k(n)                    overfitting gained
    w_k  = (max(G_k, 0) / max(O_k^2, eps)) / Z    Z normalises the weights to sum 1

(the paper's ``w_k ∝ G_k / O_k^2``; an objective that lost generalisation gets 0, and ``eps = 1e-4``
keeps a vanishing ``O_k`` finite). ``L_train,k`` is the objective's mean training loss over the
epoch just trained (as the model changed during it: the paper's online estimate), ``L_val,k`` its
loss on the validation split (eval mode) at the epoch's end. The weights start uniform, ``1 /
(M + 1)``, and stay as they were when no objective gained (all ``w`` would be 0). The loss term
returned, ``gblend = sum_m w_m L_m + (w_fused - 1) L_fused``, makes the backpropagated loss exactly
``L`` (``train/loss`` stays the fused loss). Weights are reported per epoch as ``balancer/<slot>``
and ``balancer/fused``. Works with any head that returns a loss.
"""

from __future__ import annotations

import mmcore
from mmcore_plugins.balancers._common import (
    StepStatistics,
    check_multimodal,
    component_losses,
    unimodal_output,
)

#: Floor of the squared overfitting gain (keeps the weight of an objective that did not overfit finite).
OVERFIT_FLOOR = 1e-4


def blend_weights(previous: dict[str, tuple[float, float]], current: dict[str, tuple[float, float]],
                  weights: dict[str, float], floor: float = OVERFIT_FLOOR) -> dict[str, float]:
    """New weights from ``{objective: (train loss, val loss)}`` at two measurements (a missing or None
    loss leaves that objective at weight 0 this round); ``weights`` are kept when no objective gained."""
    raw = {}
    for key in weights:
        before, now = previous.get(key), current.get(key)
        if before is None or now is None or None in before or None in now:
            raw[key] = 0.0
            continue
        gain = before[1] - now[1]
        overfit = (now[1] - now[0]) - (before[1] - before[0])
        raw[key] = max(gain, 0.0) / max(overfit**2, floor)
    total = sum(raw.values())
    return dict(weights) if total <= 0 else {key: value / total for key, value in raw.items()}


class GradientBlending:
    """G-Blend (Wang et al., CVPR 2020): fused + uni-modal losses, blended by how well each generalises.

    The weights are generalisation gained over overfitting gained squared, re-estimated every
    ``every`` epochs on the validation split (see the module docstring)."""

    def __init__(self, every: int = 1) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"gblend: every (epochs between weight estimates) must be an int >= 1, got {every!r}")
        self.every = every
        self.weights: dict[str, float] = {}
        self.previous: dict[str, tuple[float, float]] | None = None

    @mmcore.hookimpl
    def mmcore_train_start(self, trainer) -> None:
        self.slots = check_multimodal(trainer, "gblend")
        keys = ["fused", *self.slots]
        self.weights = {key: 1.0 / len(keys) for key in keys}
        self.train_losses = StepStatistics(keys)

    @mmcore.hookimpl
    def mmcore_train_loss(self, trainer, batch, output):
        targets = batch["targets"]
        counted = trainer.micro_batch_weight != 0  # (a distributed process's placeholder batch counts nowhere)
        if counted:
            self.train_losses.add("fused", output.loss.detach() * len(targets), float(len(targets)))
        term = (self.weights["fused"] - 1.0) * output.loss
        for slot in self.slots:
            found = unimodal_output(trainer.model, output.features, slot, targets)
            if found is None:
                continue
            out, rows = found
            if counted:
                self.train_losses.add(slot, out.loss.detach() * len(rows), float(len(rows)))
            term = term + self.weights[slot] * out.loss
        return {"gblend": term}

    @mmcore.hookimpl(tryfirst=True)
    def mmcore_epoch_end(self, trainer, epoch, metrics) -> None:
        for key, value in self.weights.items():  # the weights this epoch trained with
            metrics[f"balancer/{key}"] = value
        train = self.train_losses.means(trainer)
        if epoch % self.every:
            return
        split = "val" if len(trainer.datasets["val"]) else "train"
        val = component_losses(trainer, trainer.datasets[split], self.slots)
        current = {key: (train.get(key), val.get(key)) for key in self.weights}
        if self.previous is not None:
            self.weights = blend_weights(self.previous, current, self.weights)
        self.previous = current


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_balancer("gblend", GradientBlending)
