"""The optimiser and its schedule: AdamW over parameter groups, linear warmup then cosine decay.

timm's ``optim/`` (``param_groups_weight_decay``: no decay on 1-D parameters) and ``scheduler/``
(``CosineLRScheduler`` with warmup) are the model; the schedule here is a factor for
``torch.optim.lr_scheduler.LambdaLR``, stepped once per optimiser step, so its state is
PyTorch's own and resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from mmcore.errors import ConfigError, ConfigIssue

__all__ = ["parameter_groups", "adamw", "warmup_cosine", "build_optimizer", "build_scheduler", "schedule_factor"]


def warmup_cosine(total_steps: int, warmup_fraction: float, min_ratio: float = 0.0,
                  extensions: Sequence[tuple[int, int]] = ()) -> Callable[[int], float]:
    """The learning-rate factor of step ``step`` (0-based): linear warmup over ``warmup_fraction``
    of ``total_steps`` (at least one step when the fraction is > 0), from ``1/warmup`` to 1, then
    half a cosine from 1 down to ``min_ratio`` at ``total_steps`` (Loshchilov & Hutter, SGDR, 2017,
    without restarts); ``min_ratio`` after that.

    ``extensions``: ``(step, new_total_steps)`` pairs, steps increasing, each a horizon that grew
    while training ran (:meth:`~mmcore.engine.trainer.Trainer.extend`). From ``step`` on, the
    schedule is a new half cosine from the factor it had reached at ``step`` down to ``min_ratio``
    at ``new_total_steps``: the rate is continuous at the change (the step that follows uses the
    rate it would have used anyway -- never a jump back up, which would undo what the decay
    settled) and decays more slowly over the longer horizon. Every step before ``step`` keeps its
    factor, so a run that grew and a run built from its recorded horizons agree step for step. A
    change during the warmup keeps the warmup's steps and stretches the cosine to the new total; a
    change at or after the old horizon continues at ``min_ratio``.
    """
    warmup = max(1, int(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0

    def cosine(step: int, start: int, height: float, end: int) -> float:
        progress = min(1.0, (step - start) / max(1, end - start))
        return min_ratio + (height - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    # (first step, the factor there, last step) of each half cosine, in order
    pieces = [(warmup, 1.0, total_steps)]
    for at, new_total in extensions:
        if at <= warmup:  # still warming up: the same warmup, one cosine over the new horizon
            pieces = [(warmup, 1.0, new_total)]
        else:
            pieces.append((at, cosine(at, *pieces[-1]), new_total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        piece = pieces[0]
        for candidate in pieces[1:]:
            if step < candidate[0]:
                break
            piece = candidate
        return cosine(step, *piece)

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


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, options,
                    steps_per_epoch: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """The warmup-cosine schedule over ``total_steps`` optimiser steps (``warmup_fraction``,
    ``min_lr_ratio``), with the horizons the run grew to (``schedule_extensions``, which needs
    ``steps_per_epoch``: :func:`schedule_factor`)."""
    factor = schedule_factor(options, total_steps, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def schedule_factor(options, total_steps: int, steps_per_epoch: int | None = None) -> Callable[[int], float]:
    """The factor of :func:`warmup_cosine` for the trainer options: over ``total_steps``, or, with
    ``options.schedule_extensions`` (``[[after_epoch, from_epochs, to_epochs], ...]``, checked by the
    config), planned over ``from_epochs`` of the first entry and re-targeted at step ``after_epoch *
    steps_per_epoch`` to ``to_epochs * steps_per_epoch`` for each entry (``total_steps`` is then
    the last horizon). Raises ValueError for extensions without ``steps_per_epoch``."""
    extensions = list(getattr(options, "schedule_extensions", None) or [])
    if not extensions:
        return warmup_cosine(total_steps, options.warmup_fraction, options.min_lr_ratio)
    if not steps_per_epoch:
        raise ValueError("schedule_extensions are in epochs: the schedule needs steps_per_epoch")
    planned = int(extensions[0][1]) * steps_per_epoch
    changes = [(int(after) * steps_per_epoch, int(to) * steps_per_epoch) for after, _, to in extensions]
    return warmup_cosine(planned, options.warmup_fraction, options.min_lr_ratio, changes)
