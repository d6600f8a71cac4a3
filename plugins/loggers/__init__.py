"""The built-in loggers: ``csv``, ``tensorboard``, ``progress`` and ``plots``.

Each module is a plugin of its own (an entry point of the ``mmcore`` group) that registers one
logger component; the trainer builds those ``trainer.loggers`` names and registers them as
lifecycle-hook plugins for the run (:mod:`mmcore.engine.loggers`). They use only what any
third-party logger can: the hook arguments and the trainer's public attributes.
"""
