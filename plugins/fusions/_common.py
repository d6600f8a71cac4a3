"""Pieces the built-in fusions share: present-aware combination and a multi-head attention block."""

from __future__ import annotations

import torch
from torch import nn

from mmcore import Features


def stack_present(features: dict[str, Features], slots: list[str]) -> torch.Tensor:
    """``[N, B]`` bool: which sample has which modality."""
    return torch.stack([features[s].present for s in slots])


def select_present(x: torch.Tensor, present: torch.Tensor, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """``x [B, ...]`` where present, else ``fallback`` (zeros by default).

    ``torch.where`` (not a multiplication by 0) so an absent sample gets exactly zero gradient even
    when its values are huge or non-finite.
    """
    shape = (present.shape[0],) + (1,) * (x.dim() - 1)
    other = torch.zeros_like(x) if fallback is None else fallback.to(x.dtype).expand_as(x)
    return torch.where(present.reshape(shape), x, other)


def choose_slot(input_dims, chosen: str | None, *, option: str, fusion: str) -> str:
    """The modality a fusion treats specially (its query or target): ``chosen``, or the first one."""
    if len(input_dims) < 2:
        raise ValueError(f"{fusion} needs at least 2 modalities, got {list(input_dims)}")
    slot = chosen if chosen is not None else next(iter(input_dims))
    if slot not in input_dims:
        raise ValueError(f"{option} must be one of the modalities {sorted(input_dims)}, got {slot!r}")
    return slot


def masked_softmax(logits: torch.Tensor, keep: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` where ``keep``; exactly zero where not, and all zeros when nothing is kept."""
    masked = logits.masked_fill(~keep, float("-inf"))
    any_kept = keep.any(dim=dim, keepdim=True)
    safe = torch.where(any_kept, masked, torch.zeros_like(masked))
    return torch.softmax(safe, dim=dim) * any_kept.to(logits.dtype)


class MultiHeadCrossAttention(nn.Module):
    """Multi-head attention of ``x_q`` over ``x_kv`` through ``mmcore_kernels.cross_attention``.

    The projections are laid out so the kernel receives ``[B, L, H, D]`` views of their outputs
    (no copies), and the key padding mask goes to the kernel, so the Triton path runs on CUDA.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads = dim, heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        from mmcore_kernels import cross_attention

        b, lq, _ = x_q.shape
        lk = x_kv.shape[1]
        head_dim = self.dim // self.heads
        q = self.q(x_q).view(b, lq, self.heads, head_dim)
        k, v = self.kv(x_kv).view(b, lk, 2, self.heads, head_dim).unbind(2)
        attended = cross_attention(q, k, v, key_padding_mask=key_mask)
        return self.dropout(self.out(attended.reshape(b, lq, self.dim)))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: cross-attention (or self-attention) + feed-forward, with residuals."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, ff_mult: int = 2) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attention = MultiHeadCrossAttention(dim, heads, dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_mult * dim, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.norm_q(x)
        kv = q if context is None else self.norm_kv(context)
        x = x + self.attention(q, kv, key_mask)
        return x + self.ff(self.norm_ff(x))
