"""Input checks shared by every backend.

Each check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape or
value) with a message that says what was expected and what came. Nothing is broadcast silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import _dispatch

#: Head dims the Triton attention kernels are built and tested for (non-powers of two are masked
#: up to the next power of two inside the kernel).
TRITON_HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 80, 96, 128)
TRITON_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32)
FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _require_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


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
        _require_tensor(f"{op}: {name}", t)
        if t.dim() != 4:
            layout = "[B, Lq, H, D]" if name == "q" else "[B, Lk, H, D]"
            raise ValueError(
                f"{op}: {name} must be 4-D {layout}, got {t.dim()}-D tensor of shape {_shape(t)}"
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
                    f"(q {_shape(q)}, {name} {_shape(t)})"
                )
    if k.shape[1] != v.shape[1]:
        raise ValueError(
            f"{op}: k and v must have the same number of keys Lk, got k {_shape(k)} and v {_shape(v)}"
        )
    lk = k.shape[1]
    if lk < 1:
        raise ValueError(
            f"{op}: expected at least one key (Lk >= 1), got Lk=0; to mark samples without keys pass "
            "kv_lens=0 or an all-False key_padding_mask row instead"
        )
    if h < 1 or d < 1:
        raise ValueError(f"{op}: expected H >= 1 and D >= 1, got q {_shape(q)}")

    if kv_lens is not None:
        _require_tensor(f"{op}: kv_lens", kv_lens)
        if kv_lens.dtype.is_floating_point or kv_lens.dtype.is_complex or kv_lens.dtype == torch.bool:
            raise TypeError(
                f"{op}: kv_lens must be an integer tensor (e.g. torch.int32/int64), got {kv_lens.dtype}"
            )
        if tuple(kv_lens.shape) != (b,):
            raise ValueError(f"{op}: kv_lens must have shape [B] = [{b}], got {_shape(kv_lens)}")
        if kv_lens.device != q.device:
            raise ValueError(f"{op}: kv_lens must be on q's device {q.device}, got {kv_lens.device}")
        # Reading the values costs a host sync on CUDA; under torch.compile it would force a graph
        # break, so it is skipped there (the kernels clamp to [0, Lk], so memory stays safe).
        if b > 0 and not _is_compiling():
            lo, hi = (int(x) for x in torch.aminmax(kv_lens.to(torch.int64)))
            if lo < 0 or hi > lk:
                raise ValueError(
                    f"{op}: kv_lens values must lie in [0, Lk] = [0, {lk}], got min {lo}, max {hi}"
                )
    if key_padding_mask is not None:
        _require_tensor(f"{op}: key_padding_mask", key_padding_mask)
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(
                f"{op}: key_padding_mask must be a bool tensor (True = real key), got {key_padding_mask.dtype}"
            )
        if tuple(key_padding_mask.shape) != (b, lk):
            raise ValueError(
                f"{op}: key_padding_mask must have shape [B, Lk] = [{b}, {lk}], got {_shape(key_padding_mask)}"
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


def _triton_dtype_problem(dtype: torch.dtype) -> str | None:
    if dtype not in TRITON_DTYPES:
        return f"the Triton kernel supports dtypes {[str(t) for t in TRITON_DTYPES]}, got {dtype}"
    if dtype == torch.bfloat16 and _dispatch.triton_interpret_active():
        # Seen with triton 3.x: the interpreter's tl.dot multiplies bf16 raw bits (results off
        # by ~1e10), so refuse rather than return garbage.
        return (
            "the Triton interpreter (TRITON_INTERPRET=1) computes bfloat16 tl.dot incorrectly; "
            "use float16/float32 inputs under the interpreter (bfloat16 runs on CUDA)"
        )
    return None


def triton_cross_attention_unsupported(q: torch.Tensor) -> str | None:
    """Why the Triton attention kernel cannot take these (already validated) inputs, or ``None``."""
    d = q.shape[-1]
    if d not in TRITON_HEAD_DIMS:
        return f"the Triton kernel supports head dims {list(TRITON_HEAD_DIMS)}, got D={d}"
    return _triton_dtype_problem(q.dtype)


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
            _require_tensor(f"{op}: xs[{i}]", x)
        if x.dim() < 1:
            raise ValueError(f"{op}: xs[{i}] must have at least one dimension [..., K_i], got a 0-D tensor")
    if not isinstance(weight, torch.Tensor):
        _require_tensor(f"{op}: weight", weight)
    if bias is not None and not isinstance(bias, torch.Tensor):
        _require_tensor(f"{op}: bias", bias)
    first = xs[0]
    lead, dtype, device = first.shape[:-1], first.dtype, first.device
    for i, x in enumerate(xs):
        if x.shape[:-1] != lead:
            raise ValueError(
                f"{op}: every xs[i] must have the same leading dims as xs[0] {list(lead)} (no broadcasting), "
                f"got xs[{i}] of shape {_shape(x)}"
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
        raise ValueError(f"{op}: weight must be 2-D [N, sum K_i], got shape {_shape(weight)}")
    widths = [x.shape[-1] for x in xs]
    total = sum(widths)
    if weight.shape[1] != total:
        raise ValueError(
            f"{op}: weight must have sum K_i = {' + '.join(map(str, widths))} = {total} columns, "
            f"got weight of shape {_shape(weight)}"
        )
    n = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"{op}: bias must have shape [N] = [{n}], got {_shape(bias)}")
    return xs


def triton_concat_linear_unsupported(xs: Sequence[torch.Tensor]) -> str | None:
    """Why the Triton GEMM cannot take these (already validated) inputs, or ``None``."""
    return _triton_dtype_problem(xs[0].dtype)
