"""`mla`: Multimodal Learning with Alternating unimodal adaptation (Zhang, Yoon, Bansal & Yao,
"Multimodal Representation Learning by Alternating Unimodal Adaptation", CVPR 2024), for any number
of modalities and with missing ones.

MLA turns joint training into alternating uni-modal training through a *shared head*, so that no
modality can crowd out another: optimiser step ``t`` trains modality ``m = slots[t mod M]`` on its
uni-modal loss ``L_m`` (the model's own fusion and head on ``m`` alone, over the samples that have
``m``; a step whose batch has no sample with ``m`` adds no uni-modal term). To keep one modality's
update from undoing what the shared head learnt for the others, the head's gradient from ``L_m`` is
projected (orthogonal weight modification, Zeng et al. 2019, as MLA does) onto the orthogonal
complement of the other modalities' inputs to each linear layer of the head::

    G_W  <- G_W P_m                                   for each nn.Linear of the head, G_W = dL_m/dW
    P_j  <- P_j - (P_j x)(P_j x)^T / (alpha + x^T P_j x)   for every j != m, after the step
                                                      (x: the layer's mean input over the step's
                                                       samples of m; P_j starts as the identity)

so ``P_m`` spans what the other modalities have not used. The fused loss is kept with weight
``fused_weight`` (default 1): the model predicts through its fusion, which joint training of the
fused path teaches to combine the modalities -- MLA's own test-time fusion (uncertainty-weighted
uni-modal predictions) is not part of a model here. ``fused_weight: 0`` is the paper's pure
alternation (then the fused path is trained only through the modality-specific parts). The term
returned is ``mla = L_m + (fused_weight - 1) L_fused`` (``train/loss`` stays the fused loss); the
fraction of the epoch's steps that trained each slot is reported as ``balancer/<slot>``. Works with
any head that returns a loss; the projection applies to the head's ``nn.Linear`` layers (``projection:
false`` turns it off).
"""

from __future__ import annotations

import math

import torch

import mmcore
from mmcore_plugins.balancers._common import (
    GradientStash,
    check_multimodal,
    epoch_metrics,
    own_gradients,
    unimodal_output,
)


def owm_update(p: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """One recursive-least-squares update of an OWM projector ``p [D, D]`` with the input ``x [D]``."""
    k = p @ x
    return p - torch.outer(k, k) / (alpha + x @ k)


class MLA:
    """MLA (Zhang et al., CVPR 2024): one modality per optimiser step, round robin, through the shared head.

    The head's gradient from that modality is projected away from the other modalities' inputs
    (OWM); see the module docstring."""

    def __init__(self, fused_weight: float = 1.0, projection: bool = True, alpha: float = 0.1) -> None:
        for name, value, low in (("fused_weight", fused_weight, 0.0), ("alpha", alpha, 1e-12)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= low):
                raise ValueError(f"mla: {name} must be a number >= {low:g}, got {value!r}")
        self.fused_weight, self.projection, self.alpha = float(fused_weight), bool(projection), float(alpha)
        self.stash = GradientStash()
        self.turns: dict[str, list[float]] = {}

    @mmcore.hookimpl
    def mmcore_train_start(self, trainer) -> None:
        self.slots = check_multimodal(trainer, "mla")
        self.layers = [m for m in trainer.model.head.modules() if isinstance(m, torch.nn.Linear) and m.weight.requires_grad]
        #: one projector per (slot, head linear layer), on the layer's input width
        self.projectors = {(slot, i): torch.eye(layer.in_features, dtype=torch.float64, device=trainer.device)
                           for slot in self.slots for i, layer in enumerate(self.layers)}
        self._clear_inputs(trainer.device)

    def _clear_inputs(self, device) -> None:
        # per layer: its inputs summed over the step's rows of the trained slot, then the row count
        self.inputs = [torch.zeros(layer.in_features + 1, dtype=torch.float64, device=device) for layer in self.layers]

    def turn(self, trainer) -> str:
        """The slot optimiser step ``trainer.step + 1`` trains."""
        return self.slots[trainer.step % len(self.slots)]

    @mmcore.hookimpl
    def mmcore_train_loss(self, trainer, batch, output):
        slot = self.turn(trainer)
        term = (self.fused_weight - 1.0) * output.loss if self.fused_weight != 1.0 else None
        captured: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(self.layers))}

        def capture(index):
            return lambda module, args: captured[index].append(args[0].detach())

        handles = [layer.register_forward_pre_hook(capture(i)) for i, layer in enumerate(self.layers)] if self.projection else []
        try:
            found = unimodal_output(trainer.model, output.features, slot, batch["targets"])
        finally:
            for handle in handles:
                handle.remove()
        if found is None:
            return None if term is None else {"mla": term}
        loss = found[0].loss
        term = loss if term is None else term + loss
        if self.projection and self.layers:
            weights = [layer.weight for layer in self.layers]
            grads = own_gradients(trainer, loss, weights)
            self.stash.add(slot, weights, grads, trainer.micro_batch_weight)
            if trainer.micro_batch_weight != 0:  # (a distributed process's placeholder batch has no real input)
                for i, xs in captured.items():
                    for x in xs:
                        flat = x.reshape(-1, x.shape[-1]).double()
                        self.inputs[i][:-1] += flat.sum(0)
                        self.inputs[i][-1] += flat.shape[0]
        return {"mla": term}

    @mmcore.hookimpl
    def mmcore_before_optimizer_step(self, trainer) -> None:
        slot = self.turn(trainer)
        for s in self.slots:
            self.turns.setdefault(s, []).append(float(s == slot))
        if not (self.projection and self.layers):
            return
        weights = [layer.weight for layer in self.layers]
        uni = self.stash.reduce(trainer, slot, weights)  # the same reductions on every process
        sums = trainer.all_reduce_sum(torch.cat(self.inputs))
        for i, (layer, g) in enumerate(zip(self.layers, uni, strict=True)):
            if layer.weight.grad is not None:
                projected = (g.double() @ self.projectors[slot, i]).to(g.dtype)
                layer.weight.grad.add_(projected - g)
        offset = 0
        for i, layer in enumerate(self.layers):  # the other modalities' projectors learn this step's inputs
            part = sums[offset:offset + layer.in_features + 1]
            offset += layer.in_features + 1
            if part[-1] > 0:
                x = part[:-1] / part[-1]
                for other in self.slots:
                    if other != slot:
                        self.projectors[other, i] = owm_update(self.projectors[other, i], x, self.alpha)
        self._clear_inputs(trainer.device)

    @mmcore.hookimpl(tryfirst=True)
    def mmcore_epoch_end(self, metrics) -> None:
        metrics.update(epoch_metrics(self.turns))
        self.turns = {}


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_balancer("mla", MLA)
