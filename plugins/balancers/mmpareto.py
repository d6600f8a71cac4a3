"""`mmpareto`: MMPareto (Wei & Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal
Assistance", ICML 2024), for any number of modalities and with missing ones.

The model trains on the fused loss plus one uni-modal loss per modality, ``L = L_mm + sum_m L_m``
(``L_m``: the model's own fusion and head on ``m`` alone, over the samples that have ``m``). Encoder
``m``'s parameters get gradients from two objectives, ``g_mm`` (from ``L_mm``) and ``g_m`` (from
``L_m``; no other uni-modal loss reaches encoder ``m``), which can conflict. Per optimiser step and
encoder, with the gradients flattened over the encoder's parameters::

    if cos(g_mm, g_m) > 0:  (a_mm, a_m) = (1/2, 1/2)
    else:                   (a_mm, a_m) = argmin_{a in simplex} |a_mm g_mm + a_m g_m|^2     (MGDA, two tasks:
                            a_mm = clip((|g_m|^2 - g_mm.g_m) / |g_mm - g_m|^2, 0.001, 0.999))
    per parameter tensor:   g' = 2 a_mm g_mm + 2 a_m g_m
                            g  <- gamma * max(1, |g_mm + g_m| / |g'|) * g'

-- the reference code's magnitude rule: the combined gradient is never shorter than the plain sum,
and ``gamma`` (1.5 there) enlarges it. Fusion and head parameters get the plain sum of all the
losses' gradients (the paper's uni-modal heads are separate; here the uni-modal path is the model's
own, see ``_common``). ``g_m`` is computed with ``torch.autograd.grad`` in the training step (one
extra backward through encoder ``m``), weighted like ``p.grad`` (``trainer.micro_batch_weight``,
summed over processes); ``g_mm = p.grad - g_m``. The epoch's share of steps in conflict is reported
per slot as ``balancer/<slot>``; the uni-modal losses as ``train/mmpareto``. Works with any head
that returns a loss.
"""

from __future__ import annotations

import math

import torch

import mmcore
from mmcore_plugins.balancers._common import (
    GradientStash,
    check_multimodal,
    encoder_parameters,
    epoch_metrics,
    own_gradients,
    unimodal_output,
)


def pareto_weights(g_mm: torch.Tensor, g_m: torch.Tensor) -> tuple[float, float, bool]:
    """``(a_mm, a_m, conflict)`` for two flattened gradients (see the module docstring)."""
    dot = float(g_mm.double() @ g_m.double())
    nn_mm, nn_m = float(g_mm.double() @ g_mm.double()), float(g_m.double() @ g_m.double())
    if nn_mm == 0.0 or nn_m == 0.0 or dot > 0.0:  # (a zero gradient conflicts with nothing)
        return 0.5, 0.5, False
    # min_c |c g_mm + (1 - c) g_m|^2 over [0, 1]; Sener & Koltun 2018's two-task solver, clipped as theirs
    if dot >= nn_mm:
        c = 0.999
    elif dot >= nn_m:
        c = 0.001
    else:
        c = (nn_m - dot) / (nn_mm + nn_m - 2.0 * dot)
    return c, 1.0 - c, True


class MMPareto:
    """MMPareto (Wei & Hu, ICML 2024): fused + uni-modal losses, conflicts resolved per encoder.

    Where an encoder's two gradients conflict, their min-norm (Pareto) combination, rescaled,
    replaces the sum (see the module docstring)."""

    def __init__(self, gamma: float = 1.5) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"mmpareto: gamma must be a positive number, got {gamma!r}")
        self.gamma = float(gamma)
        self.stash = GradientStash()
        self.conflicts: dict[str, list[float]] = {}
        self.last: dict[str, tuple[float, float, bool]] = {}

    @mmcore.hookimpl
    def mmcore_train_start(self, trainer) -> None:
        self.slots = check_multimodal(trainer, "mmpareto")
        self.params = {slot: encoder_parameters(trainer.model, slot) for slot in self.slots}

    @mmcore.hookimpl
    def mmcore_train_loss(self, trainer, batch, output):
        targets = batch["targets"]
        total = None
        for slot in self.slots:
            found = unimodal_output(trainer.model, output.features, slot, targets)
            if found is None:
                continue
            loss = found[0].loss
            params = self.params[slot]
            if params:
                grads = own_gradients(trainer, loss, params)
                self.stash.add(slot, params, grads, trainer.micro_batch_weight)
            total = loss if total is None else total + loss
        return None if total is None else {"mmpareto": total}

    @mmcore.hookimpl
    def mmcore_before_optimizer_step(self, trainer) -> None:
        for slot in self.slots:
            params = self.params[slot]
            if not params:
                continue
            uni = self.stash.reduce(trainer, slot, params)  # every process reduces every slot
            live = [(p, g) for p, g in zip(params, uni, strict=True) if p.grad is not None]
            if not live:
                continue
            g_m = torch.cat([g.reshape(-1) for _, g in live])
            g_mm = torch.cat([(p.grad - g).reshape(-1) for p, g in live])
            a_mm, a_m, conflict = pareto_weights(g_mm, g_m)
            self.last[slot] = (a_mm, a_m, conflict)
            self.conflicts.setdefault(slot, []).append(float(conflict))
            for p, g in live:
                combined = 2.0 * a_mm * (p.grad - g) + 2.0 * a_m * g
                norm_new = torch.linalg.vector_norm(combined)
                ratio = torch.where(norm_new > 0, torch.linalg.vector_norm(p.grad) / norm_new, torch.ones_like(norm_new))
                p.grad.copy_(combined * (self.gamma * torch.clamp(ratio, min=1.0)))

    @mmcore.hookimpl(tryfirst=True)
    def mmcore_epoch_end(self, metrics) -> None:
        metrics.update(epoch_metrics(self.conflicts))
        self.conflicts = {}


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_balancer("mmpareto", MMPareto)
