"""Checking a component's options against its factory's signature, before anything is built."""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from mmcore.errors import ConfigIssue
from mmcore.registry import ComponentInfo


def factory_parameters(factory: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    """The named parameters of ``factory`` (a class: of its ``__init__``), and whether it takes ``**kwargs``."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: accept anything
        return {}, True
    params: dict[str, inspect.Parameter] = {}
    var_keyword = False
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            params[param.name] = param
    return params, var_keyword


def check_options(
    info: ComponentInfo, options: Mapping[str, Any], *, reserved: frozenset[str], path: str
) -> list[ConfigIssue]:
    """Every problem with ``options`` for the component ``info``; an empty list when they are fine.

    Checks unknown options (with the closest valid name), missing required options, and values
    whose type plainly contradicts the parameter's annotation.
    """
    params, var_keyword = factory_parameters(info.factory)
    hints = _type_hints(info.factory)
    valid = sorted(name for name in params if name not in reserved)
    label = f"{info.kind} {info.name!r}"
    issues: list[ConfigIssue] = []
    for key, value in options.items():
        where = f"{path}.{key}" if path else str(key)
        if key in reserved:
            issues.append(ConfigIssue(where, f"{key!r} is set by mmcore for {label}; remove it from the config"))
            continue
        if key not in params:
            if var_keyword:
                continue
            message = f"unknown option of {label}"
            close = difflib.get_close_matches(str(key), valid, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
            message += f" (valid options: {', '.join(valid) if valid else 'none'})"
            issues.append(ConfigIssue(where, message))
            continue
        hint = hints.get(key, params[key].annotation)
        problem = type_mismatch(value, hint)
        if problem:
            issues.append(ConfigIssue(where, f"option of {label} {problem}"))
    for name, param in params.items():
        if name in reserved or name in options:
            continue
        if param.default is inspect.Parameter.empty:
            where = f"{path}.{name}" if path else name
            issues.append(ConfigIssue(where, f"missing required option of {label}"))
    return issues


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        return {}


def type_mismatch(value: Any, annotation: Any) -> str | None:
    """A message when ``value`` cannot be of type ``annotation``; None when it fits or we cannot tell."""
    if annotation is inspect.Parameter.empty or annotation is Any or isinstance(annotation, str):
        return None
    if _fits(value, annotation):
        return None
    return f"expects {_type_name(annotation)}, got {type(value).__name__} {value!r}"


def _fits(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is None or annotation is type(None):
        return value is None
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, collections.abc.Sequence, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
        item = args[0] if args else None
        return item is None or all(_fits(v, item) for v in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping)
    if isinstance(annotation, type):
        # Other classes (Path, torch.dtype, ...) may be built from plain config values: don't guess.
        return True
    return True


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", None) or str(annotation)
