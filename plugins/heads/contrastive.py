"""`contrastive`: CLIP-style symmetric InfoNCE between two modalities, with retrieval recall@K."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import mmcore
from mmcore import Features, HeadOutput


class ContrastiveHead(mmcore.Head):
    """CLIP-style contrastive alignment of two modalities (symmetric InfoNCE, learnable temperature).

    Works on the per-modality features (``features`` argument of forward; the fused features are
    not used). ``modalities`` names the two slots (default: the model's first two). Each is
    projected to ``embed_dim`` and L2-normalised; logits are ``exp(t) a b^T`` with a learnable
    log-scale ``t`` (initialised at ``1/temperature``, clamped at 100 as in CLIP) and the loss is the
    mean of the a->b and b->a cross-entropies. Targets are pair ids: samples with equal ids count
    as matches (the sample index for plain pairs; a class label makes every same-class item a
    positive, as configs/retrieval.yaml does). ``predictions`` are the paired embeddings
    ``[B, 2, embed_dim]``; metrics: recall@1/5/10 and the median rank of the first match
    (``median_rank_ab``/``_ba``, lower is better) in both directions (a->b: a queries, b gallery). Missing modalities: only
    samples with both modalities enter the loss and the metrics; others get NaN embeddings
    (formatted as ``None``).
    """

    reads_tokens = False  # pooled vectors only

    def __init__(
        self, input_dim: int, input_dims: Mapping[str, int], modalities: list[str] | None = None,
        embed_dim: int = 128, temperature: float = 0.07, learn_temperature: bool = True,
    ) -> None:
        super().__init__(input_dim)
        slots = list(modalities) if modalities is not None else list(input_dims)[:2]
        if len(slots) != 2 or len(set(slots)) != 2:
            raise ValueError(f"contrastive needs exactly two different modalities, got {slots}")
        unknown = [s for s in slots if s not in input_dims]
        if unknown:
            raise ValueError(f"modalities {unknown} are not in the model's modalities {sorted(input_dims)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive int, got {embed_dim}")
        self.slots = slots
        self.project = nn.ModuleDict({s: nn.Linear(input_dims[s], embed_dim) for s in slots})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learn_temperature)

    @staticmethod
    def dataset_options(options: Mapping[str, Any]) -> dict[str, Any]:
        """What a data set should know of this head: targets are pair ids, taken as written."""
        return {"target_type": "raw"}

    def forward(self, fused: Features, targets: torch.Tensor | None = None, features: Mapping[str, Features] | None = None) -> HeadOutput:
        if features is None or any(s not in features for s in self.slots):
            raise ValueError(f"the contrastive head needs the per-modality features of {self.slots}")
        both = features[self.slots[0]].present & features[self.slots[1]].present
        # Pairs missing a side are zeroed before the projection: their (masked) logits then carry
        # no non-finite value into the real rows' gradients through a @ b.T.
        a, b = (F.normalize(self.project[s](torch.where(both[:, None], features[s].unmasked_pooled, 0.0)), dim=-1) for s in self.slots)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()  # CLIP's clamp keeps the scale sane
        logits = scale * a @ b.T
        loss = None if targets is None else self.loss(logits, targets, both)
        nan = torch.full_like(a, float("nan"))
        predictions = torch.stack([torch.where(both[:, None], a, nan), torch.where(both[:, None], b, nan)], dim=1)
        return HeadOutput(logits=logits, predictions=predictions.detach(), loss=loss)

    def embed_modalities(self, features: Mapping[str, Features]) -> dict[str, torch.Tensor]:
        """Each modality alone in the shared space: ``{slot: [B, embed_dim]}``, L2-normalised, NaN where absent.

        Unlike ``forward`` (which needs both), a sample with only one modality gets that
        modality's vector: these are the vectors cross-modal search compares (``mmcore embed``).
        """
        out = {}
        for s in self.slots:
            present = features[s].present
            v = F.normalize(self.project[s](torch.where(present[:, None], features[s].unmasked_pooled, 0.0)), dim=-1)
            out[s] = torch.where(present[:, None], v, torch.full_like(v, float("nan")))
        return out

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor, both: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over the samples that have both modalities (no host sync; 0 when none does).

        Each a->b row is a cross-entropy against the uniform distribution over its matches (the
        samples with the same pair id), so repeated ids are positives rather than negatives.
        """
        if targets.shape != logits.shape[:1]:
            raise ValueError(f"targets must be [{logits.shape[0]}] pair ids, got shape {list(targets.shape)}")
        valid = both[:, None] & both[None, :]
        match = ((targets[:, None] == targets[None, :]) & valid).to(logits.dtype)
        terms = []
        for scores, positives in ((logits, match), (logits.T, match.T)):
            masked = scores.masked_fill(~valid, float("-inf"))
            masked = torch.where(valid.any(1, keepdim=True), masked, torch.zeros_like(masked))  # rows without pairs
            log_p = torch.where(positives > 0, masked.log_softmax(dim=1), torch.zeros_like(masked))
            per_row = -(log_p * positives).sum(1) / positives.sum(1).clamp_min(1)
            terms.append((per_row * both.to(logits.dtype)).sum() / both.sum().clamp_min(1).to(logits.dtype))
        return (terms[0] + terms[1]) / 2

    def metrics(self) -> dict[str, Any]:
        from mmcore_plugins.heads.metrics import RetrievalRecall
        from mmcore_plugins.retrieval.metrics import RetrievalMedianRank

        directions = (("ab", "a->b"), ("ba", "b->a"))
        return {
            **{f"recall@{k}_{name}": RetrievalRecall(k, direction) for k in (1, 5, 10) for name, direction in directions},
            # lower is better (higher_is_better = False: a monitor on it is minimised)
            **{f"median_rank_{name}": RetrievalMedianRank(direction) for name, direction in directions},
        }

    def collate_targets(self, targets: Sequence[Any]) -> torch.Tensor:
        for i, t in enumerate(targets):
            if isinstance(t, bool) or not isinstance(t, int):
                raise TypeError(f"contrastive target #{i} must be an int pair id, got {type(t).__name__} {t!r}")
        return torch.tensor(list(targets), dtype=torch.long)

    def format_predictions(self, output: HeadOutput) -> list[Any]:
        return [None if not torch.isfinite(row).all() else row.cpu().tolist() for row in output.predictions]

    def example_targets(self, batch_size: int, generator: torch.Generator) -> list[int]:
        return list(range(batch_size))


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_head("contrastive", ContrastiveHead, example_options={"embed_dim": 8})
