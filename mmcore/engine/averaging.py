"""An exponential moving average (EMA) of a model's weights, for validation, the best checkpoint and test.

``trainer.ema_decay: d`` keeps, beside the weights the optimiser moves, a shadow copy updated after
every optimiser step as ``shadow <- shadow + (1 - d_t) * (weights - shadow)`` — Polyak-Ruppert
averaging in its exponential form (Polyak & Juditsky 1992; the form of TensorFlow's
``ExponentialMovingAverage`` and timm's ``ModelEmaV3``). ``d_t = min(d, (1 + t) / (10 + t))`` after
``t`` updates, so the first steps (weights far from where training goes) are forgotten quickly
instead of dominating a short run. The update itself is PyTorch's
(:func:`torch.optim.swa_utils.get_ema_multi_avg_fn`, one fused ``lerp`` over every tensor).

Why: early stopping picks an epoch while the learning rate is still high, and one step's noise moves
the weights it picked; the average over the last ~1/(1 - d) steps is the better model on small data
(the same reason SWA works, Izmailov et al. 2018). Validation, the choice of the best epoch, the
``best/`` checkpoint (what predict, export and serve load) and the test pass all use the average;
``last/`` keeps the optimiser's own weights with the average in its training state, so ``--resume``
goes on exactly.

What is averaged: every floating-point parameter that trains and every floating-point buffer (norm
statistics); frozen parameters (a pretrained encoder kept fixed) are not copied at all.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["WeightEMA", "warmed_decay"]


def warmed_decay(decay: float, updates: int) -> float:
    """The decay used for update number ``updates + 1``: ``min(decay, (1 + updates) / (10 + updates))``."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightEMA:
    """The shadow weights of ``model`` (see the module docstring).

    ``decay`` in (0, 1): the weight of the old average per optimiser step (0.99 averages roughly the
    last 100 steps). Raises ``ValueError`` for a decay outside (0, 1).
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if isinstance(decay, bool) or not (isinstance(decay, (int, float)) and math.isfinite(decay) and 0.0 < decay < 1.0):
            raise ValueError(f"ema decay must be a number in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.model = model
        self.names: list[str] = []
        live: list[torch.Tensor] = []
        for name, param in model.named_parameters():
            if param.requires_grad and param.is_floating_point():
                self.names.append(name)
                live.append(param)
        for name, buffer in model.named_buffers():
            if buffer.is_floating_point():
                self.names.append(name)
                live.append(buffer)
        self._live = live
        self.shadow = [t.detach().clone() for t in live]
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        self._avg_fn = get_ema_multi_avg_fn  # called with each step's decay (it is warmed up)

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the live weights (after an optimiser step)."""
        decay = warmed_decay(self.decay, self.updates)
        self._avg_fn(decay)(self.shadow, [t.detach() for t in self._live], None)
        self.updates += 1

    @contextlib.contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the ``with`` block, the live ones restored after it
        (also when the block raises)."""
        saved = [t.detach().clone() for t in self._live]
        for target, value in zip(self._live, self.shadow, strict=True):
            target.copy_(value)
        try:
            yield
        finally:
            for target, value in zip(self._live, saved, strict=True):
                target.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "updates", "tensors": {name: CPU tensor}}`` — plain data for ``torch.save``."""
        return {"decay": self.decay, "updates": self.updates,
                "tensors": {n: t.detach().to("cpu", copy=True) for n, t in zip(self.names, self.shadow, strict=True)}}

    def check_state(self, state: Any, where: str) -> str | None:
        """What is wrong with ``state`` for this model (names, dtypes, shapes, finiteness), or None."""
        if not isinstance(state, Mapping) or set(state) != {"decay", "updates", "tensors"}:
            return f"{where} must hold decay, updates and tensors"
        updates = state["updates"]
        if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
            return f"{where}.updates must be an integer >= 0, got {updates!r}"
        tensors = state["tensors"]
        if not isinstance(tensors, Mapping) or list(tensors) != self.names:
            return f"{where}.tensors must name the model's {len(self.names)} averaged tensors in order"
        for name, live in zip(self.names, self.shadow, strict=True):
            value = tensors[name]
            if not isinstance(value, torch.Tensor) or value.dtype != live.dtype or value.shape != live.shape:
                shown = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
                return f"{where}.tensors[{name!r}] must be {live.dtype} {tuple(live.shape)}, got {shown}"
            if not bool(torch.isfinite(value).all()):
                return f"{where}.tensors[{name!r}] holds NaN or infinity"
        return None

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load a state checked by :meth:`check_state` (the decay stays the configured one)."""
        problem = self.check_state(state, "ema")
        if problem is not None:
            raise ValueError(problem)
        self.updates = int(state["updates"])
        for target, name in zip(self.shadow, self.names, strict=True):
            target.copy_(state["tensors"][name])
