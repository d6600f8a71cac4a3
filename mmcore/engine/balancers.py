"""Modality balancers as plugins: the one a run trains with (``trainer.balancer``).

A fused model learns the modality that fits first and starves the others (Wu et al. 2022, "greedy
learning"; Peng et al. 2022): a *balancer* changes the training signal so that every encoder keeps
learning. It is a component of kind ``balancer``, registered like any other
(``registry.add_balancer(name, factory)`` in ``mmcore_register``). Its factory takes the options
of ``trainer.balancer`` (``{name: ogm_ge, alpha: 0.3}`` -> ``factory(alpha=0.3)``) and returns an
object whose methods are hook implementations (``@mmcore.hookimpl``), among

* ``mmcore_train_loss(trainer, batch, output)``: extra loss terms from the batch's features
  (``output.features``, ``output.fused``; e.g. uni-modal losses), or statistics for the step;
* ``mmcore_before_optimizer_step(trainer, step)``: change the step's gradients in place (e.g. scale
  an encoder's gradients down);
* the lifecycle hooks (``mmcore_train_start``, ``mmcore_train_step_end``, ``mmcore_epoch_end``,
  ``mmcore_train_end``).

The trainer builds one fresh object per run, on every process of a distributed run (each must make
the same gradient change: reduce statistics with ``trainer.all_reduce_sum``), and registers it with
the plugin manager while :meth:`Trainer.fit <mmcore.engine.trainer.Trainer.fit>` runs, as
``balancer <name>``; a balancer that raises stops the run cleanly like any hook. The built-in
balancers (OGM-GE, AGM, G-Blend, MMPareto, MLA) live in ``mmcore_plugins.balancers``.

A balancer's own statistics (running means, blend weights, projectors) are not part of the
checkpoint: a resumed run starts them afresh (``trainer.balancer`` itself may not change on resume).
"""

from __future__ import annotations

from typing import Any

from mmcore import hookspecs
from mmcore.engine.config import balancer_spec
from mmcore.errors import ConfigError, ConfigIssue

#: The hooks a balancer may implement.
BALANCER_HOOKS = ("mmcore_train_start", "mmcore_train_loss", "mmcore_before_optimizer_step", "mmcore_train_step_end",
                  "mmcore_epoch_end", "mmcore_train_end")


def build_balancer(options, registry) -> tuple[str, Any] | None:
    """``(plugin name, balancer)`` for ``trainer.balancer``, or None when the run has none.

    :raises ConfigError: an unknown balancer, a factory that refuses its options, or a balancer with
        a ``mmcore_*`` method that is not one of :data:`BALANCER_HOOKS` decorated with ``@mmcore.hookimpl``.
    """
    spec = balancer_spec(options)
    if spec is None:
        return None
    name, opts = spec
    if ("balancer", name) not in registry:
        raise ConfigError([ConfigIssue("trainer.balancer", registry.unknown_message("balancer", name))])
    info = registry.get("balancer", name)
    try:
        balancer = info.factory(**opts)
    except (ValueError, TypeError) as exc:
        raise ConfigError([ConfigIssue("trainer.balancer", f"balancer {name!r} ({info.owner}) rejected its options: {exc}")]) from exc
    for attr in dir(type(balancer)):
        if not attr.startswith("mmcore_"):
            continue
        if attr not in BALANCER_HOOKS:
            known = " (not a training hook)" if hasattr(hookspecs, attr) else ""
            raise ConfigError([ConfigIssue("trainer.balancer", f"balancer {name!r} has method {attr!r}, which is not one of "
                                                               f"{', '.join(BALANCER_HOOKS)}{known}")])
        if getattr(getattr(balancer, attr), "mmcore_impl", None) is None:
            raise ConfigError([ConfigIssue("trainer.balancer", f"balancer {name!r}: method {attr!r} is not decorated with "
                                                               "@mmcore.hookimpl, so it would never be called")])
    return f"balancer {name}", balancer
