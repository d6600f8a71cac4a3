"""Plugin discovery and loading (pluggy + the entry-point group ``mmcore``).

Plugins fail alone: a plugin that raises (or calls ``sys.exit()``) while importing or
registering, whose ``mmcore_add_commands`` raises or re-adds an existing command, or whose
lifecycle hook raises, is reported (``mmcore plugins``) without breaking the other plugins or
the commands; what a plugin prints while loading is captured, never mixed into a command's
output. Ctrl-C (KeyboardInterrupt) is never swallowed.

Nothing here runs at import time: :func:`create_plugin_manager` builds a manager on demand and
:func:`get_plugin_manager` caches the process's default one the first time it is asked for.

Environment:
    MMCORE_DISABLE_PLUGINS=a,b        block these plugins (entry-point names, or dist:name) before import
    MMCORE_DISABLE_PLUGIN_AUTOLOAD=1  load no third-party entry points (built-ins still load)
    MMCORE_STRICT_PLUGINS=1           a plugin that fails to load is an error, not a report
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as metadata
import io
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from mmcore import hookspecs
from mmcore.errors import PluginError, PluginHookError
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
    status: str  # "ok" | "failed" | "blocked" | "partial" (loaded, but its commands were dropped)
    error: str | None = None
    components: list[ComponentInfo] = field(default_factory=list)
    #: milliseconds spent importing the plugin and running its ``mmcore_register`` (None if never imported)
    import_ms: float | None = None
    #: what the plugin printed (stdout and stderr) while loading or adding commands, captured
    output: str = ""
    #: the entry point's name and target (``name = module:attr``); None for runtime plugins
    entry_point: str | None = None
    #: sub-commands the plugin added to the ``mmcore`` command line
    commands: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        """``distribution name version`` (or ``registered at run time``), for messages."""
        if not self.distribution:
            return "registered at run time"
        return f"distribution {self.distribution}" + (f" {self.version}" if self.version else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "import_ms": None if self.import_ms is None else round(self.import_ms, 1),
            "output": self.output,
            "entry_point": self.entry_point,
            "commands": list(self.commands),
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
        if isinstance(exc, SystemExit):
            record.error = f"called sys.exit({exc.code!r}) while loading"
        else:
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
        Two distributions declaring the same entry-point name both load: the first keeps the
        name, the later one is named ``<distribution>:<name>`` (its record says so). Each
        plugin's import and registration run with stdout/stderr captured and are timed; any
        exception, ``SystemExit`` included, fails that plugin alone.
        """
        eps = entry_points if entry_points is not None else list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        seen: dict[str, str | None] = {}  # plugin name -> distribution
        loaded: set[tuple[str | None, str]] = set()
        dists: dict[int, tuple[str | None, str | None]] = {}  # each distribution's metadata parsed once
        for ep in sorted(eps, key=lambda ep: _entry_point_order(ep, dists)):
            dist_name, dist_version = _distribution_of(ep, dists)
            if (dist_name, ep.name) in loaded:
                # The same distribution listed twice on sys.path (e.g. an editable install plus a
                # stale egg-info) - load it once.
                continue
            loaded.add((dist_name, ep.name))
            name, note = ep.name, None
            if ep.name in seen:
                name = f"{dist_name}:{ep.name}"
                note = (f"entry-point name {ep.name!r} is also declared by distribution {seen[ep.name]}; "
                        f"this one is loaded as {name!r}")
                logger.warning("mmcore plugin %s", note)
            seen.setdefault(ep.name, dist_name)
            target = f"{ep.name} = {ep.value}"
            if ep.name in disabled or name in disabled or f"{dist_name}:{ep.name}" in disabled:
                self.records[name] = PluginRecord(
                    name, dist_name, dist_version, "blocked", "blocked by MMCORE_DISABLE_PLUGINS", entry_point=target
                )
                continue
            if not autoload and dist_name != BUILTIN_DISTRIBUTION:
                self.records[name] = PluginRecord(
                    name, dist_name, dist_version, "blocked", "third-party autoload disabled by MMCORE_DISABLE_PLUGIN_AUTOLOAD",
                    entry_point=target,
                )
                continue
            out = io.StringIO()
            failure: BaseException | None = None
            started = time.perf_counter()
            try:
                with _captured(out):
                    record = self.load_plugin(ep.load(), name, distribution=dist_name, version=dist_version)
            except KeyboardInterrupt:
                raise
            except (Exception, SystemExit) as exc:
                failure = exc
                record = PluginRecord(name, dist_name, dist_version, "failed")
                self._fail(record, exc)
            record.import_ms = (time.perf_counter() - started) * 1000
            record.output = out.getvalue()
            record.entry_point = target
            if note:
                record.error = note if record.error is None else f"{record.error} ({note})"
            if failure is not None:
                self._report(record, failure)

    def _report(self, record: PluginRecord, exc: BaseException, what: str = "failed to load") -> None:
        where = f" (distribution {record.distribution} {record.version})" if record.distribution else ""
        message = f"mmcore plugin {record.name!r}{where} " + (f"{what}: " if what else "") + f"{record.error}"
        if self.strict:
            raise PluginError(message + "\n(MMCORE_STRICT_PLUGINS=1 makes this an error)") from exc
        logger.warning("%s", message)

    # ------------------------------------------------------------------ command line
    def add_commands(self, subparsers: argparse._SubParsersAction) -> None:
        """Run every plugin's ``mmcore_add_commands``, each isolated.

        A plugin whose hook raises, or adds a command (or alias) that already exists, loses the
        commands it added (they are removed again); its record turns ``partial`` with the error,
        a warning is logged, and every other command keeps working. Output is captured.
        """
        for impl in reversed(self.hook.mmcore_add_commands.get_hookimpls()):  # pluggy's call order
            name = impl.plugin_name
            record = self.records.get(name)
            before_names = dict(subparsers._name_parser_map)
            before_actions = len(subparsers._choices_actions)
            guard = _GuardedSubparsers(subparsers)
            out = io.StringIO()
            try:
                with _captured(out):
                    self._hookexec("mmcore_add_commands", [impl], {"subparsers": guard}, False)
            except KeyboardInterrupt:
                raise
            except (Exception, SystemExit) as exc:
                for key in [k for k in subparsers._name_parser_map if k not in before_names]:
                    del subparsers._name_parser_map[key]
                subparsers._name_parser_map.update(before_names)
                del subparsers._choices_actions[before_actions:]
                error = (f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}")
                if record is None:
                    record = self.records[name] = PluginRecord(name, None, None, "ok")
                record.status = "partial" if record.status == "ok" else record.status
                record.error = f"mmcore_add_commands failed, so its commands are unavailable: {error}"
                record.commands = []
                record.output += out.getvalue()
                self._report(record, exc, what="")
                continue
            if record is not None:
                record.output += out.getvalue()
                record.commands = [k for k in guard.added if k not in record.commands] + record.commands

    def command_owner(self, command: str) -> str | None:
        """``'name' (distribution ...)`` of the plugin that added ``command``; None for built-in commands."""
        for record in self.records.values():
            if command in record.commands and record.distribution != BUILTIN_DISTRIBUTION:
                return f"{record.name!r} ({record.origin})"
        return None

    # ------------------------------------------------------------------ lifecycle hooks
    def call_lifecycle(self, hook_name: str, **kwargs: Any) -> None:
        """Call the lifecycle hook ``hook_name`` on every plugin, in pluggy's order.

        Each implementation is called on its own, so a failure is attributed to its plugin:
        :class:`~mmcore.errors.PluginHookError` names the plugin, its distribution and the hook
        (the plugin's exception is its ``__cause__``). KeyboardInterrupt passes through.
        """
        self.call_collect(hook_name, **kwargs)

    def call_collect(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Like :meth:`call_lifecycle`, and returns ``[(plugin_name, result), ...]`` of the
        implementations that returned something other than None, in the order they were called."""
        results = []
        for impl in reversed(getattr(self.hook, hook_name).get_hookimpls()):
            try:
                result = self._hookexec(hook_name, [impl], kwargs, False)
            except KeyboardInterrupt:
                raise
            except (Exception, SystemExit) as exc:
                record = self.records.get(impl.plugin_name)
                distribution = None
                if record is not None and record.distribution:
                    distribution = record.distribution + (f" {record.version}" if record.version else "")
                raise PluginHookError(impl.plugin_name, distribution, hook_name, exc) from exc
            # pluggy's call with one implementation returns the list of its non-None results
            results.extend((impl.plugin_name, value) for value in result if value is not None)
        return results

    def has_hook(self, hook_name: str) -> bool:
        """Whether any plugin implements ``hook_name``."""
        return bool(getattr(self.hook, hook_name).get_hookimpls())


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


def _entry_point_order(ep: metadata.EntryPoint, cache: dict[int, tuple[str | None, str | None]]) -> tuple[int, str, str]:
    dist_name, _ = _distribution_of(ep, cache)
    return (0 if dist_name == BUILTIN_DISTRIBUTION else 1, dist_name or "", ep.name)


def _distribution_of(ep: metadata.EntryPoint, cache: dict[int, tuple[str | None, str | None]]
                     ) -> tuple[str | None, str | None]:
    """The name and version of the distribution declaring ``ep``. Its metadata is parsed once per discovery
    (``cache``, by the distribution object every one of its entry points shares, kept alive by them): each
    ``dist.metadata`` re-reads and re-parses the METADATA file -- 0.47 s of every command's start for the
    41 built-in entry points, measured under load 7 (benchmarks/bench_cli_startup.py)."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    if id(dist) not in cache:
        meta = dist.metadata
        cache[id(dist)] = (meta["Name"], meta["Version"])
    return cache[id(dist)]


@contextlib.contextmanager
def _captured(buffer: io.StringIO):
    """Send Python-level stdout and stderr into ``buffer`` (plugins must not write into a
    command's output, e.g. ``mmcore plugins --json``). Output written straight to the file
    descriptors by C code is not captured."""
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield


class _GuardedSubparsers:
    """The sub-parsers action as one plugin sees it: adding an existing command name is refused."""

    def __init__(self, action: argparse._SubParsersAction) -> None:
        self._action = action
        self.added: list[str] = []

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        taken = [n for n in (name, *kwargs.get("aliases", ())) if n in self._action._name_parser_map]
        if taken:
            raise ValueError(f"command {taken[0]!r} already exists; a plugin cannot replace it")
        parser = self._action.add_parser(name, **kwargs)
        self.added.append(name)
        return parser

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._action, attr)
