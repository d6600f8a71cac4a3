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

Layout (one module per op, as Liger-Kernel's ``ops/<op>.py``): ``cross_attention_op.py`` and
``concat_linear_op.py`` each hold the op's public function, input checks, PyTorch path and
``torch.library`` registration; ``triton_cross_attention.py`` / ``triton_concat_linear.py`` its
Triton kernels; ``_dispatch.py`` the backend selection; ``ops.py`` runs the registrations;
``reference.py`` gathers the PyTorch paths (the oracles).

Importing this package does not import Triton; the Triton modules and the ``torch.library`` op
registration (``mmcore_kernels.ops``) load on first use.

PyTorch path for ``concat_linear``: by size (table at ``reference.CONCAT_LINEAR_DEFAULT_METHOD``):
per-segment ``addmm`` on column views of the weight for large inputs (never builds the
concatenation; measured up to 1.8x faster than ``torch.cat`` + ``F.linear`` on CPU), and
``cat`` + ``linear`` for small ones, where one GEMM beats several (up to 1.5x in training).

Benchmarks are the repository's, not this package's: ``python benchmarks/kernel_bench.py`` (or
``mmcore bench`` in a source checkout) prints the table, and the pytest-benchmark suites
``benchmarks/bench_cross_attention.py`` / ``bench_concat_linear.py`` use the same cases.
"""

from __future__ import annotations

from ._dispatch import BACKENDS, BackendUnavailableError, available_backends, backend
from .concat_linear_op import concat_linear
from .cross_attention_op import cross_attention

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "backend",
    "concat_linear",
    "cross_attention",
]
