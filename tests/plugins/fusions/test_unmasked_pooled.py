"""Fusions that select by ``present`` read ``Features.unmasked_pooled``: same result, no zeroing.

An encoder's ``Features.from_pooled`` zeroes absent samples only when ``pooled`` (or ``tokens``) is
read. The fusions below reach each pooled vector only through row-wise layers and a selection by
``present``, so they read ``unmasked_pooled`` and the zeroing -- a multiplication forward and
backward per modality and step -- never runs; their output and gradients must not change.
"""

from __future__ import annotations

import pytest
import torch
from test_fusions_fuse import OPTIONS

import mmcore
from mmcore import Features

SELECTING = ["concat", "weighted_concat", "sum", "mean", "deepset", "late", "gated", "multiplicative",
             "tensor", "low_rank_tensor", "mcb", "mfb", "mutan", "block"]
PRESENT = {"a": [True, True, False, True, False, True], "b": [True, False, True, True, True, False]}


@pytest.mark.parametrize("name", SELECTING)
def test_selecting_fusion_skips_the_zeroing_and_computes_the_same(name):
    torch.manual_seed(0)
    fusion = mmcore.get_registry().get("fusion", name).factory(input_dims={"a": 16, "b": 16}, dim=16, **OPTIONS.get(name, {}))
    fusion.eval()  # no dropout: the two passes must be comparable
    # Absent samples hold large finite values, as an encoder run on a placeholder input would.
    raw = {s: (torch.randn(6, 16) * torch.where(torch.tensor(p)[:, None], 1.0, 50.0)).requires_grad_() for s, p in PRESENT.items()}
    lazy = {s: Features.from_pooled(raw[s], torch.tensor(PRESENT[s])) for s in raw}
    out_lazy = fusion(lazy).pooled
    assert all(lazy[s].unmasked_pooled is raw[s] for s in raw), f"{name} read pooled/tokens: the zeroing ran"
    weights = torch.randn(out_lazy.shape)
    grads_lazy = torch.autograd.grad((out_lazy * weights).sum(), list(raw.values()))

    eager = {s: Features.from_pooled(raw[s], torch.tensor(PRESENT[s])) for s in raw}
    for feats in eager.values():
        feats.pooled  # zero now, as before the zeroing was made lazy  # noqa: B018
    out_eager = fusion(eager).pooled
    grads_eager = torch.autograd.grad((out_eager * weights).sum(), list(raw.values()))
    assert torch.allclose(out_lazy, out_eager, atol=1e-5)
    for lazy_grad, eager_grad in zip(grads_lazy, grads_eager, strict=True):
        assert torch.allclose(lazy_grad, eager_grad, atol=1e-5)
