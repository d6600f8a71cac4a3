"""`agm`: Adaptive Gradient Modulation (Li, Li, Hu & Zhang, "Boosting Multi-modal Model Performance with
Adaptive Gradient Modulation", ICCV 2023), for any number of modalities and with missing ones.

AGM measures each modality's *own* contribution to the prediction as its Shapley value on the
output: ``o_m = sum_S w(S) (f(S ∪ {m}) - f(S))`` over the coalitions ``S`` of the other modalities,
where ``f(S)`` are the logits computed from the modalities in ``S`` alone (the model's own fusion
and head with the others absent) -- exactly, over all ``2^M`` coalitions (sampled above 6
modalities: :mod:`mmcore_plugins.explain.shapley`). Per optimiser step, per modality ``m``, over
the samples that have ``m`` (a sample without it contributes nothing)::

    s_m      = mean( -log max(softmax(o_m)[y], 1e-8) )                  mono-modal cross-entropy
    r_m      = exp( M/(M-1) * (mean_j s_j - s_m) )                      = exp(s_v - s_a) for M = 2
    eta_m    = exp( M/(M-1) * (mean_j S_j - S_m) )                      the same from running means
    k_m      = exp( alpha * min(eta_m - r_m, 10) )
    S_m     <- S_m * (t - 1) / t + s_m / t                              (t: the steps m was seen in)

and every weight tensor of encoder ``m`` (not biases or other 1-D parameters, as in the reference
code) has its gradient multiplied by ``k_m``: a modality learning faster than its running
average (``r_m > eta_m``) is slowed, one falling behind is sped up. ``M`` counts the modalities
present in the step. The original derives ``r`` for two modalities; the ``M``-modality form is
BalanceBenchmark's (GeWu-Lab), whose sign is flipped here so that ``M = 2`` gives the paper's
``exp(s_v - s_a)``. Modulation applies in epochs ``start_epoch..end_epoch``; the epoch's mean
``k_m`` is reported as ``balancer/<slot>``. Needs a classification head.
"""

from __future__ import annotations

import math

import torch

import mmcore
from mmcore.engine.subsets import all_subsets
from mmcore_plugins.balancers._common import (
    StepStatistics,
    check_multimodal,
    check_window,
    class_targets,
    encoder_parameters,
    epoch_metrics,
    in_window,
)
from mmcore_plugins.explain.shapley import EXACT_MAX, coalition_values, exact_shapley, sampled_shapley


def agm_coefficients(scores: dict[str, float | None], running: dict[str, float], alpha: float) -> dict[str, float]:
    """``k_m`` from this step's mono-modal losses ``scores`` (None: not in the step -> 1) and the running
    means ``running`` (before this step's update)."""
    known = [m for m, s in scores.items() if s is not None]
    out = {m: 1.0 for m in scores}
    if len(known) < 2:
        return out
    factor = len(known) / (len(known) - 1)
    mean_now = sum(scores[m] for m in known) / len(known)
    mean_run = sum(running.get(m, 0.0) for m in known) / len(known)
    for m in known:
        ratio = math.exp(factor * (mean_now - scores[m]))
        optimal = math.exp(factor * (mean_run - running.get(m, 0.0)))
        out[m] = math.exp(alpha * min(optimal - ratio, 10.0))
    return out


class AGM:
    """AGM (Li et al., ICCV 2023): each encoder's gradients scaled toward its running balance.

    Mono-modal responses are the modalities' Shapley values on the logits; the scale is
    ``exp(alpha * (eta - r))`` (see the module docstring)."""

    def __init__(self, alpha: float = 0.5, start_epoch: int = 1, end_epoch: int | None = None, pairs: int = 16) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"agm: alpha must be a positive number, got {alpha!r}")
        if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 2:
            raise ValueError(f"agm: pairs (sampled orders above {EXACT_MAX} modalities) must be an int >= 2, got {pairs!r}")
        check_window("agm", start_epoch, end_epoch)
        self.alpha, self.pairs = float(alpha), pairs
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.running: dict[str, float] = {}
        self.seen: dict[str, int] = {}
        self.coefficients: dict[str, list[float]] = {}
        self.last: dict[str, dict[str, float | None]] = {}

    @mmcore.hookimpl
    def mmcore_train_start(self, trainer) -> None:
        self.slots = check_multimodal(trainer, "agm")
        self.stats = StepStatistics(self.slots)

    def shapley_outputs(self, model, features) -> torch.Tensor:
        """``[B, M, C]``: each modality's Shapley value on the logits (float64)."""
        m = len(self.slots)
        logits = lambda out, records: out.logits.float()  # noqa: E731
        if m <= EXACT_MAX:
            coalitions = all_subsets(m, device=next(iter(features.values())).present.device)
            return exact_shapley(coalition_values(model, features, coalitions, self.slots, logits))
        value_fn = lambda c: coalition_values(model, features, c, self.slots, logits)  # noqa: E731
        return sampled_shapley(value_fn, m, pairs=self.pairs, generator=torch.Generator().manual_seed(0))[0]

    @mmcore.hookimpl
    def mmcore_train_loss(self, trainer, batch, output) -> None:
        targets = batch["targets"]
        class_targets(output, targets, "agm")
        if trainer.micro_batch_weight == 0:  # a distributed process's placeholder batch: no real sample
            return
        with torch.no_grad():
            phi = self.shapley_outputs(trainer.model, output.features)
            for j, slot in enumerate(self.slots):
                present = output.features[slot].present
                if not bool(present.any()):
                    continue
                p_true = phi[present, j].softmax(-1).gather(1, targets[present, None]).squeeze(1)
                loss = -torch.log(p_true.clamp_min(1e-8))
                self.stats.add(slot, loss.sum(), float(int(present.sum())))

    @mmcore.hookimpl
    def mmcore_before_optimizer_step(self, trainer) -> None:
        scores = self.stats.means(trainer)
        coefficients = agm_coefficients(scores, self.running, self.alpha)
        for m, s in scores.items():  # the running means, updated after the coefficients used them
            if s is not None:
                t = self.seen[m] = self.seen.get(m, 0) + 1
                self.running[m] = self.running.get(m, 0.0) * (t - 1) / t + s / t
        self.last = {"scores": scores, "coefficients": coefficients}
        for slot, k in coefficients.items():
            self.coefficients.setdefault(slot, []).append(k)
        if not in_window(trainer.epoch, self.start_epoch, self.end_epoch):
            return
        for slot, k in coefficients.items():
            if k == 1.0:
                continue
            for p in encoder_parameters(trainer.model, slot):
                if p.grad is not None and p.grad.dim() > 1:
                    p.grad.mul_(k)

    @mmcore.hookimpl(tryfirst=True)
    def mmcore_epoch_end(self, metrics) -> None:
        metrics.update(epoch_metrics(self.coefficients))
        self.coefficients = {}


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_balancer("agm", AGM)
