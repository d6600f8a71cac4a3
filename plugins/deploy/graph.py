"""The module that is exported: the graph's named input tensors -> each slot's in-graph front end ->
the trained :class:`~mmcore.MultimodalModel` -> its head's output tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmcore_plugins.deploy.inputs import SlotExport, dim_name

#: The head output fields that become graph outputs first, in this order; tensor extras follow by name.
FIRST_OUTPUTS = ("logits", "predictions")


class ExportModule(nn.Module):
    """``forward(*inputs)`` in :attr:`input_names` order -> the output tensors in :attr:`output_names` order.

    Every slot is an input (its ``present`` flag says which records have it), so the graph takes
    any subset of modalities per record; outputs are ``logits``, ``predictions`` and the head's
    tensor ``extras`` (e.g. ``probabilities``). :meth:`probe` fixes the output names.
    """

    def __init__(self, model: nn.Module, slots: Sequence[SlotExport]) -> None:
        super().__init__()
        self.model = model
        self.slots = list(slots)
        self.front = nn.ModuleDict({dim_name(s.slot, "input"): s.module for s in self.slots})
        self.input_names = [i.name for s in self.slots for i in s.inputs]
        self.output_names: list[str] = []

    def model_inputs(self, tensors: Sequence[torch.Tensor]) -> dict[str, Any]:
        named = dict(zip(self.input_names, tensors, strict=True))
        return {s.slot: self.front[dim_name(s.slot, "input")](*(named[i.name] for i in s.inputs)) for s in self.slots}

    def outputs(self, out: Any) -> dict[str, torch.Tensor]:
        found = {name: getattr(out, name) for name in FIRST_OUTPUTS}
        for name in sorted(out.extras):
            value = out.extras[name]
            if isinstance(value, torch.Tensor):
                found[name] = value
        return found

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.outputs(self.model(self.model_inputs(tensors)))
        return tuple(out[name] for name in self.output_names) if self.output_names else tuple(out.values())

    @torch.no_grad()
    def probe(self, small: Sequence[torch.Tensor], large: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        """Run two batches of different sizes; fix :attr:`output_names` and return the outputs' specs
        (dtype, shape with "batch" where the size follows the batch)."""
        a = self.outputs(self.model(self.model_inputs(small)))
        b = self.outputs(self.model(self.model_inputs(large)))
        self.output_names = list(a)
        specs = []
        for name in self.output_names:
            sa, sb = list(a[name].shape), list(b[name].shape)
            shape = ["batch" if x != y else x for x, y in zip(sa, sb, strict=True)] if len(sa) == len(sb) else sa
            specs.append({"name": name, "dtype": str(a[name].dtype).replace("torch.", ""), "shape": shape})
        return specs
