"""Which config options name files, and rewriting them: shared by :mod:`mmcore.engine.config` (resolving
paths) and :mod:`mmcore.engine.rundir` (a run's paths relative to it), which must not import each other."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any


#: Component options naming a file or folder that must exist: ``path``, ``*_path``, ``*_file``,
#: ``*_dir`` and ``weights`` (string values only; None means "not used").
def is_path_option(name: str) -> bool:
    return name in ("path", "weights", "file") or name.endswith(("_path", "_file", "_dir"))


def map_path_options(config: Mapping[str, Any], change: Callable[[str], str], *,
                     cache_features: bool = True) -> dict[str, Any]:
    """A copy of ``config`` with ``change(value)`` applied to every path option's string value: the
    component options :func:`is_path_option` names (``data.path``, ``model.encoders.<slot>.weights``,
    ...) and, if ``cache_features``, ``trainer.cache_features`` when it names a folder
    (``trainer.run_dir`` is left alone)."""
    out = copy.deepcopy(dict(config))
    model = out.get("model") if isinstance(out.get("model"), dict) else {}
    encoders = model.get("encoders") if isinstance(model.get("encoders"), dict) else {}
    for entry in (out.get("data"), *encoders.values(), model.get("fusion"), model.get("head")):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if is_path_option(str(key)) and isinstance(value, str) and value:
                    entry[key] = change(value)
    trainer = out.get("trainer")
    if (cache_features and isinstance(trainer, dict) and isinstance(trainer.get("cache_features"), str)
            and trainer["cache_features"]):
        trainer["cache_features"] = change(trainer["cache_features"])
    return out
