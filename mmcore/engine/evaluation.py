"""Evaluating a model on a dataset, and predicting from raw inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmcore.model import MultimodalModel


def to_device(batch: Mapping[str, Any], device: torch.device | str) -> tuple[dict[str, Any], torch.Tensor | None]:
    """A collated batch's inputs and targets on ``device``."""
    inputs = {slot: {k: v.to(device) for k, v in b.items()} for slot, b in batch["inputs"].items()}
    targets = batch["targets"].to(device) if batch["targets"] is not None else None
    return inputs, targets


@torch.no_grad()
def evaluate(model: MultimodalModel, dataset, *, batch_size: int = 64, device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean loss and every metric the head declares, over ``dataset``."""
    model.eval()
    metrics = {name: m.to(device) for name, m in model.head.metrics().items()}
    total_loss, count = 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=model.collate):
        inputs, targets = to_device(batch, device)
        out = model(inputs, targets)
        if out.loss is not None:
            total_loss += out.loss.item() * len(targets)
            count += len(targets)
        for metric in metrics.values():
            metric.update(out.predictions, targets)
    result = {name: float(m.compute()) for name, m in metrics.items()}
    if count:
        result["loss"] = total_loss / count
    return result


@torch.no_grad()
def predict(model: MultimodalModel, inputs: Sequence[Mapping[str, Any]], *, device: torch.device | str = "cpu") -> list[Any]:
    """Raw inputs (``{slot: raw}`` per sample; missing slots = missing modalities) -> the head's predictions."""
    unknown = sorted({slot for sample in inputs for slot in sample} - set(model.slots))
    if unknown:
        raise ValueError(f"unknown modality slot(s) {unknown}; the model has {model.slots}")
    model.eval()
    batch = model.collate([{"inputs": dict(sample)} for sample in inputs])
    batch_inputs, _ = to_device(batch, device)
    return model.head.format_predictions(model(batch_inputs))
