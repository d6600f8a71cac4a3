"""Run configs: one YAML file with ``data``, ``model`` and ``trainer`` sections, plus dotted overrides."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from mmcore.components import RESERVED_ARGUMENTS
from mmcore.errors import ConfigError, ConfigIssue, UnknownComponentError
from mmcore.model import validate_model_spec
from mmcore.options import check_options, type_mismatch
from mmcore.registry import Registry

SECTIONS = ("data", "model", "trainer")


@dataclasses.dataclass
class TrainerOptions:
    """The ``trainer`` section. Every field can be overridden as ``trainer.<field>=value``."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    grad_clip: float | None = 1.0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    run_dir: str = "runs/latest"
    monitor: str = "accuracy"
    num_workers: int = 0
    progress: bool = True
    modality_dropout: float = 0.0


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML config and apply ``key.path=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([ConfigIssue("", f"config file {str(path)!r} does not exist")])
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", f"config file {str(path)!r} is not valid YAML: {exc}")]) from exc
    if not isinstance(config, dict):
        raise ConfigError([ConfigIssue("", f"config file {str(path)!r} must hold a mapping, got {type(config).__name__}")])
    return apply_overrides(config, overrides)


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``config`` with each ``a.b.c=value`` applied; ``value`` is parsed as YAML."""
    config = copy.deepcopy(dict(config))
    issues = []
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            issues.append(ConfigIssue("", f"override {override!r} must look like key.path=value"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = config
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    if issues:
        raise ConfigError(issues)
    return config


def validate_config(config: Mapping[str, Any], registry: Registry) -> TrainerOptions:
    """Check all three sections without reading data or building anything; raise every problem together."""
    issues: list[ConfigIssue] = []
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
    issues += validate_model_spec(config.get("model"), registry, path="model")
    trainer, trainer_issues = _trainer_options(config.get("trainer") or {})
    issues += trainer_issues
    if issues:
        raise ConfigError(issues)
    return trainer


def _trainer_options(section: Any) -> tuple[TrainerOptions, list[ConfigIssue]]:
    if not isinstance(section, Mapping):
        return TrainerOptions(), [ConfigIssue("trainer", f"expected a mapping, got {type(section).__name__}")]
    hints = typing.get_type_hints(TrainerOptions)
    valid = [f.name for f in dataclasses.fields(TrainerOptions)]
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
    for name in ("epochs", "batch_size"):
        if getattr(options, name) < 1:
            issues.append(ConfigIssue(f"trainer.{name}", f"must be at least 1, got {getattr(options, name)}"))
    if options.lr <= 0:
        issues.append(ConfigIssue("trainer.lr", f"must be positive, got {options.lr}"))
    return options, issues
