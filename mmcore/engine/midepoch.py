"""Mid-epoch checkpoints (``trainer.checkpoint_every_steps``): what a run stopped inside an epoch needs
to finish that same epoch as if it had never stopped.

The epoch's order is a function of ``(seed, epoch)`` cut into global batches
(:class:`~mmcore.engine.distributed.GlobalBatchSampler`), so where a run stands inside an epoch is
one number: the global micro-batches done. A checkpoint written after an optimiser step records
that number and the epoch's running sums -- the training loss summed per sample, the samples
counted, the plugins' loss terms, the head's torchmetrics states -- merged over the processes, plus
each process's random-generator states. A resumed run skips those batches (the sampler starts at
the next one: no sample is read twice, none is left out), puts the merged sums on process 0 (the
others start at zero, and the epoch's end adds them up as usual) and goes on. So the epoch's
samples are each used exactly once across the stop, and its row in ``metrics.csv`` covers the whole
epoch, with any number of processes before and after (the global batches do not depend on it).

What a resumed run equals (see :class:`~mmcore.engine.trainer.Trainer` for the one-process
contract): the uninterrupted run's weights, up to float rounding, under the conditions that make
distributed training equal one process; with the same number of processes also with model
randomness (dropout), since each process's generators are restored -- except draws made inside
DataLoader workers (processors' train-time augmentation with ``num_workers > 0``): the workers
restart with the epoch's seeds and deal the remaining batches anew, so those are equal in
distribution only.

The state is plain data and tensors (``torch.load(weights_only=True)``), checked by
:func:`check_partial` before anything of it is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmcore.engine.metrics import EpochAccumulator

#: the training-state key of a checkpoint written inside an epoch
PARTIAL = "partial_epoch"
_KEYS = {"epoch", "batches", "samples", "loss_sum", "term_sums", "metrics", "seconds", "rng", "plugins"}


def capture(state: EpochAccumulator, *, epoch: int, batches: int, seconds: float, dist,
            plugins: Sequence[tuple[str, Any]] = ()) -> dict[str, Any]:
    """The running epoch's sums, merged over the processes (every process must call it, at the same
    step): ``{"epoch", "batches": global micro-batches done, "samples", "loss_sum", "term_sums",
    "metrics": {name: {state: tensor | [tensor]}}, "seconds", "rng": [each process's RNG state],
    "plugins": {name: state}}``. ``plugins``: the run's ``(name, object)`` plugins; those with a
    ``mid_epoch_state()`` method (the diagnostics' gradient-norm sums) give this process's state."""
    from mmcore.engine.seeding import rng_state

    state.flush_metrics()
    totals = dist.all_reduce_sum(torch.stack([
        state.loss_sum.detach().to(torch.float64) + state.loss_sum_host,
        torch.tensor(float(state.seen), dtype=torch.float64, device=state.loss_sum.device)]))
    names = sorted(state.term_sums)
    terms = {}
    if names:
        sums = dist.all_reduce_sum(torch.stack([state.term_sums[n].detach().to(torch.float64) for n in names]))
        terms = dict(zip(names, (float(v) for v in sums.tolist()), strict=True))
    metrics = {}
    for name, metric in state.metrics.items():
        # torchmetrics' own merge (its dist_reduce_fx per state), then back to this process's own states
        with metric.sync_context(should_sync=dist.distributed):
            metrics[name] = {key: _to_cpu(getattr(metric, key)) for key in metric._defaults}
    rngs = [rng_state()]
    if dist.distributed:
        import torch.distributed as tdist

        rngs = [None] * dist.world_size
        tdist.all_gather_object(rngs, rng_state())
    return {"epoch": int(epoch), "batches": int(batches), "samples": int(round(float(totals[1]))),
            "loss_sum": float(totals[0]), "term_sums": terms, "metrics": metrics, "seconds": float(seconds), "rng": rngs,
            "plugins": {name: plugin.mid_epoch_state() for name, plugin in plugins if hasattr(plugin, "mid_epoch_state")}}


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    return [v.detach().cpu().clone() for v in value]


def restore(state: EpochAccumulator, partial: Mapping[str, Any], *, rank: int, device: torch.device,
            plugins: Sequence[tuple[str, Any]] = (), trainer: Any = None) -> None:
    """Put the merged sums of ``partial`` into process 0's fresh accumulator (the others keep zeros:
    the epoch's end sums the processes), and process 0's plugin states into its ``plugins`` that
    saved one (``load_mid_epoch_state(state, trainer)``; a ValueError there is a CheckpointError)."""
    if rank != 0:
        return
    from mmcore.engine.artefacts import CheckpointError

    for name, plugin in plugins:
        if name in partial["plugins"] and hasattr(plugin, "load_mid_epoch_state"):
            try:
                plugin.load_mid_epoch_state(partial["plugins"][name], trainer)
            except ValueError as exc:
                raise CheckpointError(f"{PARTIAL}.plugins.{name}: {exc}") from exc
    state.seen = int(partial["samples"])
    state.loss_sum_host += float(partial["loss_sum"])
    for name, value in partial["term_sums"].items():
        state.term_sums[name] = torch.tensor(value, dtype=torch.float64, device=device)
    for name, saved in partial["metrics"].items():
        metric = state.metrics[name]
        for key, value in saved.items():
            default = metric._defaults[key]
            if isinstance(default, list):
                setattr(metric, key, [v.to(device) for v in (value if isinstance(value, list) else [value])])
            else:
                setattr(metric, key, value.to(device=device, dtype=default.dtype))
        metric._update_count += 1  # it holds updates: compute() must not warn that it has none


def restore_rng(partial: Mapping[str, Any], *, rank: int, world_size: int) -> None:
    """Process ``rank``'s generators as they were at the checkpoint, when the run has as many processes
    as then (else each keeps the epoch's fresh seeds: equal in distribution)."""
    from mmcore.engine.seeding import set_rng_state

    rngs = partial["rng"]
    if len(rngs) == world_size:
        set_rng_state(rngs[rank])


def check_partial(partial: Any, *, path: Path, epoch: int, epochs: int, micro_batches: int, grad_accumulation: int,
                  metrics: Mapping[str, Any]) -> None:
    """Refuse a ``partial_epoch`` entry that does not fit the live run (``metrics``: fresh metrics of
    the head) with :class:`~mmcore.engine.artefacts.CheckpointError` naming ``path`` and the field."""
    from mmcore.engine.artefacts import CheckpointError, _check_rng

    where = f"{path}: {PARTIAL}"
    if not isinstance(partial, dict) or set(partial) != _KEYS:
        raise CheckpointError(f"{where} must hold {sorted(_KEYS)}, got {type(partial).__name__}"
                              + (f" with {sorted(partial)}" if isinstance(partial, dict) else ""))

    def whole(key: str, low: int, high: int | None) -> int:
        value = partial[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            raise CheckpointError(f"{where}.{key} must be a whole number in [{low}, {high if high is not None else 'inf'}], got {value!r}")
        return value

    if epoch + 1 > epochs:
        raise CheckpointError(f"{where}: the run's {epochs} epochs are all completed, yet it records epoch {epoch + 1} in progress")
    whole("epoch", epoch + 1, epoch + 1)  # the epoch after the completed ones
    batches = whole("batches", 1, micro_batches - 1)
    if batches % grad_accumulation:
        raise CheckpointError(f"{where}.batches ({batches}) must end an optimiser step of {grad_accumulation} micro-batches")
    whole("samples", 1, None)
    for key in ("loss_sum", "seconds"):
        value = partial[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (key == "seconds" and value < 0):
            raise CheckpointError(f"{where}.{key} must be a finite number, got {value!r}")
    terms = partial["term_sums"]
    if not isinstance(terms, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for k, v in terms.items()):
        raise CheckpointError(f"{where}.term_sums must map loss-term names to numbers")
    saved = partial["metrics"]
    if not isinstance(saved, dict) or set(saved) != set(metrics):
        raise CheckpointError(f"{where}.metrics must hold the head's metrics {sorted(metrics)}, got "
                              f"{sorted(saved) if isinstance(saved, dict) else type(saved).__name__}")
    for name, metric in metrics.items():
        states = saved[name]
        if not isinstance(states, dict) or set(states) != set(metric._defaults):
            raise CheckpointError(f"{where}.metrics.{name} must hold the states {sorted(metric._defaults)}")
        for key, default in metric._defaults.items():
            value = states[key]
            if isinstance(default, list):
                ok = isinstance(value, torch.Tensor) or (isinstance(value, list) and all(isinstance(v, torch.Tensor) for v in value))
            else:
                ok = isinstance(value, torch.Tensor) and value.shape == default.shape
            if not ok:
                raise CheckpointError(f"{where}.metrics.{name}.{key}: not the state this metric keeps")
    rngs = partial["rng"]
    if not isinstance(rngs, list) or not rngs or not all(isinstance(r, dict) for r in rngs):
        raise CheckpointError(f"{where}.rng must list each process's generator states")
    saved_plugins = partial["plugins"]
    if not isinstance(saved_plugins, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in saved_plugins.items()):
        raise CheckpointError(f"{where}.plugins must map plugin names to their states")
    for rank, saved_rng in enumerate(rngs):
        _check_rng(saved_rng, Path(f"{where}.rng[{rank}]"))
