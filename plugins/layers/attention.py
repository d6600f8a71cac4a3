"""Multi-head attention and a pre-norm transformer block on ``mmcore_kernels.cross_attention``.

Used by the attention fusions (``mmcore_plugins.fusions.attention``, ``gating``) and the
captioning decoder. All attention runs through ``mmcore_kernels.cross_attention`` (Triton on
CUDA, PyTorch elsewhere). The input projection is one ``[3 * dim, dim]`` weight (rows: queries,
keys, values): self-attention runs it as one GEMM and views the result as three ``[B, L, H, D]``
tensors; cross-attention applies the query rows to the queries and the key/value rows to the
context. Either way the kernel receives strided *views* of the projection outputs, never copies.

Masking: ``key_mask [B, Lk]`` (True = a real key) goes to the kernel as ``key_padding_mask``;
callers pass ``mask & present`` so padding and absent modalities are never attended to, and a
query with no valid key at all gets exactly zero output (and zero gradient) from the kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmcore_plugins.layers.options import check_dropout, check_heads

__all__ = ["MultiHeadAttention", "TransformerBlock", "key_lengths"]


def key_lengths(key_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` int32: one past the last real key of each row (0 when none), without a host sync.

    Given to the kernel *with* the mask (a key must pass both), it changes nothing in the result
    and lets the Triton key loop stop early on rows whose tail is padding.
    """
    positions = torch.arange(1, key_mask.shape[1] + 1, device=key_mask.device, dtype=torch.int32)
    return torch.where(key_mask, positions, torch.zeros((), dtype=torch.int32, device=key_mask.device)).amax(1)


class MultiHeadAttention(nn.Module):
    """Multi-head self- or cross-attention on ``mmcore_kernels.cross_attention``.

    ``forward(x, context=None, key_mask=None)``: queries from ``x [B, Lq, dim]``; keys and values
    from ``context [B, Lk, dim]`` (``x`` itself when None); ``key_mask [B, Lk]`` True = real key.
    Dropout applies to the output projection (the kernel has no attention-probability dropout).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        check_heads("attention", dim, heads)
        check_dropout("attention", dropout)
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        # nn.MultiheadAttention's initialisation: Xavier over the stacked q/k/v weight, zero biases.
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        nn.init.zeros_(self.out_proj.bias)

    def project(
        self, x: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values as ``[B, L, H, D]`` views of the projection outputs."""
        b, lq, _ = x.shape
        h, d = self.heads, self.head_dim
        weight, bias = self.in_proj.weight, self.in_proj.bias
        if context is None:
            q, k, v = F.linear(x, weight, bias).view(b, lq, 3, h, d).unbind(2)
            return q, k, v
        q = F.linear(x, weight[: self.dim], bias[: self.dim]).view(b, lq, h, d)
        k, v = F.linear(context, weight[self.dim :], bias[self.dim :]).view(b, context.shape[1], 2, h, d).unbind(2)
        return q, k, v

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        import mmcore_kernels

        q, k, v = self.project(x, context)
        kv_lens = key_lengths(key_mask) if key_mask is not None and key_mask.is_cuda else None
        attended = mmcore_kernels.cross_attention(q, k, v, key_padding_mask=key_mask, kv_lens=kv_lens)
        # The torch path may return a transposed view: reshape (not view) merges the heads.
        return self.dropout(self.out_proj(attended.reshape(x.shape[0], x.shape[1], self.dim)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: (cross- or self-) attention + feed-forward, each with a residual.

    ``forward(x, context=None, key_mask=None)``: with ``context``, ``x`` attends to it (``key_mask``
    masks the context); without, ``x`` attends to itself (``key_mask`` masks ``x``'s own tokens).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, ff_mult: int = 2) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attention = MultiHeadAttention(dim, heads, dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_mult * dim, dim), nn.Dropout(dropout)
        )

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        kv = None if context is None else self.norm_kv(context)
        x = x + self.attention(self.norm_q(x), kv, key_mask)
        return x + self.ff(self.norm_ff(x))
