"""Sharded data past one machine: ``mmcore shard`` writes a manifest's rows as WebDataset tar shards
(:mod:`.write`, :mod:`.command`), the ``shards`` data set reads them back (:mod:`.dataset`) with
exactly the samples the manifest gives, and :mod:`.layout` owns the folder and its index.
``webdataset`` (the ``mmcore[shard]`` extra) is imported by the command and the reader only."""

from __future__ import annotations

import mmcore
from mmcore_plugins.shards.command import mmcore_add_commands

__all__ = ["mmcore_add_commands", "mmcore_register"]


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    from mmcore_plugins.shards.dataset import load_shards

    registry.add_dataset("shards", load_shards)
