"""mmcore: plugin-based multimodal deep learning on PyTorch.

A model is ``encoders (one per modality) -> fusion -> head``; every component is a plugin found
through pluggy and the entry-point group ``mmcore``. Importing this package discovers nothing
and imports no heavy library: plugins are loaded the first time the registry is asked for.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from mmcore.components import Encoder, Fusion, Head, HeadOutput, Processor
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
    "PluginError",
    "PluginHandle",
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
