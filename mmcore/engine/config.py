"""Run configs: one YAML file with ``data``, ``model`` and ``trainer`` sections, plus dotted overrides.

Everything is validated before any data is read or any model is built, and every problem is
reported at once with its path in the config (``model.fusion.dimm: unknown option ...``).

A little over 450 lines: :class:`TrainerOptions` documents every trainer option in place (the
config reference), and each option's checks sit beside the others.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from mmcore.components import RESERVED_ARGUMENTS
from mmcore.engine.pathopts import is_path_option, map_path_options
from mmcore.errors import ConfigError, ConfigIssue, UnknownComponentError
from mmcore.model import validate_model_spec
from mmcore.options import check_options, type_mismatch
from mmcore.registry import Registry
from mmcore.yamlio import YamlError, load_override_value, load_yaml_file

SECTIONS = ("data", "model", "trainer")
#: The model's top-level parts that ``trainer.lr_multipliers`` keys start with.
MODEL_PARTS = ("encoders", "fusion", "head")


#: Field metadata of a trainer option a resumed run may change (it does not change what is computed).
_MAY_CHANGE = {"resume_may_change": True}
#: The loggers ``trainer.loggers: null`` means, in order; each is dropped when its switch is false.
DEFAULT_LOGGERS = ("csv", "tensorboard", "progress", "plots")


@dataclasses.dataclass
class TrainerOptions:
    """The ``trainer`` section. Every field can be overridden as ``trainer.<field>=value``."""

    #: passes over the training split
    epochs: int = 20
    #: global batch size (split evenly over the processes of a distributed run)
    batch_size: int = 32
    #: batch size for validation and test (default: batch_size)
    eval_batch_size: int | None = dataclasses.field(default=None, metadata=_MAY_CHANGE)
    #: AdamW peak learning rate
    lr: float = 1e-3
    #: AdamW weight decay (never applied to biases, norms or other 1-D parameters)
    weight_decay: float = 0.01
    #: fraction of the optimiser steps spent in linear warmup; cosine decay afterwards
    warmup_fraction: float = 0.05
    #: the cosine schedule ends at lr * min_lr_ratio
    min_lr_ratio: float = 0.0
    #: how the run's horizon grew while it trained (Trainer.extend, e.g. ``mmcore fit`` giving a run
    #: that turned out faster than planned more epochs), written into the run's config.yaml so it is
    #: reproduced: [[after_epoch, from_epochs, to_epochs], ...] -- after epoch after_epoch the
    #: schedule's horizon went from from_epochs to to_epochs, and the cosine went on from the rate
    #: reached there down to the floor at the new horizon (mmcore.engine.optim.warmup_cosine); the
    #: last to_epochs is trainer.epochs. [] = trained as planned
    schedule_extensions: list[list[int]] = dataclasses.field(default_factory=list)
    #: per-component learning-rate multipliers by module path, e.g. {encoders.text: 0.1, head: 2.0}
    lr_multipliers: dict[str, float] = dataclasses.field(default_factory=dict)
    #: micro-batches whose gradients are accumulated before each optimiser step
    grad_accumulation: int = 1
    #: clip the global gradient norm to this value (null = off)
    grad_clip: float | None = 1.0
    #: keep an exponential moving average of the weights, updated after every optimiser step with
    #: this decay (e.g. 0.99 ~ the last 100 steps; warmed up over the first steps), and validate,
    #: keep as best/ and test the average (mmcore.engine.averaging); null = off
    ema_decay: float | None = None
    #: autocast precision on CUDA; CPU always trains in float32
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    #: wrap the model in torch.compile (true = the default inductor backend; a string names
    #: another torch.compile backend, e.g. "aot_eager")
    compile: bool | str = False
    #: probability of removing each present modality of a training sample (never all of them);
    #: one number for every slot, or {slot: p}
    modality_dropout: float | dict[str, float] = 0.0
    #: train-time perturbations of raw inputs: {slot: {perturbation: max_level}}; each sample
    #: gets each listed perturbation at a level drawn uniformly from [0, max_level]
    augment: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    #: an input that cannot be read when training, validation or test reads it (damage past what
    #: the data set's validation checked, e.g. NaN samples after a WAV's first second): "missing"
    #: makes it a missing modality of its sample, counted and listed with its table, row and column
    #: (a warning per epoch; report.json's unreadable_inputs); "error" stops the run naming them
    unreadable_inputs: Literal["missing", "error"] = dataclasses.field(default="missing", metadata=_MAY_CHANGE)
    #: validation metric choosing the best checkpoint ("loss" or one of the head's metrics;
    #: null = the head's first metric, e.g. accuracy for classification)
    monitor: str | None = None
    #: whether larger monitored values are better; auto = as the metric declares it (torchmetrics'
    #: higher_is_better: min for the loss, MSE, WER, MAPE, ...; max for accuracy, F1, BLEU, ...)
    monitor_mode: Literal["auto", "max", "min"] = "auto"
    #: stop after this many epochs without improvement of the monitored metric (null = never)
    early_stopping: int | None = None
    #: train on at most this many rows of the training split: a random sample drawn with ``seed`` (the
    #: processors are still fitted on the whole split; validation and test are untouched); null = every
    #: row. ``mmcore fit`` writes here the rows it trained on when the machine slowed down while it
    #: computed their frozen features (``Trainer.feature_budget``), so the run's ``config.yaml`` trains
    #: the same rows again and ``--resume`` continues on them
    train_rows: int | None = None
    #: also write the ``last`` checkpoint every this many optimiser steps inside an epoch (atomically,
    #: like the epoch-end one), so ``--resume`` continues a killed run in the same epoch with the
    #: samples it had not used yet (mmcore.engine.midepoch); null = at epoch ends only
    checkpoint_every_steps: int | None = dataclasses.field(default=None, metadata=_MAY_CHANGE)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = dataclasses.field(default="auto", metadata=_MAY_CHANGE)
    #: where the run's config, metrics, plots, checkpoints and report go
    run_dir: str = dataclasses.field(default="runs/latest", metadata=_MAY_CHANGE)
    #: serve frozen encoders' features from a cache (computed once for the training and validation
    #: splits before the first epoch, so later epochs skip those encoders entirely): true = in
    #: memory, a string = also on disk in that folder (kept across runs); false = off
    cache_features: bool | str = dataclasses.field(default=False, metadata=_MAY_CHANGE)
    #: remember each processed input read from a file or given as text (e.g. a WAV's log-mel
    #: spectrogram) in memory for the whole run, so only the first epoch reads and decodes the
    #: data; applies to processors that do not augment, and pays off with num_workers: 0
    cache_inputs: bool = dataclasses.field(default=False, metadata=_MAY_CHANGE)
    #: PyTorch intra-op threads: auto = the cores the rest of the machine leaves idle (1-minute
    #: load average), at least one; N = exactly N (mmcore.threads; the mmcore command also sets
    #: OMP_WAIT_POLICY=PASSIVE unless you did)
    threads: int | Literal["auto"] = dataclasses.field(default="auto", metadata=_MAY_CHANGE)
    #: DataLoader worker processes for the training split
    num_workers: int = dataclasses.field(default=0, metadata=_MAY_CHANGE)
    #: Linux/glibc: keep freed host memory for reuse instead of returning it to the OS every step
    #: (up to 256 MiB; blocks under 32 MiB from the heap). Saves the page faults of re-allocating
    #: each step's tensors -- up to 1.6 ms of an 8 ms CPU step; the process keeps its peak heap.
    #: Applies to the whole process, for its lifetime.
    retain_freed_memory: bool = dataclasses.field(default=True, metadata=_MAY_CHANGE)
    #: the run's outputs, each a logger plugin (``registry.add_logger``) run by the main process
    #: on the lifecycle hooks: a name, or {name: NAME, option: value, ...}. null = the built-in
    #: csv (metrics.csv), tensorboard, progress and plots, less those switched off below
    loggers: list[str | dict[str, Any]] | None = dataclasses.field(default=None, metadata=_MAY_CHANGE)
    #: a tqdm progress bar and one line per epoch (main process only); false drops the
    #: ``progress`` logger
    progress: bool = dataclasses.field(default=True, metadata=_MAY_CHANGE)
    #: write TensorBoard event files (when tensorboard is installed); false drops the
    #: ``tensorboard`` logger
    tensorboard: bool = dataclasses.field(default=True, metadata=_MAY_CHANGE)
    #: PNG plots of the training curves (matplotlib); false drops the ``plots`` logger
    plots: bool = dataclasses.field(default=True, metadata=_MAY_CHANGE)
    #: a modality balancer (``registry.add_balancer``) run on every process between the forward
    #: pass and the optimiser step: a name, or {name: NAME, option: value, ...}; null = none
    #: (:mod:`mmcore.engine.balancers`)
    balancer: str | dict[str, Any] | None = None
    #: modality-imbalance diagnostics in report.json, metrics.csv and plots: each encoder's share of
    #: the gradient norm per epoch, and at the end a linear probe per encoder and the metric with
    #: each modality removed, on the val split (:mod:`mmcore.engine.diagnostics`)
    diagnostics: bool = dataclasses.field(default=True, metadata=_MAY_CHANGE)
    #: knowledge distillation from a trained run (mmcore.engine.distill): {teacher: RUN_DIR,
    #: temperature: 4.0, alpha: 1.0, features: false}. The teacher's outputs for every training
    #: row are computed once (from the row's raw inputs, through the teacher's own processors, so
    #: the student may see fewer modalities); the loss becomes the head's loss + alpha *
    #: T^2 * KL(teacher || student) at temperature T (+ the similarity-preserving feature term when
    #: features is true or a weight). null = off
    distill: dict[str, Any] | None = None
    #: start from the weights (and fitted processors) of this checkpoint folder or run directory
    #: (its best/ checkpoint) instead of a fresh initialisation: fine-tuning, e.g. after
    #: ``mmcore prune``. The model's shapes must match it. null = fresh weights
    init: str | None = None


def trainer_option_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainerOptions)]


def resume_may_change() -> frozenset[str]:
    """``trainer.<option>`` for every option declared ``resume_may_change`` (its field metadata):
    the options a resumed run may set differently."""
    return frozenset(f"trainer.{f.name}" for f in dataclasses.fields(TrainerOptions) if f.metadata.get("resume_may_change"))


#: Head options the trainer fills from the training split when the config leaves them out.
FILLED_FROM_DATA = frozenset({"model.head.classes", "model.head.num_classes", "model.head.num_labels"})


def config_differences(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted path, old, new)`` for every leaf where two configs differ."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += config_differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [(path, old, new)]


def check_resume_config(saved: Mapping[str, Any], config: Mapping[str, Any], run_dir: str | Path) -> None:
    """A resumed run's resolved ``config`` against the ``saved`` one of ``run_dir``: every
    difference outside the options declared ``resume_may_change`` is an issue (a head option
    left out now is re-filled from the data and compared when the model is built).

    :raises ConfigError: every differing option, with both values.
    """
    may_change = resume_may_change()
    issues = [ConfigIssue(path, f"differs from the run being resumed ({run_dir}): {old!r} there, {new!r} now")
              for path, old, new in config_differences(saved, config) if path not in may_change
              and not (new is None and path in FILLED_FROM_DATA)]
    if issues:
        issues.append(ConfigIssue("", "resume with the run's own config (it is in config.yaml), or start a new run"))
        raise ConfigError(issues)


def logger_specs(options: TrainerOptions) -> list[tuple[str, dict[str, Any]]]:
    """The run's loggers as ``(name, options)``, in order: ``trainer.loggers`` (default
    :data:`DEFAULT_LOGGERS`) less those whose switch (``trainer.progress``, ``tensorboard``,
    ``plots``) is false. The shape of each entry is checked by :func:`validate_config`."""
    entries = list(DEFAULT_LOGGERS) if options.loggers is None else list(options.loggers)
    off = {name for name in ("progress", "tensorboard", "plots") if getattr(options, name) is False}
    specs = []
    for entry in entries:
        name, opts = (entry, {}) if isinstance(entry, str) else (entry.get("name"), {k: v for k, v in entry.items() if k != "name"})
        if name not in off:
            specs.append((name, opts))
    return specs


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML config and apply ``key.path=value`` overrides (values parsed as YAML).

    A run's own ``config.yaml`` (in a marked run directory) has its paths taken where the run is now
    (:meth:`~mmcore.engine.rundir.RunDir.located`): its ``trainer.run_dir`` is that folder, and
    ``data.jsonl`` of a copied ``fit`` run is the copy's own.

    YAML is read by :mod:`mmcore.yamlio` (1.2 floats such as ``1e-3``, plain data only, bounded
    alias expansion). :raises ConfigError: the file is missing or unreadable, not valid YAML (its
    line and column named), not a mapping, or an override is malformed.
    """
    path = Path(path)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise ConfigError([ConfigIssue("", f"config file {str(path)!r} {problem}")])
    try:
        config = load_yaml_file(path)
    except YamlError as exc:
        where = f" (line {exc.line}, column {exc.column})" if exc.line is not None and exc.column is not None else ""
        problem = exc.problem.removeprefix("not valid YAML: ")
        verb = "is not valid YAML" if problem != exc.problem else "is refused"
        raise ConfigError([ConfigIssue("", f"config file {str(path)!r} {verb}{where}: {problem}")]) from exc
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read config file {str(path)!r}: {exc.strerror or exc}")]) from exc
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError([ConfigIssue("", f"config file {str(path)!r} must hold a mapping, got {type(config).__name__}")])
    from mmcore.engine.rundir import RunDir

    run = RunDir.owning(path)
    if run is not None:  # a run's own record: its paths mean that run, wherever it was copied or moved
        config = run.located(config)
    return apply_overrides(config, overrides)


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``config`` with each ``a.b.c=value`` applied; ``value`` is parsed as YAML.

    ``a.b.c=`` (nothing after ``=``) sets an empty string; ``a.b.c=null`` sets None. A value that
    is not valid YAML is taken as the text typed; one with a refused tag (``!!python/...``) or
    over a size limit is an error (see :mod:`mmcore.yamlio`).
    """
    config = copy.deepcopy(dict(config))
    issues = []
    for override in overrides:
        key, sep, raw = override.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            issues.append(ConfigIssue("", f"override {override!r} must look like key.path=value"))
            continue
        try:
            value = load_override_value(raw, source=f"override {override!r}") if raw.strip() else ""
        except YamlError as exc:
            issues.append(ConfigIssue(key, str(exc)))
            continue
        node = config
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                issues.append(ConfigIssue(where, f"override {override!r} goes inside {where}, which is a {type(child).__name__}, not a mapping"))
                break
            node = child
        else:
            node[parts[-1]] = value
    if issues:
        raise ConfigError(issues)
    return config


def validate_config(config: Mapping[str, Any], registry: Registry) -> TrainerOptions:
    """Check all three sections without reading data or building anything; raise every problem together."""
    issues: list[ConfigIssue] = []
    if not isinstance(config, Mapping):
        raise ConfigError([ConfigIssue("", f"a config must be a mapping with sections {', '.join(SECTIONS)}")])
    for key in config:
        if key not in SECTIONS:
            close = difflib.get_close_matches(str(key), SECTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            issues.append(ConfigIssue(str(key), f"unknown section{hint} (sections: {', '.join(SECTIONS)})"))
    data = config.get("data")
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
        issues.append(ConfigIssue("data.name", f"missing; expected a registered dataset ({', '.join(registry.names('dataset'))})"))
    else:
        try:
            info = registry.get("dataset", data["name"])
            options = {k: v for k, v in data.items() if k != "name"}
            issues += check_options(info, options, reserved=RESERVED_ARGUMENTS["dataset"], path="data")
        except UnknownComponentError as exc:
            issues.append(ConfigIssue("data.name", str(exc)))
    model = config.get("model")
    issues += validate_model_spec(model, registry, path="model")
    issues += missing_files(config)
    trainer, trainer_issues = _trainer_options(config.get("trainer") or {})
    issues += trainer_issues
    issues += _check_against_model(trainer, model, registry)
    issues += _check_loggers(trainer, registry)
    issues += _check_balancer(trainer, registry)
    if issues:
        raise ConfigError(issues)
    return trainer


def resolved_config(config: Mapping[str, Any], options: TrainerOptions) -> dict[str, Any]:
    """The config with every trainer option spelled out (what the run directory records).

    Path options (see :func:`is_path_option`, and ``trainer.cache_features`` when it names a
    folder) are made absolute against the current folder, as they are read when training
    starts; ``mmcore eval``/``predict`` then read the same files from any working folder.
    """
    out = resolve_paths(config)
    trainer = dataclasses.asdict(options)
    if isinstance(trainer.get("cache_features"), str):
        trainer["cache_features"] = _absolute(trainer["cache_features"])
    out["trainer"] = trainer
    return out


def resolve_paths(config: Mapping[str, Any], base: str | Path | None = None) -> dict[str, Any]:
    """A copy of ``config`` whose relative path options (:func:`is_path_option`: ``data.path``,
    ``model.encoders.<slot>.weights``, ...) are absolute, taken relative to ``base`` (default:
    the current folder); ``~`` is expanded. Other values (``trainer.*`` included) are left as they are."""
    return map_path_options(config, lambda value: _absolute(value, base), cache_features=False)


def _absolute(value: str, base: str | Path | None = None) -> str:
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else Path(base or os.getcwd()) / path)


# ------------------------------------------------------------------------------ files
def missing_files(config: Mapping[str, Any]) -> list[ConfigIssue]:
    """Every path-like component option (see :func:`is_path_option`) whose file does not exist."""
    issues = []
    for path, value in _component_options(config):
        name = path.rsplit(".", 1)[-1]
        if is_path_option(name) and isinstance(value, str) and value and not Path(value).expanduser().exists():
            # A config copied out of a run folder keeps that run's relative paths: say where they are read from.
            where = "" if Path(value).expanduser().is_absolute() else f" (a relative path is read from the current folder, {os.getcwd()})"
            issues.append(ConfigIssue(path, f"file {value!r} does not exist{where}"))
    return issues


def _component_options(config: Mapping[str, Any]):
    data = config.get("data")
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield f"data.{key}", value
    model = config.get("model")
    if not isinstance(model, Mapping):
        return
    entries = []
    if isinstance(model.get("encoders"), Mapping):
        entries += [(f"model.encoders.{slot}", entry) for slot, entry in model["encoders"].items()]
    entries += [(f"model.{part}", model.get(part)) for part in ("fusion", "head")]
    for prefix, entry in entries:
        if isinstance(entry, Mapping):
            for key, value in entry.items():
                yield f"{prefix}.{key}", value


# ------------------------------------------------------------------------------ trainer section
def _trainer_options(section: Any) -> tuple[TrainerOptions, list[ConfigIssue]]:
    if not isinstance(section, Mapping):
        return TrainerOptions(), [ConfigIssue("trainer", f"expected a mapping, got {type(section).__name__}")]
    hints = typing.get_type_hints(TrainerOptions)
    valid = trainer_option_names()
    issues, values = [], {}
    for key, value in section.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            issues.append(ConfigIssue(f"trainer.{key}", f"unknown trainer option{hint} (valid options: {', '.join(valid)})"))
            continue
        problem = type_mismatch(value, hints[key])
        if problem:
            issues.append(ConfigIssue(f"trainer.{key}", f"trainer option {problem}"))
            continue
        values[key] = value
    options = TrainerOptions(**values)

    def bad(name: str, message: str) -> None:
        issues.append(ConfigIssue(f"trainer.{name}", message))

    for name in ("epochs", "batch_size", "grad_accumulation"):
        if getattr(options, name) < 1:
            bad(name, f"must be at least 1, got {getattr(options, name)}")
    if options.eval_batch_size is not None and options.eval_batch_size < 1:
        bad("eval_batch_size", f"must be at least 1, got {options.eval_batch_size}")
    if not (math.isfinite(options.lr) and options.lr > 0):
        bad("lr", f"must be a positive number, got {options.lr}")
    if not (math.isfinite(options.weight_decay) and options.weight_decay >= 0):
        bad("weight_decay", f"must be a number >= 0, got {options.weight_decay}")
    if not 0 <= options.seed < 2**32:
        bad("seed", f"must be in 0..2**32-1, got {options.seed}")
    if isinstance(options.compile, str):
        import torch._dynamo  # only here: importing it costs a second

        if options.compile not in torch._dynamo.list_backends(exclude_tags=()):
            bad("compile", f"unknown torch.compile backend {options.compile!r} (available: {', '.join(torch._dynamo.list_backends())})")
    if not 0.0 <= options.warmup_fraction < 1.0:
        bad("warmup_fraction", f"must be in [0, 1), got {options.warmup_fraction}")
    if not 0.0 <= options.min_lr_ratio <= 1.0:
        bad("min_lr_ratio", f"must be in [0, 1], got {options.min_lr_ratio}")
    issues += schedule_extension_issues(options)
    if options.grad_clip is not None and not (math.isfinite(options.grad_clip) and options.grad_clip > 0):
        bad("grad_clip", f"must be a positive number or null, got {options.grad_clip}")
    if options.checkpoint_every_steps is not None and options.checkpoint_every_steps < 1:
        bad("checkpoint_every_steps", f"must be at least 1 optimiser step or null, got {options.checkpoint_every_steps}")
    if options.ema_decay is not None and not (math.isfinite(options.ema_decay) and 0.0 < options.ema_decay < 1.0):
        bad("ema_decay", f"must be a number in (0, 1) or null, got {options.ema_decay}")
    if options.train_rows is not None and (isinstance(options.train_rows, bool) or not isinstance(options.train_rows, int)
                                           or options.train_rows < 1):
        bad("train_rows", f"must be a whole number of rows, at least 1, or null (every row), got {options.train_rows!r}")
    if options.early_stopping is not None and options.early_stopping < 1:
        bad("early_stopping", f"must be at least 1 epoch or null, got {options.early_stopping}")
    if options.num_workers < 0:
        bad("num_workers", f"must be >= 0, got {options.num_workers}")
    if options.threads != "auto" and options.threads < 1:
        bad("threads", f"must be 'auto' or at least 1, got {options.threads}")
    for key, value in options.lr_multipliers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
            bad(f"lr_multipliers.{key}", f"must be a number >= 0, got {value!r}")
    rates = options.modality_dropout if isinstance(options.modality_dropout, Mapping) else {"": options.modality_dropout}
    for slot, p in rates.items():
        name = f"modality_dropout.{slot}" if slot else "modality_dropout"
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            bad(name, f"must be a probability in [0, 1), got {p!r}")
    for slot, perturbations in options.augment.items():
        if not isinstance(perturbations, Mapping):
            bad(f"augment.{slot}", f"expected a mapping {{perturbation: max_level}}, got {type(perturbations).__name__}")
    if options.distill is not None:
        options.distill, found = _distill_options(options.distill)
        issues += found
    if options.init is not None:
        if not Path(options.init).expanduser().exists():
            bad("init", f"{options.init!r} does not exist (a checkpoint folder or a run directory)")
        else:  # read when training starts: absolute, like the other paths a run records
            options.init = _absolute(options.init)
    return options, issues


def new_plan(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` for a new run of its own plan (its own epochs: a tuning trial, a fine-tuning):
    without ``trainer.schedule_extensions``, the record of how the run ``config`` came from grew."""
    out = copy.deepcopy(dict(config))
    if isinstance(out.get("trainer"), Mapping):
        out["trainer"] = {k: v for k, v in out["trainer"].items() if k != "schedule_extensions"}
    return out


def replanned(config: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``config`` for training, and a note when ``trainer.epochs`` is not the horizon its
    ``trainer.schedule_extensions`` grew to (a user who edits a grown run's epochs, or overrides
    them, asks for a new plan of that many epochs): then the copy has no extensions and the note
    says so. Otherwise ``config`` unchanged and None. Malformed extensions are left for
    :func:`validate_config` to report."""
    trainer = config.get("trainer")
    extensions = trainer.get("schedule_extensions") if isinstance(trainer, Mapping) else None
    epochs = trainer.get("epochs", TrainerOptions.epochs) if isinstance(trainer, Mapping) else None
    if (not isinstance(extensions, list) or not extensions or not isinstance(extensions[-1], list | tuple)
            or len(extensions[-1]) != 3 or not isinstance(epochs, int) or isinstance(epochs, bool) or extensions[-1][2] == epochs):
        return dict(config), None
    note = (f"trainer.epochs is {epochs}, not the {extensions[-1][2]} the run this config comes from grew to: "
            f"a new plan of {epochs} epochs (its trainer.schedule_extensions are not applied)")
    return new_plan(config), note


def schedule_extension_issues(options: TrainerOptions) -> list[ConfigIssue]:
    """``trainer.schedule_extensions`` checked against itself and ``trainer.epochs``: each entry
    ``[after_epoch, from_epochs, to_epochs]`` with ``0 <= after_epoch <= from_epochs < to_epochs``,
    ``after_epoch`` increasing, each ``from_epochs`` the previous entry's ``to_epochs``, and the last
    ``to_epochs`` equal to ``trainer.epochs`` (the horizon the run ended with)."""
    issues, previous = [], None
    for i, entry in enumerate(options.schedule_extensions):
        where = f"trainer.schedule_extensions[{i}]"
        if len(entry) != 3:
            issues.append(ConfigIssue(where, f"must be [after_epoch, from_epochs, to_epochs] (3 whole numbers), got {entry!r}"))
            return issues
        after, before, to = entry
        if not 0 <= after <= before < to:
            issues.append(ConfigIssue(where, f"must have 0 <= after_epoch <= from_epochs < to_epochs (a horizon that grew), got {entry!r}"))
        elif previous is not None and (after <= previous[0] or before != previous[2]):
            issues.append(ConfigIssue(where, f"must follow {previous!r}: a later epoch, growing from {previous[2]} epochs, got {entry!r}"))
        previous = entry
    if not issues and previous is not None and previous[2] != options.epochs:
        issues.append(ConfigIssue("trainer.schedule_extensions", f"the last horizon ({previous[2]} epochs) must be trainer.epochs "
                                  f"({options.epochs}): the run grew to it; for a new plan of {options.epochs} epochs also set "
                                  "trainer.schedule_extensions=[]"))
    return issues


#: ``trainer.distill``'s options and their defaults (the teacher has none: it is required).
DISTILL_DEFAULTS = {"temperature": 4.0, "alpha": 1.0, "features": False}


def _distill_options(section: Mapping[str, Any]) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """``trainer.distill`` checked and completed with :data:`DISTILL_DEFAULTS` (the teacher's path
    made absolute, as it is read when training starts)."""
    issues: list[ConfigIssue] = []
    where = "trainer.distill"
    out = {"teacher": section.get("teacher"), **DISTILL_DEFAULTS}
    for key, value in section.items():
        if key != "teacher" and key not in DISTILL_DEFAULTS:
            close = difflib.get_close_matches(str(key), ["teacher", *DISTILL_DEFAULTS], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            issues.append(ConfigIssue(f"{where}.{key}", f"unknown distillation option{hint} (options: teacher, {', '.join(DISTILL_DEFAULTS)})"))
        elif key != "teacher":
            out[key] = value
    teacher = out["teacher"]
    if not isinstance(teacher, str) or not teacher:
        issues.append(ConfigIssue(f"{where}.teacher", f"required: the run directory of a trained teacher, got {teacher!r}"))
    elif not Path(teacher).expanduser().is_dir():
        issues.append(ConfigIssue(f"{where}.teacher", f"{teacher!r} is not a run directory (it does not exist)"))
    else:
        out["teacher"] = _absolute(teacher)
    number = (int, float)
    t, alpha, features = out["temperature"], out["alpha"], out["features"]
    if isinstance(t, bool) or not isinstance(t, number) or not (math.isfinite(t) and t > 0):
        issues.append(ConfigIssue(f"{where}.temperature", f"must be a number > 0, got {t!r}"))
    if isinstance(alpha, bool) or not isinstance(alpha, number) or not (math.isfinite(alpha) and alpha >= 0):
        issues.append(ConfigIssue(f"{where}.alpha", f"must be a number >= 0 (the soft targets' weight; the labels' is 1), got {alpha!r}"))
    if not isinstance(features, (bool, int, float)) or (not isinstance(features, bool) and not (math.isfinite(features) and features >= 0)):
        issues.append(ConfigIssue(f"{where}.features", f"must be true, false or a weight >= 0, got {features!r}"))
    return out, issues


def _check_against_model(options: TrainerOptions, model: Any, registry: Registry) -> list[ConfigIssue]:
    """Trainer options that name model parts (slots, module paths) or perturbations must match them."""
    issues: list[ConfigIssue] = []
    if not isinstance(model, Mapping):
        return issues
    encoders = model.get("encoders") if isinstance(model.get("encoders"), Mapping) else {}
    slots = list(encoders)
    for key in options.lr_multipliers:
        parts = str(key).split(".")
        where = f"trainer.lr_multipliers.{key}"
        if parts[0] not in MODEL_PARTS:
            close = difflib.get_close_matches(parts[0], MODEL_PARTS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            issues.append(ConfigIssue(where, f"a multiplier's key is a module path starting with {', '.join(MODEL_PARTS)}{hint}"))
        elif parts[0] == "encoders" and len(parts) > 1 and parts[1] not in slots:
            issues.append(ConfigIssue(where, f"no encoder slot {parts[1]!r}; the model's slots are {slots}"))
        elif parts[0] == "fusion" and model.get("fusion") is None:
            issues.append(ConfigIssue(where, "the model has no fusion"))
    if isinstance(options.modality_dropout, Mapping):
        for slot in options.modality_dropout:
            if slot not in slots:
                issues.append(ConfigIssue(f"trainer.modality_dropout.{slot}", f"no encoder slot {slot!r}; the model's slots are {slots}"))
    known = registry.names("perturbation")
    for slot, perturbations in options.augment.items():
        if slot not in slots:
            issues.append(ConfigIssue(f"trainer.augment.{slot}", f"no encoder slot {slot!r}; the model's slots are {slots}"))
            continue
        if not isinstance(perturbations, Mapping):
            continue
        entry = encoders.get(slot)
        modality = None
        if isinstance(entry, Mapping) and ("encoder", entry.get("name")) in registry:
            modality = registry.get("encoder", entry["name"]).modality
        for name, level in perturbations.items():
            where = f"trainer.augment.{slot}.{name}"
            if name not in known:
                issues.append(ConfigIssue(where, registry.unknown_message("perturbation", name)))
                continue
            info = registry.get("perturbation", name)
            if modality is not None and info.modality is not None and info.modality != modality:
                issues.append(ConfigIssue(where, f"perturbation {name!r} applies to {info.modality} data; slot {slot!r} holds {modality}"))
            if isinstance(level, bool) or not isinstance(level, (int, float)) or level < 0:
                issues.append(ConfigIssue(where, f"the maximum level must be a number >= 0, got {level!r}"))
    return issues


def _check_loggers(options: TrainerOptions, registry: Registry) -> list[ConfigIssue]:
    """Each ``trainer.loggers`` entry names a registered logger, once, with options its factory takes."""
    issues: list[ConfigIssue] = []
    if options.loggers is None:
        return issues
    seen: set[str] = set()
    for i, entry in enumerate(options.loggers):
        where = f"trainer.loggers.{i}"
        name = entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name:
            issues.append(ConfigIssue(where, f"expected a logger name or {{name: NAME, option: value}}, got {entry!r}"))
            continue
        if ("logger", name) not in registry:
            issues.append(ConfigIssue(where, registry.unknown_message("logger", name)))
            continue
        if name in seen:
            issues.append(ConfigIssue(where, f"logger {name!r} is listed twice"))
        seen.add(name)
        if isinstance(entry, Mapping):
            extra = {k: v for k, v in entry.items() if k != "name"}
            issues += check_options(registry.get("logger", name), extra, reserved=frozenset(), path=where)
    return issues


def config_provenance(config: Mapping[str, Any], options: TrainerOptions, registry: Registry) -> list[dict[str, str]]:
    """Where each plugin a run's config names besides its model's components comes from (``[{kind, name,
    plugin, distribution, version}]``, :func:`mmcore.model.plugin_provenance`): its dataset (``data.name``),
    loggers (``trainer.loggers``, or the default ones), balancer (``trainer.balancer``) and augmentation
    perturbations (``trainer.augment``). Saved in ``model.json`` beside the model's, so that training the run
    again or resuming it where one is not installed names the package to install
    (:func:`mmcore.engine.artefacts.check_run_plugins`), not an "unknown name"."""
    from mmcore.model import plugin_provenance

    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    entries = [("dataset", data["name"])] if isinstance(data.get("name"), str) else []
    entries += [("logger", name) for name, _ in logger_specs(options)]
    balancer = balancer_spec(options)
    if balancer is not None and isinstance(balancer[0], str):
        entries.append(("balancer", balancer[0]))
    entries += [("perturbation", str(name)) for levels in options.augment.values() if isinstance(levels, Mapping)
                for name in levels]
    return plugin_provenance(entries, registry)


def balancer_spec(options: TrainerOptions) -> tuple[str, dict[str, Any]] | None:
    """``trainer.balancer`` as ``(name, options)``, or None (its shape is checked by :func:`validate_config`)."""
    entry = options.balancer
    if entry is None:
        return None
    if isinstance(entry, str):
        return entry, {}
    return entry.get("name"), {k: v for k, v in entry.items() if k != "name"}


def _check_balancer(options: TrainerOptions, registry: Registry) -> list[ConfigIssue]:
    """``trainer.balancer`` names a registered balancer, with options its factory takes."""
    if options.balancer is None:
        return []
    name, extra = balancer_spec(options)
    if not isinstance(name, str) or not name:
        return [ConfigIssue("trainer.balancer", f"expected a balancer name or {{name: NAME, option: value}}, got {options.balancer!r}")]
    if ("balancer", name) not in registry:
        return [ConfigIssue("trainer.balancer", registry.unknown_message("balancer", name))]
    return check_options(registry.get("balancer", name), extra, reserved=frozenset(), path="trainer.balancer")
