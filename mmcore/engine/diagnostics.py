"""Modality-imbalance diagnostics, in every run (``trainer.diagnostics``, on by default).

A fused model can score well while one encoder has barely learned (the modality that fits first
starves the others: Wu et al. 2022; Peng et al. 2022, OGM-GE). Three cheap measurements show it
without choosing a balancer first:

* **gradient-norm share per epoch** (``grad_share/<slot>`` in each epoch's metrics: metrics.csv,
  TensorBoard, ``report["history"]``): the mean over the epoch's optimiser steps of the L2 norm
  of encoder ``slot``'s gradients (as applied: after any balancer, before clipping), divided by
  the sum over encoders. A slot near 0 is not being trained by the fused loss.
* **linear probe per encoder** (``report["diagnostics"]["probe"]``): how much of the target the
  encoder's pooled features carry, read by a ridge-regression linear probe with ``folds``-fold
  cross-validation on the validation split's samples that have that modality -- accuracy for
  class targets (one-hot targets, argmax), R^2 for numeric ones. Features are standardised with
  the training folds' statistics; ridge ``lambda = 1`` (on standardised features) and a bias.
* **the metric with each modality removed** (``removed``) and with each modality alone
  (``alone``), through the fused model's own fusion and head (the other slots absent), beside the
  metric with all of them (``full``). A modality whose removal costs nothing is not being used.

The probe and the subsets are computed once, when the run ends, on the validation split (the
training split when there is none) with the weights the model holds then (the best checkpoint's
when the test split was evaluated: ``weights``), in one pass: the encoders run once per batch and
only the fusion and head run per subset (:mod:`mmcore.engine.subsets`). The ``plots`` logger draws
them as ``plots/diagnostics.png``. Only the main process of a distributed run computes them (the
gradients it reads are the averaged ones, the same on every process).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from mmcore.engine.evaluation import to_device
from mmcore.engine.metrics import as_float
from mmcore.engine.subsets import head_output, only
from mmcore.plugin_manager import hookimpl

#: Folds of the probe's cross-validation, and its ridge penalty on standardised features.
PROBE_FOLDS, PROBE_RIDGE = 5, 1.0


class ImbalanceDiagnostics:
    """The diagnostics of one run, as hook implementations (the trainer registers a fresh one per run)."""

    def __init__(self) -> None:
        self._groups: dict[str, list[torch.nn.Parameter]] | None = None
        self._norm_sum: torch.Tensor | None = None
        self._steps = 0
        self.shares: dict[str, list[float]] = {}
        #: the trainer's last validation pass, tallied (:meth:`tally_validation`); None until then
        self.tally: ModalityTally | None = None

    def tally_validation(self, trainer, split: str) -> ModalityTally | None:
        """A :class:`ModalityTally` for the validation pass the trainer is about to run, when that pass
        is what the end-of-run report would compute again: the last planned epoch, one process (the
        report covers the whole split; a distributed pass sees a shard) and fp32 (the report encodes
        without autocast). None otherwise: the report then makes its own pass."""
        opts = trainer.options
        if trainer.epoch != opts.epochs or trainer.dist.distributed or opts.precision != "fp32":
            return None
        self.tally = ModalityTally(trainer.model, trainer.device, epoch=trainer.epoch, split=split)
        return self.tally

    # ``trylast``: after any balancer has changed the gradients, so the share is the applied one.
    @hookimpl(trylast=True)
    def mmcore_before_optimizer_step(self, trainer) -> None:
        if self._groups is None:
            self._groups = {slot: [p for p in encoder.parameters() if p.requires_grad]
                            for slot, encoder in trainer.model.encoders.items()}
        norms = []
        for params in self._groups.values():
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).float())
            else:
                norms.append(torch.zeros((), device=trainer.device))
        step = torch.stack([n.to(trainer.device) for n in norms])
        self._norm_sum = step if self._norm_sum is None else self._norm_sum + step  # no device sync per step
        self._steps += 1

    def mid_epoch_state(self) -> dict:
        """The running epoch's gradient-norm sums, for a mid-epoch checkpoint (:mod:`mmcore.engine.midepoch`)."""
        return {"norm_sum": None if self._norm_sum is None else self._norm_sum.detach().cpu().clone(), "steps": self._steps}

    def load_mid_epoch_state(self, state: dict, trainer) -> None:
        """Go on from :meth:`mid_epoch_state`'s sums; ValueError for sums that do not fit the model's encoders."""
        norm_sum, steps = state.get("norm_sum"), state.get("steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0 or not (
                norm_sum is None or (isinstance(norm_sum, torch.Tensor) and norm_sum.shape == (len(trainer.model.encoders),))):
            raise ValueError(f"diagnostics: expected gradient-norm sums for {len(trainer.model.encoders)} encoders and a step count")
        self._norm_sum = None if norm_sum is None else norm_sum.to(device=trainer.device, dtype=torch.float32)
        self._steps = steps

    # ``tryfirst``: the shares are in the epoch's row before the loggers write it.
    @hookimpl(tryfirst=True)
    def mmcore_epoch_end(self, trainer, metrics) -> None:
        slots = list(trainer.model.encoders)
        if self._norm_sum is None or not self._steps:
            return
        means = (self._norm_sum / self._steps).tolist()
        total = sum(means)
        for slot, value in zip(slots, means, strict=True):
            share = value / total if total > 0 else 0.0
            metrics[f"grad_share/{slot}"] = share
            self.shares.setdefault(slot, []).append(share)
        self._norm_sum, self._steps = None, 0

    @hookimpl(tryfirst=True)
    def mmcore_train_end(self, trainer, report) -> None:
        if report.get("status") in ("failed", "non_finite_loss") or trainer.model is None:
            return
        start = time.perf_counter()
        split = "val" if len(trainer.datasets["val"]) else "train"
        weights = "best" if report.get("test") else "last"
        tally, self.tally = self.tally, None
        # The last validation pass tallied the same rows with the weights the model holds now (the
        # best epoch's when the test split was evaluated): its sums, not a second pass over the split.
        if tally is not None and tally.split == split and tally.epoch == (trainer.best_epoch if weights == "best" else trainer.epoch):
            result = tally.result()
        else:
            batch_size = trainer.options.eval_batch_size or trainer.options.batch_size
            result = modality_report(trainer.model, trainer.datasets[split], batch_size=batch_size, device=trainer.device)
        shares = {slot: [row.get(f"grad_share/{slot}") for row in trainer.history] for slot in trainer.model.encoders}
        result.update(split=split, weights=weights, grad_share=shares,
                      seconds=time.perf_counter() - start)
        report["diagnostics"] = result


@torch.no_grad()
def modality_report(model, dataset, *, batch_size: int = 64, device: torch.device | str = "cpu",
                    folds: int = PROBE_FOLDS, ridge: float = PROBE_RIDGE) -> dict[str, Any]:
    """The head's first metric with all modalities (``full``), each removed (``removed``) and each
    alone (``alone``), and a linear probe of each encoder's pooled features (``probe``), on ``dataset``.

    Returns ``{"metric", "rows", "full", "removed": {slot: value}, "alone": {slot: value},
    "probe_metric": "accuracy" | "r2" | None, "probe": {slot: value | None}, "probe_rows": {slot: n}}``.
    One pass: the encoders run once per batch. A head without metrics gives None values; targets
    that are neither class indices nor numbers (multilabel, captions) give no probe.
    """
    from mmcore.data import make_dataloader

    device = torch.device(device)
    tally = ModalityTally(model, device)
    was_training = model.training
    model.eval()
    try:
        for batch in make_dataloader(dataset, model, batch_size):
            inputs, target = to_device(batch, device)
            if target is None:
                continue
            tally.update(model.encode(inputs), target)
    finally:
        model.train(was_training)
    return tally.result(folds=folds, ridge=ridge)


class ModalityTally:
    """:func:`modality_report`'s sums, batch by batch, from features already encoded: the end-of-run
    report, or the trainer's last validation pass, which encodes the same rows with the same weights
    (the trainer hands its features here rather than encoding the split a second time).

    ``update(features, target)``: one batch's ``{slot: Features}`` (of ``model.encode``) and targets;
    ``result()``: :func:`modality_report`'s dict. ``epoch`` / ``split``: what the caller tallied
    (the trainer's bookkeeping; None for :func:`modality_report`)."""

    def __init__(self, model, device: torch.device, *, epoch: int | None = None, split: str | None = None) -> None:
        self.model, self.device, self.epoch, self.split = model, device, epoch, split
        slots = model.slots
        names = list(model.head.metrics())
        self.metric = names[0] if names else None
        subsets = {"full": slots, **{f"removed/{s}": [t for t in slots if t != s] for s in slots},
                   **{f"alone/{s}": [s] for s in slots}}
        self.subsets = {"full": slots} if len(slots) == 1 else subsets
        self.states = {key: model.head.metrics()[self.metric].to(device) for key in self.subsets} if self.metric else {}
        for state in self.states.values():  # this process holds every sample: torchmetrics must not sync with the others
            state.distributed_available_fn = _not_distributed
        self.pooled: dict[str, list[torch.Tensor]] = {s: [] for s in slots}
        self.targets: dict[str, list[torch.Tensor]] = {s: [] for s in slots}
        self.rows = 0

    @torch.no_grad()
    def update(self, features, target: torch.Tensor) -> None:
        self.rows += len(target)
        for key, keep in self.subsets.items():
            out = head_output(self.model, only(features, keep), target)
            if self.metric:
                self.states[key].update(out.predictions, target)
        for slot in self.model.slots:
            present = features[slot].present
            self.pooled[slot].append(features[slot].pooled[present].double().cpu())
            self.targets[slot].append(target[present].cpu())

    def result(self, *, folds: int = PROBE_FOLDS, ridge: float = PROBE_RIDGE) -> dict[str, Any]:
        slots, rows = self.model.slots, self.rows
        values = {key: (as_float(state.compute()) if rows else None) for key, state in self.states.items()}
        probe_metric = None
        probes: dict[str, float | None] = {}
        for slot in slots:
            x = torch.cat(self.pooled[slot]) if self.pooled[slot] else torch.zeros(0, 1, dtype=torch.float64)
            y = torch.cat(self.targets[slot]) if self.targets[slot] else torch.zeros(0)
            probes[slot], kind = linear_probe(x, y, folds=folds, ridge=ridge)
            probe_metric = probe_metric or kind
        return {
            "metric": self.metric, "rows": rows, "full": values.get("full"),
            "removed": {s: values.get(f"removed/{s}") for s in slots} if len(slots) > 1 else {},
            "alone": {s: values.get(f"alone/{s}") for s in slots} if len(slots) > 1 else {},
            "probe_metric": probe_metric, "probe": probes,
            "probe_rows": {s: sum(len(t) for t in self.targets[s]) for s in slots},
        }


def _not_distributed() -> bool:
    return False


def linear_probe(x: torch.Tensor, y: torch.Tensor, *, folds: int = PROBE_FOLDS, ridge: float = PROBE_RIDGE,
                 seed: int = 0) -> tuple[float | None, str | None]:
    """Cross-validated ridge linear probe of ``x [N, D]`` for targets ``y [N]``: ``(value, "accuracy")``
    for integer class targets (one-hot regression, argmax), ``(value, "r2")`` for float targets,
    ``(None, None)`` for any other target shape or fewer than ``2 * folds`` rows (or one class).

    Folds are a seeded permutation of the rows cut into ``folds`` parts; each part is predicted by
    the probe fitted on the others (features standardised with the others' mean and deviation,
    ``W = (X^T X + ridge I)^-1 X^T Y`` with an unpenalised bias).
    """
    if y.dim() != 1 or len(y) < 2 * folds or x.dim() != 2:
        return None, None
    classification = not y.is_floating_point()
    if classification:
        classes, index = torch.unique(y, return_inverse=True)
        if len(classes) < 2:
            return None, None
        targets = torch.nn.functional.one_hot(index, len(classes)).double()
    else:
        targets = y.double()[:, None]
    n = len(y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[order] = torch.arange(n) % folds
    predictions = torch.zeros_like(targets)
    x = x.double()
    for f in range(folds):
        train, test = fold_of != f, fold_of == f
        mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
        xt = (x[train] - mean) / std
        ym = targets[train].mean(0)
        gram = xt.T @ xt + ridge * torch.eye(x.shape[1], dtype=torch.float64)
        w = torch.linalg.solve(gram, xt.T @ (targets[train] - ym))
        predictions[test] = ((x[test] - mean) / std) @ w + ym
    if classification:
        return float((predictions.argmax(1) == index).double().mean()), "accuracy"
    residual = float(((targets - predictions) ** 2).sum())
    total = float(((targets - targets.mean()) ** 2).sum())
    return (1.0 - residual / total if total > 0 else None), "r2"


def diagnostics_summary(diagnostics: Mapping[str, Any]) -> str:
    """One line per slot: probe, metric alone and removed, last gradient share (for printing)."""
    lines = []
    metric = diagnostics.get("metric") or "metric"
    for slot, probe in diagnostics.get("probe", {}).items():
        shares = [v for v in diagnostics.get("grad_share", {}).get(slot, []) if v is not None]
        parts = [f"probe {probe:.3f}" if probe is not None else "probe -"]
        if diagnostics.get("alone"):
            parts.append(f"{metric} alone {diagnostics['alone'][slot]:.3f}, without {diagnostics['removed'][slot]:.3f}")
        if shares:
            parts.append(f"gradient share {shares[-1]:.2f}")
        lines.append(f"{slot}: " + ", ".join(parts))
    return "\n".join(lines)
