"""``torch.library`` registration of the mmcore_kernels ops: importing this module registers them (once per process).

* ``torch.ops.mmcore_kernels.cross_attention(q, k, v, kv_lens?, key_padding_mask?, scale) -> (out, lse)``
* ``torch.ops.mmcore_kernels.cross_attention_backward(grad_out, q, k, v, out, lse, kv_lens?, key_padding_mask?, scale) -> (dq, dk, dv)``
* ``torch.ops.mmcore_kernels.concat_linear(xs, weight, bias?) -> out``
* ``torch.ops.mmcore_kernels.concat_linear_grad_weight(grad_out, xs) -> dweight``

Each op's implementations, fake kernels, schema and autograd live in its own module
(``cross_attention_op.register``, ``concat_linear_op.register``); this module holds what they share
(:func:`define`) and runs the registrations. Each op has one implementation that branches on the
device: CUDA tensors (with Triton importable and a supported shape) run the Triton launchers,
everything else runs the PyTorch reference. Where ``torch.library.triton_op`` exists (torch >= 2.6)
the forward/backward ops are ``triton_op``s and the launchers call their kernels through
``wrap_triton``, so ``torch.compile`` and ``torch.export`` see the kernels themselves; on older torch
they are opaque ``custom_op``s with a fake kernel. The LSE output of ``cross_attention`` is marked
non-differentiable (it exists for the backward).

Registering imports Triton and torch's compiler stack (~1.5 s), which is why ``mmcore_kernels``
imports this module lazily: the public functions import it on their first Triton call on CUDA (an
``import`` statement, which torch.compile executes rather than traces), or import it explicitly.

The Triton-interpreter path (CPU tensors, ``TRITON_INTERPRET=1``) does not come through here: an
interpreted kernel cannot be traced by ``wrap_triton``, and these ops' CPU branch is the PyTorch
reference by design, so the public API calls ``CrossAttentionFunction``/``ConcatLinearFunction``
(same launchers, plain ``autograd.Function``) for it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import concat_linear_op, cross_attention_op

__all__ = ["NAMESPACE", "concat_linear", "cross_attention", "define"]

NAMESPACE = "mmcore_kernels"

_HAS_TRITON_OP = hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")


def define(name: str, schema: str, impl: Callable, fake: Callable, *, has_triton: bool):
    """Register ``mmcore_kernels::<name>``: a ``triton_op`` when it launches Triton kernels (and torch
    has ``triton_op``), else a ``custom_op`` with ``fake`` as its fake kernel. Returns the op."""
    qualname = f"{NAMESPACE}::{name}"
    if has_triton and _HAS_TRITON_OP:
        # triton_op registers ``impl`` itself as the fake kernel (it must be traceable; our impls
        # are: shapes are static and kernels go through wrap_triton).
        return torch.library.triton_op(qualname, impl, mutates_args=(), schema=schema)
    op = torch.library.custom_op(qualname, impl, mutates_args=(), schema=schema)
    op.register_fake(fake)
    return op


cross_attention_op.register(define)
concat_linear_op.register(define)

#: The registered ops called with validated inputs: ``cross_attention(q, k, v, kv_lens, key_padding_mask, scale)``
#: (the attention output) and ``concat_linear(xs, weight, bias)``.
cross_attention = cross_attention_op.call_registered
concat_linear = concat_linear_op.call_registered
