"""A search space: which config keys ``mmcore tune`` varies, and over what.

``SPACE.yaml`` maps dotted config keys -- the same paths as ``key.path=value`` overrides on the
command line -- to a distribution::

    trainer.lr: {low: 3.0e-4, high: 3.0e-3, log: true}     # a float (log-uniform)
    model.encoders.image.width: {low: 16, high: 48, step: 8} # an int (low, high and step ints)
    trainer.modality_dropout: {low: 0.0, high: 0.3}          # a float (uniform)
    model.fusion.name: [gated, concat, attention]            # a choice (short for {choices: [...]})
    model.fusion: {choices: [{name: gated, dim: 64}, {name: concat, dim: 128}]}   # whole sections

Choices may be any YAML values (numbers, strings, lists, mappings); Optuna sees each as its JSON
text, so a study's parameters read as the values they stand for. Everything is checked before
any trial: the entries' shapes here, and the config each distribution's extreme values give
(:func:`corner_configs`) against the registry, so a misspelt option fails in a second, not after
an hour of trials.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmcore.errors import ConfigError, ConfigIssue

_NUMBER = (int, float)
_KEYS = {"choices", "low", "high", "log", "step"}


@dataclass(frozen=True)
class Dimension:
    """One searched config key: a choice among ``choices``, or a number in ``[low, high]``."""

    key: str
    choices: tuple[Any, ...] | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in (self.low, self.high) if v is not None) \
            and (self.step is None or isinstance(self.step, int))

    def distribution(self):
        """The Optuna distribution of this key (choices as their JSON texts)."""
        import optuna

        if self.choices is not None:
            return optuna.distributions.CategoricalDistribution([encode(c) for c in self.choices])
        if self.is_int:
            return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log,
                                                      step=None if self.step is None else float(self.step))

    def value(self, param: Any) -> Any:
        """The config value an Optuna parameter stands for."""
        return decode(param) if self.choices is not None else param

    def extremes(self) -> list[Any]:
        """The values a corner check tries: every choice, or both ends of the range."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


def encode(value: Any) -> Any:
    """A choice as Optuna stores it: plain scalars as themselves, anything else as JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def decode(param: Any) -> Any:
    if isinstance(param, str) and param[:1] in "[{":
        try:
            return json.loads(param)
        except ValueError:
            return param
    return param


def parse_space(raw: Any, source: str = "the search space") -> list[Dimension]:
    """``SPACE.yaml``'s content -> its dimensions, in file order.

    :raises ConfigError: every malformed entry at once (path ``<key>``): not a mapping or list,
        an unknown field, ``low >= high``, ``log`` with ``low <= 0``, an empty choice list,
        non-numeric bounds, a ``step`` that is not positive.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError([ConfigIssue("", f"{source} must map config keys to distributions, e.g. "
                                           "'trainer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}'; got "
                                           f"{type(raw).__name__ if raw else 'nothing'}")])
    issues, dims = [], []
    for key, spec in raw.items():
        key = str(key)
        if not key or any(not part for part in key.split(".")) or key.split(".")[0] not in ("data", "model", "trainer"):
            issues.append(ConfigIssue(key, "a searched key is a dotted config path starting with data, model or trainer"))
            continue
        if isinstance(spec, list):
            spec = {"choices": spec}
        if not isinstance(spec, Mapping):
            issues.append(ConfigIssue(key, f"expected {{low, high[, log, step]}}, {{choices: [...]}} or a list of choices, "
                                           f"got {spec!r}"))
            continue
        unknown = sorted(set(spec) - _KEYS)
        if unknown:
            issues.append(ConfigIssue(key, f"unknown field(s) {unknown}; a distribution has choices, or low/high with "
                                           "optional log and step"))
            continue
        if "choices" in spec:
            choices = spec["choices"]
            if set(spec) != {"choices"}:
                issues.append(ConfigIssue(key, "give either choices or low/high, not both"))
            elif not isinstance(choices, list) or not choices:
                issues.append(ConfigIssue(key, f"choices must be a non-empty list, got {choices!r}"))
            elif len({encode(c) for c in choices}) != len(choices):
                issues.append(ConfigIssue(key, f"choices must differ from each other, got {choices!r}"))
            else:
                dims.append(Dimension(key, choices=tuple(choices)))
            continue
        low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
        problem = None
        if any(isinstance(v, bool) or not isinstance(v, _NUMBER) or not math.isfinite(v) for v in (low, high)):
            problem = f"low and high must be numbers, got low={low!r}, high={high!r}"
        elif not low < high:
            problem = f"low must be below high, got low={low}, high={high}"
        elif not isinstance(log, bool):
            problem = f"log must be true or false, got {log!r}"
        elif log and low <= 0:
            problem = f"a log scale needs low > 0, got {low}"
        elif step is not None and (isinstance(step, bool) or not isinstance(step, _NUMBER) or not step > 0):
            problem = f"step must be a number > 0, got {step!r}"
        elif step is not None and log:
            problem = "a log scale cannot have a step (Optuna's rule)"
        if problem:
            issues.append(ConfigIssue(key, problem))
        else:
            dims.append(Dimension(key, low=low, high=high, log=log, step=step))
    if issues:
        raise ConfigError([ConfigIssue(f"{source}: {i.path}" if i.path else source, i.message) for i in issues])
    return dims


def override(key: str, value: Any) -> str:
    """``key=value`` in the command line's override syntax (the value as JSON, which YAML reads back)."""
    return f"{key}={json.dumps(value)}"


def apply_params(config: Mapping[str, Any], dims: Sequence[Dimension], params: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with each dimension's key set to the value its Optuna parameter stands for."""
    from mmcore.engine.config import apply_overrides

    return apply_overrides(config, [override(d.key, d.value(params[d.key])) for d in dims if d.key in params])


def corner_configs(config: Mapping[str, Any], dims: Sequence[Dimension]) -> list[tuple[str, dict[str, Any]]]:
    """``(what, config)`` for each extreme value of each dimension, the others at their first
    extreme: what :func:`check_space` validates before any trial."""
    first = {d.key: d.extremes()[0] for d in dims}
    out = []
    for d in dims:
        for value in d.extremes():
            values = {**first, d.key: value}
            from mmcore.engine.config import apply_overrides

            out.append((f"{d.key}={json.dumps(value)}", apply_overrides(config, [override(k, v) for k, v in values.items()])))
    return out


def check_space(config: Mapping[str, Any], dims: Sequence[Dimension], registry) -> None:
    """Validate the config at every corner of the space (:func:`corner_configs`); ConfigError
    naming the value that breaks it (the first such problem of each dimension value)."""
    from mmcore.engine.config import validate_config

    issues = []
    for what, candidate in corner_configs(config, dims):
        try:
            validate_config(candidate, registry)
        except ConfigError as exc:
            issues += [ConfigIssue(i.path, f"{i.message} (with {what} from the search space)") for i in exc.issues[:1]]
    if issues:
        raise ConfigError(issues)


_MISSING = object()


def base_value(config: Mapping[str, Any], key: str, registry) -> Any:
    """The value ``key`` has in ``config`` -- a trainer option's or a component option's default when
    the config leaves it out -- or ``_MISSING`` when that cannot be told."""
    node: Any = config
    parts = key.split(".")
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            node = _MISSING
            break
        node = node[part]
    if node is not _MISSING:
        return node
    import dataclasses
    import inspect

    from mmcore.engine.config import TrainerOptions
    from mmcore.options import factory_parameters

    if parts[0] == "trainer" and len(parts) == 2:
        field = {f.name: f for f in dataclasses.fields(TrainerOptions)}.get(parts[1])
        if field is not None:
            return field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        return _MISSING
    model = config.get("model") or {}
    entry, kind = None, None
    if parts[:2] == ["model", "encoders"] and len(parts) == 4:
        entry, kind = (model.get("encoders") or {}).get(parts[2]), "encoder"
    elif parts[0] == "model" and parts[1] in ("fusion", "head") and len(parts) == 3:
        entry, kind = model.get(parts[1]), parts[1]
    if not isinstance(entry, Mapping) or ("name" not in entry) or (kind, entry["name"]) not in registry:
        return _MISSING
    params, _ = factory_parameters(registry.get(kind, entry["name"]).factory)
    param = params.get(parts[-1])
    return _MISSING if param is None or param.default is inspect.Parameter.empty else param.default


def baseline_params(config: Mapping[str, Any], dims: Sequence[Dimension], registry) -> tuple[dict[str, Any] | None, str]:
    """The Optuna parameters that reproduce ``config`` itself, when every dimension's value in it lies
    in the space (then it is the study's first trial); else ``(None, why)``."""
    params = {}
    for d in dims:
        value = base_value(config, d.key, registry)
        if value is _MISSING:
            return None, f"{d.key} has no value in the config"
        if d.choices is not None:
            if encode(value) not in [encode(c) for c in d.choices]:
                return None, f"{d.key}={json.dumps(value)} is not among its choices"
            params[d.key] = encode(value)
            continue
        if isinstance(value, bool) or not isinstance(value, _NUMBER) or not d.low <= value <= d.high:
            return None, f"{d.key}={json.dumps(value)} is outside [{d.low}, {d.high}]"
        if d.step is not None and abs((value - d.low) / d.step - round((value - d.low) / d.step)) > 1e-9:
            return None, f"{d.key}={json.dumps(value)} is not on its grid (step {d.step})"
        params[d.key] = int(value) if d.is_int else float(value)
    return params, ""
