"""Triton cross-attention: online-softmax forward that stores the log-sum-exp, and a deterministic
backward (no atomics) in three kernels.

Layout. ``q`` is ``[B, Lq, H, D]`` and ``k``/``v`` are ``[B, Lk, H, D]`` with *arbitrary* strides
(every kernel takes all four strides of every tensor), so the usual projection outputs, e.g.
``linear(x).view(B, L, H, D)`` or one slice of a fused ``[B, L, 2, H, D]`` KV projection, go in
without a copy. ``out``/``dq``/``dk``/``dv`` are allocated contiguous ``[B, L, H, D]``; the LSE is a
contiguous fp32 ``[B, H, Lq]`` in natural-log units.

Masking. ``kv_lens[b]`` bounds the key loop (clamped to ``[0, Lk]`` so a bad value can never read
out of bounds), so padded key tiles cost nothing; ``key_padding_mask`` (bool ``[B, Lk]``, read as
bytes) is applied with ``where`` inside the loop; both may be given. A query whose keys are all
masked ends with ``l = 0``: its output is written as 0 and its LSE as ``+inf``, so in the backward
``p = exp2(s - lse)`` is exactly 0 for every key and all its gradients are exactly 0 (no NaN).

Precision. Tiles are loaded in the input dtype and fed to ``tl.dot`` as is (fp16/bf16 tensor
cores), accumulating in fp32; softmax statistics are fp32; ``p``/``ds`` are cast back to the input
dtype only as ``tl.dot`` operands, exactly where FlashAttention does. fp32 inputs use IEEE fp32
dots unless ``torch.backends.cuda.matmul.allow_tf32`` is set, matching ``torch.matmul``.
Exponentials are ``exp2`` with ``scale * log2(e)`` folded into one multiply.

Schedules. Head dims are padded (masked) to ``BLOCK_D = next_pow2(D)`` (80, 96 -> 128). On CUDA each
kernel is autotuned over a small config list chosen by *schedule class*: a short side (<= 64
queries, <= 128 keys) gets one tile covering all of it instead of a search. Under the Triton
interpreter (``TRITON_INTERPRET=1``) ``@triton.autotune`` with several configs cannot run (it
benchmarks, and there is no driver), so one fixed config is used there (see ``_interpreter_config``).

Backward. (1) ``_cross_attention_bwd_preprocess_kernel``: ``delta = rowsum(dO * O)``.
(2) ``_cross_attention_bwd_dkdv_kernel``: one program per key tile loops over query tiles.
(3) ``_cross_attention_bwd_dq_kernel``: one program per query tile loops over key tiles. Each
output element is owned by one program, so results are bitwise reproducible.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

__all__ = [
    "INTERPRETED",
    "CrossAttentionFunction",
    "cross_attention_backward",
    "cross_attention_forward",
]

LOG2E = 1.4426950408889634
# Kernel-visible copies (Triton kernels may only read module globals that are constexpr).
_LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
_LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


@triton.jit
def _cross_attention_fwd_kernel(
    Q,
    K,
    V,
    O,
    LSE,
    KV_LENS,
    KPM,
    sm_scale_log2,
    stride_qb,
    stride_qm,
    stride_qh,
    stride_qd,
    stride_kb,
    stride_kn,
    stride_kh,
    stride_kd,
    stride_vb,
    stride_vn,
    stride_vh,
    stride_vd,
    stride_ob,
    stride_om,
    stride_oh,
    stride_od,
    stride_mb,
    stride_mn,
    H,
    LQ,
    LK,
    LQ_BUCKET,
    LK_BUCKET,  # autotune keys only
    HEAD_DIM: tl.constexpr,
    HAS_KV_LENS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    # int64 base offsets: B * L * H * D overflows int32 for long sequences.
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < LQ
    d_ok = offs_d < HEAD_DIM

    q = tl.load(
        Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
        mask=m_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    kv_end = LK
    if HAS_KV_LENS:
        kv_end = tl.minimum(tl.maximum(tl.load(KV_LENS + b).to(tl.int32), 0), LK)

    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    for start_n in range(0, kv_end, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < kv_end
        # K is loaded transposed ([BLOCK_D, BLOCK_N]) through its strides: no tl.trans needed.
        kt = tl.load(
            k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
            mask=d_ok[:, None] & n_ok[None, :],
            other=0.0,
        )
        s = tl.dot(q, kt, input_precision=DOT_PRECISION) * sm_scale_log2
        if HAS_MASK:
            keep = tl.load(KPM + b * stride_mb + cols * stride_mn, mask=n_ok, other=0)
            n_ok = n_ok & (keep != 0)
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row that has seen only masked keys has m_new = -inf; subtracting 0 instead keeps
        # exp2(-inf - m) = 0 rather than exp2(-inf + inf) = NaN.
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_sub[:, None])
        alpha = tl.math.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
            mask=n_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        # p goes to the tensor cores in the input dtype (fp16/bf16), accumulation stays fp32.
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    has_key = l_i > 0.0
    out = acc / tl.where(has_key, l_i, 1.0)[:, None]  # all-masked rows: acc == 0 -> out == 0
    # Natural-log LSE; +inf for all-masked rows makes every backward probability exactly 0.
    lse = tl.where(has_key, (m_i + tl.math.log2(tl.where(has_key, l_i, 1.0))) * _LN2, float("inf"))
    tl.store(
        O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
        out.to(O.dtype.element_ty),
        mask=m_ok[:, None] & d_ok[None, :],
    )
    tl.store(LSE + pid_bh.to(tl.int64) * LQ + offs_m, lse, mask=m_ok)


@triton.jit
def _cross_attention_bwd_preprocess_kernel(
    O,
    DO,
    DELTA,
    stride_ob,
    stride_om,
    stride_oh,
    stride_od,
    stride_gb,
    stride_gm,
    stride_gh,
    stride_gd,
    H,
    LQ,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < LQ)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(
        O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
        mask=mask,
        other=0.0,
    )
    do = tl.load(
        DO + b * stride_gb + h * stride_gh + offs_m[:, None] * stride_gm + offs_d[None, :] * stride_gd,
        mask=mask,
        other=0.0,
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + pid_bh.to(tl.int64) * LQ + offs_m, delta, mask=offs_m < LQ)


@triton.jit
def _cross_attention_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    KV_LENS,
    KPM,
    DK,
    DV,
    sm_scale,
    sm_scale_log2,
    stride_qb,
    stride_qm,
    stride_qh,
    stride_qd,
    stride_kb,
    stride_kn,
    stride_kh,
    stride_kd,
    stride_vb,
    stride_vn,
    stride_vh,
    stride_vd,
    stride_gb,
    stride_gm,
    stride_gh,
    stride_gd,
    stride_dkb,
    stride_dkn,
    stride_dkh,
    stride_dkd,
    stride_dvb,
    stride_dvn,
    stride_dvh,
    stride_dvd,
    stride_mb,
    stride_mn,
    H,
    LQ,
    LK,
    LQ_BUCKET,
    LK_BUCKET,  # autotune keys only
    HEAD_DIM: tl.constexpr,
    HAS_KV_LENS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    kv_end = LK
    if HAS_KV_LENS:
        kv_end = tl.minimum(tl.maximum(tl.load(KV_LENS + b).to(tl.int32), 0), LK)
    n_ok = offs_n < kv_end
    if HAS_MASK:
        keep = tl.load(KPM + b * stride_mb + offs_n * stride_mn, mask=offs_n < LK, other=0)
        n_ok = n_ok & (keep != 0)

    k = tl.load(
        K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
        mask=n_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    v = tl.load(
        V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
        mask=n_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_gb + h * stride_gh
    row_base = pid_bh.to(tl.int64) * LQ
    # Key tiles entirely past kv_lens skip the query loop and just store zeros.
    q_end = tl.where(pid_n * BLOCK_N < kv_end, LQ, 0)
    for start_m in range(0, q_end, BLOCK_M):
        rows = start_m + offs_m
        m_ok = rows < LQ
        # Q^T and dO^T tiles come in transposed through their strides, so S^T and dP^T are
        # computed directly in the [keys, queries] orientation this program accumulates in.
        qt = tl.load(
            q_base + rows[None, :] * stride_qm + offs_d[:, None] * stride_qd,
            mask=d_ok[:, None] & m_ok[None, :],
            other=0.0,
        )
        # Padding query rows read lse = +inf, so their probabilities are 0.
        lse = tl.load(LSE + row_base + rows, mask=m_ok, other=float("inf")) * _LOG2E
        st = tl.dot(k, qt, input_precision=DOT_PRECISION) * sm_scale_log2
        st = tl.where(n_ok[:, None], st, float("-inf"))
        pt = tl.math.exp2(st - lse[None, :])
        do = tl.load(
            do_base + rows[:, None] * stride_gm + offs_d[None, :] * stride_gd,
            mask=m_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        dv += tl.dot(pt.to(do.dtype), do, input_precision=DOT_PRECISION)
        delta = tl.load(DELTA + row_base + rows, mask=m_ok, other=0.0)
        dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=DOT_PRECISION)

    dk = dk * sm_scale
    st_mask = (offs_n < LK)[:, None] & d_ok[None, :]
    tl.store(
        DK + b * stride_dkb + h * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
        dk.to(DK.dtype.element_ty),
        mask=st_mask,
    )
    tl.store(
        DV + b * stride_dvb + h * stride_dvh + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
        dv.to(DV.dtype.element_ty),
        mask=st_mask,
    )


@triton.jit
def _cross_attention_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    KV_LENS,
    KPM,
    DQ,
    sm_scale,
    sm_scale_log2,
    stride_qb,
    stride_qm,
    stride_qh,
    stride_qd,
    stride_kb,
    stride_kn,
    stride_kh,
    stride_kd,
    stride_vb,
    stride_vn,
    stride_vh,
    stride_vd,
    stride_gb,
    stride_gm,
    stride_gh,
    stride_gd,
    stride_dqb,
    stride_dqm,
    stride_dqh,
    stride_dqd,
    stride_mb,
    stride_mn,
    H,
    LQ,
    LK,
    LQ_BUCKET,
    LK_BUCKET,  # autotune keys only
    HEAD_DIM: tl.constexpr,
    HAS_KV_LENS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < LQ
    d_ok = offs_d < HEAD_DIM
    md_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(
        Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
        mask=md_mask,
        other=0.0,
    )
    do = tl.load(
        DO + b * stride_gb + h * stride_gh + offs_m[:, None] * stride_gm + offs_d[None, :] * stride_gd,
        mask=md_mask,
        other=0.0,
    )
    row_base = pid_bh.to(tl.int64) * LQ
    lse = tl.load(LSE + row_base + offs_m, mask=m_ok, other=float("inf")) * _LOG2E
    delta = tl.load(DELTA + row_base + offs_m, mask=m_ok, other=0.0)
    kv_end = LK
    if HAS_KV_LENS:
        kv_end = tl.minimum(tl.maximum(tl.load(KV_LENS + b).to(tl.int32), 0), LK)

    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, kv_end, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < kv_end
        if HAS_MASK:
            keep = tl.load(KPM + b * stride_mb + cols * stride_mn, mask=n_ok, other=0)
            n_ok = n_ok & (keep != 0)
        kt = tl.load(
            k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
            mask=d_ok[:, None] & n_ok[None, :],
            other=0.0,
        )
        vt = tl.load(
            v_base + cols[None, :] * stride_vn + offs_d[:, None] * stride_vd,
            mask=d_ok[:, None] & n_ok[None, :],
            other=0.0,
        )
        s = tl.dot(q, kt, input_precision=DOT_PRECISION) * sm_scale_log2
        s = tl.where(n_ok[None, :], s, float("-inf"))
        p = tl.math.exp2(s - lse[:, None])
        dp = tl.dot(do, vt, input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=DOT_PRECISION)

    dq = dq * sm_scale
    tl.store(
        DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqm + offs_d[None, :] * stride_dqd,
        dq.to(DQ.dtype.element_ty),
        mask=md_mask,
    )


# ------------------------------------------------------------------------------------------------
# Launch configuration
# ------------------------------------------------------------------------------------------------

#: Whether the kernels above were decorated under TRITON_INTERPRET=1 (triton decides at decoration).
INTERPRETED: bool = not isinstance(_cross_attention_fwd_kernel, triton.runtime.JITFunction)

# Sides at or below these get one tile covering them all ("short sequence" schedule).
_SHORT_Q = 64
_SHORT_K = 128


def _pow2_tile(length: int, lo: int = 16) -> int:
    # tl.dot needs every tile dim >= 16; powers of two keep tl.arange legal.
    return max(lo, triton.next_power_of_2(max(int(length), 1)))


def _bucket(length: int) -> int:
    # Autotune key: lengths rounded up to a power of two (capped), so ragged batches whose
    # lengths differ by a few tokens share one tuning result.
    return min(_pow2_tile(length, 1), 16384)


def _interpreter_config(kind: str, lq: int, lk: int) -> dict[str, int]:
    """The one fixed config used under the interpreter.

    The interpreter executes every program's Python body with numpy, so its cost is roughly
    (number of programs x loop trips); large tiles mean fewer of both. 64 x 64 keeps the tiles
    big while still making the ragged test shapes (Lq = 77, Lk = 196/257) run several loop trips
    with partial tiles, which is what exercises the online-softmax rescaling and the masking.
    """
    del kind
    return {"BLOCK_M": min(_pow2_tile(lq), 64), "BLOCK_N": min(_pow2_tile(lk), 64)}


def _cuda_configs(kind: str, lq: int, lk: int, head_dim: int) -> list[triton.Config]:
    """Autotune candidates for one kernel and one schedule class (kept small: compile time)."""
    block_d = _pow2_tile(head_dim)
    short_q, short_k = lq <= _SHORT_Q, lk <= _SHORT_K
    if kind in ("fwd", "dq"):
        # Programs own query tiles and loop over key tiles.
        ms = [_pow2_tile(lq)] if short_q else [64, 128]
        ns = [_pow2_tile(lk)] if short_k else ([64, 128] if kind == "fwd" else [32, 64])
    else:  # "dkdv": programs own key tiles and loop over query tiles.
        ns = [_pow2_tile(lk)] if short_k else [64, 128]
        ms = [_pow2_tile(lq)] if short_q else [32, 64]
    configs = []
    for bm in ms:
        for bn in ns:
            # Register budget: two [tile, BLOCK_D] fp32 accumulators plus a [BM, BN] score tile.
            if bm * bn > 128 * 128 or (block_d >= 128 and bm * bn > 128 * 64 and kind != "fwd"):
                continue
            big = bm * bn >= 128 * 64
            for stages in (2, 3) if block_d <= 64 else (2,):
                configs.append(
                    triton.Config(
                        {"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=8 if big else 4, num_stages=stages
                    )
                )
    if not configs:  # every candidate exceeded the budget: take the smallest
        configs.append(triton.Config({"BLOCK_M": min(ms), "BLOCK_N": min(ns)}, num_warps=4, num_stages=2))
    return configs


_KERNELS = {
    "fwd": _cross_attention_fwd_kernel,
    "dkdv": _cross_attention_bwd_dkdv_kernel,
    "dq": _cross_attention_bwd_dq_kernel,
}


@functools.cache
def _autotuned(kind: str, short_q: bool, short_k: bool, lq_tile: int, lk_tile: int, head_dim: int):
    # One Autotuner per (kernel, schedule class): a plain config list works with
    # torch.library.wrap_triton / Inductor on every torch version (no prune hooks needed).
    lq = lq_tile if short_q else 1 << 20
    lk = lk_tile if short_k else 1 << 20
    return triton.autotune(
        configs=_cuda_configs(kind, lq, lk, head_dim),
        key=["LQ_BUCKET", "LK_BUCKET", "HEAD_DIM", "HAS_KV_LENS", "HAS_MASK"],
    )(_KERNELS[kind])


def _select(kind: str, lq: int, lk: int, head_dim: int, config: dict | None):
    """Return ``(kernel, launch_kwargs)``: a fixed-config raw kernel, or an autotuned one on CUDA."""
    if config is not None or INTERPRETED:
        cfg = dict(config) if config is not None else _interpreter_config(kind, lq, lk)
        return _KERNELS[kind], cfg
    short_q, short_k = lq <= _SHORT_Q, lk <= _SHORT_K
    kernel = _autotuned(
        kind, short_q, short_k, _pow2_tile(lq) if short_q else 0, _pow2_tile(lk) if short_k else 0, head_dim
    )
    return kernel, {}


def _wrap(kernel):
    """``torch.library.wrap_triton`` so ``triton_op`` bodies trace under torch.compile/export; the raw
    kernel under the interpreter (InterpretedFunction is not traceable) or on old torch."""
    if INTERPRETED:
        return kernel
    wrap = getattr(torch.library, "wrap_triton", None)
    return wrap(kernel) if wrap is not None else kernel


def _dot_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"  # triton's default; it only affects fp32 operands


def _mask_args(kv_lens, key_padding_mask, q):
    # Absent optional tensors are replaced by a harmless real pointer (q): the HAS_* constexprs
    # compile the loads away, and a tensor keeps wrap_triton/Inductor argument handling simple.
    kpm = key_padding_mask.view(torch.uint8) if key_padding_mask is not None else None
    return (
        kv_lens if kv_lens is not None else q,
        kpm if kpm is not None else q,
        (kpm.stride(0), kpm.stride(1)) if kpm is not None else (0, 0),
    )


def cross_attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_lens: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    scale: float,
    *,
    config: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel; returns ``(out [B, Lq, H, D], lse [B, H, Lq] fp32)``.

    ``config`` (``{"BLOCK_M": .., "BLOCK_N": ..}``) pins the tiles (tests use it to force many loop
    trips); by default CUDA autotunes and the interpreter uses ``_interpreter_config``.
    """
    b, lq, h, d = q.shape
    lk = k.shape[1]
    out = torch.empty((b, lq, h, d), device=q.device, dtype=q.dtype)
    lse = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, lse
    kernel, cfg = _select("fwd", lq, lk, d, config)
    kvl, kpm, (smb, smn) = _mask_args(kv_lens, key_padding_mask, q)

    def grid(meta):
        return (triton.cdiv(lq, meta["BLOCK_M"]), b * h)

    _wrap(kernel)[grid](
        q,
        k,
        v,
        out,
        lse,
        kvl,
        kpm,
        scale * LOG2E,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *out.stride(),
        smb,
        smn,
        h,
        lq,
        lk,
        _bucket(lq),
        _bucket(lk),
        HEAD_DIM=d,
        HAS_KV_LENS=kv_lens is not None,
        HAS_MASK=key_padding_mask is not None,
        DOT_PRECISION=_dot_precision(q.dtype),
        BLOCK_D=_pow2_tile(d),
        **cfg,
    )
    return out, lse


def cross_attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    kv_lens: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    scale: float,
    *,
    config: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch preprocess, dK/dV and dQ kernels; returns ``(dq, dk, dv)`` shaped like q, k, v."""
    b, lq, h, d = q.shape
    lk = k.shape[1]
    dq = torch.empty((b, lq, h, d), device=q.device, dtype=q.dtype)
    dk = torch.empty((b, lk, h, d), device=k.device, dtype=k.dtype)
    dv = torch.empty((b, lk, h, d), device=v.device, dtype=v.dtype)
    if b * h == 0 or d == 0:
        return dq, dk, dv
    if lq == 0:  # no query: every gradient is zero
        return dq, dk.zero_(), dv.zero_()
    block_d = _pow2_tile(d)
    delta = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)
    # Elementwise row reduction: 64 rows x BLOCK_D columns per program is plenty.
    pre_m = 64 if not INTERPRETED else min(_pow2_tile(lq), 128)
    _wrap(_cross_attention_bwd_preprocess_kernel)[(triton.cdiv(lq, pre_m), b * h)](
        out,
        grad_out,
        delta,
        *out.stride(),
        *grad_out.stride(),
        h,
        lq,
        HEAD_DIM=d,
        BLOCK_M=pre_m,
        BLOCK_D=block_d,
    )
    kvl, kpm, (smb, smn) = _mask_args(kv_lens, key_padding_mask, q)
    common = dict(
        HEAD_DIM=d,
        HAS_KV_LENS=kv_lens is not None,
        HAS_MASK=key_padding_mask is not None,
        DOT_PRECISION=_dot_precision(q.dtype),
        BLOCK_D=block_d,
    )

    kernel, cfg = _select("dkdv", lq, lk, d, config)

    def grid_n(meta):
        return (triton.cdiv(lk, meta["BLOCK_N"]), b * h)

    _wrap(kernel)[grid_n](
        q,
        k,
        v,
        grad_out,
        lse,
        delta,
        kvl,
        kpm,
        dk,
        dv,
        scale,
        scale * LOG2E,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *grad_out.stride(),
        *dk.stride(),
        *dv.stride(),
        smb,
        smn,
        h,
        lq,
        lk,
        _bucket(lq),
        _bucket(lk),
        **common,
        **cfg,
    )

    kernel, cfg = _select("dq", lq, lk, d, config)

    def grid_m(meta):
        return (triton.cdiv(lq, meta["BLOCK_M"]), b * h)

    _wrap(kernel)[grid_m](
        q,
        k,
        v,
        grad_out,
        lse,
        delta,
        kvl,
        kpm,
        dq,
        scale,
        scale * LOG2E,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *grad_out.stride(),
        *dq.stride(),
        smb,
        smn,
        h,
        lq,
        lk,
        _bucket(lq),
        _bucket(lk),
        **common,
        **cfg,
    )
    return dq, dk, dv


class CrossAttentionFunction(torch.autograd.Function):
    """Autograd over the Triton launchers.

    The CUDA path goes through the ``torch.library`` op (``mmcore_kernels.ops``), which registers the
    same launchers with ``register_autograd``; this Function is what the interpreter path (CPU
    tensors under ``TRITON_INTERPRET=1``) uses, because ``triton_op`` tracing cannot wrap an
    interpreted kernel.
    """

    @staticmethod
    def forward(ctx, q, k, v, kv_lens, key_padding_mask, scale, config=None):
        out, lse = cross_attention_forward(q, k, v, kv_lens, key_padding_mask, scale, config=config)
        ctx.save_for_backward(q, k, v, out, lse, kv_lens, key_padding_mask)
        ctx.scale = scale
        ctx.config = config
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, lse, kv_lens, key_padding_mask = ctx.saved_tensors
        dq, dk, dv = cross_attention_backward(
            grad_out, q, k, v, out, lse, kv_lens, key_padding_mask, ctx.scale, config=ctx.config
        )
        return dq, dk, dv, None, None, None, None
