"""A tiny three-modality model whose uni-modal predictions can be computed by hand, and a stand-in for
the trainer surface a balancer sees (hookspecs.py, "The trainer a hook sees")."""

from __future__ import annotations

from types import SimpleNamespace

import torch

import mmcore
from mmcore import Features
from mmcore_plugins.encoders.tabular import MLPTabularEncoder
from mmcore_plugins.heads.classification import ClassificationHead

SLOTS = ("a", "b", "c")
DIM, CLASSES = 4, 3


class SumFusion(mmcore.Fusion):
    """The sum of the present modalities' pooled vectors: the model's prediction from modality m alone is
    ``W x_m + b`` (the head's Linear), and with none ``b`` -- a game whose Shapley values are ``W x_m``."""

    def forward(self, features):
        zero = torch.zeros((), dtype=next(iter(features.values())).pooled.dtype)
        total = sum(torch.where(f.present[:, None], f.pooled, zero) for f in features.values())
        present = torch.stack([f.present for f in features.values()]).any(0)
        return Features.from_pooled(total, present)


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    encoders = {slot: MLPTabularEncoder(num_features=3, dim=DIM, hidden=[5], dropout=0.0) for slot in SLOTS}
    model = mmcore.MultimodalModel(encoders, SumFusion({s: DIM for s in SLOTS}, DIM), ClassificationHead(DIM, CLASSES))
    return model


def tiny_samples(n: int = 10, seed: int = 0, missing: dict | None = None) -> list[dict]:
    """``n`` samples; ``missing`` = {slot: [row indices without it]} (default: b lacks rows 1 and 4, c lacks 0-5)."""
    g = torch.Generator().manual_seed(seed)
    missing = {"b": [1, 4], "c": [0, 1, 2, 3, 4, 5]} if missing is None else missing
    samples = []
    for i in range(n):
        inputs = {slot: None if i in missing.get(slot, []) else torch.randn(3, generator=g).tolist() for slot in SLOTS}
        samples.append({"inputs": inputs, "target": i % CLASSES})
    return samples


def forward(model, samples, fit: bool = True):
    """``(batch, output)`` of a training forward: ``batch`` as ``mmcore_train_loss`` gets it (``fit``:
    the processors fitted on ``samples`` first)."""
    if fit:
        model.fit_processors(samples)
    collated = model.collate(samples)
    out = model(collated["inputs"], collated["targets"])
    return {"inputs": collated["inputs"], "targets": collated["targets"]}, out


class FakeTrainer:
    """What a balancer reads of the trainer: one process (or ``world_size`` identical ones)."""

    def __init__(self, model, *, step: int = 0, epoch: int = 1, world_size: int = 1, datasets=None, seed: int = 0):
        self.model, self.step, self.epoch, self.world_size = model, step, epoch, world_size
        self.device = torch.device("cpu")
        self.micro_batch_weight = 1.0
        self.options = SimpleNamespace(seed=seed, batch_size=16, eval_batch_size=None)
        self.datasets = datasets or {}

    def all_reduce_sum(self, tensor):
        # world_size identical processes: the sum is world_size times one process's value
        return tensor.mul_(self.world_size) if self.world_size > 1 else tensor


def by_hand_logits(model, out, slot):
    """``(W x_m + b, rows)``: the model's logits from ``slot`` alone, for the samples that have it (by hand)."""
    linear = model.head.net[-1]
    present = out.features[slot].present
    x = out.features[slot].pooled.detach()[present]
    return x @ linear.weight.detach().T + linear.bias.detach(), present.nonzero().squeeze(1)


def grads(params):
    return [None if p.grad is None else p.grad.clone() for p in params]
