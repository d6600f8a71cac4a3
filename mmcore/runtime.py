"""Registering plugins at run time, without packaging: for notebooks, scripts and tests.

    with mmcore.register_plugin(my_module):      # unregistered again on exit
        model = mmcore.build_model(spec)

    @mmcore.register_fusion("my_fusion")
    class MyFusion(mmcore.Fusion): ...
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from mmcore.plugin_manager import MmcorePluginManager, get_plugin_manager, hookimpl

T = TypeVar("T")
_counter = itertools.count(1)


class PluginHandle:
    """A plugin registered at run time; ``unregister()`` (or leaving its ``with`` block) removes it.

    ``owned=False``: the plugin was registered before (e.g. installed and loaded from its entry
    point); the handle leaves it registered."""

    def __init__(self, manager: MmcorePluginManager, name: str, *, owned: bool = True) -> None:
        self.manager = manager
        self.name = name
        self.owned = owned

    @property
    def components(self):
        return self.manager.registry.by_plugin(self.name)

    def unregister(self) -> None:
        if self.owned:
            self.manager.unload_plugin(self.name)

    def __enter__(self) -> PluginHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unregister()

    def __repr__(self) -> str:
        return f"<PluginHandle {self.name!r}: {len(self.components)} component(s)>"


def register_plugin(
    plugin: object, name: str | None = None, *, manager: MmcorePluginManager | None = None
) -> PluginHandle:
    """Register ``plugin`` (a module or object with ``@mmcore.hookimpl`` functions) now.

    Errors (a duplicate component name, a registration hook that raises) propagate and leave
    nothing behind. Returns a handle usable as a context manager that unregisters on exit. A plugin
    that is registered already (an installed module, loaded from its entry point) stays as it is:
    the handle names that registration and leaves it in place on exit.
    """
    manager = manager or get_plugin_manager()
    if manager.is_registered(plugin):
        return PluginHandle(manager, manager.get_name(plugin), owned=False)
    if name is None:
        base = getattr(plugin, "__name__", None) or type(plugin).__name__
        name = f"{base}#{next(_counter)}"
    if manager.get_plugin(name) is not None or name in manager.records:
        raise ValueError(f"a plugin named {name!r} is already registered; pass another name")
    manager.load_plugin(plugin, name)
    return PluginHandle(manager, name)


class _SingleComponentPlugin:
    """A plugin registering exactly one component: what the class decorators create."""

    def __init__(self, kind: str, name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
        self.kind, self.component_name, self.factory, self.options = kind, name, factory, dict(options)

    @hookimpl
    def mmcore_register(self, registry) -> None:
        getattr(registry, f"add_{self.kind}")(self.component_name, self.factory, **self.options)


def _decorator(kind: str) -> Callable[..., Callable[[T], T]]:
    def register(
        name: str,
        *,
        override: bool = False,
        doc: str | None = None,
        example_options: Mapping[str, Any] | None = None,
        manager: MmcorePluginManager | None = None,
        **extra: Any,
    ) -> Callable[[T], T]:
        def wrap(factory: T) -> T:
            options = {"override": override, "doc": doc, "example_options": example_options, **extra}
            plugin = _SingleComponentPlugin(kind, name, factory, options)  # type: ignore[arg-type]
            handle = register_plugin(plugin, name=f"{kind}:{name}#{next(_counter)}", manager=manager)
            factory.__mmcore_plugin__ = handle  # type: ignore[attr-defined]  # lets tests unregister
            return factory

        return wrap

    register.__name__ = f"register_{kind}"
    register.__doc__ = f"Class/function decorator registering a {kind} called ``name`` at run time."
    return register


register_encoder = _decorator("encoder")
register_fusion = _decorator("fusion")
register_head = _decorator("head")
register_dataset = _decorator("dataset")
