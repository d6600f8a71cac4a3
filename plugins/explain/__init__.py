"""``mmcore explain``: exact per-modality Shapley values of a model's predictions (:mod:`.shapley`),
the command (:mod:`.command`, added through ``mmcore_add_commands``) and the attribution of records
(:mod:`.attribution`), also used by ``Predictor.explain``."""
