"""Making a trained model smaller: ``mmcore prune`` (structured pruning + fine-tuning, :mod:`.prune`,
:mod:`.command`). Distillation is a trainer feature (``trainer.distill``, :mod:`mmcore.engine.distill`)."""

from mmcore_plugins.compress.command import mmcore_add_commands

__all__ = ["mmcore_add_commands"]
