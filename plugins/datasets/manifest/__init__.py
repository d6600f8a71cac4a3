"""`manifest`: a table of samples (CSV, JSON Lines, Parquet, or a pandas DataFrame from Python), one
row per sample, columns mapped to modality slots.

    data:
      name: manifest
      path: data/train.csv              # .csv/.tsv, .jsonl/.ndjson/.json, .parquet; from Python also a
                                        # pandas DataFrame or a pyarrow Table
      encoding: utf-8-sig               # text formats; cp1252 for a CSV saved by Excel on Windows
      columns:
        image: image_path               # one column: a file path or an inline value (text)
        table: [age, height]            # a list: numeric columns -> one row of numbers
        profile: {numeric: [age], categorical: [city]}   # a row {column: value} for tabular encoders
      path_columns: [image_path]        # file (or frame-folder) paths, relative to the manifest's folder;
                                        # a text slot's file is read as its UTF-8 contents
      target: label                     # or a list of target columns
      split_column: split               # or val_path / test_path, or val/test fractions + seed

Targets
-------
``target_type`` says what the target column holds; the trainer sets it from the model's head when
it is not given (``classification`` -> ``class``, ``multilabel``, ``regression``, ``captioning`` ->
``raw``); ``auto`` (a direct Python call) guesses: list cells -> multilabel, integral numbers or
non-numeric strings -> class, other numbers -> regression.

* ``class``: labels follow mmcore's one rule (:mod:`mmcore.labels`): a class is named as the
  training split writes it (``+1`` stays ``+1``, ``True`` stays ``True``), and spellings of one value
  are one class (``1``, ``1.0``, ``"1"``, ``"+1"``: one number; ``" dog"`` and ``"dog"``: one name),
  so a CSV's ``1`` and a JSON Lines file's ``1`` agree. The vocabulary (``metadata["classes"]``, a
  list of names; target = index in it) is fitted on the training split in a fixed order (numbers
  ascending, then booleans, then names), so it is stable. Given ``classes`` fix it (and its order);
  given ``num_classes`` with integer labels make the vocabulary ``0 .. num_classes-1`` (label =
  index). A label the training split never had, an empty cell, a non-finite number (``nan``,
  ``inf``) or an integer outside ``num_classes``: a data error naming the row.
* ``multilabel``: a list cell (JSON Lines / Parquet list) or a string of names joined by
  ``label_delimiter`` (default ``"|"``: ``"cat|dog"``); an empty list means no label, and so does an
  empty cell (``empty_labels: none``, the default: a negative example, counted in
  ``metadata["empty_labels"]`` and logged; ``empty_labels: missing``: an empty cell is an empty target,
  a bad row). The target is multi-hot over the vocabulary fitted on the training split. With a list
  of 0/1 target columns, the column names are the classes.
* ``regression``: finite numbers (one column, or a list of columns); ``inf`` or NaN is a data error
  naming the row and column, as in a numeric input column.
* ``text``: a string (captions); ``raw``: the value as written, numeric strings as numbers (pair ids).

Splits
------
``split_column`` values are matched case-insensitively against aliases: ``train``/``training``,
``val``/``valid``/``validation``/``dev``, ``test``/``testing``. Any other value is an error that
lists the unexpected values with their counts. When the column holds no validation (or test)
rows, ``val_fraction`` (``test_fraction``) decides, and must be given: ``0`` trains without that
split (the trainer then validates on the training split), ``0 < f < 1`` carves that fraction out
of the training rows (seeded). Without a split column or split files, rows are shuffled with
``seed`` and cut by ``val_fraction``/``test_fraction`` (default 0.15 each); a split that comes out
empty without being asked to be is an error. The split sizes are logged when the data set is
built, and an empty split as a warning.

Validation
----------
Every row of every split is checked when the data set is built, before any model is trained,
and all problems are reported together (:class:`ManifestError`, at most 20 listed, with the
count): target types and ranges (above), numeric cells, text cells that are not strings,
ragged rows of numbers, rows lacking every modality, paths escaping the manifest's folder,
missing files, a folder where an image or audio file is expected, and every image and audio
file through :func:`check_file`, as deep as ``validate`` says: ``header`` (default: each file
opened once, its header checked -- size, mode, decompression-bomb limit, audio rate and length --
nothing decoded), ``decode`` (also its first frame / first second decoded: catches truncated
files, about 2.5x the time), ``exists`` (one ``stat``: a regular file), ``none`` (nothing on disk
is touched while the table is read, not even to follow links: paths are judged by their names; for
tables of millions of rows whose files are known good; a link in the folder that leads outside is
refused when its file is read: :class:`.dataset.ConfinedFiles`, one ``realpath`` per file read). Each distinct file is checked once (within each batch of 65,536 rows the table is read in), in a pool of threads on
machines with 4 or more CPUs, with a progress line on stderr past a few seconds. ``on_bad_sample: skip`` drops
such rows instead (counted in ``metadata["skipped"]`` and logged once). An empty or absent cell,
or a placeholder such as ``N/A`` (:data:`mmcore.labels.MISSING_PLACEHOLDERS`), means the sample lacks
that modality (raw input None, ``present=False`` downstream). A file that passes these checks but
fails when training reads it (damage the chosen level does not see) follows ``trainer.unreadable_inputs``:
each sample carries its ``origin`` (file, row, the slots' columns) so that it is reported by them.
``slot_modalities`` (``{slot: modality}``, set by the trainer from the model's encoders) tells which
checks apply to a slot. Raw inputs handed to the processors are absolute file paths, except a
text slot's file, which is handed over as the file's contents.

The package's modules, one job each: :mod:`.options` (the options and the ``columns`` mapping),
:mod:`.source` (reading a table), :mod:`.splits` (train / val / test), :mod:`.targets` (target types,
the class vocabulary, each row's target), :mod:`.rows` (a row -> a sample and its problems),
:mod:`.dataset` (``load_manifest``: all of it, validated and cached), :mod:`.predict` (a table's rows as
model inputs for ``mmcore predict --data``, hook ``mmcore_table_inputs``).
"""

from __future__ import annotations

import mmcore
from mmcore_plugins.datasets.manifest.dataset import load_manifest
from mmcore_plugins.datasets.manifest.errors import MAX_LISTED, BadSampleError, ManifestError
from mmcore_plugins.datasets.manifest.options import check_columns
from mmcore_plugins.datasets.manifest.predict import mmcore_table_inputs
from mmcore_plugins.datasets.manifest.rows import check_file, inputs_from_rows
from mmcore_plugins.datasets.manifest.source import read_rows
from mmcore_plugins.datasets.manifest.splits import DEFAULT_FRACTION, SPLIT_ALIASES
from mmcore_plugins.datasets.manifest.targets import TARGET_TYPES, class_name

__all__ = ["DEFAULT_FRACTION", "MAX_LISTED", "SPLIT_ALIASES", "TARGET_TYPES", "BadSampleError", "ManifestError",
           "check_columns", "check_file", "class_name", "inputs_from_rows", "load_manifest", "mmcore_table_inputs", "read_rows"]


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_dataset("manifest", load_manifest)
