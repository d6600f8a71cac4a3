"""The component registry: which encoders, fusions, heads, datasets, ... exist, and who owns them;
and which modalities exist and which file extensions each reads (:meth:`PluginRegistry.add_modality`)."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mmcore.errors import DuplicateComponentError, UnknownComponentError

#: The kinds of component a plugin can register.
KINDS: tuple[str, ...] = ("encoder", "fusion", "head", "dataset", "logger", "perturbation", "balancer")


@dataclass(frozen=True)
class ModalityInfo:
    """One plugin's declaration of a modality and the file extensions its encoders' processors read.

    Attributes:
        name: the modality ("image", "audio", ...), as encoders declare it in ``modality``.
        extensions: lower-case suffixes with the dot (".png"), or a zero-argument callable returning
            them -- so a plugin can name a reader library's list (Pillow's, libsndfile's) without
            importing the library while plugins are discovered.
        plugin: name of the plugin that declared it.
        distribution: the distribution that ships the plugin (None for runtime plugins).
        doc: one line saying what raw inputs the modality takes.
    """

    name: str
    extensions: tuple[str, ...] | Callable[[], Any]
    plugin: str
    distribution: str | None = None
    doc: str = ""

    @property
    def owner(self) -> str:
        where = f" from distribution {self.distribution!r}" if self.distribution else ""
        return f"plugin {self.plugin!r}{where}"

    def suffixes(self) -> frozenset[str]:
        """The declared extensions (a callable is called here), checked and lower-cased."""
        values = self.extensions() if callable(self.extensions) else self.extensions
        return frozenset(_check_extensions(self.name, values, self.owner))


def _check_extensions(modality: str, values: Any, owner: str) -> list[str]:
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise TypeError(f"modality {modality!r} ({owner}): extensions must be an iterable of suffixes like '.png', got {values!r}")
    out = []
    for ext in values:
        if not isinstance(ext, str) or not ext.startswith(".") or len(ext) < 2 or "/" in ext:
            raise ValueError(f"modality {modality!r} ({owner}): an extension must be a suffix with its dot like '.png', got {ext!r}")
        out.append(ext.lower())
    return out


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

    def options(self) -> list[dict[str, Any]]:
        """The options a config may set, from the factory's signature (arguments the framework
        fills itself, like a fusion's ``input_dims``, left out): ``{"name", "type", "default",
        "required"}`` each; ``type`` is the annotation as written (None when absent) and
        ``default`` a JSON value (its ``repr`` when it is not one)."""
        import json

        from mmcore.components import RESERVED_ARGUMENTS

        try:
            signature = inspect.signature(self.factory)
        except (TypeError, ValueError):  # a builtin without a signature
            return []
        reserved = RESERVED_ARGUMENTS.get(self.kind, frozenset())
        out = []
        for param in signature.parameters.values():
            if param.name in reserved or param.name == "self" or param.kind not in (
                    inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
                continue
            annotation = param.annotation
            kind = None if annotation is inspect.Parameter.empty else (
                annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation)))
            required = param.default is inspect.Parameter.empty
            default = None if required else param.default
            try:
                json.dumps(default)
            except (TypeError, ValueError):
                default = repr(default)
            out.append({"name": param.name, "type": kind, "default": default, "required": required})
        return out


class Registry:
    """All registered components, by kind and name.

    A name registered again with ``override=True`` shadows the earlier entry; when the
    overriding plugin is unregistered the earlier one is visible again.
    """

    def __init__(self) -> None:
        self._stacks: dict[tuple[str, str], list[ComponentInfo]] = {}
        self._modalities: list[ModalityInfo] = []
        self._extension_map: dict[str, str] | None = None

    # ------------------------------------------------------------------ modalities
    def modalities(self) -> dict[str, list[ModalityInfo]]:
        """Every declared modality, with the declarations (several plugins may add extensions to one)."""
        out: dict[str, list[ModalityInfo]] = {}
        for info in self._modalities:
            out.setdefault(info.name, []).append(info)
        return dict(sorted(out.items()))

    def extensions(self, modality: str) -> frozenset[str]:
        """The file extensions (".png", ...) declared for ``modality``; empty if none."""
        return frozenset().union(*(info.suffixes() for info in self._modalities if info.name == modality))

    def extension_modalities(self) -> dict[str, str]:
        """``{extension: modality}`` over every declaration (``mmcore predict``'s bare paths, ``fit``'s
        columns). An extension two modalities claim is left out: which one a file is cannot be
        told from its name (the caller asks the user to name the slot)."""
        if self._extension_map is None:
            claims: dict[str, set[str]] = {}
            for info in self._modalities:
                for ext in info.suffixes():
                    claims.setdefault(ext, set()).add(info.name)
            self._extension_map = {ext: names.pop() for ext, names in sorted(claims.items()) if len(names) == 1}
        return dict(self._extension_map)

    def modality_of(self, path: Any) -> str | None:
        """The modality whose declared extensions include ``path``'s suffix (case-insensitive), or None."""
        import os

        return self.extension_modalities().get(os.path.splitext(os.fspath(path))[1].lower())

    def add_modality(self, info: ModalityInfo) -> None:
        """Add a declaration; static extensions another modality already claims are an error naming both owners."""
        if not isinstance(info.name, str) or not info.name:
            raise ValueError(f"a modality name must be a non-empty string, got {info.name!r} ({info.owner})")
        if not callable(info.extensions):
            mine = set(_check_extensions(info.name, info.extensions, info.owner))
            for other in self._modalities:
                if other.name != info.name and not callable(other.extensions):
                    clash = sorted(mine & set(other.suffixes()))
                    if clash:
                        raise DuplicateComponentError(
                            f"extension(s) {clash} declared for modality {info.name!r} by {info.owner} and for "
                            f"modality {other.name!r} by {other.owner}; a file's modality must follow from its extension")
        self._modalities.append(info)
        self._extension_map = None

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
        """Remove every entry (and modality declaration) ``plugin`` registered; return the entries."""
        self._modalities = [info for info in self._modalities if info.plugin != plugin]
        self._extension_map = None
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
        """Register ``factory`` as the ``kind`` called ``name``; return its entry.

        ``modality`` (encoders, perturbations) has one source: the class's ``modality`` attribute,
        or the argument for a factory that is not a class; both given and different is a ValueError.
        """
        modality = _one_modality(kind, name, factory, modality)
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

    def add_encoder(self, name: str, factory: Callable[..., Any], *, modality: str | None = None, **kwargs: Any) -> ComponentInfo:
        """Register an encoder of ``modality`` data ("image", "text", "audio", "tabular", "video", ...).

        The modality has one source: the encoder class's ``modality`` attribute, or ``modality``
        here for a factory that is not a class. Giving both is allowed only when they agree.

        Raises:
            ValueError: no modality from either source, or the two disagree (both are named).
        """
        modality = _one_modality("encoder", name, factory, modality)
        if modality is None:
            raise ValueError(f"encoder {name!r}: modality must be a non-empty string (set {getattr(factory, '__qualname__', name)}.modality "
                             "or pass modality=...), got None")
        return self.add("encoder", name, factory, modality=modality, **kwargs)

    def add_modality(self, name: str, *, extensions: Any, doc: str = "") -> ModalityInfo:
        """Declare that ``name`` data is read from files with these ``extensions``.

        ``extensions``: suffixes with the dot (``(".png", ".jpg")``), or a zero-argument callable
        returning them, called the first time they are needed (so discovery imports no reader
        library). ``mmcore predict`` sends a bare file path to the slot of this modality, and
        ``mmcore fit`` infers a column's kind from its files' suffixes. Several plugins may add
        extensions to one modality; one extension claimed by two modalities is an error naming
        both plugins (static lists) or is left to the user to assign (lazy lists).
        """
        static = not callable(extensions) and not isinstance(extensions, str) and hasattr(extensions, "__iter__")
        info = ModalityInfo(name=name, extensions=tuple(extensions) if static else extensions,
                            plugin=self.plugin, distribution=self.distribution, doc=doc)
        self._registry.add_modality(info)
        return info

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
        """Register a training logger: ``factory(**options)`` returns an object whose lifecycle hook
        methods (``@mmcore.hookimpl``) run while a run lists it in ``trainer.loggers``
        (:mod:`mmcore.engine.loggers`)."""
        return self.add("logger", name, factory, **kwargs)

    def add_perturbation(self, name: str, factory: Callable[..., Any], **kwargs: Any) -> ComponentInfo:
        """Register a perturbation used by robustness evaluation."""
        return self.add("perturbation", name, factory, **kwargs)

    def add_balancer(self, name: str, factory: Callable[..., Any], **kwargs: Any) -> ComponentInfo:
        """Register a modality balancer: ``factory(**options)`` returns an object whose training hook
        methods (``@mmcore.hookimpl``: ``mmcore_train_loss``, ``mmcore_before_optimizer_step``, the
        lifecycle hooks) run on every process while a run names it in ``trainer.balancer``
        (:mod:`mmcore.engine.balancers`)."""
        return self.add("balancer", name, factory, **kwargs)


def _one_modality(kind: str, name: str, factory: Any, modality: Any) -> str | None:
    """The component's modality from its class attribute and/or the registration argument (one source)."""
    if modality is not None and (not isinstance(modality, str) or not modality):
        raise ValueError(f"{kind} {name!r}: modality must be a non-empty string, got {modality!r}")
    declared = getattr(factory, "modality", None) if isinstance(factory, type) else None
    if not isinstance(declared, str) or declared in ("", "unknown"):  # mmcore.Encoder's placeholder
        declared = None
    if declared is not None and modality is not None and declared != modality:
        raise ValueError(f"{kind} {name!r}: registered with modality={modality!r} but {factory.__qualname__}.modality is "
                         f"{declared!r}; declare the modality in one place (the class attribute)")
    return modality if modality is not None else declared


def first_doc_line(obj: Any) -> str:
    """The first sentence of ``obj``'s docstring, on one line (a sentence wrapped over several lines
    is joined, not cut): up to the first ``.``/``!``/``?`` followed by a capital letter, else the
    whole first paragraph."""
    doc = (inspect.getdoc(obj) or "").strip()
    paragraph = " ".join(line.strip() for line in doc.split("\n\n")[0].splitlines())
    end = re.search(r"(?<=[.!?])\s+(?=[A-Z])", paragraph)
    return paragraph[: end.start()] if end else paragraph


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")
