"""Triton ``concat_linear``: ``Y = cat(X_0..X_{S-1}, -1) @ W^T + b`` without the concatenation.

The GEMM's K loop walks the segments in turn, each with its own base pointer, width and strides,
against the matching column block of ``W`` (``W[:, off_i:off_i+K_i]`` is only a pointer offset).
Up to ``MAX_SEGS`` (4) segments go in one launch (``NUM_SEGS`` is a constexpr, so unused segment
code is compiled away); more are chained through an fp32 workspace, which keeps the accumulation
in fp32 across launches. Bias is added in the epilogue, in fp32, before the single cast to the
output dtype.

Backward (``ConcatLinearFunction``) is ``reference.concat_linear_backward``: ``dX_i = dY W_i`` into
each input's own gradient and ``dW[:, seg_i] = dY^T X_i`` from the original segments. Those are
plain GEMMs on strided views that cuBLAS already runs at peak; a Triton version would only add
tuning risk, and no concatenated activation is ever saved or built either way.

Tiles. Rows and columns use the wrap-around trick (``offs % M``) so loads need no M/N masks; only
the ragged tail of each segment's K is masked, which is what makes odd widths legal. Program ids
are swizzled in groups of ``GROUP_M`` row-tiles so consecutive programs reuse the same ``W``
column tiles from L2. Under the interpreter a fixed config is used (autotune cannot run there).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._dispatch import CONCAT_LINEAR_MAX_SEGS
from .reference import concat_linear_backward

__all__ = ["INTERPRETED", "MAX_SEGS", "ConcatLinearFunction", "concat_linear_forward"]

MAX_SEGS = CONCAT_LINEAR_MAX_SEGS


@triton.jit
def _concat_linear_accumulate(
    acc,
    X,
    W,
    K,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    rm,
    rn,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """acc += X[rm, :K] @ W[rn, :K]^T for one segment (W already offset to the segment's columns)."""
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = X + rm[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = W + offs_k[:, None] * stride_wk + rn[None, :] * stride_wn
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + offs_k) < K
        x = tl.load(x_ptrs, mask=k_ok[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_ok[:, None], other=0.0)
        acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    return acc


@triton.jit
def _concat_linear_fwd_kernel(
    Y,
    ACC,
    W,
    BIAS,
    X0,
    X1,
    X2,
    X3,
    M,
    N,
    K0,
    K1,
    K2,
    K3,
    stride_x0m,
    stride_x0k,
    stride_x1m,
    stride_x1k,
    stride_x2m,
    stride_x2k,
    stride_x3m,
    stride_x3k,
    stride_wn,
    stride_wk,
    stride_ym,
    stride_yn,
    M_BUCKET,
    K_SUM,  # autotune keys only
    NUM_SEGS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    LOAD_ACC: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped ordering: GROUP_M row tiles share each W column tile while it is hot in L2.
    group_size = GROUP_M * num_pid_n
    first_m = (pid // group_size) * GROUP_M
    rows_in_group = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % rows_in_group
    pid_n = (pid % group_size) // rows_in_group

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Wrapped (modulo) indices: out-of-range rows/cols re-read valid memory and are dropped at the
    # store, so the inner loop needs no M/N masks. int64 so row * stride cannot overflow.
    rm = (offs_m % M).to(tl.int64)
    rn = (offs_n % N).to(tl.int64)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if LOAD_ACC:
        acc = tl.load(ACC + rm[:, None] * N + rn[None, :])
    acc = _concat_linear_accumulate(
        acc, X0, W, K0, stride_x0m, stride_x0k, stride_wn, stride_wk, rm, rn, BLOCK_K, DOT_PRECISION
    )
    if NUM_SEGS > 1:
        acc = _concat_linear_accumulate(
            acc,
            X1,
            W + K0 * stride_wk,
            K1,
            stride_x1m,
            stride_x1k,
            stride_wn,
            stride_wk,
            rm,
            rn,
            BLOCK_K,
            DOT_PRECISION,
        )
    if NUM_SEGS > 2:
        acc = _concat_linear_accumulate(
            acc,
            X2,
            W + (K0 + K1) * stride_wk,
            K2,
            stride_x2m,
            stride_x2k,
            stride_wn,
            stride_wk,
            rm,
            rn,
            BLOCK_K,
            DOT_PRECISION,
        )
    if NUM_SEGS > 3:
        acc = _concat_linear_accumulate(
            acc,
            X3,
            W + (K0 + K1 + K2) * stride_wk,
            K3,
            stride_x3m,
            stride_x3k,
            stride_wn,
            stride_wk,
            rm,
            rn,
            BLOCK_K,
            DOT_PRECISION,
        )
    if HAS_BIAS:
        acc += tl.load(BIAS + rn).to(tl.float32)[None, :]

    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    y_ptrs = Y + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n.to(tl.int64)[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=mask)


#: Whether the kernel above was decorated under TRITON_INTERPRET=1 (triton decides at decoration).
INTERPRETED: bool = not isinstance(_concat_linear_fwd_kernel, triton.runtime.JITFunction)


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(max(int(n), 1)))


def _interpreter_config(m: int, n: int) -> dict[str, int]:
    # Interpreter cost ~ programs x K trips: big M/N tiles, and BLOCK_K = 32 so that odd segment
    # widths still produce several trips with a masked tail (the case worth exercising).
    return {"BLOCK_M": min(_pow2(m), 64), "BLOCK_N": min(_pow2(n), 64), "BLOCK_K": 32, "GROUP_M": 8}


def _cuda_configs() -> list[triton.Config]:
    # Standard Hopper/Ampere GEMM tiles (fp16/bf16, fp32 accumulate). 128x128x64 with 3-4 stages is
    # the workhorse; narrow-N tiles cover N = 128; BLOCK_K = 32 variants help short segments.
    shapes = [
        (128, 128, 64, 8, 3),
        (128, 256, 64, 8, 3),
        (256, 128, 64, 8, 3),
        (128, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (128, 128, 32, 4, 4),
        (64, 64, 32, 4, 4),
    ]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in shapes
    ]


@functools.lru_cache(maxsize=1)
def _autotuned():
    return triton.autotune(configs=_cuda_configs(), key=["M_BUCKET", "N", "K_SUM", "NUM_SEGS", "HAS_BIAS"])(
        _concat_linear_fwd_kernel
    )


def _wrap(kernel):
    if INTERPRETED:
        return kernel
    wrap = getattr(torch.library, "wrap_triton", None)
    return wrap(kernel) if wrap is not None else kernel


def _dot_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def concat_linear_forward(
    xs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    config: dict | None = None,
) -> torch.Tensor:
    """Launch the segment-walking GEMM; returns ``[..., N]`` in the inputs' dtype.

    ``config`` pins ``BLOCK_M/BLOCK_N/BLOCK_K/GROUP_M`` (tests); by default CUDA autotunes and the
    interpreter uses ``_interpreter_config``.
    """
    lead = tuple(xs[0].shape[:-1])
    n = weight.shape[0]
    out = torch.empty((*lead, n), device=weight.device, dtype=weight.dtype)
    y = out.view(-1, n)
    m = y.shape[0]
    if m == 0 or n == 0:
        return out
    # Segments of width 0 contribute nothing (and may have no storage): drop them, keep offsets.
    segs = []
    off = 0
    for x in xs:
        width = x.shape[-1]
        if width:
            segs.append((x.reshape(m, width), off, width))  # a view for the usual layouts
        off += width
    if not segs:  # every segment has width 0: Y is the bias (or zeros)
        if bias is not None:
            y.copy_(bias.expand(m, n))
        else:
            y.zero_()
        return out

    if config is not None or INTERPRETED:
        kernel = _concat_linear_fwd_kernel
        cfg = dict(config) if config is not None else _interpreter_config(m, n)
    else:
        kernel, cfg = _autotuned(), {}

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    chunks = [segs[i : i + MAX_SEGS] for i in range(0, len(segs), MAX_SEGS)]
    # More than MAX_SEGS segments: every launch but the last accumulates into an fp32 workspace.
    work = torch.empty((m, n), device=y.device, dtype=torch.float32) if len(chunks) > 1 else y
    precision = _dot_precision(weight.dtype)
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        base = chunk[0][1]
        xs_c = [x for x, _, _ in chunk]
        widths = [w for _, _, w in chunk]
        pad = MAX_SEGS - len(chunk)
        x_args = xs_c + [xs_c[0]] * pad  # unused slots: any valid pointer, width 0
        k_args = widths + [0] * pad
        strides = [s for x in x_args for s in x.stride()]
        dst = y if last else work
        _wrap(kernel)[grid](
            dst,
            work,
            weight[:, base:],
            bias if bias is not None else weight,
            *x_args,
            m,
            n,
            *k_args,
            *strides,
            weight.stride(0),
            weight.stride(1),
            dst.stride(0),
            dst.stride(1),
            min(_pow2(m), 1 << 16),
            sum(widths),
            NUM_SEGS=len(chunk),
            HAS_BIAS=last and bias is not None,
            LOAD_ACC=i > 0,
            DOT_PRECISION=precision,
            **cfg,
        )
    return out


class ConcatLinearFunction(torch.autograd.Function):
    """Autograd over the Triton forward; backward is the GEMM-on-views of ``concat_linear_backward``.

    As with ``CrossAttentionFunction``, CUDA goes through the ``torch.library`` op and this Function
    serves the interpreter path. Saves the original segments (never a concatenation).
    """

    @staticmethod
    def forward(ctx, weight, bias, config, *xs):
        ctx.save_for_backward(weight, *xs)
        ctx.has_bias = bias is not None
        return concat_linear_forward(xs, weight, bias, config=config)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        weight, *xs = ctx.saved_tensors
        need = ctx.needs_input_grad
        dxs, dw, db = concat_linear_backward(
            grad_out, xs, weight, need_xs=need[3:], need_weight=need[0], need_bias=ctx.has_bias and need[1]
        )
        return (dw, db, None, *dxs)
