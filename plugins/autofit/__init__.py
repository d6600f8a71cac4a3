"""``mmcore fit``: from a table of files to a trained model without writing a config.

``fit(table, target=...)`` infers what each column holds (:mod:`.infer`), builds a complete
config (:mod:`.choose`), fits its epochs into a time limit, trains, and returns a
:class:`Predictor` (:mod:`.predictor`). The ``fit`` command (:mod:`.command`) is the same from the
shell. ``mmcore.fit`` and ``mmcore.Predictor`` reach these through the ``autofit`` entry point. A ``fit``
run's tables given to ``mmcore predict --data`` / ``mmcore embed --data`` are read through its column
plan (:mod:`.tables`, hook ``mmcore_table_inputs``). A run trained with ``mmcore train`` from a fit run's config
(edited or not) gets the fit's column plan, checked, and so takes the user's columns too (:mod:`.contract`, hook
``mmcore_train_setup``); a fit run interrupted and resumed with ``mmcore train --resume`` finishes as fit would
(:mod:`.resume`: the expert choice before the test pass, ``fit_summary.json`` updated). The plugin adds nothing
to other trainings: the run ``fit`` starts is watched by a plugin object of its own (:mod:`.progress`), registered for that run only.
"""

from mmcore_plugins.autofit.command import mmcore_add_commands
from mmcore_plugins.autofit.contract import mmcore_train_setup
from mmcore_plugins.autofit.fitting import fit
from mmcore_plugins.autofit.infer import ColumnError
from mmcore_plugins.autofit.predictor import Predictor
from mmcore_plugins.autofit.resume import mmcore_before_test, mmcore_train_end
from mmcore_plugins.autofit.tables import (
    mmcore_export_columns,
    mmcore_record_inputs,
    mmcore_table_inputs,
    mmcore_table_options,
    mmcore_table_samples,
    mmcore_table_slot,
)

__all__ = ["ColumnError", "Predictor", "fit", "mmcore_add_commands", "mmcore_before_test", "mmcore_export_columns", "mmcore_record_inputs",
           "mmcore_table_inputs", "mmcore_table_options", "mmcore_table_samples", "mmcore_table_slot", "mmcore_train_end",
           "mmcore_train_setup"]
