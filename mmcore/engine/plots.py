"""Every PNG mmcore draws, in one place: training curves (the ``plots`` logger), robustness sweeps
(``mmcore eval --robustness``) and fusion comparisons (``mmcore compare``).

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
    names = sorted({key.split("/", 1)[1] for row in history for key in row if "/" in key})
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
