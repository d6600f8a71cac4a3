"""mmcore_kernels: fused fusion kernels (Triton on CUDA) with PyTorch fallbacks everywhere.

Public API::

    cross_attention(q, k, v, *, kv_lens=None, key_padding_mask=None, scale=None, backend=None)
    concat_linear(xs, weight, bias=None, *, backend=None)
    backend("torch" | "triton" | "auto")     # context manager
    available_backends(device=None)

Backend choice (most specific wins): the ``backend=`` argument, the innermost ``backend(...)``
context, the ``MMCORE_KERNELS`` environment variable (``torch``/``triton``/``auto``), then auto.
Auto runs Triton on CUDA tensors when Triton imports and the kernel supports the inputs (for
``concat_linear``: and ``_dispatch.concat_linear_prefers_triton`` says it beats cuBLAS), otherwise
PyTorch. An explicit ``"triton"`` that cannot run raises ``BackendUnavailableError`` naming why and
the available backends. With ``TRITON_INTERPRET=1`` set before the first Triton call, an explicit
``"triton"`` runs the real Triton kernels on CPU tensors through the Triton interpreter (how CI,
which has no GPU, tests them). Auto never picks the interpreter.

Importing this package does not import Triton; the Triton modules and the ``torch.library`` op
registration (``mmcore_kernels.ops``) load on first use.

PyTorch path for ``concat_linear``: by size (table at ``reference.CONCAT_LINEAR_DEFAULT_METHOD``):
per-segment ``addmm`` on column views of the weight for large inputs (never builds the
concatenation; measured up to 1.8x faster than ``torch.cat`` + ``F.linear`` on CPU), and
``cat`` + ``linear`` for small ones, where one GEMM beats several (up to 1.5x in training).

Benchmarks: ``python -m mmcore_kernels.bench`` (table; ``bench.run()`` returns the rows) and the
pytest-benchmark suites ``benchmarks/bench_cross_attention.py`` / ``bench_concat_linear.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import _dispatch, _validate, reference
from ._dispatch import BACKENDS, BackendUnavailableError, available_backends, backend

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "backend",
    "concat_linear",
    "cross_attention",
]


def cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kv_lens: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Multi-head cross-attention ``softmax(q k^T * scale) v`` per head; returns ``[B, Lq, H, D]``.

    Args:
        q: queries ``[B, Lq, H, D]``; k, v: keys/values ``[B, Lk, H, D]`` (any strides; the output of
            ``linear(x).view(B, L, H, D)`` goes in without a copy). One dtype for all three.
        kv_lens: optional integer ``[B]``; keys at positions ``>= kv_lens[b]`` are padding. The fast
            path for ragged batches (the Triton key loop stops at ``kv_lens[b]``).
        key_padding_mask: optional bool ``[B, Lk]``, True = real key (general masks). May be combined
            with ``kv_lens`` (a key must pass both).
        scale: softmax scale, default ``1 / sqrt(D)``.
        backend: ``"torch"``, ``"triton"``, ``"auto"`` or None (= context / env / auto).

    A query whose keys are all masked gets an all-zero output row and passes zero gradient to
    q, k and v; never NaN. The Triton path returns a contiguous tensor; the torch path may return
    a transposed view of SDPA's ``[B, H, Lq, D]`` output (use ``reshape``, not ``view``, to merge
    heads). Triton supports D in (16, 32, 64, 80, 96, 128) and fp16/bf16/fp32; auto falls back to
    the torch path for anything else.
    """
    scale_f = _validate.check_cross_attention(q, k, v, kv_lens, key_padding_mask, scale)
    choice = _dispatch.resolve_backend(
        "cross_attention", backend, q.device, lambda: _validate.triton_cross_attention_unsupported(q)
    )
    if choice == "torch":
        return reference.cross_attention_reference(
            q, k, v, kv_lens=kv_lens, key_padding_mask=key_padding_mask, scale=scale_f
        )
    if _dispatch.triton_interpret_active():
        from .triton_cross_attention import CrossAttentionFunction

        return CrossAttentionFunction.apply(q, k, v, kv_lens, key_padding_mask, scale_f)
    from . import ops

    return ops.cross_attention(q, k, v, kv_lens, key_padding_mask, scale_f)


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
    xs = _validate.check_concat_linear(xs, weight, bias)
    choice = _dispatch.resolve_backend(
        "concat_linear",
        backend,
        weight.device,
        lambda: _validate.triton_concat_linear_unsupported(xs),
        lambda: _dispatch.concat_linear_prefers_triton(
            math.prod(xs[0].shape[:-1]), weight.shape[0], [x.shape[-1] for x in xs], weight.dtype),
    )
    if choice == "torch":
        return reference.concat_linear_reference(xs, weight, bias)
    if _dispatch.triton_interpret_active():
        from .triton_concat_linear import ConcatLinearFunction

        return ConcatLinearFunction.apply(weight, bias, None, *xs)
    from . import ops

    return ops.concat_linear(xs, weight, bias)
