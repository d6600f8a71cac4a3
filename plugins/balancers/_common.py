"""What the built-in balancers share: uni-modal predictions, per-step statistics agreed over the
processes, gradients a balancer computes itself, and the encoders' parameters.

**Uni-modal predictions.** Every method here needs what the model predicts from one modality
(OGM-GE's discrepancy ratio, AGM's Shapley outputs, G-Blend's / MMPareto's / MLA's uni-modal
losses). They are the model's *own* fusion and head applied to that modality alone, the other
slots absent (:func:`mmcore.engine.subsets.only`; every fusion accepts any subset of present
modalities), on the encoders' features the training forward already computed. Why this rather
than small uni-modal heads owned by the balancer: it works for any fusion and head (a head that
reads per-slot features, such as ``unimodal_ensemble``, included), adds no parameters the
optimiser would have to know about, and the uni-modal path it trains is the one the model takes
at test time when the other modalities are missing. Only the samples that have the modality take
part: a sample without it contributes nothing to that modality's score or loss.

**Distributed runs.** Statistics are accumulated per optimiser step (over its micro-batches) as
sums and counts and summed over the processes with ``trainer.all_reduce_sum`` before any
gradient is changed, so every process computes the same coefficients from the same numbers.
Gradients a balancer computes itself (``torch.autograd.grad``) are weighted by
``trainer.micro_batch_weight``, summed over the processes and divided by ``world_size``: scaled
exactly like the gradients ``backward()`` left in ``p.grad`` (see hookspecs.py). With missing
modalities a process's (or micro-batch's) uni-modal loss is the mean over its own samples that
have the modality, weighted like the micro-batch: equal in expectation, not to the last digit, to
one process over the whole batch (exactly equal when every sample has every modality).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mmcore.engine.subsets import head_output, only


def check_multimodal(trainer, balancer: str) -> list[str]:
    """The model's slots; ValueError when it has fewer than two (nothing to balance)."""
    slots = list(trainer.model.slots)
    if len(slots) < 2 or trainer.model.fusion is None:
        raise ValueError(f"balancer {balancer!r} balances the modalities of a fused model; this model has "
                         f"{len(slots)} encoder slot(s) ({', '.join(slots)})")
    return slots


def class_targets(output, targets: torch.Tensor, balancer: str) -> None:
    """ValueError unless the head's logits are class scores ``[B, C]`` for class-index targets ``[B]``."""
    logits = output.logits
    if targets.dim() != 1 or targets.is_floating_point() or logits.dim() != 2 or logits.shape[0] != targets.shape[0]:
        raise ValueError(f"balancer {balancer!r} needs a classification head (logits [B, C] and class-index targets [B]); "
                         f"got logits of shape {tuple(logits.shape)} and targets of shape {tuple(targets.shape)}, "
                         f"dtype {targets.dtype}")


def unimodal_output(model, features, slot: str, targets: torch.Tensor | None):
    """``(head output, rows)``: the model's prediction from ``slot`` alone for the samples that have it
    (``rows``, indices), with the head's loss on their targets; None when no sample has it."""
    rows = features[slot].present.nonzero().squeeze(1)
    if rows.numel() == 0:
        return None
    return head_output(model, only(features, [slot], rows), None if targets is None else targets[rows]), rows


def own_gradients(trainer, loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """``d loss / d params`` (None where a parameter is unused), the graph kept for the step's backward.

    Under fp16 mixed precision the loss is multiplied by the gradient scaler's scale first and the
    gradients divided by it again (as the trainer's own backward does), so small ones do not underflow.
    """
    scaler = getattr(trainer, "scaler", None)
    scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
    grads = torch.autograd.grad(loss * scale if scale != 1.0 else loss, params, retain_graph=True, allow_unused=True)
    return [g if g is None or scale == 1.0 else g / scale for g in grads]


def encoder_parameters(model, slot: str) -> list[torch.nn.Parameter]:
    """The trainable parameters of encoder ``slot``."""
    return [p for p in model.encoders[slot].parameters() if p.requires_grad]


def in_window(epoch: int, start: int, end: int | None) -> bool:
    """Whether ``epoch`` lies in ``[start, end]`` (``end`` None: no end)."""
    return epoch >= start and (end is None or epoch <= end)


def check_window(balancer: str, start_epoch: int, end_epoch: int | None) -> None:
    if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 1:
        raise ValueError(f"{balancer}: start_epoch must be an int >= 1, got {start_epoch!r}")
    if end_epoch is not None and (isinstance(end_epoch, bool) or not isinstance(end_epoch, int) or end_epoch < start_epoch):
        raise ValueError(f"{balancer}: end_epoch must be an int >= start_epoch ({start_epoch}) or null, got {end_epoch!r}")


class StepStatistics:
    """Per-slot sums accumulated over one optimiser step's micro-batches, then agreed over processes.

    ``add(slot, total, count)`` adds detached values (no device sync); ``reduce(trainer)`` returns
    ``{slot: (total, count)}`` as Python floats, summed over the processes (every process calls it
    with the same slots, a slot it never saw counting 0), and clears the sums.
    """

    def __init__(self, slots: Sequence[str], width: int = 2) -> None:
        self.slots, self.width = list(slots), width
        self._sums: torch.Tensor | None = None

    def add(self, slot: str, *values: torch.Tensor | float) -> None:
        row = self.slots.index(slot)
        device = next((v.device for v in values if isinstance(v, torch.Tensor)), torch.device("cpu"))
        if self._sums is None:
            self._sums = torch.zeros(len(self.slots), self.width, dtype=torch.float64, device=device)
        for j, v in enumerate(values):
            self._sums[row, j] += v.detach().double() if isinstance(v, torch.Tensor) else float(v)

    def reduce(self, trainer) -> dict[str, tuple[float, ...]]:
        sums = self._sums if self._sums is not None else torch.zeros(len(self.slots), self.width, dtype=torch.float64,
                                                                     device=trainer.device)
        sums = trainer.all_reduce_sum(sums.to(trainer.device)).cpu().tolist()
        self._sums = None
        return {slot: tuple(row) for slot, row in zip(self.slots, sums, strict=True)}

    def means(self, trainer) -> dict[str, float | None]:
        """:meth:`reduce` of ``(total, count)`` pairs as ``{slot: total / count}`` (None: no sample this step)."""
        return {slot: (total / count if count > 0 else None) for slot, (total, count) in self.reduce(trainer).items()}


class GradientStash:
    """Gradients a balancer computed itself, per key (e.g. a slot), summed over a step's micro-batches.

    ``add(key, params, grads, weight)`` adds ``weight * grad`` (``trainer.micro_batch_weight``);
    ``reduce(trainer, key, params)`` returns the step's gradients, scaled like ``p.grad``: summed
    over the processes and divided by ``world_size`` (zeros where nothing was added, so every
    process takes part in the same reductions), and forgets the key.
    """

    def __init__(self) -> None:
        self._sums: dict[str, list[torch.Tensor | None]] = {}

    def add(self, key: str, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None], weight: float) -> None:
        held = self._sums.setdefault(key, [None] * len(params))
        for i, g in enumerate(grads):
            if g is None:
                continue
            g = g.detach() * weight
            held[i] = g if held[i] is None else held[i] + g

    def reduce(self, trainer, key: str, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        held = self._sums.pop(key, [None] * len(params))
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, held, strict=True)]
        if trainer.world_size > 1:
            flat = trainer.all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
            grads = [part.view_as(p) / trainer.world_size for part, p in zip(flat.split([p.numel() for p in params]), params,
                                                                               strict=True)]
        return grads

    def clear(self) -> None:
        self._sums.clear()


def epoch_metrics(per_step: Mapping[str, list[float]]) -> dict[str, float]:
    """``{"balancer/<key>": mean}`` of per-step values collected over an epoch (keys without values left
    out): what a balancer reports in ``mmcore_epoch_end``."""
    return {f"balancer/{key}": sum(values) / len(values) for key, values in per_step.items() if values}


@torch.no_grad()
def component_losses(trainer, dataset, slots: Sequence[str]) -> dict[str, float | None]:
    """Mean head loss on ``dataset`` of the fused model (``"fused"``, every sample) and of each slot
    alone (the samples that have it), in eval mode; sharded over the processes and summed (every
    process gets the same numbers). None for a slot no sample has."""
    from torch.utils.data import Subset

    from mmcore.data import make_dataloader
    from mmcore.engine.distributed import shard_indices
    from mmcore.engine.evaluation import to_device
    from mmcore.engine.subsets import head_output

    model = trainer.model
    rank = torch.distributed.get_rank() if trainer.world_size > 1 else 0
    shard = Subset(dataset, shard_indices(len(dataset), rank, trainer.world_size)) if trainer.world_size > 1 else dataset
    keys = ["fused", *slots]
    sums = torch.zeros(len(keys), 2, dtype=torch.float64, device=trainer.device)
    batch_size = trainer.options.eval_batch_size or trainer.options.batch_size
    was_training = model.training
    model.eval()
    try:
        for batch in make_dataloader(shard, model, batch_size):
            inputs, targets = to_device(batch, trainer.device)
            if targets is None:
                continue
            features = model.encode(inputs)
            out = head_output(model, features, targets)
            sums[0] += torch.stack([out.loss.double() * len(targets), torch.tensor(float(len(targets)), dtype=torch.float64,
                                                                                   device=trainer.device)])
            for j, slot in enumerate(slots, start=1):
                found = unimodal_output(model, features, slot, targets)
                if found is not None:
                    sums[j, 0] += found[0].loss.double() * len(found[1])
                    sums[j, 1] += len(found[1])
    finally:
        model.train(was_training)
    sums = trainer.all_reduce_sum(sums).cpu().tolist()
    return {key: (total / count if count > 0 else None) for key, (total, count) in zip(keys, sums, strict=True)}
