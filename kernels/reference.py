"""PyTorch implementations: the fallback path on every device and the oracle the Triton kernels are
tested against.

``cross_attention_reference`` and ``concat_linear_reference`` are what the ``"torch"`` backend runs:
plain differentiable PyTorch (autograd and ``torch.compile`` see straight through them).
``cross_attention_naive`` is the textbook softmax(QK^T)V used as a float64 oracle and as the
"naive" provider in benchmarks. ``cross_attention_lse`` / ``cross_attention_backward_reference``
and ``concat_linear_backward`` spell out the same math the Triton kernels implement; the
``torch.library`` ops run them on non-CUDA devices.

Inputs are assumed validated (see ``_validate``); these functions do not re-check them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "CONCAT_LINEAR_ADDMM_FROM",
    "CONCAT_LINEAR_DEFAULT_METHOD",
    "concat_linear_backward",
    "concat_linear_grad_inputs",
    "concat_linear_grad_weight",
    "concat_linear_method",
    "concat_linear_reference",
    "cross_attention_backward_reference",
    "cross_attention_lse",
    "cross_attention_naive",
    "cross_attention_reference",
    "key_valid_mask",
]


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


# --------------------------------------------------------------------------------------------
# concat_linear
# --------------------------------------------------------------------------------------------

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
