"""``mmcore tune``: hyperparameter search over any config key with Optuna (:mod:`.study`, :mod:`.space`).

Found through the ``tune`` entry point like any plugin; Optuna (``pip install 'mmcore[tune]'``) is
imported only when the command runs.
"""

from mmcore_plugins.tune.command import mmcore_add_commands

__all__ = ["mmcore_add_commands"]
