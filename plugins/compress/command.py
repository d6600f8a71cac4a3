"""``mmcore prune RUN --amount 0.5 --out DIR``: structured pruning (:mod:`.prune`), then fine-tuning.

Steps, each an ordinary mmcore artefact:

1. the run's best checkpoint is pruned into the model of a smaller config (:func:`.prune.prune`),
   saved as the checkpoint folder ``DIR-init`` (``model.json`` names what was pruned, from which
   run, how);
2. that model is fine-tuned by an ordinary training run into ``DIR``: the run's own config with
   the smaller model, ``trainer.init: DIR-init``, ``trainer.epochs`` (``--epochs``, default a third
   of the run's) and ``trainer.lr`` (``--lr``, default half the run's), plus any ``key=value``
   overrides; ``--distill`` adds ``trainer.distill: {teacher: RUN}`` (the unpruned model teaches
   its pruned self). ``mmcore train DIR/config.yaml`` repeats the fine-tuning.

``DIR`` is then a run like any other: ``mmcore eval``, ``predict``, ``export`` and ``serve`` take it.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import mmcore
from mmcore.errors import ConfigError, ConfigIssue


def run_prune(args: argparse.Namespace, manager) -> int:
    from mmcore.cli import load_run
    from mmcore.engine.checkpoint import save_model
    from mmcore.engine.config import apply_overrides, new_plan
    from mmcore.engine.datasets import load_datasets
    from mmcore.engine.evaluation import evaluate
    from mmcore.engine.rundir import RunDir
    from mmcore.engine.trainer import Trainer
    from mmcore_plugins.compress.prune import prune

    if args.epochs is not None and args.epochs < 1:
        raise ConfigError([ConfigIssue("--epochs", f"fine-tuning needs at least 1 epoch, got {args.epochs}")])
    if args.lr is not None and not args.lr > 0:
        raise ConfigError([ConfigIssue("--lr", f"must be > 0, got {args.lr}")])
    source = Path(args.run_dir).resolve()
    model, config = load_run(source, manager, "best")
    out = Path(args.out).resolve() if args.out else source.with_name(source.name + "-pruned")
    init = out.with_name(out.name + "-init")
    RunDir.check(out)  # before any work: a folder that may not become a run is refused now
    if init.exists():
        raise ConfigError([ConfigIssue("--out", f"{init} exists already (the pruned checkpoint goes there); choose another --out")])
    config = new_plan(config)  # a new run with its own epochs: how the source run's horizon grew is no part of it
    trainer = dict(config.get("trainer") or {})
    fine_tune = copy.deepcopy(config)
    fine_tune["trainer"] = {**trainer, "run_dir": str(out), "init": str(init),
                            "epochs": args.epochs or max(1, int(trainer.get("epochs", 20)) // 3),
                            "lr": args.lr or float(trainer.get("lr", 1e-3)) / 2}
    if args.distill:
        fine_tune["trainer"]["distill"] = {"teacher": str(source)}
    train = load_datasets(config, manager, splits=("train", "val"))
    rows = [train["train"][i] for i in range(min(len(train["train"]), args.batches * 32))]
    batches = [model.collate(rows[i : i + 32]) for i in range(0, len(rows), 32)]
    started = time.perf_counter()
    result = prune(model, manager.registry, batches, amount=args.amount, importance=args.importance)
    fine_tune["model"] = result.spec
    fine_tune = apply_overrides(fine_tune, args.overrides)
    fine_tune["trainer"]["init"] = str(init)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in result.model.parameters())
    val = train["val"] if len(train["val"]) else train["train"]
    pruned_val = evaluate(result.model, val, batch_size=64)
    provenance = {"pruned_from": str(source), "amount": args.amount, "importance": args.importance,
                  "changes": [c.__dict__ for c in result.changes], "parameters": {"before": before, "after": after},
                  "val_before_fine_tuning": pruned_val}
    save_model(result.model, init, extra={"pruning": provenance})
    print(f"pruned {source} ({result.groups} channel groups, {time.perf_counter() - started:.1f} s): "
          + ", ".join(f"{c.path} {c.before} -> {c.after}" for c in result.changes))
    print(f"parameters {before:,} -> {after:,} ({before / after:.2f}x fewer); validation before fine-tuning: "
          + ", ".join(f"{k} {v:.4f}" for k, v in pruned_val.items()))
    print(f"pruned checkpoint: {init}; fine-tuning for {fine_tune['trainer']['epochs']} epochs into {out} ...")
    report = Trainer(fine_tune, manager=manager).fit()
    print(json.dumps({k: report[k] for k in ("status", "run_dir", "best_epoch", "test", "seconds")}, indent=2))
    return 0


@mmcore.hookimpl
def mmcore_add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "prune", help="structured pruning of a trained run (fewer channels for real), then fine-tuning into a new run",
        description="Shrink the prunable options of the run's components (conv widths, feed-forward and hidden widths) by "
                    "--amount, keep the most important channels of the trained weights, and fine-tune the smaller model "
                    "into an ordinary run directory.")
    parser.add_argument("run_dir", help="a trained run (its best checkpoint is pruned)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="overrides of the fine-tuning run's config")
    parser.add_argument("--amount", type=float, default=0.5, help="fraction of each prunable width removed (default 0.5)")
    parser.add_argument("--importance", default="magnitude", choices=["magnitude", "taylor"],
                        help="how channels are ranked: L2 norm of their coupled weights, or |w * dL/dw| on training batches")
    parser.add_argument("--batches", type=int, default=8, help="training batches of 32 for taylor importance (default 8)")
    parser.add_argument("--out", help="the fine-tuned run's directory (default RUN-pruned; the pruned checkpoint goes to OUT-init)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default: a third of the run's)")
    parser.add_argument("--lr", type=float, help="fine-tuning peak learning rate (default: half the run's)")
    parser.add_argument("--distill", action="store_true", help="fine-tune with the unpruned run as the distillation teacher")
    parser.set_defaults(handler=run_prune)
