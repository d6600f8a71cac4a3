"""`ogm_ge`: On-the-fly Gradient Modulation with Generalisation Enhancement (Peng, Wei, Deng, Wang & Hu,
"Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022), for any number of
modalities and with missing ones.

Each optimiser step, per modality ``m``: the score ``s_m`` is the mean, over the step's samples
that have ``m``, of the probability the model's prediction from ``m`` alone gives the true class,
``softmax(f(x_m))[y]`` (the paper sums it over the batch; a mean makes modalities present in
different numbers of samples comparable, and is the paper's ratio when every sample has both).
The discrepancy ratio compares it with the other modalities, and the dominant ones' encoders get
their gradients scaled down::

    rho_m = s_m / mean_{j != m} s_j            (M = 2: the paper's s_a / s_v)
    k_m   = 1 - tanh(alpha * rho_m)   if rho_m > 1,   else 1
    g    <- k_m * g + N(0, std(g)^2)    for each weight tensor g of encoder m  (GE; `OGM` without the noise)

(the noise, the paper's generalisation enhancement, is added to every encoder's weight tensors --
not its biases or other 1-D parameters, as in the reference code -- with the standard deviation of
that gradient tensor, drawn from a generator seeded by the run's seed and the step, so every
process adds the same). The modulation applies in epochs ``start_epoch..end_epoch``. The mean
coefficient of each slot over the epoch is reported as ``balancer/<slot>``.

``f(x_m)`` is the model's own fusion and head on ``m`` alone (see ``_common``): the paper's
``W_m x_m + b/2`` for a concatenation fusion and a linear head, generalised to any fusion and head.
Needs a classification head.
"""

from __future__ import annotations

import math

import torch

import mmcore
from mmcore_plugins.balancers._common import (
    StepStatistics,
    check_multimodal,
    check_window,
    class_targets,
    encoder_parameters,
    epoch_metrics,
    in_window,
    unimodal_output,
)


def ogm_coefficients(scores: dict[str, float | None], alpha: float) -> dict[str, float]:
    """``k_m`` from the scores (None: the modality was in no sample of the step -> 1)."""
    known = {m: s for m, s in scores.items() if s is not None}
    out = {}
    for m in scores:
        others = [s for j, s in known.items() if j != m]
        if m not in known or not others or sum(others) <= 0:
            out[m] = 1.0
            continue
        rho = known[m] / (sum(others) / len(others))
        out[m] = 1.0 - math.tanh(alpha * rho) if rho > 1.0 else 1.0
    return out


class OGMGE:
    """OGM-GE (Peng et al., CVPR 2022): the dominant modalities' encoder gradients scaled down each step.

    By ``1 - tanh(alpha * rho)``, plus Gaussian gradient noise (``gradient_noise``); see the
    module docstring."""

    def __init__(self, alpha: float = 0.5, gradient_noise: bool = True, start_epoch: int = 1,
                 end_epoch: int | None = None) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"ogm_ge: alpha must be a positive number, got {alpha!r}")
        check_window("ogm_ge", start_epoch, end_epoch)
        self.alpha, self.gradient_noise = float(alpha), bool(gradient_noise)
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.stats: StepStatistics | None = None
        self.coefficients: dict[str, list[float]] = {}
        #: the last step's scores and coefficients (for tests and curious users)
        self.last: dict[str, dict[str, float | None]] = {}

    @mmcore.hookimpl
    def mmcore_train_start(self, trainer) -> None:
        self.slots = check_multimodal(trainer, "ogm_ge")
        self.stats = StepStatistics(self.slots)

    @mmcore.hookimpl
    def mmcore_train_loss(self, trainer, batch, output) -> None:
        targets = batch["targets"]
        class_targets(output, targets, "ogm_ge")
        if trainer.micro_batch_weight == 0:  # a distributed process's placeholder batch: no real sample
            return
        with torch.no_grad():
            for slot in self.slots:
                found = unimodal_output(trainer.model, output.features, slot, targets)
                if found is None:
                    continue
                out, rows = found
                p_true = out.logits.float().softmax(-1).gather(1, targets[rows, None]).squeeze(1)
                self.stats.add(slot, p_true.sum(), float(len(rows)))

    @mmcore.hookimpl
    def mmcore_before_optimizer_step(self, trainer, step) -> None:
        scores = self.stats.means(trainer)
        coefficients = ogm_coefficients(scores, self.alpha)
        self.last = {"scores": scores, "coefficients": coefficients}
        for slot, k in coefficients.items():
            self.coefficients.setdefault(slot, []).append(k)
        if not in_window(trainer.epoch, self.start_epoch, self.end_epoch):
            return
        generator = None
        for slot in self.slots:
            k = coefficients[slot]
            for p in encoder_parameters(trainer.model, slot):
                if p.grad is None:
                    continue
                noise = None
                if self.gradient_noise and p.grad.dim() > 1:
                    if generator is None:  # the same draws on every process: seeded by the run and the step
                        generator = torch.Generator(device=p.grad.device).manual_seed(trainer.options.seed * 1_000_003 + step)
                    # the standard deviation of the unscaled gradient (the reference code's); kept on the device
                    std = p.grad.std() + 1e-8 if p.grad.numel() > 1 else torch.full((), 1e-8, device=p.grad.device)
                    noise = torch.empty_like(p.grad).normal_(generator=generator).mul_(std)
                if k != 1.0:
                    p.grad.mul_(k)
                if noise is not None:
                    p.grad.add_(noise)

    @mmcore.hookimpl(tryfirst=True)
    def mmcore_epoch_end(self, metrics) -> None:
        metrics.update(epoch_metrics(self.coefficients))
        self.coefficients = {}


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_balancer("ogm_ge", OGMGE)
