"""Every op's PyTorch implementation in one namespace: the fallback path and the oracles.

The functions live in their op's module (``cross_attention_op``, ``concat_linear_op``); this
module gathers them for the tests and benchmarks that compare against them, and for
``triton_concat_linear`` (its backward is ``concat_linear_backward``).

``cross_attention_reference`` and ``concat_linear_reference`` are what the ``"torch"`` backend
runs: plain differentiable PyTorch (autograd and ``torch.compile`` see straight through them).
``cross_attention_naive`` is the textbook softmax(QK^T)V used as a float64 oracle and as the
"naive" provider in benchmarks. ``cross_attention_lse`` / ``cross_attention_backward_reference``
and ``concat_linear_backward`` spell out the same math the Triton kernels implement.
Inputs are assumed validated; these functions do not re-check them.
"""

from __future__ import annotations

from .concat_linear_op import (
    CONCAT_LINEAR_ADDMM_FROM,
    CONCAT_LINEAR_DEFAULT_METHOD,
    concat_linear_backward,
    concat_linear_grad_inputs,
    concat_linear_grad_weight,
    concat_linear_method,
    concat_linear_reference,
)
from .cross_attention_op import (
    cross_attention_backward_reference,
    cross_attention_lse,
    cross_attention_naive,
    cross_attention_reference,
    key_valid_mask,
)

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
