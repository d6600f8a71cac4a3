"""Factorised bilinear fusions: ``mcb``, ``mfb``, ``mutan``, ``block``, ``multiplicative``.

The papers define them for two modalities; here they take N. The N-way product runs over the
present modalities, and an absent one contributes the identity of that product (ones for an
element-wise product, a delta for a circular convolution), so the fusion of the present subset
is exactly what comes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

import mmcore
from mmcore import Features
from mmcore_plugins.fusions._common import choose_slot, select_present, stack_present
from mmcore_plugins.fusions.concat import check_slots


def signed_sqrt(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``sign(x) * sqrt(|x|)``, shifted so its gradient at 0 is finite (power normalisation)."""
    return torch.sign(x) * (torch.sqrt(x.abs() + eps) - eps**0.5)


def product_over_present(factors: list[torch.Tensor], present: list[torch.Tensor]) -> torch.Tensor:
    """Element-wise product of ``factors`` (each ``[B, ...]``), with 1 standing in for absent ones."""
    out = None
    for factor, here in zip(factors, present, strict=True):
        term = select_present(factor, here, fallback=torch.ones(()))
        out = term if out is None else out * term
    return out


class _Normed(mmcore.Fusion):
    def __init__(self, input_dims: Mapping[str, int], dim: int) -> None:
        super().__init__(input_dims, dim)
        self.slots = list(input_dims)
        self.norms = nn.ModuleDict({s: nn.LayerNorm(w) for s, w in input_dims.items()})

    def inputs(self, features: Mapping[str, Features]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        check_slots(self, features)
        return [self.norms[s](features[s].pooled) for s in self.slots], [features[s].present for s in self.slots]


class MCBFusion(_Normed):
    """Multimodal compact bilinear pooling (Fukui et al. 2016): count sketches multiplied in the FFT domain.

    The count sketch of the N-way outer product equals the circular convolution of the
    modalities' sketches, computed as ``irfft(prod_i rfft(sketch_i))``. An absent modality's
    sketch is the convolution identity (a delta), so it drops out exactly.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, sketch_dim: int = 1024, seed: int = 0) -> None:
        super().__init__(input_dims, dim)
        if sketch_dim < 2:
            raise ValueError(f"sketch_dim must be at least 2, got {sketch_dim}")
        self.sketch_dim = sketch_dim
        g = torch.Generator().manual_seed(seed)
        for s, w in input_dims.items():
            # Fixed random hash h: [w] -> [0, D) and signs s: [w] -> {-1, +1}, as a dense [w, D] map.
            h = torch.randint(0, sketch_dim, (w,), generator=g)
            sign = torch.randint(0, 2, (w,), generator=g).float() * 2 - 1
            sketch = torch.zeros(w, sketch_dim)
            sketch[torch.arange(w), h] = sign
            self.register_buffer(f"sketch_{s}", sketch)
        self.out = nn.Linear(sketch_dim, dim)

    def count_sketch(self, slot: str, x: torch.Tensor) -> torch.Tensor:
        return x @ getattr(self, f"sketch_{slot}").to(x.dtype)

    def forward(self, features: Mapping[str, Features]) -> Features:
        xs, present = self.inputs(features)
        spectra = [torch.fft.rfft(self.count_sketch(s, x).float(), dim=-1) for s, x in zip(self.slots, xs, strict=True)]
        # rfft of a delta at 0 is all ones: the identity for the product of spectra.
        product = product_over_present(spectra, present)
        pooled = torch.fft.irfft(product, n=self.sketch_dim, dim=-1).to(xs[0].dtype)
        pooled = F.normalize(signed_sqrt(pooled), dim=-1)
        return Features.from_pooled(self.out(pooled), torch.stack(present).any(0))


class MFBFusion(_Normed):
    """Multimodal factorised bilinear pooling (Yu et al. 2017): product of k-factor projections, sum-pooled over k.

    ``z = SumPool_k(prod_i U_i x_i)`` then power and L2 normalisation; absent modalities are ones.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, factors: int = 5, dropout: float = 0.1) -> None:
        super().__init__(input_dims, dim)
        if factors < 1:
            raise ValueError(f"factors must be positive, got {factors}")
        self.factors = factors
        self.project = nn.ModuleDict({s: nn.Linear(w, dim * factors) for s, w in input_dims.items()})
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Mapping[str, Features]) -> Features:
        xs, present = self.inputs(features)
        joint = self.dropout(product_over_present([self.project[s](x) for s, x in zip(self.slots, xs, strict=True)], present))
        z = joint.view(-1, self.dim, self.factors).sum(-1)
        return Features.from_pooled(F.normalize(signed_sqrt(z), dim=-1), torch.stack(present).any(0))


class MutanFusion(_Normed):
    """MUTAN (Ben-younes et al. 2017): Tucker decomposition with a rank-R constrained core.

    ``x~_i = tanh(W_i x_i)``; ``z = sum_r prod_i (W_i^r x~_i)``; ``y = W_o z``.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, hidden: int = 128, rank: int = 5) -> None:
        super().__init__(input_dims, dim)
        if rank < 1 or hidden < 1:
            raise ValueError(f"rank and hidden must be positive, got {rank} and {hidden}")
        self.rank, self.hidden = rank, hidden
        self.reduce = nn.ModuleDict({s: nn.Sequential(nn.Linear(w, hidden), nn.Tanh()) for s, w in input_dims.items()})
        self.core = nn.ModuleDict({s: nn.Linear(hidden, hidden * rank) for s in input_dims})
        self.out = nn.Linear(hidden, dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        xs, present = self.inputs(features)
        terms = [self.core[s](self.reduce[s](x)) for s, x in zip(self.slots, xs, strict=True)]
        z = product_over_present(terms, present).view(-1, self.rank, self.hidden).sum(1)
        return Features.from_pooled(self.out(z), torch.stack(present).any(0))


class BlockFusion(_Normed):
    """BLOCK (Ben-younes et al. 2019): block-term decomposition — C small Tucker fusions on chunks, concatenated.

    Each modality is projected to ``chunks * chunk_size`` and split into chunks; chunk c of every
    modality goes through its own rank-R MUTAN-style product; the C results are concatenated and
    projected to ``dim``.
    """

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, chunks: int = 8, chunk_size: int = 16, rank: int = 4) -> None:
        super().__init__(input_dims, dim)
        if min(chunks, chunk_size, rank) < 1:
            raise ValueError(f"chunks, chunk_size and rank must be positive, got {chunks}, {chunk_size}, {rank}")
        self.chunks, self.chunk_size, self.rank = chunks, chunk_size, rank
        self.project = nn.ModuleDict({s: nn.Linear(w, chunks * chunk_size) for s, w in input_dims.items()})
        # Per modality and chunk: a [chunk_size -> rank * chunk_size] factor of the chunk's core.
        self.factors = nn.ParameterDict(
            {s: nn.Parameter(torch.randn(chunks, chunk_size, rank * chunk_size) / chunk_size**0.5) for s in input_dims}
        )
        self.out = nn.Linear(chunks * chunk_size, dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        xs, present = self.inputs(features)
        terms = []
        for s, x in zip(self.slots, xs, strict=True):
            chunked = self.project[s](x).view(-1, self.chunks, self.chunk_size)
            terms.append(torch.einsum("bcs,cso->bco", chunked, self.factors[s]))
        z = product_over_present(terms, present).view(-1, self.chunks, self.rank, self.chunk_size).sum(2)
        return Features.from_pooled(self.out(z.flatten(1)), torch.stack(present).any(0))


class MultiplicativeFusion(mmcore.Fusion):
    """Multiplicative interactions (Jayakumar et al. 2020): the other modalities generate the weights applied to one.

    ``target`` (default: first modality) is ``x``; the context ``z`` is the mean projection of the
    present other modalities (zeros when none). ``form``: ``vector`` — ``(1 + W z) * (V x)``
    (diagonal); ``matrix`` — ``(V + reshape(W z)) x``, the general form with a full 3-D weight
    tensor contracted with ``z``; ``tensor`` — the same 3-D tensor factorised at rank ``rank``.
    Each adds ``U z + b``. An absent target counts as ``x = 0`` (the output is then ``U z + b``).
    """

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, form: Literal["vector", "matrix", "tensor"] = "vector",
        target: str | None = None, context_dim: int = 32, rank: int = 8,
    ) -> None:
        super().__init__(input_dims, dim)
        self.target = choose_slot(input_dims, target, option="target", fusion="multiplicative")
        if form not in ("vector", "matrix", "tensor"):
            raise ValueError(f"form must be 'vector', 'matrix' or 'tensor', got {form!r}")
        self.form, self.rank, self.context_dim = form, rank, context_dim
        self.others = [s for s in input_dims if s != self.target]
        width = input_dims[self.target]
        self.norm = nn.LayerNorm(width)
        self.context = nn.ModuleDict({s: nn.Sequential(nn.LayerNorm(input_dims[s]), nn.Linear(input_dims[s], context_dim)) for s in self.others})
        self.linear = nn.Linear(width, dim)  # V x + b
        self.context_out = nn.Linear(context_dim, dim, bias=False)  # U z
        if form == "vector":
            self.hyper = nn.Linear(context_dim, dim)
        elif form == "matrix":
            self.hyper = nn.Linear(context_dim, dim * width)
        else:
            self.left = nn.Linear(context_dim, rank)
            self.u = nn.Parameter(torch.randn(rank, dim) / rank**0.5)
            self.v = nn.Parameter(torch.randn(rank, width) / width**0.5)
        if form != "tensor":  # start close to the plain linear map V x + b
            nn.init.normal_(self.hyper.weight, std=0.01)
            nn.init.zeros_(self.hyper.bias)

    def forward(self, features: Mapping[str, Features]) -> Features:
        check_slots(self, features)
        target = features[self.target]
        x = select_present(self.norm(target.pooled), target.present)
        present = stack_present(features, self.others)
        ctx = torch.stack([select_present(self.context[s](features[s].pooled), features[s].present) for s in self.others])
        z = ctx.sum(0) / present.sum(0).clamp_min(1).to(ctx.dtype)[:, None]
        base = self.linear(x)
        if self.form == "vector":
            out = (1 + self.hyper(z)) * base
        elif self.form == "matrix":
            generated = self.hyper(z).view(-1, self.dim, x.shape[-1])
            out = base + torch.einsum("bdw,bw->bd", generated, x)
        else:
            out = base + ((self.left(z) * (x @ self.v.T)) @ self.u)
        out = out + self.context_out(z)
        return Features.from_pooled(out, target.present | present.any(0))


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_fusion("mcb", MCBFusion, example_options={"dim": 16, "sketch_dim": 64})
    registry.add_fusion("mfb", MFBFusion, example_options={"dim": 16, "factors": 3})
    registry.add_fusion("mutan", MutanFusion, example_options={"dim": 16, "hidden": 12, "rank": 3})
    registry.add_fusion("block", BlockFusion, example_options={"dim": 16, "chunks": 3, "chunk_size": 4, "rank": 2})
    registry.add_fusion("multiplicative", MultiplicativeFusion, example_options={"dim": 16, "form": "matrix", "context_dim": 8})
