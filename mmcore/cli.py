"""The ``mmcore`` command line (also ``python -m mmcore``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from mmcore.errors import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser(manager=None) -> argparse.ArgumentParser:
    from mmcore import __version__

    parser = argparse.ArgumentParser(prog="mmcore", description="Plugin-based multimodal deep learning on PyTorch.")
    parser.add_argument("--version", action="version", version=f"mmcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plugins", help="list the installed plugins and their components")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per plugin")
    p.set_defaults(handler=cmd_plugins)

    p = sub.add_parser("train", help="train, evaluate and checkpoint a model from a YAML config")
    p.add_argument("config", help="path of the YAML config (sections: data, model, trainer)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides, values parsed as YAML")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's best checkpoint on a split of its data")
    p.add_argument("run_dir", help="a run directory written by `mmcore train`")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--data", nargs="*", default=[], metavar="key=value", help="override data options (e.g. image_noise=0.8)")
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("predict", help="predict from raw inputs with a run's best checkpoint (JSON out)")
    p.add_argument("run_dir", help="a run directory written by `mmcore train`")
    p.add_argument("inputs", nargs="+", metavar="slot=value",
                   help="one sample: a raw value per modality slot (file path or text); omitted slots are missing")
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("bench", help="print the fused kernels' benchmark table")
    p.add_argument("--full", action="store_true", help="full benchmark sizes (slow on CPU)")
    p.set_defaults(handler=cmd_bench)

    if manager is not None:
        manager.hook.mmcore_add_commands(subparsers=sub)
    return parser


def cmd_plugins(args: argparse.Namespace, manager) -> int:
    records = sorted(manager.records.values(), key=lambda r: (r.distribution != "mmcore", r.name))
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
        return EXIT_OK
    for record in records:
        origin = f"{record.distribution} {record.version}" if record.distribution else "runtime"
        print(f"{record.name}  [{record.status}]  ({origin})")
        if record.error:
            print(f"    error: {record.error}")
        for c in record.components:
            modality = f" ({c.modality})" if c.modality else ""
            print(f"    {c.kind:<12} {c.name:<22}{modality} {c.doc}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace, manager) -> int:
    from mmcore.engine.config import load_config
    from mmcore.engine.trainer import Trainer

    config = load_config(args.config, args.overrides)
    report = Trainer(config, manager=manager).fit()
    print(json.dumps({"run_dir": report["run_dir"], "best_epoch": report["best_epoch"], "test": report["test"]}, indent=2))
    return EXIT_OK


def _load_run(run_dir: str, manager):
    from pathlib import Path

    from mmcore.engine.checkpoint import load_model
    from mmcore.errors import ConfigIssue

    run = Path(run_dir)
    if not (run / "best" / "model.safetensors").is_file() or not (run / "config.json").is_file():
        raise ConfigError([ConfigIssue("", f"{run_dir} is not a run directory (expected config.json and best/model.safetensors)")])
    model, _ = load_model(run / "best", manager.registry)
    return model, json.loads((run / "config.json").read_text())


def cmd_eval(args: argparse.Namespace, manager) -> int:
    from mmcore.engine.config import apply_overrides
    from mmcore.engine.evaluation import evaluate
    from mmcore.engine.trainer import load_datasets

    model, config = _load_run(args.run_dir, manager)
    config = apply_overrides(config, [f"data.{item}" for item in args.data])
    dataset = load_datasets({"data": {**config["data"]}}, manager, splits=(args.split,))[args.split]
    print(json.dumps({"split": args.split, "samples": len(dataset), **evaluate(model, dataset)}, indent=2))
    return EXIT_OK


def cmd_predict(args: argparse.Namespace, manager) -> int:
    import yaml

    from mmcore.engine.evaluation import predict
    from mmcore.errors import ConfigIssue

    sample = {}
    for item in args.inputs:
        slot, sep, value = item.partition("=")
        if not sep or not slot:
            raise ConfigError([ConfigIssue("", f"input {item!r} must look like slot=value")])
        # A value that reads as a YAML list is a row of numbers (tabular); anything else is a path or text.
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = None
        sample[slot] = parsed if isinstance(parsed, list) else value
    model, _ = _load_run(args.run_dir, manager)
    try:
        predictions = predict(model, [sample])
    except (ValueError, TypeError) as exc:
        raise ConfigError([ConfigIssue("", str(exc))]) from exc
    print(json.dumps({"inputs": sample, "prediction": predictions[0]}))
    return EXIT_OK


def cmd_bench(args: argparse.Namespace, manager) -> int:
    from mmcore_kernels import bench

    bench.run(full=args.full)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    from mmcore.plugin_manager import get_plugin_manager

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        manager = get_plugin_manager()
    except Exception as exc:  # strict mode: a broken plugin is an error
        print(f"mmcore: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    parser = build_parser(manager)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help/--version
        return int(exc.code or 0)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code = handler(args, manager) if _takes_manager(handler) else handler(args)
    except ConfigError as exc:
        print(f"mmcore {args.command}: invalid configuration:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK if code is None else int(code)


def _takes_manager(handler) -> bool:
    import inspect

    try:
        return len(inspect.signature(handler).parameters) >= 2
    except (TypeError, ValueError):
        return False
