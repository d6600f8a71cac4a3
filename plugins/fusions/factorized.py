"""Factorised bilinear poolings: ``mcb``, ``mfb``, ``mutan`` and ``block``.

The papers define them for two modalities (question and image). Here they take N >= 2 by making
the bilinear product an N-way product over the modalities at once (the "chained" generalisation:
for N = 2 it is exactly the paper's form; for N = 3 it is the trilinear form with the same
factorisation). The product runs over the *present* modalities: an absent one contributes the
identity of that product (ones for an element-wise product, a delta for a circular convolution),
so what comes out is exactly the fusion of the present subset — a single modality left gives the
(factorised) linear map of that modality.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

import mmcore
from mmcore import Features
from mmcore_plugins.fusions._common import (
    check_dropout,
    check_positive,
    check_slots,
    require_modalities,
    select_present,
)


def signed_sqrt(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``sign(x) * sqrt(|x|)`` (power normalisation), shifted so its gradient at 0 is finite and it maps 0 to 0."""
    return torch.sign(x) * (torch.sqrt(x.abs() + eps) - eps**0.5)


def product_over_present(factors: list[torch.Tensor], present: list[torch.Tensor]) -> torch.Tensor:
    """Element-wise product of ``factors`` (each ``[B, ...]``), with 1 standing in for absent ones."""
    out = None
    for factor, here in zip(factors, present, strict=True):
        term = select_present(factor, here, fallback=torch.ones(()))
        out = term if out is None else out * term
    return out


class _Normed(mmcore.Fusion):
    """Base: validates N >= 2 and LayerNorms each modality's pooled vector."""

    reads_tokens = False  # pooled vectors only

    name = "bilinear"

    def __init__(self, input_dims: Mapping[str, int], dim: int, dropout: float) -> None:
        super().__init__(input_dims, dim)
        require_modalities(input_dims, self.name)
        check_dropout(self.name, dropout)
        self.slots = list(input_dims)
        self.norms = nn.ModuleDict({s: nn.LayerNorm(w) for s, w in input_dims.items()})
        self.dropout = nn.Dropout(dropout)

    def inputs(self, features: Mapping[str, Features]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Normalised pooled vectors (zero where absent) and the presence of each slot."""
        check_slots(self, features)
        xs = [select_present(self.norms[s](features[s].unmasked_pooled), features[s].present) for s in self.slots]
        return xs, [features[s].present for s in self.slots]


class MCBFusion(_Normed):
    """Multimodal compact bilinear pooling (MCB, Fukui et al. 2016): count sketches multiplied in the FFT domain.

    ``Psi(x_1 (x) ... (x) x_N) = Psi(x_1) * ... * Psi(x_N)`` (circular convolution, Pham & Pagh
    2013), computed as ``irfft(prod_i rfft(Psi_i(x_i)))`` with fixed random hashes ``h_i`` and signs
    ``s_i`` per modality; then signed square root, L2 normalisation (as in the paper) and a linear
    map to ``dim``. Missing modalities: an absent modality's sketch is the convolution identity (a
    delta at 0, whose spectrum is all ones), so it drops out exactly.
    """

    name = "mcb"

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, sketch_dim: int = 1024, seed: int = 0, dropout: float = 0.0
    ) -> None:
        super().__init__(input_dims, dim, dropout)
        check_positive("mcb", sketch_dim=sketch_dim)
        if sketch_dim < 2:
            raise ValueError(f"mcb: sketch_dim must be at least 2, got {sketch_dim}")
        self.sketch_dim = sketch_dim
        g = torch.Generator().manual_seed(seed)
        for s, w in input_dims.items():
            # Fixed random hash h: [w] -> [0, D) and signs s: [w] -> {-1, +1}, as a dense [w, D] map
            # (buffers: saved with the model, so a reloaded model sketches identically).
            h = torch.randint(0, sketch_dim, (w,), generator=g)
            sign = torch.randint(0, 2, (w,), generator=g).float() * 2 - 1
            sketch = torch.zeros(w, sketch_dim)
            sketch[torch.arange(w), h] = sign
            self.register_buffer(f"sketch_{s}", sketch)
        self.out = nn.Linear(sketch_dim, dim)

    def count_sketch(self, slot: str, x: torch.Tensor) -> torch.Tensor:
        """``Psi(x)[j] = sum_{i: h(i) = j} s(i) x_i`` for ``x [B, w]`` -> ``[B, sketch_dim]``."""
        return x @ getattr(self, f"sketch_{slot}").to(x.dtype)

    def forward(self, features: Mapping[str, Features]) -> Features:
        xs, present = self.inputs(features)
        # FFTs in float64: half precision needs power-of-two sizes and loses the sketch, and float32
        # FFTs differ between implementations by ~2e-5 of the result (pocketfft vs onnxruntime's DFT),
        # float64 ones by nothing float32 can see -- an exported model then answers as this one does.
        # The spectra are multiplied as (real, imaginary) pairs of real tensors rather than as complex
        # tensors: the same products, but a graph that exporters without complex dtypes (ONNX) take.
        real = imag = None
        for s, x, here in zip(self.slots, xs, present, strict=True):
            spectrum = torch.view_as_real(torch.fft.rfft(self.count_sketch(s, x).double(), dim=-1))
            re = select_present(spectrum[..., 0], here, fallback=torch.ones(()))  # absent: the identity, 1 + 0i
            im = select_present(spectrum[..., 1], here)
            if real is None:
                real, imag = re, im
            else:
                real, imag = real * re - imag * im, real * im + imag * re
        pooled = torch.fft.irfft(torch.complex(real, imag), n=self.sketch_dim, dim=-1).to(xs[0].dtype)
        pooled = F.normalize(signed_sqrt(pooled), dim=-1)
        return Features.from_pooled(self.out(self.dropout(pooled)), torch.stack(present).any(0))


class MFBFusion(_Normed):
    """Multimodal factorised bilinear pooling (MFB, Yu et al. 2017): ``z = SumPool_k(prod_i U_i x_i)``, power- and L2-normalised.

    Each modality is projected to ``dim * factors``; the element-wise product of the projections
    (dropout after it, as in the paper) is sum-pooled over non-overlapping windows of ``factors``,
    then ``sign(z) sqrt(|z|)`` and ``z / ||z||``. Missing modalities: their projection is replaced
    by ones in the product.
    """

    name = "mfb"

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, factors: int = 5, dropout: float = 0.1) -> None:
        super().__init__(input_dims, dim, dropout)
        check_positive("mfb", factors=factors)
        self.factors = factors
        self.project = nn.ModuleDict({s: nn.Linear(w, dim * factors) for s, w in input_dims.items()})

    def forward(self, features: Mapping[str, Features]) -> Features:
        xs, present = self.inputs(features)
        joint = self.dropout(product_over_present([self.project[s](x) for s, x in zip(self.slots, xs, strict=True)], present))
        z = joint.view(-1, self.dim, self.factors).sum(-1)
        return Features.from_pooled(F.normalize(signed_sqrt(z), dim=-1), torch.stack(present).any(0))


class MutanFusion(_Normed):
    """MUTAN (Ben-younes et al. 2017): Tucker decomposition of the bilinear map with a rank-R constrained core.

    ``x~_i = tanh(W_i x_i)`` (width ``hidden``); ``z = sum_r prod_i (W_i^r x~_i)``; ``y = W_o z``.
    Missing modalities: their ``W_i^r x~_i`` is replaced by ones in the product.
    """

    name = "mutan"

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, hidden: int = 128, rank: int = 5, dropout: float = 0.0
    ) -> None:
        super().__init__(input_dims, dim, dropout)
        check_positive("mutan", hidden=hidden, rank=rank)
        self.rank, self.hidden = rank, hidden
        self.reduce = nn.ModuleDict({s: nn.Sequential(nn.Linear(w, hidden), nn.Tanh()) for s, w in input_dims.items()})
        self.core = nn.ModuleDict({s: nn.Linear(hidden, hidden * rank) for s in input_dims})
        self.out = nn.Linear(hidden, dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        xs, present = self.inputs(features)
        terms = [self.core[s](self.dropout(self.reduce[s](x))) for s, x in zip(self.slots, xs, strict=True)]
        z = product_over_present(terms, present).view(-1, self.rank, self.hidden).sum(1)
        return Features.from_pooled(self.out(self.dropout(z)), torch.stack(present).any(0))


class BlockFusion(_Normed):
    """BLOCK (Ben-younes et al. 2019): block-term decomposition — C small rank-R Tucker fusions on chunks.

    Each modality is projected to ``chunks * chunk_size`` and split into ``chunks`` chunks; chunk c
    of every modality goes through its own rank-``rank`` MUTAN-style product
    ``z_c = sum_r prod_i (M_i^{c,r} x_i^c + b_i^{c,r})``, which is signed-square-rooted and
    L2-normalised ("before concatenation", the paper's default); the C results are concatenated
    and projected to ``dim``. Missing modalities: their chunk projections are replaced by ones in
    the product.
    """

    name = "block"

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, chunks: int = 8, chunk_size: int = 16, rank: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, dim, dropout)
        check_positive("block", chunks=chunks, chunk_size=chunk_size, rank=rank)
        self.chunks, self.chunk_size, self.rank = chunks, chunk_size, rank
        self.project = nn.ModuleDict({s: nn.Linear(w, chunks * chunk_size) for s, w in input_dims.items()})
        # Per modality and chunk: the [chunk_size -> rank * chunk_size] factor of that chunk's core.
        bound = chunk_size**-0.5
        self.factors = nn.ParameterDict(
            {s: nn.Parameter(torch.empty(chunks, chunk_size, rank * chunk_size).uniform_(-bound, bound)) for s in input_dims}
        )
        self.factor_bias = nn.ParameterDict(
            {s: nn.Parameter(torch.empty(chunks, rank * chunk_size).uniform_(-bound, bound)) for s in input_dims}
        )
        self.out = nn.Linear(chunks * chunk_size, dim)

    def forward(self, features: Mapping[str, Features]) -> Features:
        xs, present = self.inputs(features)
        terms = []
        for s, x in zip(self.slots, xs, strict=True):
            chunked = self.dropout(self.project[s](x)).view(-1, self.chunks, self.chunk_size)
            terms.append(torch.einsum("bcs,cso->bco", chunked, self.factors[s]) + self.factor_bias[s])
        z = product_over_present(terms, present).view(-1, self.chunks, self.rank, self.chunk_size).sum(2)
        z = F.normalize(signed_sqrt(z), dim=-1)  # per chunk
        return Features.from_pooled(self.out(self.dropout(z.flatten(1))), torch.stack(present).any(0))


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_fusion("mcb", MCBFusion, example_options={"dim": 16, "sketch_dim": 64})
    registry.add_fusion("mfb", MFBFusion, example_options={"dim": 16, "factors": 3})
    registry.add_fusion("mutan", MutanFusion, example_options={"dim": 16, "hidden": 12, "rank": 3})
    registry.add_fusion("block", BlockFusion, example_options={"dim": 16, "chunks": 3, "chunk_size": 4, "rank": 2})


__all__ = ["BlockFusion", "MCBFusion", "MFBFusion", "MutanFusion", "product_over_present", "signed_sqrt"]
