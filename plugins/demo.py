"""`mmcore demo`: train the demo config fused and with each modality alone, then print one table.

Added to the command line through the ``mmcore_add_commands`` hook, as any plugin can.
"""

from __future__ import annotations

import argparse
import copy
import json
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
        variants[f"{slot} only"] = variant
    return variants


def run_demo(args: argparse.Namespace) -> int:
    from mmcore.engine.config import load_config
    from mmcore.engine.trainer import Trainer

    if not Path(args.config).is_file():
        print(f"mmcore demo: config {args.config} not found; run from a source checkout or pass --config PATH")
        return 2
    run_dir = Path(args.run_dir)
    fused = load_config(args.config, list(args.overrides))
    fused["trainer"]["progress"] = False
    runs = {**({} if args.fused_only else unimodal_variants(fused)), f"fused ({fused['model']['fusion']['name']})": fused}
    results = {}
    for label, config in runs.items():
        config = copy.deepcopy(config)
        config["trainer"]["run_dir"] = str(run_dir / label.split()[0])
        print(f"training {label} ...", flush=True)
        report = Trainer(config).fit()
        results[label] = report
    width = max(len(label) for label in results)
    print()
    print(f"{'model':<{width}}  test accuracy  seconds")
    for label, report in results.items():
        print(f"{label:<{width}}  {100 * report['test']['accuracy']:12.1f}%  {report['seconds']:7.0f}")
    fused_dir = run_dir / "fused"
    print(f"\nrun directories under {run_dir}/ (fused model: {fused_dir}/best/model.safetensors, metrics.csv, report.json)")
    (run_dir / "demo.json").write_text(json.dumps({k: v["test"] for k, v in results.items()}, indent=2))
    return 0


@mmcore.hookimpl
def mmcore_add_commands(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="train the av_digits demo (fused and per modality) and print the table")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="demo config (default: configs/demo.yaml)")
    parser.add_argument("--run-dir", default="runs/demo", help="where the runs are written")
    parser.add_argument("--fused-only", action="store_true", help="skip the single-modality baselines")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    parser.set_defaults(handler=run_demo)
