"""Robustness reports: every subset of missing modalities, and a sweep of perturbation levels per
modality, for any model (plugins included).

Perturbations are plugins (``registry.add_perturbation(name, factory, modality=...)``): the
factory takes a ``level`` (0 = unchanged) and returns ``(raw, generator) -> raw``, applied to raw
inputs before the processor; an optional class attribute ``levels`` is its default sweep and an
optional ``describe(level)`` prints a level (e.g. as an SNR). A perturbation registered without
a modality applies to every slot.

Two summary numbers per perturbed evaluation, for a metric where higher is better:

* **relative robustness** = perturbed metric / clean metric (1 = unaffected);
* **effective robustness** = perturbed metric - the metric with that modality removed entirely.
  The baseline is what the model would score if it simply ignored the damaged modality and
  relied on the others (the fallback every multimodal model has). Positive: the model still
  draws information from the damaged modality; negative: the damage misleads it, and dropping
  the modality would be better. For a model with one modality the baseline is chance
  (1 / num_classes) when the head has ``num_classes``, else not defined (None).

For metrics where lower is better (losses, errors) relative = clean / perturbed and effective =
baseline - perturbed, so that in every case larger means more robust.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmcore.components import Perturbation
from mmcore.engine.evaluation import evaluate
from mmcore.engine.metrics import lower_is_better
from mmcore.engine.views import PerturbedView, SubsetOfModalities
from mmcore.model import MultimodalModel
from mmcore.registry import ComponentInfo, Registry

DEFAULT_LEVELS = (0.1, 0.25, 0.5, 1.0)


def perturbations_for(registry: Registry, modality: str | None) -> list[ComponentInfo]:
    """The registered perturbations that apply to ``modality`` data (or to any)."""
    return [info for info in registry if info.kind == "perturbation" and (info.modality is None or info.modality == modality)]


def sweep_levels(info: ComponentInfo) -> list[float]:
    # Perturbation.levels / .describe, declared with their defaults; a function factory may carry its own
    return [float(x) for x in (getattr(info.factory, "levels", Perturbation.levels) or DEFAULT_LEVELS)]


def describe_level(info: ComponentInfo, level: float) -> str:
    return getattr(info.factory, "describe", Perturbation.describe)(level)


def robustness_report(
    model: MultimodalModel,
    dataset,
    registry: Registry,
    *,
    metric: str | None = None,
    perturbations: Sequence[str] | None = None,
    levels: Mapping[str, Sequence[float]] | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    seed: int = 0,
    mode: str = "auto",
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` clean, with every subset of modalities, and perturbed.

    ``perturbations`` limits the sweep to these names; ``levels`` overrides a perturbation's
    default levels; ``mode`` says whether larger values of ``metric`` are better (``max``),
    smaller (``min``) or, with ``auto``, asks the metric: its torchmetrics ``higher_is_better``
    (:func:`mmcore.engine.metrics.lower_is_better`; the loss is lower-is-better). A metric that
    declares no direction needs ``max`` or ``min`` (:class:`~mmcore.errors.ConfigError`).
    Returns a JSON-able dict (see :func:`format_report`).
    """
    if mode not in ("auto", "max", "min"):
        raise ValueError(f"mode must be 'auto', 'max' or 'min', got {mode!r}")
    slots = model.slots
    names = list(model.head.metrics())
    metric = metric or (names[0] if names else "loss")

    def score(data) -> float:
        return evaluate(model, data, batch_size=batch_size, device=device)[metric]

    clean_results = evaluate(model, dataset, batch_size=batch_size, device=device)
    if metric not in clean_results:
        raise ValueError(f"metric {metric!r} is not reported by the head; it reports {sorted(clean_results)}")
    clean = clean_results[metric]
    lower = lower_is_better(metric, mode, metrics=model.head.metrics(), option="trainer.monitor_mode")
    subsets = []
    for size in range(len(slots), 0, -1):
        for keep in itertools.combinations(slots, size):
            value = clean if size == len(slots) else score(SubsetOfModalities(dataset, keep))
            subsets.append({"present": list(keep), metric: value})
    removed: dict[str, float | None] = {}
    for slot in slots:
        rest = [s for s in slots if s != slot]
        match = [row[metric] for row in subsets if sorted(row["present"]) == sorted(rest)]
        removed[slot] = match[0] if match else _chance(model, metric)
    rows = []
    wanted = set(perturbations) if perturbations is not None else None
    for slot in slots:
        modality = model.encoders[slot].modality
        for info in perturbations_for(registry, modality):
            if wanted is not None and info.name not in wanted:
                continue
            for level in (levels or {}).get(info.name) or sweep_levels(info):
                value = score(PerturbedView(dataset, slot, info.factory(level), seed=seed))
                rows.append({
                    "slot": slot, "perturbation": info.name, "level": float(level), "label": describe_level(info, level),
                    metric: value,
                    "relative": _relative(value, clean, lower),
                    "effective": _effective(value, removed[slot], lower),
                })
    return {"metric": metric, "clean": clean, "clean_results": clean_results, "missing": subsets,
            "removed": removed, "perturbed": rows, "samples": len(dataset)}


def _chance(model: MultimodalModel, metric: str) -> float | None:
    classes = model.head.num_classes  # Head.num_classes: None unless a classifier
    return 1.0 / classes if classes and metric == "accuracy" else None


def _relative(value: float, clean: float, lower: bool) -> float | None:
    if lower:
        return clean / value if value else None
    return value / clean if clean else None


def _effective(value: float, baseline: float | None, lower: bool) -> float | None:
    if baseline is None:
        return None
    return baseline - value if lower else value - baseline


def format_report(report: Mapping[str, Any]) -> str:
    """The report as two plain-text tables."""
    metric = report["metric"]
    lines = [f"clean {metric}: {report['clean']:.4f} on {report['samples']} samples", "",
             f"{'modalities present':<32} {metric:>10}"]
    for row in report["missing"]:
        lines.append(f"{' + '.join(row['present']):<32} {row[metric]:>10.4f}")
    if report["perturbed"]:
        lines += ["", f"{'slot':<10} {'perturbation':<16} {'level':>9} {metric:>10} {'relative':>9} {'effective':>10}"]
        for row in report["perturbed"]:
            eff = f"{row['effective']:+10.4f}" if row["effective"] is not None else f"{'-':>10}"
            rel = f"{row['relative']:9.3f}" if row["relative"] is not None else f"{'-':>9}"
            lines.append(f"{row['slot']:<10} {row['perturbation']:<16} {row['label']:>9} {row[metric]:>10.4f} {rel} {eff}")
        lines += ["", "relative = perturbed / clean; effective = perturbed - with that modality removed "
                  "(> 0: the damaged modality still helps)"]
    return "\n".join(lines)


def plot_report(report: Mapping[str, Any], path: Path, *, root: Path | None = None) -> Path | None:
    """Metric against perturbation level, one panel per slot, with the clean and 'modality removed'
    lines; None when matplotlib is not installed (:func:`mmcore.engine.plots.plot_robustness`).
    ``root``: the run directory ``path`` lies in (its folders below it are never links)."""
    from mmcore.engine.plots import plot_robustness

    return plot_robustness(report, path, root=root)
