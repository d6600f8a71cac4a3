"""``max_pool_2x2``: 2x2 max pooling of ``[B, C, H, W]`` maps, the same values as ``F.max_pool2d(x, 2)``, faster on CPU.

PyTorch's CPU max-pool kernel for contiguous (NCHW) maps is a scalar loop; the channels-last one is vectorised
over channels: measured here 3.2 ms vs 0.7 ms (conversions included) for a ``[32, 16, 40, 24]`` map in inference
(``benchmarks/bench_forward_overhead.py``, RESULTS.md). A maximum is exact whichever kernel picks it, so the result
is the same, and the output comes back contiguous, so the convolutions after it run as before.

Only without a gradient: through the channels-last route the layer before the pooling gets a channels-last
gradient, and its backward (GELU's, the masked group norm's elementwise arithmetic) slows down on mixed layouts
more than the pooling gains -- measured a 1.27x slower training step of the demo model at batch 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` of ``x [B, C, H, W]`` (odd last rows/columns dropped): ``[B, C, H // 2, W // 2]``.

    On the CPU without a gradient, through the channels-last kernel (see the module); with one, elsewhere, and
    while ``torch.compile``, ``torch.export`` or ``torch.jit`` trace (an exported graph keeps the one operator),
    ``F.max_pool2d`` itself.
    """
    if (x.device.type != "cpu" or x.dim() != 4 or (x.requires_grad and torch.is_grad_enabled())
            or torch.compiler.is_compiling() or torch.jit.is_tracing() or x.is_contiguous(memory_format=torch.channels_last)):
        return F.max_pool2d(x, 2)
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous()


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` through :func:`max_pool_2x2` (no parameters: a model's state dict is unchanged)."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool_2x2(x)
