"""Evaluating a model on a dataset (optionally sharded over the processes of a distributed run),
and predicting from raw inputs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Subset

from mmcore.components import HeadOutput
from mmcore.engine.metrics import as_float
from mmcore.model import MultimodalModel


def to_device(batch: Mapping[str, Any], device: torch.device | str, *, non_blocking: bool = False) -> tuple[dict[str, Any], torch.Tensor | None]:
    """A collated batch's inputs and targets on ``device``."""
    device = torch.device(device)

    def move(v: torch.Tensor) -> torch.Tensor:
        # Already there (CPU training): no call at all; a no-op .to() still costs a dispatch per tensor.
        return v if v.device == device else v.to(device, non_blocking=non_blocking)

    inputs = {slot: {k: move(v) for k, v in b.items()} for slot, b in batch["inputs"].items()}
    targets = move(batch["targets"]) if batch["targets"] is not None else None
    return inputs, targets


def autocast_context(device: torch.device, precision: str):
    """bf16/fp16 autocast on CUDA; nothing elsewhere (CPU trains and evaluates in float32)."""
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def evaluate(
    model: MultimodalModel,
    dataset,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> dict[str, float]:
    """Mean loss and every metric the head declares, over ``dataset``: ``{"loss": float, name: float}``
    (each metric's ``compute()`` made one number by :func:`mmcore.engine.metrics.as_float`).

    In a distributed run each process evaluates every ``world_size``-th sample (no sample twice,
    none padded in; :func:`mmcore.engine.distributed.shard_indices`); torchmetrics' states and
    the loss sums are synchronised, so every process returns the numbers of the whole dataset —
    the same as one process, up to float rounding. See :func:`evaluate_counted`.
    """
    return evaluate_counted(model, dataset, batch_size=batch_size, device=device, precision=precision, rank=rank,
                            world_size=world_size, num_workers=num_workers)[0]


@torch.no_grad()
def evaluate_counted(
    model: MultimodalModel,
    dataset,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    observe: Callable[[dict[str, Any], torch.Tensor], None] | None = None,
) -> tuple[dict[str, float], int]:
    """:func:`evaluate`'s results and the number of samples (with targets) they count, over all processes.

    ``observe(features, targets)``, if given, is called for each batch with targets with the
    encoders' ``{slot: Features}`` of that batch (what the model computed for it; e.g. the imbalance
    diagnostics' sums, so the split is not encoded a second time).

    Distributed (``world_size > 1``, the default process group of ``torch.distributed`` joined):
    every process must call it, with the same ``dataset``. Each evaluates its shard; the loss is
    averaged over samples (``sum(loss_i) / n`` over every process's samples, not a mean of the
    processes' means), and each metric's torchmetrics states are merged across processes before
    ``compute()`` (sum states add up; list states are gathered, uneven lengths included). A data
    set with fewer samples than processes is evaluated whole by every process, unsynchronised
    (a process without samples has no metric state to merge): the same numbers either way.

    Raises ``ValueError`` when ``world_size > 1`` but no process group is initialised, or
    ``rank`` is not in ``[0, world_size)``.
    """
    import torch.distributed as dist

    from mmcore.engine.distributed import shard_indices

    device = torch.device(device)
    sharded = world_size > 1 and len(dataset) >= world_size
    if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
        raise ValueError(f"evaluate(world_size={world_size}) needs the torch.distributed process group joined first "
                         "(mmcore.engine.distributed.setup, under torchrun)")
    indices = shard_indices(len(dataset), rank, world_size)  # also checks rank
    was_training = model.training
    model.eval()
    metrics = {name: m.to(device) for name, m in model.head.metrics().items()}
    if world_size > 1 and not sharded:
        for metric in metrics.values():  # every process holds every sample: nothing to merge
            metric.distributed_available_fn = _not_distributed
    shard = Subset(dataset, indices) if sharded else dataset
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss * n, n
    from mmcore.data import make_dataloader  # the one DataLoader factory (one collate)

    loader = make_dataloader(shard, model, batch_size, num_workers=num_workers, pin_memory=device.type == "cuda")
    try:
        for batch in loader:
            model.unreadable.add(batch.get("unreadable"))  # collated in a worker: recorded here
            inputs, targets = to_device(batch, device)
            with autocast_context(device, precision):
                out = model(inputs, targets)
            if out.loss is not None and targets is not None:
                sums[0] += out.loss.detach().double() * len(targets)
                sums[1] += len(targets)
            if targets is not None:
                for metric in metrics.values():
                    metric.update(out.predictions, targets)
                if observe is not None:
                    observe(out.features, targets)
        if sharded:
            dist.all_reduce(sums)
        result = {name: as_float(m.compute()) for name, m in metrics.items()}
    finally:
        model.train(was_training)
    if sums[1] > 0:
        result["loss"] = float(sums[0] / sums[1])
    return result, int(sums[1])


def _not_distributed() -> bool:
    return False


@torch.no_grad()
def predict(model: MultimodalModel, inputs: Sequence[Mapping[str, Any]], *, device: torch.device | str = "cpu") -> list[Any]:
    """Raw inputs (``{slot: raw}`` per sample; missing slots = missing modalities) -> the head's predictions."""
    return model.head.format_predictions(predict_output(model, inputs, device=device))


@torch.no_grad()
def predict_output(model: MultimodalModel, inputs: Sequence[Mapping[str, Any]], *, device: torch.device | str = "cpu",
                   origins: Sequence[Mapping[str, Any] | None] | None = None) -> HeadOutput:
    """Raw inputs -> the head's whole output in eval mode (predictions, and extras such as
    ``probabilities`` ``[B, C]``); ``predict`` formats its predictions. ``origins`` (one per input: the
    table, row and columns it came from) name an input that cannot be read (``model.unreadable_inputs``)."""
    unknown = sorted({slot for sample in inputs for slot in sample} - set(model.slots))
    if unknown:
        raise ValueError(f"unknown modality slot(s) {unknown}; the model has {model.slots}")
    if any(all(v is None for v in sample.values()) for sample in inputs):
        raise ValueError(f"every sample needs at least one of the model's modality slots {model.slots}")
    if model.training:  # (a recursive eval() per call costs a millisecond on one-record predictions)
        model.eval()
    origins = list(origins) if origins is not None else [None] * len(inputs)
    batch = model.collate([{"inputs": dict(sample), "origin": origin} for sample, origin in zip(inputs, origins, strict=True)])
    batch_inputs, _ = to_device(batch, device)
    return model(batch_inputs)
