"""Every hook a plugin can implement. Hook names start with ``mmcore_``.

A plugin is a module (or any object) with functions decorated by :data:`mmcore.hookimpl`. It is
found through the entry-point group ``mmcore`` (``[project.entry-points.mmcore]`` in the plugin's
pyproject), or registered at run time with :func:`mmcore.register_plugin`. A hook implementation
may accept any subset of the arguments its spec names.

Plugins fail alone: an exception (or ``sys.exit()``) in a plugin's import or ``mmcore_register``
fails that plugin only; ``mmcore_add_commands`` that raises, or adds a command that exists, loses
that plugin's commands only; a lifecycle hook (``mmcore_train_*``, ``mmcore_epoch_end``,
``mmcore_before_test``) that raises stops the run cleanly -- ``report.json`` says ``status: failed`` with the plugin, its
distribution and the hook, the last good checkpoint is kept -- and ``mmcore train`` prints that
one line (exit 1). What a plugin prints while it loads is captured, shown by ``mmcore plugins``.

The trainer a hook sees
-----------------------
Training hooks receive the running :class:`~mmcore.engine.trainer.Trainer`. This is its surface
for plugins; everything else on it is private and may change:

* read-only: ``model`` (the :class:`~mmcore.MultimodalModel`, unwrapped), ``config`` (the resolved
  config, a dict), ``options`` (the validated ``trainer`` section), ``run_dir`` (a Path),
  ``device``, ``is_main`` (rank 0, the process that writes files), ``world_size``, ``epoch``
  (1-based, the epoch running or just finished), ``step`` (optimiser steps taken),
  ``steps_per_epoch``, ``total_steps``, ``history`` (one dict of metrics per finished epoch),
  ``datasets`` (``{"train", "val", "test"}``), ``samples`` (samples counted per split),
  ``stop_reason`` (None, or the reason a plugin gave to ``request_stop``), ``best_epoch`` (the epoch
  of the best checkpoint so far by ``options.monitor``; 0: none yet);
* ``request_stop(reason, finish_epoch=True)``: end training after the current epoch (its validation,
  checkpoint and ``mmcore_epoch_end`` hooks run first); the best checkpoint is tested as usual and
  ``report.json`` says ``status: "stopped"`` with ``stop_reason``. Works whether or not early
  stopping is on. ``finish_epoch=False`` ends the running epoch after the current optimiser step
  (one process only; a time limit). In a distributed run, every process must request it (hooks run on every
  process: decide from values that are the same on all of them, such as validation metrics);
* ``extend(epochs)``: train ``epochs`` epochs in all instead of ``options.epochs`` (more only; e.g.
  from ``mmcore_epoch_end``, a time limit that holds more epochs than planned): the learning rate
  goes on from the rate reached at the end of the current epoch in a new half cosine down to its
  floor at the new horizon (continuous, no jump back up), and ``trainer.epochs`` and
  ``trainer.schedule_extensions`` of the run's ``config.yaml`` record it, so the run is reproduced
  and resumed with the same rate at every step. In a distributed run every process must call it
  with the same value;
* ``all_reduce_sum(tensor)``: sum a tensor over the processes of a distributed run, in place
  (returns it; a no-op in one process) -- for statistics a gradient hook must agree on;
* ``micro_batch_weight`` (read in ``mmcore_train_loss``): the factor the micro-batch's loss is
  multiplied by before backward -- its share of the optimiser step's samples, times
  ``world_size`` (DDP then averages over the processes); 0 for a distributed process's placeholder
  batch. A plugin that computes gradients of its own (``torch.autograd.grad``) and adds them in
  ``mmcore_before_optimizer_step`` weights them by it, sums them with ``all_reduce_sum`` and
  divides by ``world_size``: then they are scaled exactly like the ones ``backward()`` produced;
* ``scaler``: the run's ``torch.amp.GradScaler`` (enabled only for fp16 on CUDA): such a plugin
  multiplies its loss by ``scaler.get_scale()`` before ``torch.autograd.grad`` and divides the
  gradients by it, as the trainer's backward does (``mmcore_before_optimizer_step`` sees them unscaled).

A plugin keeps its own per-run state on itself (build a fresh plugin object per run and register
it with :func:`mmcore.register_plugin`, or key a dict by ``id(trainer)``), never as attributes
set on the trainer.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("mmcore")


# --------------------------------------------------------------------------- registration
@hookspec
def mmcore_register(registry):
    """Add this plugin's components to the registry.

    :param mmcore.registry.PluginRegistry registry: the registry seen from this plugin. Call
        ``registry.add_encoder(name, factory, modality=...)``, ``add_fusion``, ``add_head``,
        ``add_dataset``, ``add_logger``, ``add_perturbation`` or ``add_balancer``; each takes ``doc=`` (defaults to
        the factory's first docstring line) and ``override=True`` to replace a component another
        plugin registered under the same name.

    Called once per plugin when the plugin manager loads it (entry-point plugins when the
    manager is created, runtime plugins when :func:`mmcore.register_plugin` is called). If it
    raises, every component the plugin added so far is removed and the plugin is reported as
    failed; the other plugins are not affected. Heavy libraries (torchvision, transformers,
    triton) must not be imported here: import them when the component is built.

    :return: ignored.
    """


# --------------------------------------------------------------------------- command line
@hookspec
def mmcore_add_commands(subparsers):
    """Add sub-commands to the ``mmcore`` command line.

    :param argparse._SubParsersAction subparsers: call ``subparsers.add_parser(name, help=...)``
        and set ``parser.set_defaults(handler=function)``; the handler is called with the parsed
        ``argparse.Namespace`` and returns the process exit code (``None`` means 0).

    Called once each time the ``mmcore`` command line is built, after the built-in commands.
    Adding a name (or alias) that already exists raises ``ValueError``; if this hook raises,
    every command it added is removed again and ``mmcore plugins`` reports the plugin as
    ``partial``. :return: ignored.
    """


# --------------------------------------------------------------------------- users' files -> model inputs
@hookspec(firstresult=True)
def mmcore_file_input(path, modality):
    """A file named as one input on the command line -> the raw input of a slot of ``modality``.

    :param pathlib.Path path: an existing file (``mmcore predict RUN slot=FILE`` or a bare ``FILE``).
    :param str modality: the modality of the slot it goes to (the slot's encoder's ``modality``).

    :return: the raw value the slot's processor reads (e.g. a text file's contents for ``text``), or
        None to leave it to another plugin. When no plugin returns a value, the path itself (a
        ``str``) is the raw input: the processor opens the file. The first non-None result is used.
        Raise ``ValueError`` (naming the file, what was expected and what came) for a file that
        cannot be read; the command reports it and exits 2. Built-in: the ``modalities`` plugin
        reads text files as UTF-8.
    """


@hookspec(firstresult=True)
def mmcore_table_inputs(path, encoding, model, data, run_dir, missing, strict, sep, decimal):
    """The rows of a table file -> one model input per row, for ``mmcore predict --data FILE`` and
    ``mmcore embed --data FILE``.

    :param pathlib.Path path: the table file (``.csv``, ``.jsonl``, ``.parquet``, ...).
    :param str encoding: the text encoding of text formats: the user's ``--encoding``, else the run's
        recorded one (:func:`mmcore_table_options`), else ``utf-8-sig``.
    :param sep: a CSV's delimiter the user gave (``--sep``) or the run recorded
        (:func:`mmcore_table_options`), or None: found from the file.
    :param decimal: a CSV's decimal mark the user gave (``--decimal``: ``","`` or ``"."``), or None
        (see :func:`mmcore_plugins.io.tables.read_table`).
    :param mmcore.MultimodalModel model: the run's model (``model.slots``, ``model.encoders``,
        ``model.processors``): which slots there are and what each reads.
    :param dict data: the run's ``data`` config section (``data["name"]`` is the dataset it was
        trained on): a dataset plugin maps the table's columns to slots the way its config did.
    :param pathlib.Path run_dir: the run directory (a plugin that wrote its own files there, such as
        ``mmcore fit``'s column plan, reads them).
    :param list[str] missing: columns the user declared missing (``--missing COLUMN``): they need not
        be in the table and every one of their cells is empty. Any other column the model reads that
        the table lacks is an error naming it and the closest column the table has.
    :param bool strict: ``--strict``: a cell naming a missing or unreadable file is the row's problem
        rather than a missing modality (where the run's rule would make it one).

    :return: ``[(inputs, None) | (None, problem), ...]``, one per row in file order: ``inputs``
        ``{slot: raw or None}``, or ``problem`` a one-line message naming the row and column
        (``"row 3, column 'photo': file 'x.png' does not exist"``) for a row that cannot be used; a
        row's tuple may carry a third element, a note of the cells it read as missing (a missing file
        under the run's rule), which ``mmcore predict`` writes into that row's line, and a fourth, the
        row's identifiers ``{column: value}`` (``mmcore fit``'s inferred id columns), which it writes
        into the line under the columns' own names so that predictions join back to the user's rows.
        ``(None, None, why)``: a row with no input at all -- ``mmcore predict`` writes no prediction
        (``"prediction": null``) and ``why`` as its ``"missing"`` note;
        or None to leave the table to another plugin. The first non-None result is used. The rows
        may come as a list or an iterator (``mmcore predict`` streams them batch by batch, so a table
        of millions of rows is read in bounded memory): check the columns before returning it. Raise
        ``ValueError`` for a table that cannot be read at all (naming the file and what is wrong);
        the command reports it and exits 2. Built-in: the ``manifest`` plugin (``trylast``: a run's
        manifest mapping, else one column per slot named after it).
    """


@hookspec(firstresult=True)
def mmcore_table_options(run_dir, path):
    """How a run read its training table, so that a new table given to it (``mmcore predict / eval /
    explain / embed --data``) is read the same way unless the user gives the option (a ``mmcore fit``
    run trained on a cp1252, ``;``-separated, decimal-comma CSV reads the next one alike).

    :param pathlib.Path run_dir: the run directory.
    :param pathlib.Path path: the table to be read (a plugin may look at it: a file the run's legacy encoding
        was recorded for that is itself UTF-8 is read as UTF-8).
    :return: ``{"encoding": str, "sep": str or None, "decimal": "," or "." or None}`` (None: found from
        the file), or None for a run no plugin recorded a reading for (the defaults apply: utf-8-sig,
        delimiter and decimal mark found from the file). The first non-None result is used; an option
        the user gives always wins over it. Built-in: ``mmcore fit``'s (its ``autofit.json``).
    """


@hookspec(firstresult=True)
def mmcore_table_samples(path, encoding, model, data, run_dir, missing, strict, sep, decimal):
    """The rows of a table file holding the target -> samples to evaluate, for ``mmcore eval RUN --data
    TABLE`` (a run whose plugin maps a user's own columns to slots: ``mmcore fit``'s).

    Parameters as :func:`mmcore_table_inputs`; the same rule: every column the model reads is in the
    table or declared in ``missing``, and the target column is in it; a missing or unreadable file or a
    placeholder is a missing cell (``strict``: an error naming row and column).

    :return: ``(samples, notes)``: one entry per row in file order, ``{"inputs": {slot: raw or None},
        "target": encoded target, "origin": {"file", "row", "columns"}}`` or None for a row left out (no
        input at all, or no usable target); ``notes``, one line per cell or row read as missing (naming
        row and column). None to leave the table to another plugin. Raise ``ValueError`` naming the file,
        row and column for a table or cell that cannot be used; the command exits 2.
    """


@hookspec(firstresult=True)
def mmcore_table_slot(run_dir, slot):
    """A slot of numbers and categories whose columns a plugin derives from the user's own (``mmcore
    fit``'s: a ``"<column> missing"`` indicator, the training median for an empty number), for ``mmcore
    serve RUN``: requests and the page then name only the user's columns.

    :param pathlib.Path run_dir: the run directory.
    :param str slot: a slot whose processor reads a row of named columns.

    :return: ``(numeric, categorical, derive)``: the user's number and category columns, and
        ``derive({column: value or None}) -> {column: value}``, the row the slot's processor reads
        (raise ``ValueError`` naming the column for a value that cannot be used: serve checks a request's
        cells with it, so it reads a cell as the plugin's table reader does); or None.
    """


@hookspec(firstresult=True)
def mmcore_export_columns(run_dir):
    """How a plugin derives a run's slot inputs from the user's own columns, as plain JSON, for ``mmcore
    export``: the export's manifest carries it (``"columns"``) and its front end (``frontend.py``, which
    runs without mmcore) derives the same inputs again, so an export's users name only their own columns.

    :param pathlib.Path run_dir: the run directory.

    :return: a JSON object in the form :class:`mmcore_plugins.deploy.frontend.Columns` reads (``mmcore
        fit``'s column plan: ``slots``, ``fill``, ``indicators``, ``dates``, ``text_files``, ``task``,
        ``classes``, ``class_values``; optionally ``table_columns``, the training table's whole header, whose
        columns the model does not read ``mmcore serve`` accepts and ignores; optionally ``id_columns``, the ones
        of them that identify a row, whose values ``mmcore serve`` echoes in a record's answer as ``mmcore predict
        --data`` writes them into its line), or None for a run whose slots
        are the user's inputs as they are.
    """


@hookspec(firstresult=True)
def mmcore_record_inputs(items, run_dir, model):
    """One record on the command line (``mmcore predict RUN key=value ...``) -> the model's raw inputs,
    for a run whose plugin maps a user's own columns to slots (``mmcore fit``'s: columns it derived,
    such as ``"weight missing"``, are derived again; users only name their columns).

    :param list[str] items: the inputs as given (``column=value``; a slot of several columns may also
        be given whole, ``slot={column: value, ...}``).
    :param pathlib.Path run_dir: the run directory.
    :param mmcore.MultimodalModel model: the run's model.

    :return: ``{slot: raw}`` (a slot left out is a missing modality), or None to leave the items to
        ``slot=value`` parsing. Raise ``ValueError`` naming a key that is neither a column nor a slot
        (with the closest one), or a value that cannot be used; the command exits 2.
    """


# --------------------------------------------------------------------------- training lifecycle
@hookspec
def mmcore_train_setup(trainer, config):
    """A new or resumed training run has read its data and built its model; nothing is trained yet.

    For a plugin whose own files make a run usable (``mmcore fit``'s column plan: a run trained from a fit
    run's ``config.yaml``, edited or not, takes the user's own columns as the fit run does): it checks them
    against ``trainer.model`` and ``config`` and writes them into ``trainer.run_dir`` (on the main process,
    ``trainer.is_main``), so that the run is self-contained.

    :param trainer: the trainer (``trainer.model``, ``trainer.run_dir``, ``trainer.is_main``).
    :param dict config: the resolved config of the run (the head's classes filled from the data).

    Raise :class:`~mmcore.errors.ConfigError` naming the config key when the run cannot keep what the
    plugin's files promise: the command exits 2 with one line, before any training. :return: ignored.
    """


@hookspec
def mmcore_train_start(trainer, config):
    """A training run is about to start.

    :param trainer: the running trainer (``trainer.model``, ``trainer.run_dir``).
    :param dict config: the resolved config of the run.

    Called once on every process before the first step. :return: ignored.
    """


@hookspec
def mmcore_train_step_end(trainer, step, metrics):
    """An optimisation step finished.

    :param trainer: the running trainer.
    :param int step: the global step just completed (1-based).
    :param dict metrics: ``{"loss": float, "lr": float, ...}`` for this step.

    Called after every optimiser step, on every process. Keep it cheap. :return: ignored.
    """


@hookspec
def mmcore_train_loss(trainer, batch, output):
    """Extra loss terms for one training micro-batch, added to the head's loss before backward.

    :param trainer: the running trainer (see "The trainer a hook sees" above).
    :param dict batch: the micro-batch on the device: ``batch["inputs"]`` (``{slot: processed
        batch}``), ``batch["targets"]``, ``batch["index"]`` (``[B]`` int64: each sample's row in
        ``trainer.datasets["train"]``, to look up per-row values computed once, such as a
        teacher's outputs), and any other key the collate produced.
    :param mmcore.HeadOutput output: the model's output for it: ``output.loss`` is the head's loss,
        ``output.features`` the encoders' :class:`~mmcore.Features` per slot and ``output.fused``
        the fusion's, all with their autograd graph (a term built from them trains through them).

    :return: None (no term), a scalar tensor (a term named after the plugin), or ``{name: scalar
        tensor}``. Every term is added to the loss that is backpropagated, so it is scaled for
        gradient accumulation and distributed training exactly like the head's loss; its
        per-sample mean over the epoch is reported as ``train/<name>``, while ``train/loss`` stays
        the head's own loss (comparable with runs that have no such terms). A non-finite term stops
        the run like a non-finite loss. Called on every process, for every training micro-batch,
        inside the run's autocast context; not called for validation or test batches.
    """


@hookspec
def mmcore_before_optimizer_step(trainer, step):
    """The gradients of one optimiser step are complete: a plugin may change them in place.

    :param trainer: the running trainer.
    :param int step: the step about to be taken (1-based: ``trainer.step + 1``).

    Called after the backward pass of the step's last micro-batch -- in a distributed run after
    DDP has averaged the gradients over the processes; with fp16 mixed precision after the
    gradient scaler has unscaled them -- and before gradient clipping and ``optimizer.step()``.
    ``p.grad`` of ``trainer.model.parameters()`` may be scaled, replaced or zeroed (None where a
    parameter got no gradient). In a distributed run every process must make the same change
    (reduce the statistics it depends on with ``trainer.all_reduce_sum``), or the replicas drift
    apart. :return: ignored.
    """


@hookspec
def mmcore_epoch_end(trainer, epoch, metrics):
    """An epoch finished and was evaluated.

    :param trainer: the running trainer.
    :param int epoch: the epoch just completed (1-based).
    :param dict metrics: ``{"train/loss": float, "val/<metric>": float, ...}``.

    Called once per epoch after validation, on every process. :return: ignored.
    """


@hookspec
def mmcore_before_test(trainer):
    """Training ended cleanly (completed, stopped by a plugin or by early stopping; not on an error
    or Ctrl-C) and the run's one test pass is next.

    :param trainer: the trainer; ``trainer.model`` holds the best checkpoint's weights (the ones
        tested and saved in ``best/``).

    Called once on every process, before the test split is evaluated (also when it is empty). A
    plugin may change the model here so that the test pass scores what will be used -- e.g. ``fit``
    choosing the ensemble's experts on the val split; whatever it changes in the saved run (``best/``,
    ``config.yaml``) it writes itself. :return: ignored.
    """


@hookspec
def mmcore_train_end(trainer, report):
    """A training run ended (finished, stopped early, or stopped on a non-finite loss).

    :param trainer: the trainer.
    :param dict report: the final report, written as ``report.json`` in the run directory after
        every implementation has returned (a logger may add to it: ``plots`` lists the PNGs drawn).

    Called once on every process; loggers (``trainer.loggers``) first, in the listed order, on
    the main process only. :return: ignored.
    """
