"""Plugin discovery and loading (pluggy + the entry-point group ``mmcore``).

Nothing here runs at import time: :func:`create_plugin_manager` builds a manager on demand and
:func:`get_plugin_manager` caches the process's default one the first time it is asked for.

Environment:
    MMCORE_DISABLE_PLUGINS=a,b        block these plugins (entry-point names) before import
    MMCORE_DISABLE_PLUGIN_AUTOLOAD=1  load no third-party entry points (built-ins still load)
    MMCORE_STRICT_PLUGINS=1           a plugin that fails to load is an error, not a report
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from mmcore import hookspecs
from mmcore.errors import PluginError
from mmcore.registry import ComponentInfo, PluginRegistry, Registry

logger = logging.getLogger("mmcore.plugins")

ENTRY_POINT_GROUP = "mmcore"
#: The distribution whose entry points are the built-in plugins.
BUILTIN_DISTRIBUTION = "mmcore"

hookimpl = pluggy.HookimplMarker("mmcore")

_TRUE = {"1", "true", "yes", "on"}


@dataclass
class PluginRecord:
    """What happened to one plugin: loaded, failed (with the error) or blocked (with the reason)."""

    name: str
    distribution: str | None
    version: str | None
    status: str  # "ok" | "failed" | "blocked"
    error: str | None = None
    components: list[ComponentInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "components": [
                {"kind": c.kind, "name": c.name, "modality": c.modality, "doc": c.doc} for c in self.components
            ],
        }


class MmcorePluginManager(pluggy.PluginManager):
    """A pluggy manager that also owns the component registry and a record of every plugin."""

    def __init__(self, *, strict: bool = False) -> None:
        super().__init__("mmcore")
        self.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.records: dict[str, PluginRecord] = {}
        self.strict = strict

    # ------------------------------------------------------------------ loading
    def load_plugin(self, plugin: object, name: str, *, distribution: str | None = None, version: str | None = None):
        """Register ``plugin`` under ``name`` and run its ``mmcore_register`` hook.

        Raises when pluggy rejects the plugin (a hook name that is not in the hookspecs, wrong
        arguments) or its registration hook raises; everything it added is rolled back first.
        """
        self.register(plugin, name=name)
        view = PluginRegistry(self.registry, plugin=name, distribution=distribution)
        try:
            # Fail on hook implementations that match no hookspec (a typo'd mmcore_* name).
            self.check_pending()
            for impl in self.hook.mmcore_register.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(**{arg: view for arg in impl.argnames if arg == "registry"})
        except Exception:
            self.registry.remove_plugin(name)
            self.unregister(plugin)
            raise
        record = PluginRecord(name=name, distribution=distribution, version=version, status="ok")
        record.components = self.registry.by_plugin(name)
        self.records[name] = record
        return record

    def _fail(self, record: PluginRecord, exc: BaseException) -> None:
        record.status = "failed"
        record.error = f"{type(exc).__name__}: {exc}"
        self.records[record.name] = record

    def unload_plugin(self, name: str) -> None:
        """Unregister a plugin and remove its components (shadowed components reappear)."""
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)
        self.registry.remove_plugin(name)
        self.records.pop(name, None)

    def load_entrypoints(
        self,
        *,
        disabled: set[str] | frozenset[str] = frozenset(),
        autoload: bool = True,
        entry_points: list[metadata.EntryPoint] | None = None,
    ) -> None:
        """Load every plugin of the ``mmcore`` entry-point group.

        Built-ins (distribution ``mmcore``) load first, then the others sorted by distribution
        and name, so when two plugins claim one component name the built-in always keeps it.
        """
        eps = entry_points if entry_points is not None else list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        seen: set[str] = set()
        for ep in sorted(eps, key=_entry_point_order):
            dist_name, dist_version = _distribution_of(ep)
            if ep.name in seen:
                # The same distribution listed twice on sys.path (e.g. an editable install plus a
                # stale egg-info) - load it once.
                continue
            seen.add(ep.name)
            if ep.name in disabled:
                self.records[ep.name] = PluginRecord(
                    ep.name, dist_name, dist_version, "blocked", "blocked by MMCORE_DISABLE_PLUGINS"
                )
                continue
            if not autoload and dist_name != BUILTIN_DISTRIBUTION:
                self.records[ep.name] = PluginRecord(
                    ep.name, dist_name, dist_version, "blocked", "third-party autoload disabled by MMCORE_DISABLE_PLUGIN_AUTOLOAD"
                )
                continue
            try:
                self.load_plugin(ep.load(), ep.name, distribution=dist_name, version=dist_version)
            except Exception as exc:
                record = PluginRecord(ep.name, dist_name, dist_version, "failed")
                self._fail(record, exc)
                self._report(record, exc)

    def _report(self, record: PluginRecord, exc: BaseException) -> None:
        where = f" (distribution {record.distribution} {record.version})" if record.distribution else ""
        message = f"mmcore plugin {record.name!r}{where} failed to load: {record.error}"
        if self.strict:
            raise PluginError(message + "\n(MMCORE_STRICT_PLUGINS=1 makes this an error)") from exc
        logger.warning("%s", message)


def create_plugin_manager(
    *, env: Mapping[str, str] | None = None, load_entrypoints: bool = True
) -> MmcorePluginManager:
    """Build a plugin manager and load the entry-point plugins, honouring the MMCORE_* variables."""
    env = os.environ if env is None else env
    manager = MmcorePluginManager(strict=env.get("MMCORE_STRICT_PLUGINS", "").strip().lower() in _TRUE)
    if load_entrypoints:
        disabled = {name.strip() for name in env.get("MMCORE_DISABLE_PLUGINS", "").split(",") if name.strip()}
        autoload = env.get("MMCORE_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() not in _TRUE
        manager.load_entrypoints(disabled=disabled, autoload=autoload)
    return manager


_default_manager: MmcorePluginManager | None = None
_default_lock = threading.Lock()


def get_plugin_manager() -> MmcorePluginManager:
    """The process's plugin manager, created (and entry points loaded) on first use."""
    global _default_manager
    with _default_lock:
        if _default_manager is None:
            _default_manager = create_plugin_manager()
        return _default_manager


def reset_plugin_manager() -> None:
    """Forget the default manager; the next :func:`get_plugin_manager` rediscovers plugins."""
    global _default_manager
    with _default_lock:
        _default_manager = None


def get_registry() -> Registry:
    """The default manager's registry."""
    return get_plugin_manager().registry


def _entry_point_order(ep: metadata.EntryPoint) -> tuple[int, str, str]:
    dist_name, _ = _distribution_of(ep)
    return (0 if dist_name == BUILTIN_DISTRIBUTION else 1, dist_name or "", ep.name)


def _distribution_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version
