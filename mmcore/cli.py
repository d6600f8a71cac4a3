"""The ``mmcore`` command line (also ``python -m mmcore``).

Exit codes: 0 success, 1 failure (e.g. a non-finite loss stopped training), 2 usage or
configuration error (every problem listed, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from mmcore.errors import ConfigError, ConfigIssue

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: File extensions -> modality, for ``mmcore predict`` inputs given without a slot name.
EXTENSION_MODALITY = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"), "image"),
    **dict.fromkeys((".wav", ".wave"), "audio"),
    **dict.fromkeys((".txt",), "text"),
}


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
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint, exactly")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's best checkpoint on a split of its data (and its robustness)")
    p.add_argument("run_dir", help="a run directory written by `mmcore train`")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--data", nargs="*", default=[], metavar="key=value", help="override data options (e.g. image_noise=0.8)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint to evaluate")
    p.add_argument("--robustness", action="store_true",
                   help="also evaluate every subset of missing modalities and a sweep of perturbations; table + PNG")
    p.add_argument("--perturbations", metavar="a,b", help="only these perturbations (default: every one that applies)")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("predict", help="predict from raw inputs with a run's best checkpoint (JSON out)")
    p.add_argument("run_dir", help="a run directory written by `mmcore train`")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="one sample: slot=value per modality (a file path, text, or [numbers]); a bare file path goes "
                        "to the slot whose modality matches its extension (.png -> image, .wav -> audio); "
                        "omitted slots are missing modalities")
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("compare", help="train one config with several fusions; accuracy beside parameters, FLOPs, latency, memory")
    p.add_argument("config", help="path of the YAML config")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    p.add_argument("--fusions", required=True, metavar="a,b,c", help="registered fusion names, comma-separated")
    p.add_argument("--out", metavar="DIR", help="where the runs, compare.json and compare.png go (default: <run_dir>/compare)")
    p.set_defaults(handler=cmd_compare)

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
    if args.resume is not None and not any(Path(args.resume, name).is_dir() for name in ("last", ".last.old")):
        raise ConfigError([ConfigIssue("--resume", f"{args.resume} holds no checkpoint to resume (expected {args.resume}/last/)")])
    trainer = Trainer(config, manager=manager, resume=args.resume)
    report = trainer.fit()
    if trainer.is_main:
        print(json.dumps({k: report[k] for k in ("status", "run_dir", "best_epoch", "test", "seconds", "plots")}, indent=2))
    return EXIT_OK


def load_run(run_dir: str | Path, manager, checkpoint: str = "best"):
    """A run directory's model (from ``checkpoint``) and resolved config; ConfigError when it is not one."""
    import yaml

    from mmcore.engine.checkpoint import load_model, resolve_checkpoint

    run = Path(run_dir)
    folder = resolve_checkpoint(run / checkpoint)
    config_file = next((run / name for name in ("config.yaml", "config.json") if (run / name).is_file()), None)
    if not (folder / "model.safetensors").is_file() or config_file is None:
        raise ConfigError([ConfigIssue("", f"{run_dir} is not a run directory (expected config.yaml and {checkpoint}/model.safetensors)")])
    model, _ = load_model(folder, manager.registry)
    return model, yaml.safe_load(config_file.read_text())


def cmd_eval(args: argparse.Namespace, manager) -> int:
    from mmcore.engine.config import apply_overrides
    from mmcore.engine.evaluation import evaluate
    from mmcore.engine.trainer import load_datasets

    model, config = load_run(args.run_dir, manager, args.checkpoint)
    config = apply_overrides(config, [f"data.{item}" for item in args.data])
    dataset = load_datasets(config, manager, splits=(args.split,))[args.split]
    if not args.robustness:
        print(json.dumps({"split": args.split, "samples": len(dataset), **evaluate(model, dataset, batch_size=args.batch_size)}, indent=2))
        return EXIT_OK
    from mmcore.engine.robustness import format_report, plot_report, robustness_report

    names = [n.strip() for n in args.perturbations.split(",") if n.strip()] if args.perturbations else None
    unknown = [n for n in names or () if ("perturbation", n) not in manager.registry]
    if unknown:
        raise ConfigError([ConfigIssue("--perturbations", manager.registry.unknown_message("perturbation", n)) for n in unknown])
    trainer = config.get("trainer") or {}
    monitor = trainer.get("monitor")
    metric = monitor if monitor in model.head.metrics() else None
    report = robustness_report(model, dataset, manager.registry, metric=metric, perturbations=names, batch_size=args.batch_size,
                               seed=int(trainer.get("seed", 0)), mode=trainer.get("monitor_mode", "auto") if metric else "auto")
    out = Path(args.run_dir) / "robustness"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.split}.json").write_text(json.dumps(report, indent=2))
    plot = plot_report(report, out / f"{args.split}.png")
    print(format_report(report))
    print(f"\nreport: {out / f'{args.split}.json'}" + (f"; plot: {plot}" if plot else " (install matplotlib for the plot)"))
    return EXIT_OK


def _is_file(value: str) -> bool:
    """Whether ``value`` names an existing file (False for text no file could be named after)."""
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # e.g. a name over the file system's length limit, a NUL byte
        return False


def parse_predict_inputs(items: Sequence[str], model) -> dict:
    """``slot=value`` / bare file paths -> one raw sample ``{slot: raw}`` (see ``mmcore predict --help``)."""
    import yaml

    sample, issues = {}, []
    slots = model.slots
    for item in items:
        slot, sep, value = item.partition("=")
        if sep and slot in slots:
            if _is_file(value):
                sample[slot] = value
                continue
            # For a tabular slot, a value that reads as a YAML list is a row of numbers; anything
            # else (and everything for other modalities) is taken as it is, e.g. text.
            parsed = None
            if getattr(model.encoders[slot], "modality", None) == "tabular":
                try:
                    parsed = yaml.safe_load(value)
                except yaml.YAMLError:
                    parsed = None
            sample[slot] = parsed if isinstance(parsed, list) else value
        elif _is_file(item):
            modality = EXTENSION_MODALITY.get(Path(item).suffix.lower())
            matches = [s for s in slots if getattr(model.encoders[s], "modality", None) == modality]
            if modality is None or len(matches) != 1:
                issues.append(ConfigIssue("", f"cannot tell which slot {item!r} is for (slots: {slots}); write slot={item}"))
            else:
                sample[matches[0]] = item
        elif sep:
            issues.append(ConfigIssue("", f"unknown modality slot(s) [{slot!r}] in {item!r}; the model has {slots}"))
        else:
            issues.append(ConfigIssue("", f"input {item!r} is neither slot=value nor an existing file"))
    if issues:
        raise ConfigError(issues)
    return sample


def cmd_predict(args: argparse.Namespace, manager) -> int:
    import torch

    from mmcore.engine.evaluation import to_device

    model, _ = load_run(args.run_dir, manager)
    sample = parse_predict_inputs(args.inputs, model)
    model.eval()
    try:
        if not sample:
            raise ValueError(f"give at least one of the model's modality slots {model.slots}")
        batch = model.collate([{"inputs": sample}])
        with torch.no_grad():
            out = model(to_device(batch, "cpu")[0])
    except (ValueError, TypeError) as exc:
        raise ConfigError([ConfigIssue("", str(exc))]) from exc
    result = {"inputs": sample, "missing": [s for s in model.slots if s not in sample],
              "prediction": model.head.format_predictions(out)[0]}
    probabilities = out.extras.get("probabilities") if isinstance(out.extras, dict) else None
    if isinstance(probabilities, torch.Tensor) and probabilities.dim() == 2:
        result["probabilities"] = [round(float(p), 4) for p in probabilities[0]]
    print(json.dumps(result))
    return EXIT_OK


def cmd_compare(args: argparse.Namespace, manager) -> int:
    from mmcore.engine.compare import format_compare, run_compare
    from mmcore.engine.config import load_config, validate_config

    config = load_config(args.config, args.overrides)
    options = validate_config(config, manager.registry)
    fusions = [f.strip() for f in args.fusions.split(",") if f.strip()]
    if not fusions:
        raise ConfigError([ConfigIssue("--fusions", "name at least one registered fusion")])
    if len(config["model"]["encoders"]) < 2:
        raise ConfigError([ConfigIssue("model.encoders", "compare needs a model with at least two encoders to fuse")])
    out = Path(args.out) if args.out else Path(options.run_dir) / "compare"
    summary = run_compare(config, fusions, manager=manager, out_dir=out)
    if summary["fusions"]:
        print(format_compare(summary["fusions"]))
        print(f"\nruns and compare.json in {out}" + (f"; plot: {summary['plot']}" if summary["plot"] else ""))
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
        args, extra = parser.parse_known_args(argv)
        # key=value overrides may also follow options (`mmcore compare C --fusions a,b trainer.epochs=3`).
        if extra:
            if isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-") for e in extra):
                args.overrides += extra
            else:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help/--version
        return int(exc.code or 0)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    from mmcore.engine import NonFiniteLossError

    try:
        code = handler(args, manager) if _takes_manager(handler) else handler(args)
    except ConfigError as exc:
        print(f"mmcore {args.command}: invalid configuration:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as exc:
        print(f"mmcore {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"mmcore {args.command}: interrupted (a training run continues with --resume RUN_DIR)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if code is None else int(code)


def _takes_manager(handler) -> bool:
    import inspect

    try:
        return len(inspect.signature(handler).parameters) >= 2
    except (TypeError, ValueError):
        return False
