"""Pieces the built-in fusions share: option checks (the generic ones from ``mmcore_plugins.layers``) and present-aware selection and combination.

Conventions every fusion here follows:

* An absent sample's input is *selected away* with ``torch.where`` (never multiplied by 0), so its
  gradient is exactly zero even when its values are huge or non-finite.
* Weights over modalities (softmax, mean) are taken over the present modalities only.
* Output ``present`` is "any modality present"; tokens are zero and masked where not real.
* A pooled vector that only reaches the output through such a selection, after row-wise layers
  (LayerNorm, Linear), is read as ``Features.unmasked_pooled``: the encoder's zeroing of absent
  samples would be discarded by the selection anyway, so it is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mmcore import Features, masked_mean
from mmcore_plugins.layers.options import check_dropout, check_heads, check_positive

__all__ = [
    "check_dropout",
    "check_heads",
    "check_positive",
    "check_slots",
    "choose_slot",
    "finish_tokens",
    "masked_softmax",
    "mean_over_present",
    "require_modalities",
    "select_present",
    "stack_present",
]


# ---------------------------------------------------------------------- option checks
def require_modalities(input_dims: Mapping[str, int], fusion: str, minimum: int = 2) -> None:
    """Raise when a fusion built for interactions gets fewer than ``minimum`` modalities."""
    if len(input_dims) < minimum:
        raise ValueError(
            f"{fusion} fuses at least {minimum} modalities, got {len(input_dims)}: {sorted(input_dims)}"
        )


def choose_slot(input_dims: Mapping[str, int], chosen: str | None, *, option: str, fusion: str) -> str:
    """The modality a fusion treats specially (its query or target): ``chosen``, or the first one."""
    require_modalities(input_dims, fusion)
    slot = chosen if chosen is not None else next(iter(input_dims))
    if slot not in input_dims:
        raise ValueError(f"{fusion}: {option} must be one of the modalities {sorted(input_dims)}, got {slot!r}")
    return slot


def check_slots(fusion, features: Mapping[str, Features]) -> None:
    """Raise when ``features`` does not hold exactly the slots (and widths) the fusion was built for."""
    if not isinstance(features, Mapping):
        raise TypeError(f"{type(fusion).__name__} takes a mapping {{slot: Features}}, got {type(features).__name__}")
    if set(features) != set(fusion.input_dims):
        raise ValueError(
            f"{type(fusion).__name__} was built for modalities {sorted(fusion.input_dims)}, got {sorted(features)}"
        )
    for slot, feats in features.items():
        if not isinstance(feats, Features):
            raise TypeError(f"modality {slot!r}: expected mmcore.Features, got {type(feats).__name__}")
        if feats.dim != fusion.input_dims[slot]:
            raise ValueError(f"modality {slot!r}: expected features of width {fusion.input_dims[slot]}, got {feats.dim}")


# ---------------------------------------------------------------------- present-aware tensors
def stack_present(features: Mapping[str, Features], slots: list[str]) -> torch.Tensor:
    """``[N, B]`` bool: which sample has which modality."""
    return torch.stack([features[s].present for s in slots])


def select_present(x: torch.Tensor, present: torch.Tensor, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """``x [B, ...]`` where ``present`` (``[B]``, or any leading shape of ``x``), else ``fallback`` (zeros by default).

    ``torch.where`` (not a multiplication by 0) so an absent sample's input gets exactly zero
    gradient even when its values are huge or non-finite. (Layers applied *before* the selection
    still see those values: their weight gradients rely on encoders emitting finite zeros for
    absent samples and padding, as ``Features.from_tokens`` / ``from_pooled`` do for finite outputs.)
    """
    shape = tuple(present.shape) + (1,) * (x.dim() - present.dim())
    other = torch.zeros((), dtype=x.dtype, device=x.device) if fallback is None else fallback.to(device=x.device, dtype=x.dtype)
    return torch.where(present.reshape(shape), x, other)


def masked_softmax(logits: torch.Tensor, keep: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` where ``keep``; exactly zero where not, and all zeros when nothing is kept."""
    masked = logits.masked_fill(~keep, float("-inf"))
    any_kept = keep.any(dim=dim, keepdim=True)
    safe = torch.where(any_kept, masked, torch.zeros_like(masked))
    return torch.softmax(safe, dim=dim) * any_kept.to(logits.dtype)


def mean_over_present(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [N, B, ...]`` over the ``N`` axis where ``present [N, B]``; zeros where none is."""
    shape = present.shape + (1,) * (values.dim() - 2)
    keep = present.reshape(shape)
    total = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(0)
    return total / present.sum(0).clamp_min(1).to(values.dtype).reshape(shape[1:])


def finish_tokens(x: torch.Tensor, mask: torch.Tensor, present: torch.Tensor, pooled: torch.Tensor | None = None) -> Features:
    """Fused Features from tokens ``x [B, L, D]``: padding and absent samples zeroed.

    ``pooled`` defaults to the masked mean of the real tokens; a given one is zeroed where absent.
    """
    mask = mask & present[:, None]
    x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    if pooled is None:
        pooled = masked_mean(x, mask)
    else:
        pooled = select_present(pooled, present)
    return Features(tokens=x, mask=mask, pooled=pooled, present=present)
