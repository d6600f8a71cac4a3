"""The ``cross_attention`` op: public function, input checks, PyTorch path and ``torch.library`` registration.

* :func:`cross_attention` — the public function (``mmcore_kernels.cross_attention``): checks the
  inputs, picks a backend (``_dispatch``), runs the PyTorch path or the Triton kernels
  (``triton_cross_attention.py``).
* :func:`check_cross_attention`, :func:`triton_cross_attention_unsupported` — input checks.
* :func:`cross_attention_reference` (SDPA; the ``"torch"`` backend), :func:`cross_attention_naive`
  (the textbook float64 oracle), :func:`cross_attention_lse` and
  :func:`cross_attention_backward_reference` (the kernels' algorithm in PyTorch; the registered op
  runs them on non-CUDA devices).
* :func:`register` — ``torch.ops.mmcore_kernels.cross_attention`` (``-> (out, lse)``) and
  ``cross_attention_backward`` with autograd; ``mmcore_kernels.ops`` calls it on first Triton use.

Nothing here imports Triton at module import time. The layout follows Liger-Kernel's
``ops/<op>.py`` (one module per op); the Triton kernels stay in ``triton_cross_attention.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _dispatch
from ._validate import FLOAT_DTYPES, is_compiling, require_tensor, shape_str, triton_dtype_problem

__all__ = [
    "TRITON_HEAD_DIMS",
    "check_cross_attention",
    "cross_attention",
    "cross_attention_backward_reference",
    "cross_attention_lse",
    "cross_attention_naive",
    "cross_attention_reference",
    "key_valid_mask",
    "register",
    "triton_cross_attention_unsupported",
]

#: Head dims the Triton attention kernels are built and tested for (non-powers of two are masked
#: up to the next power of two inside the kernel).
TRITON_HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 80, 96, 128)


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
    scale_f = check_cross_attention(q, k, v, kv_lens, key_padding_mask, scale)
    choice = _dispatch.resolve_backend(
        "cross_attention", backend, q.device, lambda: triton_cross_attention_unsupported(q)
    )
    if choice == "torch":
        return cross_attention_reference(
            q, k, v, kv_lens=kv_lens, key_padding_mask=key_padding_mask, scale=scale_f
        )
    if _dispatch.triton_interpret_active():
        from .triton_cross_attention import CrossAttentionFunction

        return CrossAttentionFunction.apply(q, k, v, kv_lens, key_padding_mask, scale_f)
    from . import ops  # noqa: F401  (registers the torch.library ops on first use; imports Triton)

    return call_registered(q, k, v, kv_lens, key_padding_mask, scale_f)

# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def check_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_lens: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    scale: float | None,
) -> float:
    """Validate ``cross_attention`` inputs; return the softmax scale to use."""
    op = "cross_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_tensor(f"{op}: {name}", t)
        if t.dim() != 4:
            layout = "[B, Lq, H, D]" if name == "q" else "[B, Lk, H, D]"
            raise ValueError(
                f"{op}: {name} must be 4-D {layout}, got {t.dim()}-D tensor of shape {shape_str(t)}"
            )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{op}: q, k and v must share one dtype, got q={q.dtype}, k={k.dtype}, v={v.dtype}")
    if q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: expected a floating dtype in {[str(d) for d in FLOAT_DTYPES]}, got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{op}: q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    b, lq, h, d = q.shape
    names = ("batch (dim 0)", "heads (dim 2)", "head dim (dim 3)")
    for name, t in (("k", k), ("v", v)):
        for dim, label in zip((0, 2, 3), names, strict=True):
            if t.shape[dim] != q.shape[dim]:
                raise ValueError(
                    f"{op}: {name} {label} must equal q's: expected {q.shape[dim]}, got {t.shape[dim]} "
                    f"(q {shape_str(q)}, {name} {shape_str(t)})"
                )
    if k.shape[1] != v.shape[1]:
        raise ValueError(
            f"{op}: k and v must have the same number of keys Lk, got k {shape_str(k)} and v {shape_str(v)}"
        )
    lk = k.shape[1]
    if lk < 1:
        raise ValueError(
            f"{op}: expected at least one key (Lk >= 1), got Lk=0; to mark samples without keys pass "
            "kv_lens=0 or an all-False key_padding_mask row instead"
        )
    if h < 1 or d < 1:
        raise ValueError(f"{op}: expected H >= 1 and D >= 1, got q {shape_str(q)}")

    if kv_lens is not None:
        require_tensor(f"{op}: kv_lens", kv_lens)
        if kv_lens.dtype.is_floating_point or kv_lens.dtype.is_complex or kv_lens.dtype == torch.bool:
            raise TypeError(
                f"{op}: kv_lens must be an integer tensor (e.g. torch.int32/int64), got {kv_lens.dtype}"
            )
        if tuple(kv_lens.shape) != (b,):
            raise ValueError(f"{op}: kv_lens must have shape [B] = [{b}], got {shape_str(kv_lens)}")
        if kv_lens.device != q.device:
            raise ValueError(f"{op}: kv_lens must be on q's device {q.device}, got {kv_lens.device}")
        # Reading the values costs a host sync on CUDA; under torch.compile it would force a graph
        # break, so it is skipped there (the kernels clamp to [0, Lk], so memory stays safe).
        if b > 0 and not is_compiling():
            lo, hi = (int(x) for x in torch.aminmax(kv_lens.to(torch.int64)))
            if lo < 0 or hi > lk:
                raise ValueError(
                    f"{op}: kv_lens values must lie in [0, Lk] = [0, {lk}], got min {lo}, max {hi}"
                )
    if key_padding_mask is not None:
        require_tensor(f"{op}: key_padding_mask", key_padding_mask)
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(
                f"{op}: key_padding_mask must be a bool tensor (True = real key), got {key_padding_mask.dtype}"
            )
        if tuple(key_padding_mask.shape) != (b, lk):
            raise ValueError(
                f"{op}: key_padding_mask must have shape [B, Lk] = [{b}, {lk}], got {shape_str(key_padding_mask)}"
            )
        if key_padding_mask.device != q.device:
            raise ValueError(
                f"{op}: key_padding_mask must be on q's device {q.device}, got {key_padding_mask.device}"
            )
    if scale is None:
        return 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{op}: scale must be a float or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"{op}: scale must be finite, got {scale}")
    return float(scale)


def triton_cross_attention_unsupported(q: torch.Tensor) -> str | None:
    """Why the Triton attention kernel cannot take these (already validated) inputs, or ``None``."""
    d = q.shape[-1]
    if d not in TRITON_HEAD_DIMS:
        return f"the Triton kernel supports head dims {list(TRITON_HEAD_DIMS)}, got D={d}"
    return triton_dtype_problem(q.dtype)

# ----------------------------------------------------------------------------------------------
# PyTorch path (the "torch" backend, the op's CPU branch, the oracles)
# ----------------------------------------------------------------------------------------------


def key_valid_mask(
    batch: int,
    lk: int,
    kv_lens: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor | None:
    """Combine ``kv_lens`` and ``key_padding_mask`` into one bool ``[B, Lk]`` (True = real key).

    Both may be given: a key is real when it is inside ``kv_lens[b]`` *and* marked True.
    Returns ``None`` when neither is given (every key is real).
    """
    valid = None
    if kv_lens is not None:
        valid = torch.arange(lk, device=device)[None, :] < kv_lens[:, None]
    if key_padding_mask is not None:
        valid = key_padding_mask if valid is None else valid & key_padding_mask
    return valid


def cross_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kv_lens: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Cross-attention through ``F.scaled_dot_product_attention``; returns ``[B, Lq, H, D]``.

    SDPA wants ``[B, H, L, D]``: ``transpose(1, 2)`` gives that as a view, so nothing is copied on
    the way in. SDPA returns NaN for a query whose keys are all masked; here such rows (which in
    cross-attention are whole samples, the mask being per key) get one dummy key so the softmax
    stays finite, and the output is multiplied by a 0/1 sample-validity factor. That factor makes
    the output exactly zero and, through the product rule, the gradient reaching q, k and v from
    those rows exactly zero.
    """
    b, _, _, d = q.shape
    lk = k.shape[1]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    valid = key_valid_mask(b, lk, kv_lens, key_padding_mask, q.device)
    if valid is None:
        out = F.scaled_dot_product_attention(qh, kh, vh, scale=scale)
        return out.transpose(1, 2)
    row_ok = valid.any(dim=-1)  # [B]
    if _values_readable_for_free(row_ok) and bool(row_ok.all()):
        # No sample without keys: the NaN guard below would only cost time (reading the flag is
        # free on CPU; on CUDA it would be a host sync per call, so there the guard always runs).
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=valid[:, None, None, :], scale=scale)
        return out.transpose(1, 2)
    first_key = torch.arange(lk, device=q.device)[None, :] == 0
    safe = valid | (first_key & ~row_ok[:, None])
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=safe[:, None, None, :], scale=scale)
    out = out * row_ok[:, None, None, None].to(out.dtype)
    return out.transpose(1, 2)


def _values_readable_for_free(t: torch.Tensor) -> bool:
    """True for a real (not fake, not traced) CPU tensor, whose values Python can read without a sync."""
    from torch._subclasses.fake_tensor import is_fake

    return t.device.type == "cpu" and not torch.compiler.is_compiling() and not is_fake(t)


def cross_attention_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kv_lens: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Textbook ``softmax(q k^T * scale) v`` with the full ``[B, H, Lq, Lk]`` score matrix.

    Used as the float64 oracle in tests and as the "naive" benchmark provider. All-masked rows give
    zeros (their scores are replaced by zeros before the softmax, then the probabilities by 0).
    """
    b, _, _, d = q.shape
    lk = k.shape[1]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    valid = key_valid_mask(b, lk, kv_lens, key_padding_mask, q.device)
    if valid is not None:
        row_ok = valid.any(dim=-1)[:, None, None, None]
        s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
        s = torch.where(row_ok, s, torch.zeros_like(s))
        p = torch.softmax(s, dim=-1) * row_ok.to(s.dtype)
    else:
        p = torch.softmax(s, dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", p, v)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half inputs are accumulated in fp32 (as the kernels do); fp32/fp64 keep their precision.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _masked_scores(q, k, valid, scale):
    acc = _acc_dtype(q.dtype)
    s = torch.einsum("bqhd,bkhd->bhqk", q.to(acc), k.to(acc)) * scale
    if valid is not None:
        s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    return s


def cross_attention_lse(
    q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """Natural-log log-sum-exp of the scaled, masked scores: ``[B, H, Lq]`` (fp32; fp64 for fp64).

    Rows with no real key get ``+inf`` (the kernels' convention): ``exp(s - lse)`` is then 0 for
    every key, which is what makes their backward zero.
    """
    lse = torch.logsumexp(_masked_scores(q, k, valid, scale), dim=-1)
    return torch.where(torch.isneginf(lse), torch.full_like(lse, float("inf")), lse)


def cross_attention_backward_reference(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    valid: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv from the saved output and LSE: the kernels' algorithm, dense, in PyTorch.

    ``P = exp(S - lse)``, ``dV = P^T dO``, ``dP = dO V^T``, ``delta = rowsum(dO * O)``,
    ``dS = P * (dP - delta)``, ``dQ = scale * dS K``, ``dK = scale * dS^T Q``.
    """
    acc = _acc_dtype(q.dtype)
    p = torch.exp(_masked_scores(q, k, valid, scale) - lse.to(acc)[..., None])  # [B, H, Lq, Lk]
    do = grad_out.to(acc)
    dv = torch.einsum("bhqk,bqhd->bkhd", p, do)
    dp = torch.einsum("bqhd,bkhd->bhqk", do, v.to(acc))
    delta = (do * out.to(acc)).sum(-1).transpose(1, 2)  # [B, H, Lq]
    ds = p * (dp - delta[..., None])
    dq = torch.einsum("bhqk,bkhd->bqhd", ds, k.to(acc)) * scale
    dk = torch.einsum("bhqk,bqhd->bkhd", ds, q.to(acc)) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


# ----------------------------------------------------------------------------------------------
# torch.library registration
# ----------------------------------------------------------------------------------------------


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _use_triton(q: Tensor) -> bool:
    return (
        q.device.type == "cuda"
        and _dispatch.triton_import_error() is None
        and triton_cross_attention_unsupported(q) is None
    )


def _cross_attention_impl(q, k, v, kv_lens, key_padding_mask, scale):
    if _use_triton(q):
        from .triton_cross_attention import cross_attention_forward

        return cross_attention_forward(q, k, v, kv_lens, key_padding_mask, scale)
    out = cross_attention_reference(
        q, k, v, kv_lens=kv_lens, key_padding_mask=key_padding_mask, scale=scale
    ).contiguous()
    valid = key_valid_mask(q.shape[0], k.shape[1], kv_lens, key_padding_mask, q.device)
    return out, cross_attention_lse(q, k, valid, scale).to(_lse_dtype(q.dtype))


def _cross_attention_backward_impl(grad_out, q, k, v, out, lse, kv_lens, key_padding_mask, scale):
    if _use_triton(q):
        from .triton_cross_attention import cross_attention_backward

        return cross_attention_backward(grad_out, q, k, v, out, lse, kv_lens, key_padding_mask, scale)
    valid = key_valid_mask(q.shape[0], k.shape[1], kv_lens, key_padding_mask, q.device)
    return cross_attention_backward_reference(grad_out, q, k, v, out, lse, valid, scale)


def _cross_attention_fake(q, k, v, kv_lens, key_padding_mask, scale):
    b, lq, h, d = q.shape
    return q.new_empty((b, lq, h, d)), q.new_empty((b, h, lq), dtype=_lse_dtype(q.dtype))


def _cross_attention_backward_fake(grad_out, q, k, v, out, lse, kv_lens, key_padding_mask, scale):
    return (
        q.new_empty(q.shape),
        k.new_empty(k.shape),
        v.new_empty(v.shape),
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


SCHEMAS = {
    "cross_attention": (
        "(Tensor q, Tensor k, Tensor v, Tensor? kv_lens, Tensor? key_padding_mask, float scale) -> (Tensor, Tensor)"
    ),
    "cross_attention_backward": (
        "(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? kv_lens, "
        "Tensor? key_padding_mask, float scale) -> (Tensor, Tensor, Tensor)"
    ),
}


def register(define: Callable[..., Any]) -> None:
    """Register ``cross_attention`` and its backward with ``define`` (``ops.define``); called once, by ``ops``."""
    op = define("cross_attention", SCHEMAS["cross_attention"], _cross_attention_impl, _cross_attention_fake, has_triton=True)
    define(
        "cross_attention_backward",
        SCHEMAS["cross_attention_backward"],
        _cross_attention_backward_impl,
        _cross_attention_backward_fake,
        has_triton=True,
    )
    op.register_autograd(_cross_attention_backward, setup_context=_cross_attention_setup_context)


def call_registered(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kv_lens: Tensor | None,
    key_padding_mask: Tensor | None,
    scale: float,
) -> Tensor:
    """Call the registered op (``mmcore_kernels.ops`` imported; inputs already validated); the attention output."""
    return torch.ops.mmcore_kernels.cross_attention(q, k, v, kv_lens, key_padding_mask, scale)[0]
