"""Training outputs as plugins: the loggers a run writes through (``trainer.loggers``).

A logger is a component of kind ``logger``, registered like any other
(``registry.add_logger(name, factory)`` in ``mmcore_register``). Its factory takes the options
of its ``trainer.loggers`` entry (``{name: wandb, project: demo}`` -> ``factory(project="demo")``)
and returns an object whose methods are lifecycle hook implementations -- ``mmcore_train_start``,
``mmcore_train_step_end``, ``mmcore_epoch_end``, ``mmcore_train_end`` (see
:mod:`mmcore.hookspecs`), each decorated with ``@mmcore.hookimpl``. For the duration of
:meth:`Trainer.fit <mmcore.engine.trainer.Trainer.fit>` the main process builds the configured
loggers and registers each object with the plugin manager (the way pytest registers its terminal
reporter), so a logger is called exactly where every plugin's lifecycle hooks are, in the order
``trainer.loggers`` lists them and before other plugins' hooks; a logger that raises stops the
run cleanly like any hook (:class:`~mmcore.errors.PluginHookError` naming ``logger <name>``).
Only the main process of a distributed run builds loggers: only it writes.

The built-in loggers (package ``mmcore_plugins.loggers``) are ``csv`` (``metrics.csv``),
``tensorboard`` (``tensorboard/``), ``progress`` (the tqdm bar and the per-epoch line) and
``plots`` (``plots/*.png``, listed in ``report["plots"]``). A third-party logger::

    class PrintLogger:
        def __init__(self, prefix: str = ">"):
            self.prefix = prefix

        @mmcore.hookimpl
        def mmcore_epoch_end(self, trainer, epoch, metrics):
            print(self.prefix, epoch, metrics["val/loss"])

    @mmcore.hookimpl
    def mmcore_register(registry):
        registry.add_logger("print", PrintLogger)

and ``trainer.loggers: [csv, progress, {name: print, prefix: "#"}]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mmcore import hookspecs
from mmcore.engine.config import DEFAULT_LOGGERS, logger_specs
from mmcore.errors import ConfigError, ConfigIssue, user_input_phase

#: The hooks a logger may implement.
LOGGER_HOOKS = ("mmcore_train_start", "mmcore_train_step_end", "mmcore_epoch_end", "mmcore_train_end")


def build_loggers(options, registry) -> list[tuple[str, Any]]:
    """``(name, logger)`` for every logger of the run, in ``trainer.loggers`` order.

    Default loggers (``trainer.loggers: null``) whose plugin is not loaded (blocked with
    ``MMCORE_DISABLE_PLUGINS``) are left out; a listed one that is not registered is a ConfigError.

    :raises ConfigError: an unknown logger, a factory that refuses its options, or a logger with
        a ``mmcore_*`` method that is not a lifecycle hook implementation (unknown name, or not
        decorated with ``@mmcore.hookimpl``).
    """
    built = []
    for index, (name, opts) in enumerate(logger_specs(options)):
        where = f"trainer.loggers.{index}" if options.loggers is not None else "trainer.loggers"
        if ("logger", name) not in registry:
            if options.loggers is None and name in DEFAULT_LOGGERS:
                continue
            raise ConfigError([ConfigIssue(where, registry.unknown_message("logger", name))])
        with user_input_phase(f"building logger {name!r}"):
            logger = registry.get("logger", name).factory(**opts)
        _check_hooks(logger, name, where)
        built.append((name, logger))
    return built


def _check_hooks(logger: Any, name: str, where: str) -> None:
    for attr in dir(type(logger)):
        if not attr.startswith("mmcore_"):
            continue
        if attr not in LOGGER_HOOKS:
            known = "" if not hasattr(hookspecs, attr) else " (a logger implements lifecycle hooks only)"
            raise ConfigError([ConfigIssue(where, f"logger {name!r} has method {attr!r}, which is not one of "
                                                  f"{', '.join(LOGGER_HOOKS)}{known}")])
        if getattr(getattr(logger, attr), "mmcore_impl", None) is None:
            raise ConfigError([ConfigIssue(where, f"logger {name!r}: method {attr!r} is not decorated with "
                                                  "@mmcore.hookimpl, so it would never be called")])


@contextlib.contextmanager
def attached_loggers(manager, loggers: list[tuple[str, Any]]) -> Iterator[None]:
    """Register ``loggers`` (:func:`build_loggers`) as plugins of ``manager`` until the block ends."""
    with attached_plugins(manager, [(f"logger {name}", logger) for name, logger in loggers]):
        yield


@contextlib.contextmanager
def attached_plugins(manager, plugins: list[tuple[str, Any]]) -> Iterator[None]:
    """Register ``(plugin name, object)`` pairs with ``manager`` until the block ends; the objects'
    hooks run in the listed order, before those of plugins registered earlier."""
    names = []
    try:
        # pluggy calls the most recently registered plugin first: register in reverse order so
        # they run in the listed order, and (registered after every other plugin) before the others.
        for plugin_name, plugin in reversed(plugins):
            if manager.get_plugin(plugin_name) is not None:  # a run in this process that never ended
                manager.unregister(name=plugin_name)
            manager.register(plugin, name=plugin_name)
            names.append(plugin_name)
        yield
    finally:
        for plugin_name in names:
            manager.unregister(name=plugin_name)
