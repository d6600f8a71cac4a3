"""Every PNG mmcore draws, in one place: training curves and imbalance diagnostics (the ``plots``
logger), robustness sweeps (``mmcore eval --robustness``), fusion comparisons (``mmcore compare``)
and per-modality attributions (``mmcore explain``).

matplotlib is imported only when a plot is drawn, with the non-interactive Agg backend; each
function returns what it wrote, and nothing (``[]`` / None) when matplotlib is not installed.
Files are written atomically (a reader never sees half a PNG) by :mod:`mmcore.engine.atomic`; given
a ``root`` (the run directory), the folders below it must be real folders: a linked ``plots/`` is
refused, never written through.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmcore.engine.atomic import write_file


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt, fig, path: Path, root: Path | None) -> Path:
    try:
        write_file(path, lambda fh: fig.savefig(fh, format="png"), root=root)
    finally:
        plt.close(fig)
    return path


def plot_history(history: Sequence[Mapping[str, float]], folder: Path, *, root: Path | None = None) -> list[Path]:
    """One PNG per quantity (loss, each metric) of ``history`` (``metrics.csv``'s rows: ``epoch``,
    ``train/<name>``, ``val/<name>``): train and validation curves over epochs, named
    ``<name>.png`` (``/`` in a name becomes ``_``). Returns the files written. ``root``: the run
    directory ``folder`` lies in (folders below it are never links; UnsafePathError otherwise)."""
    plt = _pyplot()
    if plt is None or not history:
        return []
    # (other keys with a "/", such as the diagnostics' grad_share/<slot>, are drawn elsewhere)
    names = sorted({key.split("/", 1)[1] for row in history for key in row if key.startswith(("train/", "val/"))})
    epochs = [row["epoch"] for row in history]
    written = []
    for name in names:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
        for split in ("train", "val"):
            values = [row.get(f"{split}/{name}") for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [math.nan if v is None else v for v in values], marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(_save(plt, fig, folder / f"{name.replace('/', '_')}.png", root))
    return written


def plot_robustness(report: Mapping[str, Any], path: Path, *, root: Path | None = None) -> Path | None:
    """A robustness report (:func:`~mmcore.engine.robustness.robustness_report`): metric against
    perturbation level, one panel per slot, with the clean and 'modality removed' lines."""
    plt = _pyplot()
    slots = list(dict.fromkeys(row["slot"] for row in report["perturbed"]))
    if plt is None or not slots:
        return None
    metric = report["metric"]
    fig, axes = plt.subplots(1, len(slots), figsize=(4.2 * len(slots), 3.4), dpi=110, squeeze=False)
    for ax, slot in zip(axes[0], slots, strict=True):
        rows = [r for r in report["perturbed"] if r["slot"] == slot]
        for name in dict.fromkeys(r["perturbation"] for r in rows):
            points = [(0.0, report["clean"])] + [(r["level"], r[metric]) for r in rows if r["perturbation"] == name]
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name)
        ax.axhline(report["clean"], color="grey", linestyle=":", linewidth=1, label="clean")
        if report["removed"].get(slot) is not None:
            ax.axhline(report["removed"][slot], color="red", linestyle="--", linewidth=1, label=f"{slot} removed")
        ax.set_title(slot)
        ax.set_xlabel("level")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(plt, fig, path, root)


def plot_compare(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """``mmcore compare``'s results: the metric against latency, one labelled point per fusion."""
    plt = _pyplot()
    points = {k: r for k, r in results.items() if r["value"] is not None}
    if plt is None or not points:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=110)
    for name, r in points.items():
        ax.scatter(r["latency_ms"], r["value"], s=25)
        ax.annotate(name, (r["latency_ms"], r["value"]), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set_xlabel(f"latency (ms per batch of {next(iter(points.values()))['latency_batch']})")
    ax.set_ylabel(next(iter(points.values()))["metric"])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(plt, fig, path, None)


def plot_diagnostics(diagnostics: Mapping[str, Any], path: Path, *, root: Path | None = None) -> Path | None:
    """The imbalance diagnostics of a run (:mod:`mmcore.engine.diagnostics`): per slot the linear
    probe and the metric alone / removed (bars, beside the full model's metric), and each encoder's
    gradient-norm share over the epochs."""
    plt = _pyplot()
    slots = list(diagnostics.get("probe", {}))
    if plt is None or not slots:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    metric = diagnostics.get("metric") or "metric"
    bars = [("probe", f"linear probe ({diagnostics.get('probe_metric') or '-'})")]
    if diagnostics.get("alone"):
        bars += [("alone", f"{metric}, this modality alone"), ("removed", f"{metric}, this modality removed")]
    width = 0.8 / len(bars)
    for i, (key, label) in enumerate(bars):
        values = [diagnostics.get(key, {}).get(slot) for slot in slots]
        left.bar([j + (i - (len(bars) - 1) / 2) * width for j in range(len(slots))],
                 [math.nan if v is None else v for v in values], width=width, label=label)
    if diagnostics.get("full") is not None:
        left.axhline(diagnostics["full"], color="grey", linestyle=":", linewidth=1, label=f"{metric}, all modalities")
    left.set_xticks(range(len(slots)), slots)
    left.set_title(f"{diagnostics.get('split', 'val')} split")
    left.grid(alpha=0.3, axis="y")
    left.legend(fontsize=7)
    for slot in slots:
        shares = diagnostics.get("grad_share", {}).get(slot) or []
        right.plot(range(1, len(shares) + 1), [math.nan if v is None else v for v in shares], marker="o", markersize=3, label=slot)
    right.set_xlabel("epoch")
    right.set_ylabel("share of encoder gradient norm")
    right.set_ylim(0, 1)
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    return _save(plt, fig, path, root)


def plot_waterfall(record: Mapping[str, Any], path: Path, title: str = "", *, root: Path | None = None) -> Path | None:
    """One explained record (``mmcore explain``): from the value with no modality (``empty``), each
    modality's Shapley value as a step (largest magnitude first, green up, red down) to the value with
    all of them (``full``); error bars where the values were sampled."""
    plt = _pyplot()
    if plt is None:
        return None
    items = sorted(record["shapley"].items(), key=lambda kv: -abs(kv[1]))
    fig, ax = plt.subplots(figsize=(5.2, 0.55 * len(items) + 1.8), dpi=110)
    level = record["empty"]
    labels = ["no modality"]
    ax.barh(0, level, color="grey", height=0.5)
    for i, (slot, value) in enumerate(items, start=1):
        err = (record.get("stderr") or {}).get(slot)
        ax.barh(i, value, left=level, color="tab:green" if value >= 0 else "tab:red", height=0.5,
                xerr=[[1.96 * err], [1.96 * err]] if err else None)
        ax.annotate(f"{value:+.3f}", (level + value, i), textcoords="offset points", xytext=(4 if value >= 0 else -4, -3),
                    ha="left" if value >= 0 else "right", fontsize=8)
        level += value
        labels.append(slot)
    ax.barh(len(items) + 1, record["full"], color="tab:blue", height=0.5)
    labels.append("all modalities")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("log-probability of the predicted class" if record.get("value") == "log_probability" else "prediction")
    ax.set_title(title or f"prediction: {record.get('prediction')}", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _save(plt, fig, path, root)


def plot_attribution_summary(summary: Mapping[str, Any], path: Path, *, root: Path | None = None) -> Path | None:
    """``mmcore explain`` over a data set: mean |Shapley value| per modality (bars)."""
    plt = _pyplot()
    slots = list(summary.get("mean_abs", {}))
    if plt is None or not slots:
        return None
    fig, ax = plt.subplots(figsize=(4.8, 3.2), dpi=110)
    ax.bar(slots, [summary["mean_abs"][s] for s in slots], color="tab:blue")
    ax.set_ylabel("mean |Shapley value|")
    ax.set_title(f"{summary.get('records', 0)} records", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(plt, fig, path, root)
