"""Input-check helpers every op shares (each op's own checks live in its module, ``<op>_op.py``).

Each check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape or
value) with a message that says what was expected and what came. Nothing is broadcast silently.
"""

from __future__ import annotations

import torch

from . import _dispatch

__all__ = ["FLOAT_DTYPES", "TRITON_DTYPES", "is_compiling", "require_tensor", "shape_str", "triton_dtype_problem"]

TRITON_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32)
FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def shape_str(t: torch.Tensor) -> str:
    """``[d0, d1, ...]``: a shape for error messages."""
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def is_compiling() -> bool:
    """True while torch.compile traces (value reads would force a graph break)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def require_tensor(name: str, value: object) -> torch.Tensor:
    """``value`` when it is a tensor; ``TypeError`` naming ``name`` otherwise."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def triton_dtype_problem(dtype: torch.dtype) -> str | None:
    """Why the Triton kernels cannot take ``dtype`` here, or ``None``."""
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
