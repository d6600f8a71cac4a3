"""The component registry: which encoders, fusions, heads, datasets, ... exist, and who owns them."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mmcore.errors import DuplicateComponentError, UnknownComponentError

#: The kinds of component a plugin can register.
KINDS: tuple[str, ...] = ("encoder", "fusion", "head", "dataset", "logger", "perturbation")


@dataclass(frozen=True)
class ComponentInfo:
    """One registered component.

    Attributes:
        kind: one of :data:`KINDS`.
        name: the name configs use.
        factory: callable building the component (usually its class).
        plugin: name of the plugin that registered it.
        distribution: the installed distribution that ships the plugin (None for runtime plugins).
        modality: for encoders, the kind of data handled ("image", "text", ...); else None.
        doc: one line saying what it is.
        example_options: options that build a small instance, for conformance checks.
    """

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str | None = None
    modality: str | None = None
    doc: str = ""
    example_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        where = f" from distribution {self.distribution!r}" if self.distribution else ""
        return f"plugin {self.plugin!r}{where}"


class Registry:
    """All registered components, by kind and name.

    A name registered again with ``override=True`` shadows the earlier entry; when the
    overriding plugin is unregistered the earlier one is visible again.
    """

    def __init__(self) -> None:
        self._stacks: dict[tuple[str, str], list[ComponentInfo]] = {}

    # ------------------------------------------------------------------ lookup
    def get(self, kind: str, name: str) -> ComponentInfo:
        """The component ``name`` of ``kind``; UnknownComponentError lists what exists."""
        _check_kind(kind)
        stack = self._stacks.get((kind, name))
        if stack:
            return stack[-1]
        raise UnknownComponentError(self.unknown_message(kind, name))

    def unknown_message(self, kind: str, name: Any) -> str:
        names = self.names(kind)
        message = f"unknown {kind} {name!r}"
        close = difflib.get_close_matches(str(name), names, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        listing = ", ".join(names) if names else "none"
        return f"{message} (registered {kind}s: {listing})"

    def names(self, kind: str) -> list[str]:
        _check_kind(kind)
        return sorted(name for (k, name), stack in self._stacks.items() if k == kind and stack)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return bool(self._stacks.get(key))

    def __iter__(self) -> Iterator[ComponentInfo]:
        for (_kind, _name), stack in sorted(self._stacks.items()):
            if stack:
                yield stack[-1]

    def by_plugin(self, plugin: str) -> list[ComponentInfo]:
        """Every entry (active or shadowed) that ``plugin`` registered."""
        return [info for stack in self._stacks.values() for info in stack if info.plugin == plugin]

    # ------------------------------------------------------------------ mutation
    def add(self, info: ComponentInfo, *, override: bool = False) -> None:
        _check_kind(info.kind)
        if not isinstance(info.name, str) or not info.name:
            raise ValueError(f"a {info.kind} name must be a non-empty string, got {info.name!r}")
        if not callable(info.factory):
            raise TypeError(
                f"the factory of {info.kind} {info.name!r} must be callable (a class or function), "
                f"got {type(info.factory).__name__}"
            )
        stack = self._stacks.setdefault((info.kind, info.name), [])
        if stack and not override:
            existing = stack[-1]
            raise DuplicateComponentError(
                f"{info.kind} {info.name!r} is registered twice: by {existing.owner} and by {info.owner}; "
                f"rename one, block one (MMCORE_DISABLE_PLUGINS), or pass override=True to replace it"
            )
        stack.append(info)

    def remove_plugin(self, plugin: str) -> list[ComponentInfo]:
        """Remove every entry ``plugin`` registered; return them."""
        removed = []
        for key, stack in list(self._stacks.items()):
            kept = [info for info in stack if info.plugin != plugin]
            removed.extend(info for info in stack if info.plugin == plugin)
            if kept:
                self._stacks[key] = kept
            else:
                del self._stacks[key]
        return removed


class PluginRegistry:
    """The registry as one plugin sees it in ``mmcore_register``: every addition is owned by it."""

    def __init__(self, registry: Registry, plugin: str, distribution: str | None = None) -> None:
        self._registry = registry
        self.plugin = plugin
        self.distribution = distribution

    def add(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any],
        *,
        modality: str | None = None,
        doc: str | None = None,
        example_options: Mapping[str, Any] | None = None,
        override: bool = False,
    ) -> ComponentInfo:
        """Register ``factory`` as the ``kind`` called ``name``; return its entry."""
        info = ComponentInfo(
            kind=kind,
            name=name,
            factory=factory,
            plugin=self.plugin,
            distribution=self.distribution,
            modality=modality,
            doc=doc if doc is not None else first_doc_line(factory),
            example_options=dict(example_options or {}),
        )
        self._registry.add(info, override=override)
        return info

    def add_encoder(self, name: str, factory: Callable[..., Any], *, modality: str, **kwargs: Any) -> ComponentInfo:
        """Register an encoder of ``modality`` data ("image", "text", "audio", "tabular", "video", ...)."""
        if not isinstance(modality, str) or not modality:
            raise ValueError(f"encoder {name!r}: modality must be a non-empty string, got {modality!r}")
        return self.add("encoder", name, factory, modality=modality, **kwargs)

    def add_fusion(self, name: str, factory: Callable[..., Any], **kwargs: Any) -> ComponentInfo:
        """Register a fusion, built as ``factory(input_dims={slot: dim}, dim=..., **options)``."""
        return self.add("fusion", name, factory, **kwargs)

    def add_head(self, name: str, factory: Callable[..., Any], **kwargs: Any) -> ComponentInfo:
        """Register a head, built as ``factory(input_dim=fusion_dim, **options)``."""
        return self.add("head", name, factory, **kwargs)

    def add_dataset(self, name: str, factory: Callable[..., Any], **kwargs: Any) -> ComponentInfo:
        """Register a dataset, built as ``factory(split="train"|"val"|"test", **options)``."""
        return self.add("dataset", name, factory, **kwargs)

    def add_logger(self, name: str, factory: Callable[..., Any], **kwargs: Any) -> ComponentInfo:
        """Register a training logger."""
        return self.add("logger", name, factory, **kwargs)

    def add_perturbation(self, name: str, factory: Callable[..., Any], **kwargs: Any) -> ComponentInfo:
        """Register a perturbation used by robustness evaluation."""
        return self.add("perturbation", name, factory, **kwargs)


def first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")
