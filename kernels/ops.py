"""``torch.library`` registration of the mmcore_kernels ops.

Importing this module registers (once per process):

* ``torch.ops.mmcore_kernels.cross_attention(q, k, v, kv_lens?, key_padding_mask?, scale) -> (out, lse)``
* ``torch.ops.mmcore_kernels.cross_attention_backward(grad_out, q, k, v, out, lse, kv_lens?, key_padding_mask?, scale) -> (dq, dk, dv)``
* ``torch.ops.mmcore_kernels.concat_linear(xs, weight, bias?) -> out``
* ``torch.ops.mmcore_kernels.concat_linear_grad_weight(grad_out, xs) -> dweight``

Each op has one implementation that branches on the device: CUDA tensors (with Triton importable
and a supported shape) run the Triton launchers, everything else runs the PyTorch reference. Where
``torch.library.triton_op`` exists (torch >= 2.6) the forward/backward ops are ``triton_op``s and
the launchers call their kernels through ``wrap_triton``, so ``torch.compile`` and ``torch.export``
see the kernels themselves; on older torch they are opaque ``custom_op``s with a fake kernel.
Autograd is attached with ``register_autograd``; the LSE output of ``cross_attention`` is marked
non-differentiable (it exists for the backward).

This module imports Triton (``triton_op`` inspects the kernels it wraps), which is why
``mmcore_kernels`` imports it lazily: on the first Triton call on CUDA, or explicitly.

The Triton-interpreter path (CPU tensors, ``TRITON_INTERPRET=1``) does not come through here: an
interpreted kernel cannot be traced by ``wrap_triton``, and these ops' CPU branch is the PyTorch
reference by design, so the public API calls ``CrossAttentionFunction``/``ConcatLinearFunction``
(same launchers, plain ``autograd.Function``) for it.
"""

import torch
from torch import Tensor

from . import reference
from ._dispatch import triton_import_error
from ._validate import triton_concat_linear_unsupported, triton_cross_attention_unsupported

__all__ = ["NAMESPACE", "concat_linear", "cross_attention"]

NAMESPACE = "mmcore_kernels"

_HAS_TRITON_OP = hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _use_triton_attention(q: Tensor) -> bool:
    return (
        q.device.type == "cuda"
        and triton_import_error() is None
        and triton_cross_attention_unsupported(q) is None
    )


def _use_triton_concat_linear(xs: list[Tensor]) -> bool:
    return (
        xs[0].device.type == "cuda"
        and triton_import_error() is None
        and triton_concat_linear_unsupported(xs) is None
    )


# ------------------------------------------------------------------------------------------------
# cross_attention
# ------------------------------------------------------------------------------------------------


def _cross_attention_impl(q, k, v, kv_lens, key_padding_mask, scale):
    if _use_triton_attention(q):
        from .triton_cross_attention import cross_attention_forward

        return cross_attention_forward(q, k, v, kv_lens, key_padding_mask, scale)
    out = reference.cross_attention_reference(
        q, k, v, kv_lens=kv_lens, key_padding_mask=key_padding_mask, scale=scale
    ).contiguous()
    valid = reference.key_valid_mask(q.shape[0], k.shape[1], kv_lens, key_padding_mask, q.device)
    return out, reference.cross_attention_lse(q, k, valid, scale).to(_lse_dtype(q.dtype))


def _cross_attention_backward_impl(grad_out, q, k, v, out, lse, kv_lens, key_padding_mask, scale):
    if _use_triton_attention(q):
        from .triton_cross_attention import cross_attention_backward

        return cross_attention_backward(grad_out, q, k, v, out, lse, kv_lens, key_padding_mask, scale)
    valid = reference.key_valid_mask(q.shape[0], k.shape[1], kv_lens, key_padding_mask, q.device)
    return reference.cross_attention_backward_reference(grad_out, q, k, v, out, lse, valid, scale)


def _cross_attention_fake(q, k, v, kv_lens, key_padding_mask, scale):
    b, lq, h, d = q.shape
    return q.new_empty((b, lq, h, d)), q.new_empty((b, h, lq), dtype=_lse_dtype(q.dtype))


def _cross_attention_backward_fake(grad_out, q, k, v, out, lse, kv_lens, key_padding_mask, scale):
    return (
        q.new_empty(q.shape),
        k.new_empty(k.shape),
        v.new_empty(v.shape),
    )


# ------------------------------------------------------------------------------------------------
# concat_linear
# ------------------------------------------------------------------------------------------------


def _concat_linear_impl(xs, weight, bias):
    if _use_triton_concat_linear(xs):
        from .triton_concat_linear import concat_linear_forward

        return concat_linear_forward(xs, weight, bias)
    return reference.concat_linear_reference(xs, weight, bias)


def _concat_linear_fake(xs, weight, bias):
    return weight.new_empty((*xs[0].shape[:-1], weight.shape[0]))


def _concat_linear_grad_weight_impl(grad_out, xs):
    return reference.concat_linear_grad_weight(grad_out, xs)


def _concat_linear_grad_weight_fake(grad_out, xs):
    return grad_out.new_empty((grad_out.shape[-1], sum(x.shape[-1] for x in xs)))


# ------------------------------------------------------------------------------------------------
# Registration
# ------------------------------------------------------------------------------------------------

_SCHEMAS = {
    "cross_attention": (
        "(Tensor q, Tensor k, Tensor v, Tensor? kv_lens, Tensor? key_padding_mask, float scale) -> (Tensor, Tensor)"
    ),
    "cross_attention_backward": (
        "(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? kv_lens, "
        "Tensor? key_padding_mask, float scale) -> (Tensor, Tensor, Tensor)"
    ),
    "concat_linear": "(Tensor[] xs, Tensor weight, Tensor? bias) -> Tensor",
    "concat_linear_grad_weight": "(Tensor grad_out, Tensor[] xs) -> Tensor",
}


def _define(name, impl, fake, *, has_triton):
    qualname = f"{NAMESPACE}::{name}"
    if has_triton and _HAS_TRITON_OP:
        # triton_op registers ``impl`` itself as the fake kernel (it must be traceable; our impls
        # are: shapes are static and kernels go through wrap_triton).
        return torch.library.triton_op(qualname, impl, mutates_args=(), schema=_SCHEMAS[name])
    op = torch.library.custom_op(qualname, impl, mutates_args=(), schema=_SCHEMAS[name])
    op.register_fake(fake)
    return op


cross_attention_op = _define("cross_attention", _cross_attention_impl, _cross_attention_fake, has_triton=True)
cross_attention_backward_op = _define(
    "cross_attention_backward",
    _cross_attention_backward_impl,
    _cross_attention_backward_fake,
    has_triton=True,
)
concat_linear_op = _define("concat_linear", _concat_linear_impl, _concat_linear_fake, has_triton=True)
concat_linear_grad_weight_op = _define(
    "concat_linear_grad_weight",
    _concat_linear_grad_weight_impl,
    _concat_linear_grad_weight_fake,
    has_triton=False,
)


def _cross_attention_setup_context(ctx, inputs, output):
    q, k, v, kv_lens, key_padding_mask, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, kv_lens, key_padding_mask)
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _cross_attention_backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, kv_lens, key_padding_mask = ctx.saved_tensors
    if grad_out is None:
        return None, None, None, None, None, None
    dq, dk, dv = torch.ops.mmcore_kernels.cross_attention_backward(
        grad_out, q, k, v, out, lse, kv_lens, key_padding_mask, ctx.scale
    )
    need = ctx.needs_input_grad
    return (dq if need[0] else None, dk if need[1] else None, dv if need[2] else None, None, None, None)


cross_attention_op.register_autograd(_cross_attention_backward, setup_context=_cross_attention_setup_context)


def _concat_linear_setup_context(ctx, inputs, output):
    xs, weight, bias = inputs
    ctx.save_for_backward(weight, *xs)  # the original segments: no concatenation is ever saved
    ctx.num_xs = len(xs)
    ctx.has_bias = bias is not None


def _concat_linear_backward(ctx, grad_out):
    weight, *xs = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad
    n = weight.shape[0]
    # dX_i = dY W[:, off_i:off_i+K_i] (plain, traceable GEMMs on weight views); dW through an op
    # because it writes into column slices with out=, which tracing cannot express.
    dxs = reference.concat_linear_grad_inputs(grad_out, xs, weight) if need_x else None
    dw = torch.ops.mmcore_kernels.concat_linear_grad_weight(grad_out, xs) if need_w else None
    db = grad_out.reshape(-1, n).sum(0) if (need_b and ctx.has_bias) else None
    return dxs, dw, db


concat_linear_op.register_autograd(_concat_linear_backward, setup_context=_concat_linear_setup_context)


def cross_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kv_lens: Tensor | None,
    key_padding_mask: Tensor | None,
    scale: float,
) -> Tensor:
    """Call the registered op and return the attention output (inputs already validated)."""
    return torch.ops.mmcore_kernels.cross_attention(q, k, v, kv_lens, key_padding_mask, scale)[0]


def concat_linear(xs: list[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """Call the registered op (inputs already validated)."""
    return torch.ops.mmcore_kernels.concat_linear(list(xs), weight, bias)
