"""``mmcore tune CONFIG --space SPACE.yaml --trials N``: the command line of :mod:`.study`, added
through the ``mmcore_add_commands`` hook like any plugin's command."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import mmcore
from mmcore.errors import ConfigError, ConfigIssue


def run_tune(args: argparse.Namespace, manager) -> int:
    from mmcore.engine.config import load_config, new_plan
    from mmcore.yamlio import YamlError, load_yaml_file
    from mmcore_plugins.autofit.choose import parse_duration
    from mmcore_plugins.tune.space import check_space, parse_space
    from mmcore_plugins.tune.study import StudyOptions, format_summary, parse_objectives, run_study

    if importlib.util.find_spec("optuna") is None:
        raise ConfigError([ConfigIssue("", "mmcore tune needs Optuna: pip install 'mmcore[tune]'")])
    if args.trials < 1:
        raise ConfigError([ConfigIssue("--trials", f"must be at least 1, got {args.trials}")])
    limit = None
    if args.time_limit is not None:
        try:
            limit = parse_duration(args.time_limit)
        except ValueError as exc:
            raise ConfigError([ConfigIssue("--time-limit", str(exc))]) from exc
    parse_objectives(args.objective)  # its errors before anything is read
    config = new_plan(load_config(args.config, args.overrides))  # trials plan anew (a grown run's record dropped)
    space_path = Path(args.space)
    if not space_path.is_file():
        raise ConfigError([ConfigIssue("--space", f"{str(space_path)!r} {'is not a file' if space_path.exists() else 'does not exist'}")])
    try:
        raw = load_yaml_file(space_path)
    except YamlError as exc:
        raise ConfigError([ConfigIssue("--space", f"{space_path}: {exc}")]) from exc
    dims = parse_space(raw, source=str(space_path))
    check_space(config, dims, manager.registry)
    out = Path(args.out) if args.out else Path((config.get("trainer") or {}).get("run_dir", "runs/latest")).with_name(
        Path((config.get("trainer") or {}).get("run_dir", "runs/latest")).name + "-tune")
    options = StudyOptions(trials=args.trials, out=out.resolve(), storage=args.storage, study_name=args.study_name,
                           objective=args.objective, pruner=args.pruner, time_limit=limit, seed=args.seed,
                           mlflow=args.mlflow if args.mlflow not in (None, "") else None, use_mlflow=args.mlflow is not None,
                           mlflow_experiment=args.mlflow_experiment, baseline=not args.no_baseline)
    summary = run_study(config, dims, options, manager=manager)
    print(format_summary(summary))
    print(f"\nstudy: {options.out / 'study.json'}" + (f"; best config: {options.out / 'best.yaml'} "
                                                         f"(mmcore train {options.out / 'best.yaml'})" if summary["best"] else ""))
    return 0


@mmcore.hookimpl
def mmcore_add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "tune", help="search config space with Optuna: every trial a run, resumable, best.yaml out",
        description="Train CONFIG once per trial with values from SPACE.yaml (dotted config keys -> distributions) "
                    "chosen by Optuna's TPE sampler; prune dominated trials after each epoch; write study.json and "
                    "best.yaml (mmcore train best.yaml trains the best trial again). Run the same command again to "
                    "resume a study that was interrupted.")
    parser.add_argument("config", help="the base config (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="overrides applied to every trial, as in mmcore train")
    parser.add_argument("--space", required=True, help="the search space (YAML: key.path: {low, high[, log, step]} or [choices])")
    parser.add_argument("--trials", type=int, required=True, help="finished trials the study ends with (resuming counts earlier ones)")
    parser.add_argument("--time-limit", help="for this invocation, e.g. 45m, 2h: refused up front when the trials left cannot "
                                             "fit at the measured pace; a trial that would pass it stops at an epoch's end")
    parser.add_argument("--objective", help="a validation metric of the head (default: the run's monitor), optionally with costs "
                                            "of the best checkpoint: accuracy,latency | accuracy,parameters | accuracy,flops "
                                            "(several = a Pareto set)")
    parser.add_argument("--storage", help="an Optuna storage URL (default: sqlite:///OUT/study.db)")
    parser.add_argument("--study-name", default="mmcore-tune", help="the study's name in the storage (default mmcore-tune)")
    parser.add_argument("--out", help="the study's folder: trials, study.json, best.yaml (default: <run_dir>-tune)")
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"],
                        help="stop dominated trials after an epoch (single objective only; default median)")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="do not make the config as given the first trial (it is, when its values lie in the space)")
    parser.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
                        help="log a parent MLflow run for the study and a child per trial (default URI: MLflow's own setting)")
    parser.add_argument("--mlflow-experiment", default="mmcore-tune", help="the MLflow experiment (default mmcore-tune)")
    parser.set_defaults(handler=run_tune)
