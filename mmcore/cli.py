"""The ``mmcore`` command line (also ``python -m mmcore``): the parser, the core commands and the
error contract below; ``mmcore predict`` lives in :mod:`mmcore.cli_predict` (this module imports it;
it imports nothing from here), plugin commands in their plugins.

Exit codes:

* 0 -- success.
* 2 -- an error the user can fix: usage, config, data, checkpoint, media, a path that cannot be
  read or written. One line on stderr (``mmcore <command>: <what, where, expected vs got>``),
  or a short block when several problems are listed; no traceback.
* 1 -- the run failed (a non-finite loss, a plugin's hook raised: one line), or an internal
  error (a bug: a short report with versions; please report it).
* 130 -- interrupted (Ctrl-C).

``--debug`` (anywhere on the command line) or ``MMCORE_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from mmcore import cli_predict
from mmcore.errors import ConfigError, ConfigIssue, RunInterrupted
from mmcore.plugin_manager import hookimpl

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

class _ExtensionModality(Mapping):
    """File extension (".png") -> modality, as the installed plugins declare them
    (``registry.add_modality``), read from the default registry each time it is used."""

    def _map(self) -> dict[str, str]:
        from mmcore.plugin_manager import get_registry

        return get_registry().extension_modalities()

    def __getitem__(self, extension: str) -> str:
        return self._map()[extension]

    def __iter__(self):
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())


#: File extensions -> modality, for ``mmcore predict`` inputs given without a slot name.
EXTENSION_MODALITY: Mapping[str, str] = _ExtensionModality()


def build_parser(manager=None) -> argparse.ArgumentParser:
    from mmcore import __version__

    parser = argparse.ArgumentParser(prog="mmcore", description="Plugin-based multimodal deep learning on PyTorch.",
                                     epilog="exit status: 0 ok, 2 an error in your input (one line), 1 a failed run or an "
                                            "internal error, 130 interrupted")
    parser.add_argument("--version", action="version", version=f"mmcore {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of any error (also MMCORE_DEBUG=1); accepted anywhere on the line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plugins", help="list the installed plugins and their components; with NAME, one component's "
                                        "options (type, default) and documentation")
    p.add_argument("name", nargs="?", metavar="NAME", help="a component (e.g. manifest, concat), or KIND:NAME when several "
                                                           "kinds share the name")
    p.add_argument("--json", action="store_true", help="print JSON: a list, one object per plugin (components with their "
                                                       "options); with NAME, the component's options and documentation")
    p.set_defaults(handler=cmd_plugins)

    p = sub.add_parser("train", help="train, evaluate and checkpoint a model from a YAML config")
    p.add_argument("config", help="path of the YAML config (sections: data, model, trainer)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides, values parsed as YAML")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint, exactly")
    p.add_argument("--overwrite", action="store_true",
                   help="let trainer.run_dir be an existing folder that is not an mmcore run: only mmcore's own files "
                        "(config.yaml, metrics.csv, report.json, plots/, tensorboard/, best/, last/) are written there; "
                        "nothing else in it is touched")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's best checkpoint on a split of its data (and its robustness)")
    p.add_argument("run_dir", help="a run directory written by `mmcore train` or `mmcore fit`")
    p.add_argument("--split", default="test", metavar="{train,val,test}",
                   help="the split of the run's own data to evaluate (default: test; checked before the model is built)")
    p.add_argument("--data", nargs="*", default=[], metavar="key=value|TABLE",
                   help="override data options (e.g. image_noise=0.8), or a table FILE holding the target to evaluate "
                        "instead of a split (a `mmcore fit` run: read as `mmcore predict --data` reads it, your own "
                        "columns only)")
    p.add_argument("--missing", action="append", default=[], metavar="COLUMN",
                   help="with a TABLE: a column the model reads that the table lacks on purpose (every cell empty; "
                        "repeatable, or comma-separated); any other absent column is an error")
    p.add_argument("--strict", action="store_true",
                   help="with a TABLE: a missing or unreadable file, a placeholder, or a row without input or target is "
                        "an error instead of a missing cell (or a row left out), counted")
    cli_predict.add_table_options(p, "a TABLE")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint to evaluate")
    p.add_argument("--robustness", action="store_true",
                   help="also evaluate every subset of missing modalities and a sweep of perturbations; table + PNG")
    p.add_argument("--perturbations", metavar="a,b", help="only these perturbations (default: every one that applies)")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(handler=cmd_eval)

    cli_predict.add_parser(sub)  # `mmcore predict`: its own module

    p = sub.add_parser("compare", help="train one config with several fusions; accuracy beside parameters, FLOPs, latency, memory")
    p.add_argument("config", help="path of the YAML config")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    p.add_argument("--fusions", required=True, metavar="a,b,c", help="registered fusion names, comma-separated")
    p.add_argument("--out", metavar="DIR", help="where the runs, compare.json and compare.png go (default: <run_dir>/compare)")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser("bench", help="print the fused kernels' benchmark table (runs benchmarks/kernel_bench.py of a "
                                     "source checkout)")
    p.add_argument("--full", action="store_true", help="full benchmark sizes (slow on CPU)")
    p.add_argument("--ops", nargs="+", metavar="OP", help="only these ops: cross_attention, concat_linear")
    p.add_argument("--modes", nargs="+", metavar="MODE", help="only these modes: fwd, fwd+bwd")
    p.set_defaults(handler=cmd_bench)

    if manager is not None:
        if hasattr(manager, "add_commands"):
            manager.add_commands(sub)  # each plugin isolated: a broken one loses only its own commands
        else:
            manager.hook.mmcore_add_commands(subparsers=sub)
    return parser


def _options_line(options: list[dict]) -> str:
    """``path (str | os.PathLike, required), seed (int) = 0, ...``: a component's options on one line."""
    parts = []
    for o in options:
        kind = f" ({o['type']}{', required' if o['required'] else ''})" if o["type"] or o["required"] else ""
        parts.append(f"{o['name']}{kind}" + ("" if o["required"] else f" = {json.dumps(o['default'])}"))
    return ", ".join(parts) or "none"


def _describe_component(info, manager, as_json: bool) -> None:
    """``mmcore plugins NAME``: one component's options (type, default) and its full docstring."""
    import inspect

    doc = inspect.getdoc(info.factory) or info.doc or "(no documentation)"
    module = getattr(info.factory, "__module__", None)
    if as_json:
        print(json.dumps({"kind": info.kind, "name": info.name, "plugin": info.plugin, "distribution": info.distribution,
                          "modality": info.modality, "factory": f"{module}.{getattr(info.factory, '__qualname__', '?')}",
                          "options": info.options(), "example_options": dict(info.example_options), "doc": doc}, indent=2))
        return
    modality = f", modality {info.modality}" if info.modality else ""
    print(f"{info.kind} {info.name}  ({info.owner}{modality})")
    print(f"  factory: {module}.{getattr(info.factory, '__qualname__', '?')}")
    print("  options:")
    for o in info.options() or [{"name": "(none)", "type": None, "default": None, "required": True}]:
        kind = o["type"] or "any"
        default = "required" if o["required"] else f"default {json.dumps(o['default'])}"
        print(f"    {o['name']:<22} {kind:<32} {default}" if o["name"] != "(none)" else "    (none)")
    print()
    print("\n".join(f"  {line}" if line else "" for line in doc.splitlines()))


def _find_component(name: str, registry):
    from mmcore.registry import KINDS

    kind, sep, bare = name.partition(":")
    if sep and kind in KINDS:
        return [registry.get(kind, bare)]  # UnknownComponentError lists the kind's names
    found = [registry.get(k, name) for k in KINDS if (k, name) in registry]
    if not found:
        import difflib

        names = sorted({info.name for info in registry})
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError([ConfigIssue("NAME", f"no component named {name!r}{hint} (mmcore plugins lists them)")])
    return found


def cmd_plugins(args: argparse.Namespace, manager) -> int:
    records = sorted(manager.records.values(), key=lambda r: (r.distribution != "mmcore", r.name))
    if getattr(args, "name", None):
        found = _find_component(args.name, manager.registry)
        for i, info in enumerate(found):
            if i and not args.json:
                print()
            _describe_component(info, manager, args.json)
        return EXIT_OK
    if args.json:
        listing = [r.to_json() for r in records]
        for item, record in zip(listing, records, strict=True):  # every component with its options
            item["components"] = [{**c, "options": info.options()} for c, info in zip(item["components"], record.components, strict=True)]
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    for record in records:
        origin = f"{record.distribution} {record.version}" if record.distribution else "runtime"
        took = "" if record.import_ms is None else f", {record.import_ms:.{1 if record.import_ms < 10 else 0}f} ms"
        print(f"{record.name}  [{record.status}]  ({origin}{took})")
        if record.error:
            print(f"    {'note' if record.status == 'ok' else 'error'}: {record.error}")
        if getattr(record, "output", ""):
            printed = record.output.strip().splitlines()
            shown = "; ".join(printed[:3]) + (f"; ... ({len(printed) - 3} more lines)" if len(printed) > 3 else "")
            print(f"    printed while loading: {shown}")
        if getattr(record, "commands", None):
            print(f"    commands: {', '.join(record.commands)}")
        for c in record.components:
            modality = f" ({c.modality})" if c.modality else ""
            print(f"    {c.kind:<12} {c.name:<22}{modality} {c.doc}")
            if c.kind == "dataset":  # a dataset is configured by its options alone (data: {name, ...})
                print(f"    {'':<12} options: {_options_line(c.options())}")
        for m in (m for infos in manager.registry.modalities().values() for m in infos if m.plugin == record.name):
            print(f"    {'modality':<12} {m.name:<22} {m.doc}")
    print("\n(mmcore plugins NAME: a component's options, types, defaults and documentation)")
    return EXIT_OK


def cmd_train(args: argparse.Namespace, manager) -> int:
    from mmcore.engine.artefacts import check_run_plugins
    from mmcore.engine.config import load_config
    from mmcore.engine.rundir import RunDir
    from mmcore.engine.trainer import Trainer

    config = load_config(args.config, args.overrides)
    _refuse_training_over_own_run(args, config)
    own = RunDir.owning(args.config)  # a run's own config trained again: its plugins' packages named, if missing
    if own is not None:
        check_run_plugins(own.path, manager.registry)
    # The run directory is checked (a user's folder, in use, nothing to resume) before any work.
    try:
        trainer = Trainer(config, manager=manager, resume=args.resume, overwrite=args.overwrite)
    except ConfigError as exc:
        raise _with_override_hint(exc, args.overrides, config) from exc
    note = _UnusedFusionNote(manager)  # said once the run starts (a config refused before says only why)
    from mmcore.runtime import register_plugin

    with register_plugin(note, name=f"mmcore-train-fusion-note#{id(note)}", manager=manager):
        report = trainer.fit()
    if trainer.is_main:
        print(json.dumps({k: report[k] for k in ("status", "run_dir", "best_epoch", "test", "seconds", "plots")}, indent=2))
    return EXIT_OK


class _UnusedFusionNote:
    """``mmcore train``'s lifecycle hook for :func:`_warn_unused_fusion`: once, on the main process, as
    the run starts (after every check of the config and data has passed)."""

    def __init__(self, manager) -> None:
        self.manager = manager

    @hookimpl
    def mmcore_train_start(self, trainer, config) -> None:
        if trainer.is_main:
            _warn_unused_fusion(config, self.manager)


def _warn_unused_fusion(config: Mapping, manager) -> None:
    """One warning line (stderr) when the config names a fusion its head does not use (a head factory's
    ``fusion_unused(options)`` says why, naming the option that changes it): an edited fusion would
    otherwise change nothing, silently."""
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    head, fusion = model.get("head"), model.get("fusion")
    if not isinstance(head, Mapping) or not fusion:
        return
    from mmcore.errors import UnknownComponentError

    try:
        factory = manager.registry.get("head", head.get("name")).factory
    except UnknownComponentError:  # the Trainer reports an unknown head, with its suggestions
        return
    why = getattr(factory, "fusion_unused", None)
    reason = why({k: v for k, v in head.items() if k != "name"}) if callable(why) else None
    if reason:
        name = fusion.get("name") if isinstance(fusion, Mapping) else fusion
        print(f"warning: model.fusion ({name}) changes nothing in this run: {reason}", file=sys.stderr, flush=True)


def _refuse_training_over_own_run(args: argparse.Namespace, config: Mapping) -> None:
    """``mmcore train RUN/config.yaml``: a run's own config names that run (or, copied, the copy) as its
    run_dir; training it again there would replace the checkpoints the run's other files describe. The
    user says where instead: ``trainer.run_dir=NEW``, or ``--resume RUN`` to continue it."""
    from mmcore.engine.rundir import RunDir, RunDirError

    run = RunDir.owning(args.config)
    if run is None or args.resume or any(o.partition("=")[0].strip() == "trainer.run_dir" for o in args.overrides):
        return
    target = (config.get("trainer") or {}).get("run_dir") if isinstance(config.get("trainer"), Mapping) else None
    if isinstance(target, str) and os.path.abspath(target) == os.path.abspath(run.path) and run.has_checkpoint(RunDir.BEST):
        raise RunDirError(f"{args.config} is the config of the run in {run.path}; training it again would replace that "
                          f"run's checkpoints. Say where the new run goes (trainer.run_dir=runs/NEW), or continue this "
                          f"one with --resume {run.path}")


def _with_override_hint(exc: ConfigError, overrides: Sequence[str], config: Mapping) -> ConfigError:
    """``X.name=new`` keeps the config's other ``X`` options, which the new component may not take:
    say so under the unknown-option issues, with the override that replaces the whole section."""
    renamed = {o.partition("=")[0].strip()[: -len(".name")]: o.partition("=")[2].strip()
               for o in overrides if o.partition("=")[0].strip().endswith(".name")}
    issues = list(exc.issues)
    for section, name in renamed.items():
        if not any(i.path.startswith(section + ".") and "unknown option" in i.message for i in issues):
            continue
        node: object = config
        for part in section.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        kept = [k for k in node if k != "name"] if isinstance(node, Mapping) else []
        issues.append(ConfigIssue(section, f"{section}.name={name} kept the config's other {section} options "
                                           f"({', '.join(kept)}); to give {name!r} its own, override the whole mapping: "
                                           f"'{section}={{name: {name}, ...}}' (mmcore plugins {name} lists its options)"))
    return ConfigError(issues) if len(issues) > len(exc.issues) else exc


def load_run(run_dir: str | Path, manager, checkpoint: str = "best"):
    """A run directory's model (from ``checkpoint``) and resolved config: :func:`mmcore.engine.checkpoint.load_run`
    with the manager's registry (kept here for the commands of plugins that import it from ``mmcore.cli``)."""
    from mmcore.engine.checkpoint import load_run as load

    return load(run_dir, manager.registry, checkpoint)


#: The splits of a run's own data (``--split``): every mmcore data set gives these three.
SPLITS = ("train", "val", "test")
#: What ``mmcore eval`` evaluates instead of a split.
EVAL_TABLE = "--data TABLE (a table holding the target)"


def check_split(run_dir: str | Path, split: str, *, recorded: bool = True, alternative: str = "--data TABLE") -> None:
    """``--split NAME`` of a run, checked before the model is built or any data is read: a name that is no
    split, or (``recorded``: the run's data as it trained, no data option changing it) a split the run's
    ``data_summary.json`` records with no rows, is one line naming the splits that hold rows and
    ``alternative`` (exit 2). A run without that record is checked once its data is read.

    :raises ConfigError: ``split`` is not train, val or test. :raises UserInputError: the split is empty.
    """
    from mmcore.engine.rundir import RunDir, RunDirError
    from mmcore.errors import UserInputError

    rows: dict = {}
    if recorded:
        try:
            record = RunDir(run_dir).read_data_record() or {}
        except RunDirError:  # a damaged record is the data's own check's to meet, once it is read
            record = {}
        rows = record.get("rows") if isinstance(record.get("rows"), Mapping) else {}
    held = [f"--split {name} ({rows[name]} rows)" for name in SPLITS
            if name != split and isinstance(rows.get(name), int) and rows[name] > 0]
    works = (", ".join(held) + f", or {alternative}") if held else alternative
    if split not in SPLITS:
        raise ConfigError([ConfigIssue("--split", f"expected train, val or test, got {split!r}; use {works}")])
    if rows.get(split) == 0:
        raise UserInputError(f"{run_dir}: its {split} split has no rows (the run was trained without one); use {works}")


def _run_config(run_dir: str | Path, checkpoint: str) -> dict:
    """A run's resolved config without building its model (as :func:`load_run` reads it)."""
    from mmcore.engine.config import resolve_paths
    from mmcore.engine.rundir import RunDir
    from mmcore.errors import user_input_phase

    run = RunDir.open(run_dir, checkpoint)
    with user_input_phase(f"reading the run {run_dir}"):
        return resolve_paths(run.read_config())


def _split_dataset(args: argparse.Namespace, config: Mapping, manager):
    """The run's ``--split`` rows (with ``key=value`` data options); an empty split refused before the model is
    built, with what would evaluate."""
    from mmcore.engine.datasets import load_datasets

    check_split(args.run_dir, args.split, recorded=False, alternative=EVAL_TABLE)
    dataset = load_datasets(config, manager, splits=(args.split,))[args.split]
    if len(dataset) == 0:  # metrics over no rows are not 0.0: say so before any work, with what would evaluate
        from mmcore.errors import UserInputError

        raise UserInputError(f"{args.run_dir}: its {args.split} split has no rows"
                             + (f" with --data {' '.join(args.data)}" if args.data else " (the run was trained without one)")
                             + f"; use another --split, or {EVAL_TABLE}")
    return dataset


def cmd_eval(args: argparse.Namespace, manager) -> int:
    from mmcore.engine.config import apply_overrides
    from mmcore.engine.evaluation import evaluate

    if args.batch_size < 1:
        raise ConfigError([ConfigIssue("--batch-size", f"must be a positive int, got {args.batch_size}")])
    if args.perturbations is not None and not [n for n in args.perturbations.split(",") if n.strip()]:
        raise ConfigError([ConfigIssue("--perturbations", f"name at least one perturbation, got {args.perturbations!r}")])
    dataset = table = None
    source = _table_source(args)
    # a split that is not there (a name that is no split, whatever else is given) is said before any work
    check_split(args.run_dir, args.split, recorded=source is None and not args.data, alternative=EVAL_TABLE)
    if source is None:  # the run's own split
        config = apply_overrides(_run_config(args.run_dir, args.checkpoint), [f"data.{item}" for item in args.data])
        dataset = _split_dataset(args, config, manager)
    model, run_config = load_run(args.run_dir, manager, args.checkpoint)
    if dataset is None:
        config = run_config
        table = _eval_table(args, model, config, manager)
        if table is None:  # a run's own dataset option naming a table (no plugin reads it): the dataset reads it
            config = apply_overrides(config, [f"data.{item}" for item in args.data])
            dataset = _split_dataset(args, config, manager)
    if table is not None:
        dataset, counts = table
        name = f"table-{Path(counts['data']).stem}"
    else:
        counts, name = {"split": args.split}, args.split
    # categories not seen in training: told in the same words for a table and the run's own split
    samples = dataset if table is not None else (dataset[i] for i in range(len(dataset)))
    if not args.robustness:
        result = evaluate(model, dataset, batch_size=args.batch_size)
        if table is not None:
            _note_unreadable(model, counts, args.strict)
        _note_unseen(model, samples)
        print(json.dumps({**counts, "samples": len(dataset), **result}, indent=2))
        return EXIT_OK
    _note_unseen(model, samples)
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
    from mmcore.engine.atomic import write_file
    from mmcore.engine.checkpoint import dumps_json
    from mmcore.engine.rundir import RunDir

    run = RunDir(args.run_dir)
    out = run.robustness  # a real folder of the run's: a link there is refused, never written through
    write_file(out / f"{name}.json", dumps_json(report, indent=2), root=run.path)
    plot = plot_report(report, out / f"{name}.png", root=run.path)
    print(format_report(report))
    print(f"\nreport: {out / f'{name}.json'}" + (f"; plot: {plot}" if plot else " (install matplotlib for the plot)"))
    return EXIT_OK


#: Data options that name a table: on a run whose plugin reads the user's own tables (``mmcore fit``'s),
#: such an override is that table, read through the plugin (never as the run's prepared table).
TABLE_OPTIONS = ("path", "val_path", "test_path")


def _table_source(args: argparse.Namespace) -> str | None:
    """The table ``mmcore eval --data`` names (a TABLE, or one data option of :data:`TABLE_OPTIONS` alone),
    or None for the run's own split; the options are checked here, before any work."""
    tables = [item for item in args.data if "=" not in item]
    named = [item.partition("=")[2] for item in args.data if item.partition("=")[0] in TABLE_OPTIONS]
    if len(tables) > 1:
        raise ConfigError([ConfigIssue("--data", f"give one TABLE to evaluate, got {len(tables)}: {', '.join(tables)}")])
    options = [item for item in args.data if "=" in item]
    if tables and options:
        raise ConfigError([ConfigIssue("--data", f"give either a TABLE ({tables[0]}) or key=value data options "
                                                 f"({', '.join(options)}), not both")])
    source = tables[0] if tables else named[0] if len(named) == 1 and len(options) == 1 else None
    if source is None:
        missing = cli_predict.declared_missing(args.missing)
        if missing or args.strict:
            raise ConfigError([ConfigIssue("--missing" if missing else "--strict", "goes with --data TABLE")])
    return source


def _eval_table(args: argparse.Namespace, model, config: Mapping, manager):
    """``mmcore eval RUN --data TABLE``: ``(samples, counts)`` from the hook ``mmcore_table_samples``
    (the rule of ``mmcore predict --data``: columns present or declared ``--missing``; a missing or
    unreadable file or a placeholder is a missing cell, counted; ``--strict`` makes each an error), or
    None when no table is given (the run's own split, with ``key=value`` data options)."""
    source = _table_source(args)
    if source is None:
        return None
    tables = [item for item in args.data if "=" not in item]
    missing = cli_predict.declared_missing(args.missing)
    try:
        reading = cli_predict.table_reading(manager, Path(args.run_dir), Path(source), encoding=args.encoding,
                                            sep=args.sep, decimal=args.decimal)  # the user's options, else as the run read its table
        answer = manager.hook.mmcore_table_samples(path=Path(source), model=model, data=dict(config.get("data") or {}),
                                                   run_dir=Path(args.run_dir), missing=missing, strict=args.strict,
                                                   **reading)
    except (ValueError, FileNotFoundError) as exc:
        message = str(exc)
        declared = message.startswith("--missing: ")
        raise ConfigError([ConfigIssue("--missing" if declared else "--data", message.removeprefix("--missing: "))]) from exc
    if answer is None:
        if not tables:  # a run's own dataset option (e.g. a manifest's path=): the dataset reads it
            return None
        raise ConfigError([ConfigIssue("--data", f"no installed plugin reads a table for this run (hook "
                                                 f"mmcore_table_samples; `mmcore fit` runs have one); give it as the "
                                                 f"dataset's option instead: --data path={source}")])
    samples, notes = answer
    kept = [s for s in samples if s is not None]
    if not kept:
        raise ConfigError([ConfigIssue("--data", f"no row of {source} has both an input and a usable target")])
    trainer = config.get("trainer") if isinstance(config.get("trainer"), Mapping) else {}
    model.unreadable_inputs = "error" if args.strict else trainer.get("unreadable_inputs", "missing")
    counts = {"data": str(source), "rows": len(samples), "rows_left_out": len(samples) - len(kept),
              "missing_cells": len(notes), "notes": list(notes)}
    return kept, counts


def _note_unseen(model, samples) -> None:
    """One warning line per column of the evaluated table whose values the model read as unknown (categories
    not seen in training): evaluated all the same, and the user is told."""
    cli_predict.note_unseen(model, (sample["inputs"] for sample in samples), "eval")


def _note_unreadable(model, counts: dict, strict: bool) -> None:
    """Inputs that failed only when read (a missing modality under the run's rule): counted with the
    table's missing cells; one line on stderr naming the first few (``--strict`` refuses them)."""
    from mmcore.unreadable import describe

    notes = counts.pop("notes") + [describe(e) for e in model.unreadable.entries.values()]
    counts["missing_cells"] = len(notes)
    if notes:
        shown = "; ".join(notes[:5]) + (f"; ... ({len(notes) - 5} more)" if len(notes) > 5 else "")
        print(f"mmcore eval: {len(notes)} cell(s) or row(s) of {counts['data']} treated as missing "
              f"(--strict refuses them): {shown}", file=sys.stderr)


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


#: The kernel benchmark: a script of the source repository, not of the installed packages.
KERNEL_BENCH = Path("benchmarks") / "kernel_bench.py"


def kernel_bench_script(start: Path | None = None) -> Path | None:
    """``benchmarks/kernel_bench.py`` of the source checkout mmcore runs from (an editable install), else
    of ``start`` (default: the current folder) or the nearest folder above it that has one; None if none."""
    import mmcore

    package_root = Path(mmcore.__file__).resolve().parent.parent
    here = (start or Path.cwd()).resolve()
    for folder in (package_root, here, *here.parents):
        if (folder / KERNEL_BENCH).is_file():
            return folder / KERNEL_BENCH
    return None


def cmd_bench(args: argparse.Namespace, manager) -> int:
    """Run the repository's kernel benchmark (``python benchmarks/kernel_bench.py ARGS``): the core does
    not import the kernels package; the script does, like any user of it."""
    import importlib.util

    from mmcore.errors import UserInputError

    script = kernel_bench_script()
    if script is None:
        raise UserInputError(f"the kernel benchmark is a script of mmcore's source repository ({KERNEL_BENCH}), not part "
                             "of the installed package: run `mmcore bench` (or `python benchmarks/kernel_bench.py`) in a "
                             "checkout of the repository")
    spec = importlib.util.spec_from_file_location("kernel_bench", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("kernel_bench", module)  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    argv = (["--full"] if args.full else []) + (["--ops", *args.ops] if args.ops else []) \
        + (["--modes", *args.modes] if args.modes else [])
    return module.main(argv)


_TRUE = {"1", "true", "yes", "on"}
#: OSError numbers that mean "a path the user gave cannot be used" (exit 2), not a bug.
_USER_ERRNOS = {"ENOENT", "EACCES", "EPERM", "EISDIR", "ENOTDIR", "ENOSPC", "EROFS", "ENAMETOOLONG", "EEXIST",
                "ENOTEMPTY", "EDQUOT", "ELOOP", "EFBIG", "EBUSY", "ETXTBSY"}
#: At most this many lines of a multi-line user error are printed.
_MAX_BLOCK_LINES = 25


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mmcore`` command line; returns the exit status (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is global and may come anywhere (`mmcore train c.yaml --debug`); overrides never
    # start with "--", so taking it out before parsing cannot eat one.
    debug = "--debug" in argv or os.environ.get("MMCORE_DEBUG", "").strip().lower() in _TRUE
    argv = [a for a in argv if a != "--debug"]
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        code = _main(argv, debug)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        run = exc if isinstance(exc, RunInterrupted) else None  # Ctrl-C while a run trained: name it and how to go on
        print(f"mmcore{' ' + command if command else ''}: interrupted"
              + (f"; {run.run_dir} keeps its {run.epochs_done} completed epoch(s) (report.json: status interrupted); "
                 f"continue it with: {run.resume_hint()}" if run is not None else
                 " (a training run continues with --resume RUN_DIR)" if command in ("train", "fit") else ""),
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `mmcore plugins | head -1`: the reader left; nothing more to say
        # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail too.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def _unrecognized(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> str:
    """``mmcore COMMAND: unrecognized arguments: ...``, and for a misspelt option the command's closest one
    (``--time-limt`` -> ``--time-limit``)."""
    import difflib

    command = getattr(args, "command", None)
    name = f"mmcore {command}" if command else "mmcore"
    sub = next((a.choices.get(command) for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    known = [o for a in (sub or parser)._actions for o in a.option_strings if o.startswith("--")]
    guesses = [difflib.get_close_matches(e.split("=", 1)[0], known, n=1, cutoff=0.75) for e in extra if e.startswith("--")]
    hint = next((f"; did you mean {g[0]}?" for g in guesses if g), f"; see {name} --help")
    return f"{name}: unrecognized arguments: {' '.join(extra)}{hint}"


def _main(argv: list[str], debug: bool) -> int:
    from mmcore.plugin_manager import get_plugin_manager

    command = next((a for a in argv if not a.startswith("-")), None) or "mmcore"
    try:
        manager = get_plugin_manager()
        parser = build_parser(manager)
    except Exception as exc:  # strict mode (MMCORE_STRICT_PLUGINS=1): a broken plugin is an error
        return report_error(exc, command if command != "mmcore" else "", debug=debug)
    try:
        args, extra = parser.parse_known_args(argv)
        # key=value overrides may also follow options (`mmcore compare C --fusions a,b trainer.epochs=3`).
        if extra:
            if isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-") for e in extra):
                args.overrides += extra
            else:  # one line naming them, with the closest option where one is close (not argparse's usage + error)
                print(_unrecognized(parser, args, extra), file=sys.stderr)
                return EXIT_USAGE
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help/--version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    command = args.command or command
    try:
        code = handler(args, manager) if _takes_manager(handler) else handler(args)
    except (KeyboardInterrupt, BrokenPipeError):  # main() ends these quietly
        raise
    except Exception as exc:
        owner = getattr(manager, "command_owner", lambda name: None)(command)
        return report_error(exc, command, debug=debug, plugin=owner)
    return EXIT_OK if code is None else int(code)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an error in the user's input (exit 2) rather than a failure or a bug.

    User errors: :class:`~mmcore.errors.UserInputError` (config, data, media, checkpoint, run
    directory errors), ValueError/TypeError marked by :func:`~mmcore.errors.user_input_phase`
    (raised while a config, data set or checkpoint was turned into objects), YAML/JSON that does
    not parse, and OSErrors about a path (missing, a folder where a file was expected, no
    permission, disk full, ...).
    """
    from mmcore.errors import is_user_input_error

    if is_user_input_error(exc):
        return True
    if isinstance(exc, json.JSONDecodeError) or type(exc).__module__.split(".")[0] == "yaml":
        return True
    if isinstance(exc, OSError) and exc.errno is not None:
        import errno

        return errno.errorcode.get(exc.errno) in _USER_ERRNOS
    return False


def describe_error(exc: BaseException) -> str:
    """The message of a user error: the exception's own text, made explicit for bare OSErrors."""
    if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, ValueError):
        import errno

        name = errno.errorcode.get(exc.errno)
        reason = (exc.strerror or str(exc)).lower() if exc.strerror else str(exc)
        paths = " -> ".join(repr(str(p)) for p in (exc.filename, exc.filename2) if p is not None)
        if name == "ENOSPC":
            return f"no space left on device{' writing ' + paths if paths else ''}"
        return f"{paths}: {reason}" if paths else reason
    text = str(exc).strip()
    return text or type(exc).__name__


def report_error(exc: BaseException, command: str, *, debug: bool = False, plugin: str | None = None) -> int:
    """Print ``exc`` the way the contract says (see the module docstring); return the exit status."""
    from mmcore.engine import NonFiniteLossError
    from mmcore.errors import ConfigError, PluginError, PluginHookError

    prefix = f"mmcore {command}:" if command else "mmcore:"
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if isinstance(exc, ConfigError):
        lines = [str(issue) for issue in exc.issues] or [str(exc)]
        label = " invalid configuration:" if _about_a_config(exc, command) else ""
        if len(lines) == 1 and "\n" not in lines[0]:
            print(f"{prefix}{label} {lines[0]}", file=sys.stderr)
        else:
            _print_block(f"{prefix}{label}" if label else f"{prefix} {len(lines)} problems:",
                         [line for text in lines for line in text.splitlines()])
        return EXIT_USAGE
    if is_user_error(exc):
        lines = describe_error(exc).splitlines() or [type(exc).__name__]
        if len(lines) == 1:
            print(f"{prefix} {lines[0]}", file=sys.stderr)
        else:
            _print_block(f"{prefix} {lines[0]}", lines[1:])
        return EXIT_USAGE
    if isinstance(exc, (NonFiniteLossError, PluginError)):
        # A run that stopped (non-finite loss, a plugin's hook raised) is a failure (1); a plugin
        # that cannot load in strict mode is the installation's problem, fixable (2). One line
        # either way, no bug report.
        lines = describe_error(exc).splitlines()
        print(f"{prefix} {lines[0]}", file=sys.stderr)
        for line in lines[1:]:
            print(f"  {line}", file=sys.stderr)
        return EXIT_FAILURE if isinstance(exc, (NonFiniteLossError, PluginHookError)) else EXIT_USAGE
    # Anything else is a bug: in mmcore or, for a plugin's command, in that plugin.
    where = f" in plugin {plugin}" if plugin else ""
    message = str(exc).strip().splitlines()
    print(f"{prefix} internal error{where}: {type(exc).__name__}" + (f": {message[0]}" if message else ""), file=sys.stderr)
    print(f"  {_versions()}", file=sys.stderr)
    if not debug:
        print("  rerun with --debug for the traceback; please report it"
              + (" to the plugin's authors" if plugin else " (with the traceback) to the mmcore developers"), file=sys.stderr)
    return EXIT_FAILURE


#: The commands whose input is a config file: a ConfigError there is about it unless it names an option.
_CONFIG_COMMANDS = frozenset({"train", "config", "bench", "compare", "tune"})


def _about_a_config(exc, command: str) -> bool:
    """Whether a ConfigError is about a configuration (said so: "invalid configuration:") rather than about
    a command's arguments or data (``--out: ... exists``, a table's column, a cell), which read as what they
    are. An issue at a dotted config path (``trainer.lr``) is a config's; one naming an option (``--data``)
    is not; an issue without a path is a config's only in a command that reads a config file."""
    paths = [str(getattr(issue, "path", "") or "") for issue in getattr(exc, "issues", [])]
    if any(path and not path.startswith("-") for path in paths):
        return True
    return command in _CONFIG_COMMANDS and not any(path.startswith("-") for path in paths)


def _print_block(head: str, lines: list[str]) -> None:
    print(head, file=sys.stderr)
    for line in lines[:_MAX_BLOCK_LINES]:
        print(f"  {line}", file=sys.stderr)
    if len(lines) > _MAX_BLOCK_LINES:
        print(f"  ... and {len(lines) - _MAX_BLOCK_LINES} more", file=sys.stderr)


def _versions() -> str:
    import platform

    from mmcore import __version__

    torch_version = sys.modules["torch"].__version__ if "torch" in sys.modules else None
    if torch_version is None:
        try:
            from importlib.metadata import version

            torch_version = version("torch")
        except Exception:  # noqa: BLE001 - a version string must never be what fails
            torch_version = "not installed"
    return f"mmcore {__version__}, torch {torch_version}, Python {platform.python_version()} ({platform.system()})"


def _takes_manager(handler) -> bool:
    import inspect

    try:
        return len(inspect.signature(handler).parameters) >= 2
    except (TypeError, ValueError):
        return False
