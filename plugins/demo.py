"""`mmcore demo`: train the demo config fused and with each modality alone, evaluate the fused model's
robustness, and print one table.

Added to the command line through the ``mmcore_add_commands`` hook, as any plugin can.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import mmcore

#: The demo config ships with the source tree (README's main job runs from a checkout).
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def unimodal_variants(config: dict) -> dict[str, dict]:
    """One config per encoder slot: that encoder alone, no fusion (other inputs are ignored)."""
    variants = {}
    for slot, encoder in config["model"]["encoders"].items():
        variant = copy.deepcopy(config)
        variant["model"]["encoders"] = {slot: encoder}
        variant["model"].pop("fusion", None)
        trainer = variant.get("trainer") or {}
        # Options naming other slots (augmentations, per-slot dropout, learning rates) go with them.
        if isinstance(trainer.get("augment"), dict):
            trainer["augment"] = {s: v for s, v in trainer["augment"].items() if s == slot}
        if isinstance(trainer.get("modality_dropout"), dict):
            trainer["modality_dropout"] = {s: v for s, v in trainer["modality_dropout"].items() if s == slot}
        elif "modality_dropout" in trainer:
            trainer["modality_dropout"] = 0.0  # one modality: nothing to drop
        if isinstance(trainer.get("lr_multipliers"), dict):
            trainer["lr_multipliers"] = {k: v for k, v in trainer["lr_multipliers"].items()
                                         if k in ("encoders", "head") or k.startswith(("head.", f"encoders.{slot}"))}
        variants[f"{slot} only"] = variant
    return variants


def _describe(data: dict) -> str:
    parts = []
    if data.get("image_noise"):
        parts.append(f"image noise sigma {data['image_noise']}")
    if data.get("audio_snr_db") is not None:
        parts.append(f"audio SNR {data['audio_snr_db']:g} dB")
    if "text_fraction" in data:
        parts.append(f"text for {100 * data['text_fraction']:.0f}% of samples")
    parts.append("test voices never heard in training")
    return ", ".join(parts)


def run_demo(args: argparse.Namespace, manager) -> int:
    from mmcore.engine.atomic import write_file
    from mmcore.engine.config import load_config
    from mmcore.engine.robustness import format_report, plot_report, robustness_report
    from mmcore.engine.trainer import Trainer

    if not Path(args.config).is_file():
        print(f"mmcore demo: config {args.config} not found; run from a source checkout or pass --config PATH")
        return 2
    started = time.perf_counter()
    run_dir = Path(args.run_dir)
    fused = load_config(args.config, list(args.overrides))
    fused.setdefault("trainer", {})["progress"] = False
    fusion = fused["model"]["fusion"]["name"]
    runs = {**({} if args.fused_only else unimodal_variants(fused)), f"fused ({fusion})": fused}
    print(f"mmcore demo: {fused['data']['name']} — {_describe(fused['data'])}", flush=True)
    results, trainers = {}, {}
    for label, config in runs.items():
        config = copy.deepcopy(config)
        config["trainer"]["run_dir"] = str(run_dir / label.split()[0])
        names = ", ".join(e["name"] for e in config["model"]["encoders"].values())
        print(f"  training {label:<16} [{names}] ...", end="", flush=True)
        trainer = Trainer(config, manager=manager)
        report = trainer.fit()
        print(f" {100 * report['test']['accuracy']:.1f}% in {report['seconds']:.0f} s", flush=True)
        results[label], trainers[label] = report, trainer

    fused_label = f"fused ({fusion})"
    fused_trainer = trainers[fused_label]
    robustness = None
    if not args.no_robustness:
        print("  robustness of the fused model on the test split ...", flush=True)
        names = [n.strip() for n in args.perturbations.split(",")] if args.perturbations else None
        robustness = robustness_report(fused_trainer.model, fused_trainer.datasets["test"], manager.registry,
                                       metric="accuracy", perturbations=names, device=fused_trainer.device)
    seconds = time.perf_counter() - started

    width = max(len(label) for label in results)
    print()
    print(f"{'model':<{width}}  {'encoders':<40} {'test accuracy':>13}  {'train s':>7}")
    for label, report in results.items():
        names = ", ".join(e["name"] for e in runs[label]["model"]["encoders"].values())
        print(f"{label:<{width}}  {names:<40} {100 * report['test']['accuracy']:12.1f}%  {report['seconds']:7.0f}")
    singles = [r["test"]["accuracy"] for label, r in results.items() if label != fused_label]
    if singles:
        gain = 100 * (results[fused_label]["test"]["accuracy"] - max(singles))
        print(f"fused minus best single modality: {gain:+.1f} points")
    fused_dir = run_dir / "fused"
    if robustness is not None:
        print()
        print(format_report(robustness))
        out = fused_dir / "robustness"  # the fused run's own folder: never written through a link
        write_file(out / "test.json", json.dumps(robustness, indent=2), root=fused_dir)
        plot = plot_report(robustness, out / "test.png", root=fused_dir)
        robustness_files = f"{out / 'test.json'}" + (f", {plot}" if plot else "")
    print()
    print(f"runs:        {run_dir}/ (one folder per model: config.yaml, metrics.csv, report.json)")
    print(f"checkpoint:  {fused_dir / 'best' / 'model.safetensors'} (+ model.json)")
    plots = results[fused_label].get("plots") or []
    if plots:
        print(f"plots:       {', '.join(plots)}")
    if robustness is not None:
        print(f"robustness:  {robustness_files}")
    print(f"total time:  {seconds:.0f} s")
    summary = {label: report["test"] for label, report in results.items()}
    write_file(run_dir / "demo.json", json.dumps(summary, indent=2))
    if robustness is not None:
        summary_all = {"test": summary, "robustness": robustness, "seconds": seconds}
        write_file(run_dir / "demo_full.json", json.dumps(summary_all, indent=2))
    return 0


@mmcore.hookimpl
def mmcore_add_commands(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="train the av_digits demo (fused and per modality), print accuracy and robustness")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="demo config (default: configs/demo.yaml)")
    parser.add_argument("--run-dir", default="runs/demo", help="where the runs are written")
    parser.add_argument("--fused-only", action="store_true", help="skip the single-modality baselines")
    parser.add_argument("--no-robustness", action="store_true", help="skip the robustness evaluation")
    parser.add_argument("--perturbations", metavar="a,b", help="only these perturbations in the robustness table")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    parser.set_defaults(handler=run_demo)
