"""Backend selection for the mmcore_kernels ops.

Precedence, most specific first: the ``backend=`` argument of an op call, the innermost
``mmcore_kernels.backend(...)`` context, the ``MMCORE_KERNELS`` environment variable, then
``"auto"``. ``"auto"`` picks Triton only where it is expected to be fast (CUDA tensors, Triton
importable, a shape the kernel supports, and for ``concat_linear`` a shape where it beats cuBLAS)
and the PyTorch path everywhere else. An *explicit* ``"triton"`` that cannot run raises
:class:`BackendUnavailableError` (or ``ValueError`` when the inputs themselves are what the
kernel does not support), naming why and what is available.

Nothing here imports Triton at module import time: ``import mmcore_kernels`` stays cheap and works
on machines without Triton.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence

import torch

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "BackendUnavailableError",
    "available_backends",
    "backend",
    "concat_linear_prefers_triton",
    "current_backend",
    "resolve_backend",
    "triton_import_error",
    "triton_interpret_active",
]

#: The concrete backends. ``"auto"`` is accepted wherever a backend is named and means "choose".
BACKENDS: tuple[str, ...] = ("torch", "triton")
ENV_VAR = "MMCORE_KERNELS"
_CHOICES = (*BACKENDS, "auto")

# A plain module-level stack (not a ContextVar) so that torch.compile can read it without a graph
# break; like torch.nn.attention.sdpa_kernel, the selection is process-wide, not per thread.
_stack: list[str] = []


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run in this environment or on these tensors."""


def _normalize(name: object, source: str) -> str:
    if not isinstance(name, str):
        raise TypeError(
            f"{source}: expected one of {list(_CHOICES)} (a str), got {type(name).__name__} {name!r}"
        )
    value = name.strip().lower()
    if value not in _CHOICES:
        raise ValueError(f"{source}: expected one of {list(_CHOICES)}, got {name!r}")
    return value


@contextlib.contextmanager
def backend(name: str) -> Iterator[str]:
    """Select the kernel backend for every op called inside the ``with`` block.

    ``name`` is ``"torch"``, ``"triton"`` or ``"auto"``. Contexts nest; the innermost wins, and a
    ``backend=`` argument on an individual call still overrides it.
    """
    value = _normalize(name, "mmcore_kernels.backend()")
    _stack.append(value)
    try:
        yield value
    finally:
        _stack.pop()


def current_backend(arg: str | None = None) -> tuple[str, str]:
    """Return ``(choice, source)`` where ``choice`` is ``"torch"|"triton"|"auto"``.

    ``source`` says where the choice came from, for error messages.
    """
    if arg is not None:
        return _normalize(arg, "backend="), f"backend={arg!r}"
    if _stack:
        return _stack[-1], f"mmcore_kernels.backend({_stack[-1]!r})"
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip():
        return _normalize(env, f"environment variable {ENV_VAR}"), f"{ENV_VAR}={env}"
    return "auto", "auto"


@functools.lru_cache(maxsize=1)
def triton_import_error() -> str | None:
    """``None`` when ``import triton`` works, else a one-line reason. Imports Triton (once)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising something else
        return f"triton cannot be imported ({type(exc).__name__}: {exc})"
    return None


def triton_interpret_active() -> bool:
    """Whether the Triton kernels run under the Triton interpreter (``TRITON_INTERPRET=1``).

    Triton reads the variable when a kernel is *decorated*, i.e. when our kernel modules are first
    imported; once they are, their recorded mode is the truth.
    """
    for name in ("triton_cross_attention", "triton_concat_linear"):
        module = sys.modules.get(f"{__package__}.{name}")
        if module is not None:
            return bool(module.INTERPRETED)
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def _triton_environment_problem(device: torch.device) -> str | None:
    """Why Triton cannot run on tensors of ``device`` here, or ``None`` when it can."""
    problem = triton_import_error()
    if problem is not None:
        return problem
    if triton_interpret_active():
        return None  # the interpreter runs the real kernels on CPU (and CUDA) tensors
    if device.type != "cuda":
        return (
            f"the tensors are on {device.type!r}; the Triton kernels need CUDA tensors "
            "(or TRITON_INTERPRET=1 set before the first Triton call, to run them on CPU)"
        )
    return None


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends that can run on tensors of ``device`` (default: CUDA if present, else CPU)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    found = ["torch"]
    if _triton_environment_problem(device) is None:
        found.append("triton")
    return found


def resolve_backend(
    op: str,
    arg: str | None,
    device: torch.device,
    triton_unsupported: Callable[[], str | None],
    auto_prefers_triton: Callable[[], bool] = lambda: True,
) -> str:
    """Pick ``"torch"`` or ``"triton"`` for one call of ``op``.

    ``triton_unsupported()`` returns why the Triton kernel cannot take these inputs (shape, dtype)
    or ``None``; ``auto_prefers_triton()`` is the performance heuristic consulted in auto mode only.
    """
    choice, source = current_backend(arg)
    if choice == "torch":
        return "torch"
    if choice == "auto":
        # Auto never runs the interpreter: it is a debugging/CI tool, far too slow to pick silently.
        if device.type != "cuda" or triton_interpret_active() or triton_import_error() is not None:
            return "torch"
        if triton_unsupported() is not None or not auto_prefers_triton():
            return "torch"
        return "triton"
    problem = _triton_environment_problem(device)
    if problem is not None:
        raise BackendUnavailableError(
            f"mmcore_kernels.{op}: backend 'triton' was requested ({source}) but cannot run: {problem}. "
            f"Available backends for {device.type} tensors: {available_backends(device)}."
        )
    reason = triton_unsupported()
    if reason is not None:
        raise ValueError(
            f"mmcore_kernels.{op}: backend 'triton' was requested ({source}) but {reason}. "
            "The 'torch' backend accepts these inputs."
        )
    return "triton"


# --------------------------------------------------------------------------------------------
# concat_linear: when does the Triton GEMM beat cuBLAS?
# --------------------------------------------------------------------------------------------

#: Widest segment count one kernel launch walks; more segments are chained through an fp32
#: workspace (explicit "triton") or sent to cuBLAS (auto).
CONCAT_LINEAR_MAX_SEGS = 4


def concat_linear_prefers_triton(m: int, n: int, widths: Sequence[int], dtype: torch.dtype) -> bool:
    """The one heuristic deciding, in auto mode on CUDA, Triton GEMM vs per-segment cuBLAS addmm.

    The Triton kernel's win is reading every activation exactly once and writing ``Y`` once; the
    cuBLAS path (``addmm`` per segment, accumulating into ``Y``) re-reads and re-writes ``Y`` once
    per extra segment, but each of its GEMMs is as fast as GEMMs get. So Triton pays off when
    ``Y`` traffic is comparable to ``X`` traffic (wide ``N``), the problem is big enough to fill
    the GPU (many rows), and the inputs are tensor-core friendly:

    * half precision only (fp16/bf16). fp32 runs cuBLAS, whose fp32 path honours
      ``torch.backends.cuda.matmul.allow_tf32`` with tuned kernels;
    * at most ``CONCAT_LINEAR_MAX_SEGS`` segments (one launch);
    * every width a multiple of 16 (aligned, unmasked 16-byte K loads; odd widths go to cuBLAS);
    * ``m >= 1024`` rows and ``n >= 256`` outputs. Below that the GEMMs are launch-bound and
      cuBLAS's small-shape kernels win. These two thresholds are first estimates from the traffic
      model above; ``benchmarks/bench_concat_linear.py`` measures both paths on CUDA to tune them.
    """
    if dtype not in (torch.float16, torch.bfloat16):
        return False
    if not 1 <= len(widths) <= CONCAT_LINEAR_MAX_SEGS:
        return False
    if any(w % 16 for w in widths):
        return False
    return m >= 1024 and n >= 256
