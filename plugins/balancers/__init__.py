"""The built-in modality balancers (``trainer.balancer``): ``ogm_ge``, ``agm``, ``gblend``, ``mmpareto``, ``mla``.

Each module is a plugin of its own (an entry point of the ``mmcore`` group) that registers one
balancer component; the trainer builds the one ``trainer.balancer`` names, fresh for each run,
and registers it on every process while the run trains (:mod:`mmcore.engine.balancers`). They use
only what any third-party balancer can: the hooks ``mmcore_train_loss`` and
``mmcore_before_optimizer_step`` and the trainer's public surface (hookspecs.py). What they share
-- uni-modal predictions through the model's own fusion and head, statistics and gradients agreed
over processes -- is in ``_common``.
"""
