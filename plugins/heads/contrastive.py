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


class RetrievalRecall:
    """Recall@K of ``a -> b`` or ``b -> a`` retrieval over every pair seen since the last reset.

    ``update(predictions, ids)``: predictions ``[B, 2, E]`` (normalised embeddings of the two
    modalities), ids ``[B]`` (pairs with equal ids match; rows with a NaN embedding are skipped).
    Follows torchmetrics' ``update`` / ``compute`` / ``reset`` / ``to`` protocol.
    """

    def __init__(self, k: int, direction: str) -> None:
        if direction not in ("a->b", "b->a"):
            raise ValueError(f"direction must be 'a->b' or 'b->a', got {direction!r}")
        self.k, self.direction = k, direction
        self.reset()

    def reset(self) -> None:
        self.embeddings: list[torch.Tensor] = []
        self.ids: list[torch.Tensor] = []

    def to(self, device) -> RetrievalRecall:
        return self

    def update(self, predictions: torch.Tensor, ids: torch.Tensor) -> None:
        keep = torch.isfinite(predictions).all(dim=(1, 2))
        self.embeddings.append(predictions[keep].detach().float().cpu())
        self.ids.append(ids[keep].detach().cpu())

    def compute(self) -> torch.Tensor:
        if not self.embeddings or sum(len(e) for e in self.embeddings) == 0:
            return torch.tensor(0.0)
        emb, ids = torch.cat(self.embeddings), torch.cat(self.ids)
        queries, gallery = (emb[:, 0], emb[:, 1]) if self.direction == "a->b" else (emb[:, 1], emb[:, 0])
        top = (queries @ gallery.T).topk(min(self.k, len(ids)), dim=1).indices
        hit = (ids[top] == ids[:, None]).any(dim=1)
        return hit.float().mean()


class ContrastiveHead(mmcore.Head):
    """CLIP-style contrastive alignment of two modalities (symmetric InfoNCE, learnable temperature).

    Works on the per-modality features (the fusion output is not used). ``modalities`` names the
    two slots (default: the first two). Only samples that have both modalities enter the loss and
    the metrics; their embeddings for other samples are NaN in ``predictions``. Targets are pair
    ids: samples with equal ids count as matches (use the sample index for plain pairs).
    """

    def __init__(
        self, input_dim: int, input_dims: Mapping[str, int], modalities: list[str] | None = None,
        embed_dim: int = 128, temperature: float = 0.07,
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
        self.slots = slots
        self.project = nn.ModuleDict({s: nn.Linear(input_dims[s], embed_dim) for s in slots})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self, fused: Features, targets: torch.Tensor | None = None, features: Mapping[str, Features] | None = None) -> HeadOutput:
        if features is None or any(s not in features for s in self.slots):
            raise ValueError(f"the contrastive head needs the per-modality features of {self.slots}")
        a, b = (F.normalize(self.project[s](features[s].pooled), dim=-1) for s in self.slots)
        both = features[self.slots[0]].present & features[self.slots[1]].present
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()  # CLIP's clamp keeps the scale sane
        logits = scale * a @ b.T
        loss = None
        if targets is not None:
            if int(both.sum()) == 0:
                loss = logits.sum() * 0.0  # no pair in the batch: a zero loss that still backpropagates
            else:
                match = (targets[:, None] == targets[None, :]) & both[:, None] & both[None, :]
                sub = logits[both][:, both]
                m = match[both][:, both].float()
                loss_ab = -(F.log_softmax(sub, dim=1) * m / m.sum(1, keepdim=True)).sum(1).mean()
                loss_ba = -(F.log_softmax(sub.T, dim=1) * m.T / m.T.sum(1, keepdim=True)).sum(1).mean()
                loss = (loss_ab + loss_ba) / 2
        nan = torch.full_like(a, float("nan"))
        predictions = torch.stack([torch.where(both[:, None], a, nan), torch.where(both[:, None], b, nan)], dim=1)
        return HeadOutput(logits=logits, predictions=predictions.detach(), loss=loss)

    def metrics(self) -> dict[str, Any]:
        return {
            f"recall@{k}_{name}": RetrievalRecall(k, direction)
            for k in (1, 5, 10)
            for name, direction in (("ab", "a->b"), ("ba", "b->a"))
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
