"""`Features`: what an encoder emits for one modality, and what a fusion emits for all of them."""

from __future__ import annotations

import torch


class Features:
    """Per-modality (or fused) features of one batch.

    Attributes:
        tokens: ``[B, L, D]`` token features (``L == 1`` for encoders with one vector per sample).
        mask: ``[B, L]`` bool, True where the token is real (False = padding).
        pooled: ``[B, D]`` one vector per sample.
        present: ``[B]`` bool, False where the sample lacks this modality. Fusions and heads must
            not let the tokens or pooled vector of an absent sample influence anything; encoders
            emit zeros there so that nothing downstream mistakes them for data by accident.
        unmasked_pooled: ``pooled`` before the absent samples are zeroed (see the property).

    ``tokens``, ``mask``, ``pooled`` and ``present`` may be reassigned (plugins do, to adjust what a
    constructor made); the four are checked against each other when the object is built.
    """

    def __init__(self, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor, present: torch.Tensor) -> None:
        self._tokens, self.mask, self._pooled, self.present = tokens, mask, pooled, present
        self._unmasked: torch.Tensor | None = None
        self.validate()

    # The zeroing of absent samples' pooled vectors (from_pooled) happens when ``pooled`` or
    # ``tokens`` is first read, so that a consumer which selects by ``present`` anyway can read
    # ``unmasked_pooled`` and skip it: an elementwise op forward and backward per modality and step.
    @property
    def pooled(self) -> torch.Tensor:
        if self._unmasked is not None:
            return self._zero_absent()[0]
        return self._pooled

    @pooled.setter
    def pooled(self, value: torch.Tensor) -> None:
        if self._unmasked is not None:
            self._zero_absent(keep=True)  # tokens stay the zeroed vectors they stood for
        self._pooled = value

    @property
    def tokens(self) -> torch.Tensor:
        if self._unmasked is not None:
            return self._zero_absent()[1]
        return self._tokens

    @tokens.setter
    def tokens(self, value: torch.Tensor) -> None:
        if self._unmasked is not None:
            self._zero_absent(keep=True)
        self._tokens = value

    @property
    def unmasked_pooled(self) -> torch.Tensor:
        """``[B, D]``: equal to ``pooled`` where ``present``; unspecified (but finite) where not.

        For fusions and heads that select by ``present`` anyway (``torch.where(present[:, None],
        f(x), fallback)`` with a row-wise ``f``): reading this instead of ``pooled`` saves zeroing
        the absent samples -- an elementwise op forward and backward -- for vectors
        that the selection discards. Anything else should read ``pooled``. (Encoders must emit
        finite values for absent samples: ``f``'s weight gradients multiply them by zero.)
        """
        return self._unmasked if self._unmasked is not None else self._pooled

    def _zero_absent(self, keep: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled, tokens) with absent samples zeroed; remembered unless computed without the
        autograd graph the raw tensor has (a read under no_grad or inference_mode must not leave
        the later, differentiable reads detached)."""
        raw = self._unmasked
        # A selection, not a multiplication by 0: zeros (and zero gradients) even where the
        # encoder left a non-finite value in an absent sample.
        pooled = torch.where(self.present.unsqueeze(1), raw, torch.zeros((), dtype=raw.dtype, device=raw.device))
        tokens = pooled.unsqueeze(1)
        if keep or torch.is_grad_enabled() or not raw.requires_grad:
            self._pooled, self._tokens, self._unmasked = pooled, tokens, None
        return pooled, tokens

    def __repr__(self) -> str:
        vectors = self.unmasked_pooled
        return (f"Features(batch_size={self.batch_size}, num_tokens={self.num_tokens}, dim={self.dim}, "
                f"dtype={vectors.dtype}, device={vectors.device}, present={int(self.present.sum())}/{self.present.numel()})")

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_tokens(
        cls, tokens: torch.Tensor, mask: torch.Tensor | None = None, present: torch.Tensor | None = None
    ) -> Features:
        """Features whose pooled vector is the mean over real tokens (zeros for absent samples)."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
            raise ValueError(f"tokens must be a [B, L, D] tensor, got {_describe(tokens)}")
        b, length, _ = tokens.shape
        if present is None:
            present = torch.ones(b, dtype=torch.bool, device=tokens.device)
        elif present.dtype is not torch.bool:
            present = present.to(torch.bool)
        if mask is None:
            mask = present.unsqueeze(1).expand(b, length).clone()
        else:
            mask = (mask if mask.dtype is torch.bool else mask.to(torch.bool)) & present.unsqueeze(1)
        if length and tokens.dtype in _EXACT_COUNTS and readable_now(mask) and bool(mask.all()):
            # Every token real (one full record, as a Predictor sees): multiplying by ones and dividing by
            # a count of ones are skipped; ``x * 1.0`` is ``x`` and the count is ``length`` exactly, so the
            # result is the same, bit for bit, as the masked arithmetic below.
            return cls(tokens=tokens, mask=mask, pooled=tokens.sum(dim=1) / length, present=present)
        tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
        return cls(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask), present=present)

    @classmethod
    def from_pooled(cls, pooled: torch.Tensor, present: torch.Tensor | None = None) -> Features:
        """Features of one token per sample (the pooled vector itself)."""
        if not isinstance(pooled, torch.Tensor) or pooled.dim() != 2:
            raise ValueError(f"pooled must be a [B, D] tensor, got {_describe(pooled)}")
        b = pooled.shape[0]
        if present is None:
            present = torch.ones(b, dtype=torch.bool, device=pooled.device)
        else:
            if present.dtype is not torch.bool:
                present = present.to(torch.bool)
            if present.shape != (b,):
                raise ValueError(f"present must have shape [{b}] to match pooled {list(pooled.shape)}, got {list(present.shape)}")
            # Zero the absent samples' vectors (lazily: see ``unmasked_pooled``) -- unless every
            # sample is present, which is only worth asking where reading a flag costs nothing
            # (:func:`readable_now`).
            if not readable_now(present) or not bool(present.all()):
                out = cls._trusted(None, present.unsqueeze(1).clone(), None, present)
                out._unmasked = pooled
                return out
        # Consistent by construction: skip the checks (this runs for every encoder and fusion
        # output of every step; unsqueeze rather than indexing, which costs more in Python).
        return cls._trusted(pooled.unsqueeze(1), present.unsqueeze(1).clone(), pooled, present)

    @classmethod
    def _trusted(cls, tokens, mask: torch.Tensor, pooled, present: torch.Tensor) -> Features:
        """Features from tensors the caller has already made consistent, without :meth:`validate`."""
        out = object.__new__(cls)
        out._tokens, out.mask, out._pooled, out.present, out._unmasked = tokens, mask, pooled, present, None
        return out

    @classmethod
    def absent(cls, batch_size: int, dim: int, *, device=None, dtype=torch.float32) -> Features:
        """Features for a modality missing from every sample of the batch."""
        zeros = torch.zeros(batch_size, dim, device=device, dtype=dtype)
        no = torch.zeros(batch_size, dtype=torch.bool, device=device)
        return cls(tokens=zeros[:, None, :], mask=no[:, None].clone(), pooled=zeros, present=no)

    # ------------------------------------------------------------------ properties
    # (Read without zeroing anything: shapes do not depend on it.)
    @property
    def batch_size(self) -> int:
        return self._unmasked.shape[0] if self._unmasked is not None else self._tokens.shape[0]

    @property
    def num_tokens(self) -> int:
        return 1 if self._unmasked is not None else self._tokens.shape[1]

    @property
    def dim(self) -> int:
        return self._unmasked.shape[1] if self._unmasked is not None else self._tokens.shape[2]

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


#: Dtypes whose float sum of ``n`` ones is ``n`` for any sequence length a model meets (half and bfloat16
#: round counts above 2048 / 256), so that ``masked_mean`` over an all-real mask is ``sum / n`` exactly.
_EXACT_COUNTS = (torch.float32, torch.float64)


def readable_now(tensor: torch.Tensor) -> bool:
    """Whether a forward pass may branch on ``tensor``'s values (``bool(mask.all())``) to skip masking work.

    True for a CPU tensor outside ``torch.compile`` / ``torch.export`` / ``torch.jit`` tracing: reading it
    costs no device synchronisation (on a GPU it would wait for the device), and no traced graph gets
    specialised to one batch's masks. Branches taken on it must compute the same values as the masked path
    (they only skip multiplications by one and selections of everything).
    """
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling() and not torch.jit.is_tracing()


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
