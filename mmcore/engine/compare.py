"""``mmcore compare``: one config trained with several fusions, accuracy beside cost.

Cost of a trained model, on one batch of the test split:

* parameters: every parameter of the model;
* FLOPs: of one forward pass per sample, counted by ``torch.utils.flop_counter`` (matrix
  products and convolutions; element-wise work is not counted);
* latency: median wall time of a forward pass of the batch (inference mode, after warm-up);
* peak memory: on CUDA the measured peak allocation of a training step (forward + backward);
  elsewhere an estimate of the same: parameters + gradients + AdamW state + the activations
  autograd saves for backward (``memory_estimated: true``).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmcore.engine.atomic import write_file
from mmcore.engine.checkpoint import dumps_json, load_model
from mmcore.engine.evaluation import to_device
from mmcore.engine.plots import plot_compare
from mmcore.engine.rundir import RunDir
from mmcore.errors import ConfigError, ConfigIssue
from mmcore.model import MultimodalModel
from mmcore.options import factory_parameters
from mmcore.registry import Registry

#: What ``run_compare`` writes into its ``out_dir`` beside one run directory per fusion.
COMPARE_JSON, COMPARE_PLOT = "compare.json", "compare.png"
#: Fusion options carried over from the config's fusion to each compared fusion (when accepted).
SHARED_FUSION_OPTIONS = ("dim", "dropout")


def fusion_variants(config: Mapping[str, Any], fusions: Sequence[str], registry: Registry) -> dict[str, dict]:
    """One config per fusion name; ``dim``/``dropout`` of the config's fusion are kept where accepted."""
    base = config.get("model", {}).get("fusion") or {}
    issues, variants = [], {}
    for name in fusions:
        if ("fusion", name) not in registry:
            issues.append(ConfigIssue("--fusions", registry.unknown_message("fusion", name)))
            continue
        params, var_kw = factory_parameters(registry.get("fusion", name).factory)
        entry = {"name": name, **{k: base[k] for k in SHARED_FUSION_OPTIONS if k in base and (k in params or var_kw)}}
        variant = copy.deepcopy(dict(config))
        variant["model"]["fusion"] = entry
        variants[name] = variant
    if issues:
        raise ConfigError(issues)
    return variants


def measure_cost(model: MultimodalModel, samples: Sequence[Mapping[str, Any]], *, device: torch.device | str = "cpu",
                 repeats: int = 10) -> dict[str, Any]:
    """Parameters, forward FLOPs per sample, median forward latency and peak training memory of ``model``."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(device)
    model = model.to(device)
    batch = model.collate(list(samples))
    inputs, targets = to_device(batch, device)
    n = len(samples)
    parameters = sum(p.numel() for p in model.parameters())
    model.eval()
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            model(inputs)
        flops = counter.get_total_flops() / n
        for _ in range(2):
            model(inputs)
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(inputs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    memory, estimated = _training_memory(model, inputs, targets, device)
    return {"parameters": parameters, "flops_per_sample": flops, "latency_ms": 1000 * statistics.median(times),
            "latency_batch": n, "peak_memory_mb": memory / 2**20, "memory_estimated": estimated}


def _training_memory(model: MultimodalModel, inputs, targets, device: torch.device) -> tuple[float, bool]:
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            out = model(inputs, targets)
            out.loss.backward()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - base
            params = sum(p.numel() * p.element_size() for p in model.parameters())
            trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
            # peak - base holds activations and gradients; add the weights and AdamW's two moments.
            return float(peak + params + 2 * trainable), False
        saved = 0
        # The weights are counted once below, not again when autograd saves them for backward.
        seen: set[int] = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}

        def pack(t: torch.Tensor):
            nonlocal saved
            key = t.untyped_storage().data_ptr()
            if key not in seen:  # a storage saved twice is held once
                seen.add(key)
                saved += t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(inputs, targets)
        out.loss.backward()
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        return float(params + 3 * trainable + saved), True  # weights, grads, 2 AdamW moments, activations
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def run_compare(config: Mapping[str, Any], fusions: Sequence[str], *, manager, out_dir: Path,
                metric: str | None = None, log=print) -> dict[str, Any]:
    """Train ``config`` once per fusion; measure each best checkpoint; write a table, JSON and a scatter plot."""
    from mmcore.engine.trainer import Trainer

    variants = fusion_variants(config, fusions, manager.registry)
    results = {}
    for name, variant in variants.items():
        variant["trainer"] = {**(variant.get("trainer") or {}), "run_dir": str(out_dir / name)}
        log(f"training with fusion {name!r} ...")
        trainer = Trainer(variant, manager=manager)
        report = trainer.fit()
        if not trainer.is_main:
            continue
        test = trainer.datasets["test"] if len(trainer.datasets["test"]) else trainer.datasets["val"]
        samples = [test[i] for i in range(min(len(test), trainer.options.eval_batch_size or trainer.options.batch_size))]
        key = metric or trainer.options.monitor or "loss"
        # The best checkpoint, rebuilt: the trainer's model may serve frozen encoders from a
        # feature cache, which would leave the most expensive part out of the cost.
        best, _ = load_model(trainer.rundir.readable_checkpoint(RunDir.BEST), manager.registry)
        results[name] = {"metric": key, "value": report["test"].get(key), "test": report["test"],
                         "train_seconds": report["seconds"], **measure_cost(best, samples, device=trainer.device)}
    summary = {"fusions": results}
    if not results:  # not the main process of a distributed run: it writes nothing
        return summary
    write_file(out_dir / COMPARE_JSON, dumps_json(summary, indent=2))
    plot = plot_compare(results, out_dir / COMPARE_PLOT)
    summary["plot"] = str(plot) if plot else None
    return summary


def format_compare(results: Mapping[str, Mapping[str, Any]]) -> str:
    if not results:
        return ""
    metric = next(iter(results.values()))["metric"]
    estimated = any(r["memory_estimated"] for r in results.values())
    mem = "memory MB*" if estimated else "memory MB"
    lines = [f"{'fusion':<18} {metric:>9} {'params':>10} {'MFLOPs/sample':>14} {'latency ms':>11} {mem:>11} {'train s':>8}"]
    for name, r in results.items():
        value = f"{r['value']:.4f}" if r["value"] is not None else "-"
        lines.append(f"{name:<18} {value:>9} {r['parameters']:>10,} {r['flops_per_sample'] / 1e6:>14.2f} "
                     f"{r['latency_ms']:>11.2f} {r['peak_memory_mb']:>11.1f} {r['train_seconds']:>8.0f}")
    batch = next(iter(results.values()))["latency_batch"]
    lines.append(f"latency: median forward of a batch of {batch}" + ("; * estimated (params + grads + AdamW + saved activations)" if estimated else ""))
    return "\n".join(lines)
