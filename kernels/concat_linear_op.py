"""The ``concat_linear`` op: public function, input checks, PyTorch path and ``torch.library`` registration.

* :func:`concat_linear` — the public function (``mmcore_kernels.concat_linear``):
  ``F.linear(torch.cat(xs, -1), weight, bias)`` without materialising the concatenation; checks
  the inputs, picks a backend (``_dispatch``; auto consults ``_dispatch.concat_linear_prefers_triton``),
  runs the PyTorch path or the Triton GEMM (``triton_concat_linear.py``).
* :func:`check_concat_linear`, :func:`triton_concat_linear_unsupported` — input checks.
* :func:`concat_linear_reference` (per-segment ``addmm`` or ``cat`` + ``linear``, by size: the
  ``"torch"`` backend) and :func:`concat_linear_backward` / ``_grad_inputs`` / ``_grad_weight``
  (gradients from the original segments, used by every backend).
* :func:`register` — ``torch.ops.mmcore_kernels.concat_linear`` and ``concat_linear_grad_weight``
  with autograd; ``mmcore_kernels.ops`` calls it on first Triton use.

Nothing here imports Triton at module import time. The layout follows Liger-Kernel's
``ops/<op>.py`` (one module per op); the Triton kernel stays in ``triton_concat_linear.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _dispatch
from ._validate import FLOAT_DTYPES, require_tensor, shape_str, triton_dtype_problem

__all__ = [
    "CONCAT_LINEAR_ADDMM_FROM",
    "CONCAT_LINEAR_DEFAULT_METHOD",
    "check_concat_linear",
    "concat_linear",
    "concat_linear_backward",
    "concat_linear_grad_inputs",
    "concat_linear_grad_weight",
    "concat_linear_method",
    "concat_linear_reference",
    "register",
    "triton_concat_linear_unsupported",
]


def concat_linear(
    xs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """``F.linear(torch.cat(xs, -1), weight, bias)`` without materialising the concatenation.

    Args:
        xs: sequence of tensors ``[..., K_i]`` with identical leading dims (no broadcasting).
        weight: ``[N, sum K_i]``; bias: optional ``[N]``. One dtype and device for everything.
        backend: ``"torch"``, ``"triton"``, ``"auto"`` or None (= context / env / auto).

    Returns ``[..., N]``. The backward writes each ``dX_i`` directly and computes ``dW`` from the
    original segments, so no concatenated activation is built or saved on any backend.
    """
    xs = check_concat_linear(xs, weight, bias)
    choice = _dispatch.resolve_backend(
        "concat_linear",
        backend,
        weight.device,
        lambda: triton_concat_linear_unsupported(xs),
        lambda: _dispatch.concat_linear_prefers_triton(
            math.prod(xs[0].shape[:-1]), weight.shape[0], [x.shape[-1] for x in xs], weight.dtype),
    )
    if choice == "torch":
        return concat_linear_reference(xs, weight, bias)
    if _dispatch.triton_interpret_active():
        from .triton_concat_linear import ConcatLinearFunction

        return ConcatLinearFunction.apply(weight, bias, None, *xs)
    from . import ops  # noqa: F401  (registers the torch.library ops on first use; imports Triton)

    return call_registered(xs, weight, bias)

# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def check_concat_linear(
    xs: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None
) -> list[torch.Tensor]:
    """Validate ``concat_linear`` inputs; return ``xs`` as a list."""
    op = "concat_linear"
    if isinstance(xs, torch.Tensor) or not isinstance(xs, (list, tuple)):
        raise TypeError(
            f"{op}: xs must be a list or tuple of tensors [..., K_i], got {type(xs).__name__}"
            + (" (wrap a single tensor as [x])" if isinstance(xs, torch.Tensor) else "")
        )
    kind = type(xs).__name__
    xs = list(xs)
    if not xs:
        raise ValueError(f"{op}: xs must contain at least one tensor [..., K_i], got an empty {kind}")
    # Checks that only compare; messages are built when something is wrong (this runs on every
    # fusion step, where the Python around a small GEMM is a measurable share of the time).
    for i, x in enumerate(xs):
        if not isinstance(x, torch.Tensor):
            require_tensor(f"{op}: xs[{i}]", x)
        if x.dim() < 1:
            raise ValueError(f"{op}: xs[{i}] must have at least one dimension [..., K_i], got a 0-D tensor")
    if not isinstance(weight, torch.Tensor):
        require_tensor(f"{op}: weight", weight)
    if bias is not None and not isinstance(bias, torch.Tensor):
        require_tensor(f"{op}: bias", bias)
    first = xs[0]
    lead, dtype, device = first.shape[:-1], first.dtype, first.device
    for i, x in enumerate(xs):
        if x.shape[:-1] != lead:
            raise ValueError(
                f"{op}: every xs[i] must have the same leading dims as xs[0] {list(lead)} (no broadcasting), "
                f"got xs[{i}] of shape {shape_str(x)}"
            )
    same_dtype = weight.dtype == dtype and (bias is None or bias.dtype == dtype) and all(x.dtype == dtype for x in xs)
    if not same_dtype:
        got = ", ".join(f"xs[{i}]={x.dtype}" for i, x in enumerate(xs)) + f", weight={weight.dtype}"
        if bias is not None:
            got += f", bias={bias.dtype}"
        raise TypeError(f"{op}: xs, weight and bias must share one dtype, got {got}")
    if weight.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: expected a floating dtype in {[str(d) for d in FLOAT_DTYPES]}, got {weight.dtype}"
        )
    same_device = weight.device == device and (bias is None or bias.device == device) and all(x.device == device for x in xs)
    if not same_device:
        devices = {x.device for x in xs} | {weight.device} | ({bias.device} if bias is not None else set())
        raise ValueError(
            f"{op}: xs, weight and bias must be on one device, got {sorted(str(d) for d in devices)}"
        )
    if weight.dim() != 2:
        raise ValueError(f"{op}: weight must be 2-D [N, sum K_i], got shape {shape_str(weight)}")
    widths = [x.shape[-1] for x in xs]
    total = sum(widths)
    if weight.shape[1] != total:
        raise ValueError(
            f"{op}: weight must have sum K_i = {' + '.join(map(str, widths))} = {total} columns, "
            f"got weight of shape {shape_str(weight)}"
        )
    n = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"{op}: bias must have shape [N] = [{n}], got {shape_str(bias)}")
    return xs


def triton_concat_linear_unsupported(xs: Sequence[torch.Tensor]) -> str | None:
    """Why the Triton GEMM cannot take these (already validated) inputs, or ``None``."""
    return triton_dtype_problem(xs[0].dtype)

# ----------------------------------------------------------------------------------------------
# PyTorch path (the "torch" backend, the op's CPU branch, the backward of every backend)
# ----------------------------------------------------------------------------------------------


#: The fallback's method, chosen by measurement on CPU (2 cores, fp32, interleaved medians;
#: ``python benchmarks/bench_concat_linear.py`` reproduces this table).
#: Time of ``cat`` + ``linear`` divided by time of per-segment ``addmm`` (> 1: addmm wins):
#:
#: ===========  =================  =======  ================
#: M * sum(K)   M, segments        forward  forward+backward
#: ===========  =================  =======  ================
#: 16 K         128, 64+64         0.85     0.70
#: 98 K         128, 3 x 256       0.96     0.69
#: 197 K        128, 768+512+256   0.99     0.79
#: 1.0 M        8192, 64+64        0.98     0.97
#: 1.6 M        2048, 3 x 256      1.01     0.98
#: 3.1 M        2048, 768+512+256  1.05     1.09
#: 6.3 M        8192, 3 x 256      1.07     1.02
#: 12.6 M       8192, 768+512+256  1.47     1.27
#: ===========  =================  =======  ================
#:
#: Per-segment GEMMs win once the concatenation is big enough for its copy to cost more than
#: the extra GEMM launches and the per-segment weight-gradient slices autograd adds (a few
#: million elements); below that one GEMM on the concatenation wins, by up to 1.45x in training.
#: ``auto`` picks by the concatenation's size (:data:`CONCAT_LINEAR_ADDMM_FROM`). The
#: threshold is measured on CPU; the CUDA fallback (used only where the Triton kernel would
#: lose) uses the same rule until GPU measurements tune it.
CONCAT_LINEAR_DEFAULT_METHOD = "auto"
#: ``auto`` uses per-segment ``addmm`` from this many elements of the (virtual) concatenation on.
CONCAT_LINEAR_ADDMM_FROM = 2**21


def concat_linear_method(rows: int, total_width: int) -> str:
    """``"addmm"`` or ``"cat"``: what ``method="auto"`` runs for ``rows`` x ``total_width`` inputs."""
    return "addmm" if rows * total_width >= CONCAT_LINEAR_ADDMM_FROM else "cat"


def concat_linear_reference(
    xs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    method: str = CONCAT_LINEAR_DEFAULT_METHOD,
) -> torch.Tensor:
    """``F.linear(torch.cat(xs, -1), weight, bias)``; differentiable.

    ``method="addmm"``: ``Y = b + sum_i X_i W[:, off_i:off_i+K_i]^T``, one (cuBLAS/MKL) GEMM per
    segment on a column-slice *view* of the weight, accumulated in place into ``Y``; the
    concatenation is never built.
    ``method="cat"``: materialise the concatenation and call ``F.linear``.
    ``method="auto"`` (default): ``cat`` for small inputs, ``addmm`` for large ones
    (:func:`concat_linear_method`; the measurements are above).
    """
    if method == "auto" and xs:
        method = concat_linear_method(math.prod(xs[0].shape[:-1]), sum(x.shape[-1] for x in xs))
    if method == "cat":
        return F.linear(torch.cat(list(xs), dim=-1), weight, bias)
    if method != "addmm":
        raise ValueError(f"concat_linear_reference: method must be 'auto', 'addmm' or 'cat', got {method!r}")
    lead = xs[0].shape[:-1]
    m = math.prod(lead)
    n = weight.shape[0]
    out = None
    off = 0
    for x in xs:
        width = x.shape[-1]
        x2 = x.reshape(m, width)
        w = weight[:, off : off + width].t()
        if out is None:
            out = torch.mm(x2, w) if bias is None else torch.addmm(bias, x2, w)
        else:
            out = out.addmm_(x2, w)
        off += width
    if out is None:
        raise ValueError("concat_linear_reference: xs must contain at least one tensor, got none")
    return out.view(*lead, n)


def concat_linear_grad_inputs(
    grad_out: torch.Tensor, xs: Sequence[torch.Tensor], weight: torch.Tensor
) -> list[torch.Tensor]:
    """``dX_i = dY W[:, off_i:off_i+K_i]``, each written straight into its own tensor (no split)."""
    n = weight.shape[0]
    g = grad_out.reshape(-1, n)
    dxs = []
    off = 0
    for x in xs:
        width = x.shape[-1]
        dxs.append(torch.mm(g, weight[:, off : off + width]).view(x.shape))
        off += width
    return dxs


def concat_linear_grad_weight(grad_out: torch.Tensor, xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``dW[:, off_i:off_i+K_i] = dY^T X_i`` from the original segments, into column slices of dW.

    ``out=`` into a column slice is a GEMM with leading dimension ``sum K_i``: no per-segment
    temporaries, no concatenation. Autograd cannot record ``out=``, so this is computed without
    grad (the backward is once-differentiable).
    """
    n = grad_out.shape[-1]
    g = grad_out.reshape(-1, n)
    dw = g.new_empty((n, sum(x.shape[-1] for x in xs)))
    off = 0
    with torch.no_grad():
        for x in xs:
            width = x.shape[-1]
            torch.mm(g.t(), x.reshape(g.shape[0], width), out=dw[:, off : off + width])
            off += width
    return dw


def concat_linear_backward(
    grad_out: torch.Tensor,
    xs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    need_xs: Sequence[bool],
    need_weight: bool,
    need_bias: bool,
) -> tuple[list[torch.Tensor | None], torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``concat_linear`` without ever building a concatenated tensor.

    ``dX_i = dY W[:, off_i:off_i+K_i]`` is written straight into its own tensor, and
    ``dW[:, off_i:off_i+K_i] = dY^T X_i`` is computed from the original segments directly into a
    column slice of ``dW``. These are plain GEMMs on strided views, which cuBLAS/MKL already run
    at peak, so every backend (the Triton one included) uses them.
    """
    dxs: list[torch.Tensor | None] = [None] * len(xs)
    if any(need_xs):
        dxs = [
            dx if need else None
            for dx, need in zip(concat_linear_grad_inputs(grad_out, xs, weight), need_xs, strict=True)
        ]
    dw = concat_linear_grad_weight(grad_out, xs) if need_weight else None
    db = grad_out.reshape(-1, weight.shape[0]).sum(0) if need_bias else None
    return dxs, dw, db


# ----------------------------------------------------------------------------------------------
# torch.library registration
# ----------------------------------------------------------------------------------------------


def _use_triton(xs: list[Tensor]) -> bool:
    return (
        xs[0].device.type == "cuda"
        and _dispatch.triton_import_error() is None
        and triton_concat_linear_unsupported(xs) is None
    )


def _concat_linear_impl(xs, weight, bias):
    if _use_triton(xs):
        from .triton_concat_linear import concat_linear_forward

        return concat_linear_forward(xs, weight, bias)
    return concat_linear_reference(xs, weight, bias)


def _concat_linear_fake(xs, weight, bias):
    return weight.new_empty((*xs[0].shape[:-1], weight.shape[0]))


def _concat_linear_grad_weight_impl(grad_out, xs):
    return concat_linear_grad_weight(grad_out, xs)


def _concat_linear_grad_weight_fake(grad_out, xs):
    return grad_out.new_empty((grad_out.shape[-1], sum(x.shape[-1] for x in xs)))


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
    dxs = concat_linear_grad_inputs(grad_out, xs, weight) if need_x else None
    dw = torch.ops.mmcore_kernels.concat_linear_grad_weight(grad_out, xs) if need_w else None
    db = grad_out.reshape(-1, n).sum(0) if (need_b and ctx.has_bias) else None
    return dxs, dw, db


SCHEMAS = {
    "concat_linear": "(Tensor[] xs, Tensor weight, Tensor? bias) -> Tensor",
    "concat_linear_grad_weight": "(Tensor grad_out, Tensor[] xs) -> Tensor",
}


def register(define: Callable[..., Any]) -> None:
    """Register ``concat_linear`` and its weight gradient with ``define`` (``ops.define``); called once, by ``ops``."""
    op = define("concat_linear", SCHEMAS["concat_linear"], _concat_linear_impl, _concat_linear_fake, has_triton=True)
    define(
        "concat_linear_grad_weight",
        SCHEMAS["concat_linear_grad_weight"],
        _concat_linear_grad_weight_impl,
        _concat_linear_grad_weight_fake,
        has_triton=False,
    )
    op.register_autograd(_concat_linear_backward, setup_context=_concat_linear_setup_context)


def call_registered(xs: list[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """Call the registered op (``mmcore_kernels.ops`` imported; inputs already validated)."""
    return torch.ops.mmcore_kernels.concat_linear(list(xs), weight, bias)
