"""Structured pruning of a trained model into a smaller model of the same kind, which a config describes.

The pruned model is not a masked copy: it is the model a *smaller config* builds -- fewer conv
channels (``width``), narrower feed-forward and hidden layers (``ff_dim``, ``hidden``) -- with the
trained model's most important channels copied into it. Its matrix products and convolutions are
smaller, so it runs faster; and because its ``model.json`` holds an ordinary spec, it loads,
evaluates, exports and serves like any model (``mmcore.engine.checkpoint.load_model``).

A component takes part by declaring two things on its class (the built-in ``image_cnn`` and
``audio_cnn`` (``width``), ``text_transformer`` (``ff_dim``), ``tabular_mlp`` and ``classification``
(``hidden``) do):

* ``prunable_options = {"width": 8}``: the options that may shrink (option -> the multiple the
  pruned value is rounded to, e.g. 8 for group normalisation in groups of 8), each option's value
  (its default filled in) kept as an attribute of the same name. Options that set a component's
  *output* width (``dim``) are not pruned: they are what the next component reads;
* ``pruning_groups() -> [[(parameter, dim, block), ...], ...]``: the coupled channel dimensions
  those options control, one list per group: every ``(parameter name relative to the component,
  dimension, block)`` that holds one slice per channel -- a conv's output channels, its bias and
  norm, and the next layer's input channels; ``block`` > 1 when a channel owns ``block``
  consecutive entries (a flattened ``[C, H, W]`` map read by a linear layer).

Which channels survive: per group, the channels whose group importance is largest, where each
member's per-channel score is divided by its mean over the channels and the members are summed
(so a norm's weights near 1 and a conv's near 0.05 count alike, as DepGraph's "mean" normaliser:
Fang et al. 2023): ``magnitude`` scores the L2 norm of the channel's slice (Li et al. 2017,
"Pruning filters for efficient convnets", over the whole group); ``taylor`` the first-order Taylor
estimate of the loss change ``|sum w * dL/dw|`` over the slice on a few training batches (Molchanov
et al. 2019). Everything else is removed for real. Fine-tuning (an ordinary training run with
``trainer.init``, :mod:`.command`) then recovers the accuracy.

torch-pruning (its ``DependencyGraph``) was tried for finding the groups by tracing: on the
built-in encoders it coupled ``image_cnn``'s last conv with 32 of the 512 inputs of its
flattened-map projection instead of 16 per channel, missed the token projection reading the same
channels through a transpose, and missed ``audio_cnn``'s group norm (applied functionally over
real frames only) -- so each component states its groups itself, and this pass needs no
dependency beyond torch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mmcore.errors import ConfigError, ConfigIssue
from mmcore.model import MultimodalModel, build_model

IMPORTANCES = ("magnitude", "taylor")


@dataclass
class Change:
    """One shrunk option: ``model.<part>.<option>`` from ``before`` to ``after``."""

    path: str
    before: Any
    after: Any


@dataclass
class PruneResult:
    """The smaller model (weights from the trained one), its spec and what changed."""

    model: MultimodalModel
    spec: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    groups: int = 0


def _shrink(value: Any, amount: float, multiple: int) -> Any:
    """``value`` (an int, or a list of ints) times ``1 - amount``, rounded to ``multiple`` (at least ``multiple``)."""
    if isinstance(value, (list, tuple)):
        return [_shrink(v, amount, multiple) for v in value]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a prunable option holds an int or a list of ints, got {value!r}")
    return max(multiple, int(round(value * (1.0 - amount) / multiple)) * multiple) if value > multiple else value


def _parts(model: MultimodalModel, spec: Mapping[str, Any]):
    """``(config path, kind, spec entry, module)`` of every component."""
    for slot, entry in spec["encoders"].items():
        yield f"model.encoders.{slot}", "encoder", entry, model.encoders[slot]
    if spec.get("fusion") is not None:
        yield "model.fusion", "fusion", spec["fusion"], model.fusion
    yield "model.head", "head", spec["head"], model.head


def smaller_spec(model: MultimodalModel, registry, amount: float) -> tuple[dict[str, Any], list[Change]]:
    """``model.spec`` with every declared prunable option (see the module docstring) shrunk by ``amount``.

    :raises ConfigError: ``amount`` is not in (0, 1), or no component declares a prunable option
        that is big enough to shrink.
    """
    if not 0.0 < amount < 1.0:
        raise ConfigError([ConfigIssue("--amount", f"the fraction of channels removed must be in (0, 1), got {amount}")])
    spec = copy.deepcopy(model.spec)
    changes = []
    for path, kind, entry, module in _parts(model, spec):
        declared = getattr(registry.get(kind, entry["name"]).factory, "prunable_options", None) or {}
        for option, multiple in declared.items():
            current = entry.get(option, getattr(module, option, None))
            if current is None:
                continue
            smaller = _shrink(current, amount, int(multiple))
            if smaller != current:
                entry[option] = smaller
                changes.append(Change(f"{path}.{option}", current, smaller))
    if not changes:
        raise ConfigError([ConfigIssue("--amount", f"nothing to prune at amount {amount}: no component of this model declares a "
                                                   "prunable option (prunable_options) wide enough to shrink")])
    return spec, changes


def groups_of(model: MultimodalModel) -> list[list[tuple[str, int, int]]]:
    """Every component's :meth:`pruning_groups`, with parameter names made model-wide."""
    out = []
    prefixes = [(f"encoders.{slot}.", m) for slot, m in model.encoders.items()]
    prefixes += [("fusion.", model.fusion)] if model.fusion is not None else []
    prefixes += [("head.", model.head)]
    for prefix, module in prefixes:
        declared = getattr(module, "pruning_groups", None)
        if callable(declared):
            out += [[(prefix + name, dim, block) for name, dim, block in group] for group in declared()]
    return out


def _channel_scores(group, params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor] | None, size: int) -> torch.Tensor:
    """One importance score per channel of ``group`` (see the module docstring)."""
    total = torch.zeros(size, dtype=torch.float64)
    for name, dim, block in group:
        w = params[name].detach().double()
        value = w if grads is None else w * grads[name].double()
        per = value.movedim(dim, 0).reshape(size, block, -1)
        score = per.pow(2).sum((1, 2)).sqrt() if grads is None else per.sum((1, 2)).abs()
        total += score / score.mean().clamp_min(1e-12)
    return total


def _select(tensor: torch.Tensor, dim: int, block: int, keep: torch.Tensor) -> torch.Tensor:
    """``tensor``'s slices along ``dim`` of the channels ``keep`` (each ``block`` entries long)."""
    if block == 1:
        return tensor.index_select(dim, keep)
    index = (keep[:, None] * block + torch.arange(block)[None, :]).reshape(-1)
    return tensor.index_select(dim, index)


def prune(model: MultimodalModel, registry, example_batches: Sequence[Mapping[str, Any]] = (), *, amount: float = 0.5,
          importance: str = "magnitude") -> PruneResult:
    """Prune ``model`` (left unchanged) into the model :func:`smaller_spec` describes.

    ``example_batches``: collated training batches (``model.collate``, with targets), used by
    ``taylor`` importance (the loss is backpropagated over all of them).

    :raises ConfigError: a bad ``amount`` or ``importance``, nothing prunable, ``taylor`` without
        batches. :raises RuntimeError: a component whose declared groups do not give the smaller
        config's shapes (the tensors that differ are named) -- a bug in that declaration.
    """
    from mmcore.engine.evaluation import to_device

    if importance not in IMPORTANCES:
        raise ConfigError([ConfigIssue("--importance", f"expected one of {', '.join(IMPORTANCES)}, got {importance!r}")])
    if importance == "taylor" and not example_batches:
        raise ConfigError([ConfigIssue("--importance", "taylor needs training batches to take gradients on")])
    spec, changes = smaller_spec(model, registry, amount)
    small = build_model(spec, registry)
    for slot, processor in model.processors.items():  # the processors' fitted state is the trained model's
        small.processors[slot].load_state_dict(processor.state_dict())
    params = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    grads = None
    if importance == "taylor":
        work = copy.deepcopy(model).cpu().eval()  # eval: no dropout, no augmentation in the estimate
        for batch in example_batches:
            inputs, targets = to_device(batch, "cpu")
            work(inputs, targets).loss.backward()
        grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach() for name, p in work.named_parameters()}
    target = small.state_dict()
    selected = dict(params)
    pruned = 0
    for group in groups_of(model):
        name, dim, block = group[0]
        size, wanted = params[name].shape[dim] // block, target[name].shape[dim] // block
        if wanted >= size:
            continue
        missing = [n for n, _, _ in group if grads is not None and n not in grads]
        scores = _channel_scores(group, params, None if grads is None or missing else grads, size)
        keep = torch.topk(scores, wanted).indices.sort().values  # the kept channels in their order
        for member, member_dim, member_block in group:
            selected[member] = _select(selected[member], member_dim, member_block, keep)
        pruned += 1
    wrong = [f"{k}: {tuple(selected[k].shape)} pruned vs {tuple(v.shape)} in the smaller config" for k, v in target.items()
             if selected[k].shape != v.shape]
    if wrong:
        raise RuntimeError("the pruned channels do not give the smaller config's shapes (a pruning_groups declaration that "
                           "does not match the component's layers?): " + "; ".join(wrong[:6]))
    small.load_state_dict({k: selected[k] for k in target})
    small.train(model.training)
    return PruneResult(model=small, spec=spec, changes=changes, groups=pruned)
