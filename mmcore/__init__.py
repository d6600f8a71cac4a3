"""mmcore: plugin-based multimodal deep learning on PyTorch.

A model is ``encoders (one per modality) -> fusion -> head``; every component is a plugin found
through pluggy and the entry-point group ``mmcore``. Importing this package discovers nothing
and imports no heavy library: plugins are loaded the first time the registry is asked for.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from mmcore import threads as _threads

if _threads.invoked_as_command():  # OpenMP reads its wait policy once, when PyTorch loads it (mmcore.threads)
    _threads.prefer_passive_waits()

from mmcore.components import Encoder, Fusion, Head, HeadOutput, PartialFit, Perturbation, Processor
from mmcore.errors import (
    ConfigError,
    ConfigIssue,
    DuplicateComponentError,
    MmcoreError,
    PluginError,
    UnknownComponentError,
)
from mmcore.features import Features, masked_mean
from mmcore.model import MultimodalModel, build_model, validate_model_spec
from mmcore.plugin_manager import (
    MmcorePluginManager,
    create_plugin_manager,
    get_plugin_manager,
    get_registry,
    hookimpl,
    reset_plugin_manager,
)
from mmcore.registry import KINDS, ComponentInfo, PluginRegistry, Registry
from mmcore.runtime import (
    PluginHandle,
    register_dataset,
    register_encoder,
    register_fusion,
    register_head,
    register_plugin,
)

try:
    __version__ = _metadata.version("mmcore")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

#: Names served by the plugin behind entry point ``autofit`` of group ``mmcore`` (``mmcore fit``).
_AUTOFIT_NAMES = ("fit", "Predictor")


def __getattr__(name: str):
    """``mmcore.fit`` and ``mmcore.Predictor``, loaded on first use from the ``autofit`` entry point.

    The core never imports a plugin package by name: the entry point is found like any plugin's
    (``MMCORE_DISABLE_PLUGINS=autofit`` blocks it), so another package may provide ``fit``.
    """
    if name not in _AUTOFIT_NAMES:
        raise AttributeError(f"module 'mmcore' has no attribute {name!r}")
    import os

    if "autofit" in {n.strip() for n in os.environ.get("MMCORE_DISABLE_PLUGINS", "").split(",")}:
        raise AttributeError(f"mmcore.{name} comes from the plugin 'autofit', blocked by MMCORE_DISABLE_PLUGINS")
    found = [ep for ep in _metadata.entry_points(group="mmcore") if ep.name == "autofit"]
    if not found:
        raise AttributeError(f"mmcore.{name} needs the plugin 'autofit' (entry point 'autofit' of group 'mmcore'), "
                             "which is not installed")
    value = getattr(found[0].load(), name)
    globals()[name] = value  # later look-ups skip this function
    return value

__all__ = [
    "KINDS",
    "ComponentInfo",
    "ConfigError",
    "ConfigIssue",
    "DuplicateComponentError",
    "Encoder",
    "Features",
    "Fusion",
    "Head",
    "HeadOutput",
    "MmcoreError",
    "MmcorePluginManager",
    "MultimodalModel",
    "PartialFit",
    "PluginError",
    "PluginHandle",
    "Perturbation",
    "PluginRegistry",
    "Processor",
    "Registry",
    "UnknownComponentError",
    "__version__",
    "build_model",
    "create_plugin_manager",
    "get_plugin_manager",
    "get_registry",
    "hookimpl",
    "masked_mean",
    "register_dataset",
    "register_encoder",
    "register_fusion",
    "register_head",
    "register_plugin",
    "reset_plugin_manager",
    "validate_model_spec",
]
