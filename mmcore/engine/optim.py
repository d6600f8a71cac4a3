"""The optimiser and its schedule: AdamW over parameter groups, linear warmup then cosine decay.

timm's ``optim/`` (``param_groups_weight_decay``: no decay on 1-D parameters) and ``scheduler/``
(``CosineLRScheduler`` with warmup) are the model; the schedule here is a factor for
``torch.optim.lr_scheduler.LambdaLR``, stepped once per optimiser step, so its state is
PyTorch's own and resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from mmcore.errors import ConfigError, ConfigIssue

__all__ = ["parameter_groups", "adamw", "warmup_cosine", "build_optimizer", "build_scheduler"]


def warmup_cosine(total_steps: int, warmup_fraction: float, min_ratio: float = 0.0) -> Callable[[int], float]:
    """The learning-rate factor of step ``step`` (0-based): linear warmup over ``warmup_fraction``
    of ``total_steps`` (at least one step when the fraction is > 0), from ``1/warmup`` to 1, then
    half a cosine from 1 down to ``min_ratio`` at ``total_steps`` (Loshchilov & Hutter, SGDR, 2017,
    without restarts); ``min_ratio`` after that."""
    warmup = max(1, int(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def parameter_groups(model: torch.nn.Module, lr: float, weight_decay: float, multipliers: Mapping[str, float]) -> list[dict]:
    """AdamW groups: per-component learning rates (longest matching module-path prefix wins), and
    no weight decay on 1-D parameters (biases, norms, placeholders). Frozen parameters are left out.

    Each group has ``params``, ``lr`` (``lr * multiplier``), ``weight_decay`` and ``lr_multiplier``;
    groups are ordered by (multiplier, decayed), so the order is stable across runs (resume).

    :raises ConfigError: a prefix of ``multipliers`` matches no trainable parameter
        (``trainer.lr_multipliers.<prefix>``).
    """
    ordered = sorted(multipliers.items(), key=lambda kv: -len(kv[0]))
    used = {prefix: False for prefix in multipliers}
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        multiplier = 1.0
        for prefix, value in ordered:
            if name == prefix or name.startswith(prefix + "."):
                multiplier, used[prefix] = float(value), True
                break
        groups.setdefault((multiplier, param.ndim > 1), []).append(param)
    unused = [prefix for prefix, hit in used.items() if not hit]
    if unused:
        raise ConfigError([ConfigIssue(f"trainer.lr_multipliers.{p}", "matches no trainable parameter of the model") for p in unused])
    return [
        {"params": params, "lr": lr * multiplier, "weight_decay": weight_decay if decay else 0.0, "lr_multiplier": multiplier}
        for (multiplier, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]


def adamw(groups: list[dict], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter, 2019) over ``groups``: the fused implementation (one kernel per
    parameter) wherever every parameter allows it, else PyTorch's default one.

    Both compute the same update, up to float rounding; fused takes about a third of the default's
    time on a small CPU model (benchmarks/RESULTS.md), where the default's per-tensor Python loop
    costs more than the arithmetic. It needs floating-point parameters on a device PyTorch has the
    kernel for (CPU, CUDA, ...), which AdamW checks as it is built.
    """
    try:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # "`fused=True` requires all the params to be floating point Tensors of supported devices"
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def build_optimizer(model: torch.nn.Module, options) -> torch.optim.AdamW:
    """AdamW for ``model`` from the trainer options (``lr``, ``weight_decay``, ``lr_multipliers``)."""
    groups = parameter_groups(model, options.lr, options.weight_decay, options.lr_multipliers)
    return adamw(groups, options.lr, options.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, options) -> torch.optim.lr_scheduler.LambdaLR:
    """The warmup-cosine schedule over ``total_steps`` optimiser steps (``warmup_fraction``, ``min_lr_ratio``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, options.warmup_fraction, options.min_lr_ratio))
