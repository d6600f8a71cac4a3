"""`Features`: what an encoder emits for one modality, and what a fusion emits for all of them."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Features:
    """Per-modality (or fused) features of one batch.

    Attributes:
        tokens: ``[B, L, D]`` token features (``L == 1`` for encoders with one vector per sample).
        mask: ``[B, L]`` bool, True where the token is real (False = padding).
        pooled: ``[B, D]`` one vector per sample.
        present: ``[B]`` bool, False where the sample lacks this modality. Fusions and heads must
            not let the tokens or pooled vector of an absent sample influence anything; encoders
            emit zeros there so that nothing downstream mistakes them for data by accident.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    present: torch.Tensor

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_tokens(
        cls, tokens: torch.Tensor, mask: torch.Tensor | None = None, present: torch.Tensor | None = None
    ) -> Features:
        """Features whose pooled vector is the mean over real tokens (zeros for absent samples)."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
            raise ValueError(f"tokens must be a [B, L, D] tensor, got {_describe(tokens)}")
        b, length, _ = tokens.shape
        if mask is None:
            mask = torch.ones(b, length, dtype=torch.bool, device=tokens.device)
        if present is None:
            present = torch.ones(b, dtype=torch.bool, device=tokens.device)
        present = present.to(torch.bool)
        mask = mask.to(torch.bool) & present[:, None]
        tokens = tokens * mask[..., None].to(tokens.dtype)
        return cls(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask), present=present)

    @classmethod
    def from_pooled(cls, pooled: torch.Tensor, present: torch.Tensor | None = None) -> Features:
        """Features of one token per sample (the pooled vector itself)."""
        if not isinstance(pooled, torch.Tensor) or pooled.dim() != 2:
            raise ValueError(f"pooled must be a [B, D] tensor, got {_describe(pooled)}")
        b = pooled.shape[0]
        if present is None:
            present = torch.ones(b, dtype=torch.bool, device=pooled.device)
        present = present.to(torch.bool)
        if present.shape != (b,):
            raise ValueError(f"present must have shape [{b}] to match pooled {list(pooled.shape)}, got {list(present.shape)}")
        pooled = pooled * present[:, None].to(pooled.dtype)
        # Consistent by construction: skip the dataclass checks (this runs for every encoder and
        # fusion output of every step).
        return cls._trusted(pooled[:, None, :], present[:, None].clone(), pooled, present)

    @classmethod
    def _trusted(cls, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor, present: torch.Tensor) -> Features:
        """Features from tensors the caller has already made consistent, without :meth:`validate`."""
        out = object.__new__(cls)
        out.tokens, out.mask, out.pooled, out.present = tokens, mask, pooled, present
        return out

    @classmethod
    def absent(cls, batch_size: int, dim: int, *, device=None, dtype=torch.float32) -> Features:
        """Features for a modality missing from every sample of the batch."""
        zeros = torch.zeros(batch_size, dim, device=device, dtype=dtype)
        no = torch.zeros(batch_size, dtype=torch.bool, device=device)
        return cls(tokens=zeros[:, None, :], mask=no[:, None].clone(), pooled=zeros, present=no)

    # ------------------------------------------------------------------ properties
    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[1]

    @property
    def dim(self) -> int:
        return self.tokens.shape[2]

    def to(self, *args, **kwargs) -> Features:
        """Move tokens/pooled like ``Tensor.to``; masks keep their bool dtype."""
        tokens = self.tokens.to(*args, **kwargs)
        return Features(
            tokens=tokens,
            mask=self.mask.to(tokens.device),
            pooled=self.pooled.to(*args, **kwargs),
            present=self.present.to(tokens.device),
        )

    def validate(self) -> None:
        """Raise ValueError when the four tensors do not fit the contract together."""
        for name in ("tokens", "mask", "pooled", "present"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise TypeError(f"Features.{name} must be a torch.Tensor, got {type(getattr(self, name)).__name__}")
        if self.tokens.dim() != 3:
            raise ValueError(f"Features.tokens must be [B, L, D], got shape {tuple(self.tokens.shape)}")
        b, length, d = self.tokens.shape
        expected = {"mask": (b, length), "pooled": (b, d), "present": (b,)}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(
                    f"Features.{name} must have shape {list(shape)} to match tokens {[b, length, d]}, got {list(got)}"
                )
        for name in ("mask", "present"):
            if getattr(self, name).dtype != torch.bool:
                raise TypeError(f"Features.{name} must be a bool tensor, got {getattr(self, name).dtype}")


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``tokens [B, L, D]`` over positions where ``mask [B, L]`` is True; zeros where none is."""
    weights = mask.to(tokens.dtype)[..., None]
    total = (tokens * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp_min(1.0)
    return total / count


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {list(value.shape)}"
    return type(value).__name__
