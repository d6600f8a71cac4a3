"""Shapley values of the modalities of a prediction (Shapley 1953), exact or sampled.

The players are a model's modality slots; a coalition ``S`` is the set of slots kept, every other
one absent; its value ``v(S)`` is what the model computes from those modalities alone (every
fusion accepts any subset of present modalities: :mod:`mmcore.engine.subsets`). Modality ``i``'s
Shapley value is its marginal contribution averaged over the orders in which players can arrive::

    phi_i = sum_{S ⊆ N \\ {i}}  |S|! (M - |S| - 1)! / M!  * (v(S ∪ {i}) - v(S))

so ``sum_i phi_i = v(N) - v(∅)`` (efficiency), a slot that changes nothing gets 0 (dummy: a slot
absent from a record is such a player), and equal contributions get equal values (symmetry).

* Exact, for ``M <= EXACT_MAX`` players: the ``2^M`` coalition values are computed (in batched
  passes) and combined by the weights above: ``phi = W v`` with ``W [M, 2^M]``
  (:func:`shapley_matrix`), in float64.
* Sampled, above: permutation sampling (Castro, Gomez & Tejada 2009) with antithetic pairs (each
  permutation and its reverse): ``phi_i`` is the mean of ``i``'s marginal contribution over the
  sampled orders, with its standard error (the standard deviation of the pair means divided by
  the square root of the number of pairs). Each sampled order's contributions telescope to
  ``v(N) - v(∅)``, so the estimate is efficient exactly too.

Values may be vectors (``v(S) [..., C]``, e.g. logits: AGM's per-modality outputs) -- Shapley is
linear in the game, so each coordinate is the Shapley value of its own game.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch

from mmcore.engine.subsets import all_subsets

#: Largest number of players whose Shapley values are computed exactly (2^6 = 64 coalitions).
EXACT_MAX = 6


@lru_cache(maxsize=16)
def _matrix(m: int) -> torch.Tensor:
    subsets = all_subsets(m)
    size = subsets.sum(1)  # |S| per coalition
    fact = [math.factorial(k) for k in range(m + 1)]
    out = torch.zeros(m, 2**m, dtype=torch.float64)
    for k in range(2**m):
        s = int(size[k])
        for i in range(m):
            if subsets[k, i]:  # S contains i: + |S \\ {i}|! (M - |S|)! / M!  (the "v(S ∪ {i})" term)
                out[i, k] = fact[s - 1] * fact[m - s] / fact[m]
            else:  # - |S|! (M - |S| - 1)! / M!  (the "v(S)" term)
                out[i, k] = -fact[s] * fact[m - s - 1] / fact[m]
    return out


def shapley_matrix(m: int) -> torch.Tensor:
    """``W [m, 2^m]`` float64 with ``phi = W @ v`` for coalition values ``v`` ordered as
    :func:`~mmcore.engine.subsets.all_subsets` (coalition ``k`` holds the players in ``k``'s bits)."""
    if m < 1:
        raise ValueError(f"a game needs at least one player, got {m}")
    return _matrix(m).clone()


def exact_shapley(values: torch.Tensor) -> torch.Tensor:
    """Shapley values from all coalition values: ``values [B, 2^M, ...]`` (coalitions ordered as
    :func:`~mmcore.engine.subsets.all_subsets`) -> ``phi [B, M, ...]`` float64."""
    k = values.shape[1]
    m = k.bit_length() - 1
    if k != 2**m:
        raise ValueError(f"expected 2^M coalition values along dim 1, got {k}")
    return torch.einsum("mk,bk...->bm...", _matrix(m).to(values.device), values.double())


def sampled_shapley(value_fn: Callable[[torch.Tensor], torch.Tensor], m: int, *, pairs: int = 64,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation-sampling estimate: ``value_fn(coalitions [K, M] bool) -> [B, K, ...]`` values.

    ``pairs`` antithetic pairs of orders (each order and its reverse). Returns ``(phi, stderr)``,
    both ``[B, M, ...]`` float64. The same sampled orders serve every record of the batch.
    """
    if pairs < 2:
        raise ValueError(f"pairs must be at least 2 (the standard error needs two), got {pairs}")
    orders = torch.stack([torch.randperm(m, generator=generator) for _ in range(pairs)])
    orders = torch.stack([orders, orders.flip(1)], dim=1).reshape(2 * pairs, m)  # [T, M]
    t = orders.shape[0]
    # Coalition j of order t: its first j players (j = 0..M).
    prefixes = torch.zeros(t, m + 1, m, dtype=torch.bool)
    for j in range(1, m + 1):
        prefixes[:, j] = prefixes[:, j - 1]
        prefixes[torch.arange(t), j, orders[:, j - 1]] = True
    values = value_fn(prefixes.reshape(t * (m + 1), m)).double()  # [B, T * (M + 1), ...]
    values = values.reshape(values.shape[0], t, m + 1, *values.shape[2:])
    gains = values[:, :, 1:] - values[:, :, :-1]  # [B, T, M(position), ...]
    marginal = torch.zeros_like(gains)
    index = orders.to(values.device).reshape(1, t, m, *([1] * (gains.dim() - 3))).expand_as(gains)
    marginal.scatter_(2, index, gains)  # [B, T, M(player), ...]
    pair_means = marginal.reshape(marginal.shape[0], pairs, 2, *marginal.shape[2:]).mean(2)
    phi = pair_means.mean(1)
    stderr = pair_means.std(1) / math.sqrt(pairs)
    return phi, stderr


def coalition_values(model, features, coalitions: torch.Tensor, slots: list[str],
                     value: Callable[[object, torch.Tensor], torch.Tensor], *, chunk_rows: int = 4096) -> torch.Tensor:
    """``value(head output, records) [R, ...]`` for every record and coalition: ``[B, K, ...]``.

    ``features``: the encoders' ``{slot: Features}`` for ``B`` records; ``coalitions [K, M]`` bool
    over ``slots``. The fusion and head run on record-major blocks of at most ``chunk_rows`` rows;
    ``records [R]`` gives the record (0..B-1) of each row of the block, for values that depend on
    the record (e.g. the log-probability of its predicted class).
    """
    from mmcore.engine.subsets import expand_subsets, head_output, select_rows

    device = next(iter(features.values())).present.device
    b = next(iter(features.values())).present.shape[0]
    k = coalitions.shape[0]
    per_chunk = max(1, chunk_rows // k)
    out = []
    for start in range(0, b, per_chunk):
        rows = torch.arange(start, min(b, start + per_chunk), device=device)
        part = {slot: select_rows(f, rows) for slot, f in features.items()} if per_chunk < b else features
        expanded = expand_subsets(part, coalitions.to(device), slots)
        result = value(head_output(model, expanded), rows.repeat_interleave(k))
        out.append(result.reshape(len(rows), k, *result.shape[1:]))
    return torch.cat(out)
