"""The training loop: config -> data + model -> AdamW (warmup + cosine) -> checkpoints -> test report.

One :class:`Trainer` runs in every process of a distributed run (``torchrun``): the model is
wrapped in DistributedDataParallel, each process reads its share of every global batch (no sample
repeated or dropped), metrics are synchronised so each sample counts once, and only the main
process prints, logs and writes checkpoints. See :class:`Trainer` for what equals one process.

This module is the loop and nothing else; what it uses lives beside it: the optimiser and its
schedule in :mod:`~mmcore.engine.optim`, seeds and RNG state in :mod:`~mmcore.engine.seeding`,
metric values and directions in :mod:`~mmcore.engine.metrics`, the datasets in
:mod:`~mmcore.engine.datasets`, run files in :mod:`~mmcore.engine.rundir` /
:mod:`~mmcore.engine.checkpoint`, and every output (metrics.csv, TensorBoard, the progress bar,
plots, third-party loggers) in logger plugins run on the lifecycle hooks
(:mod:`~mmcore.engine.loggers`). It is over 450 lines because :class:`Trainer`'s docstring
states the distributed-training contract (what equals one process) and resume is part of the loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmcore.components import Head
from mmcore.data import make_dataloader
from mmcore.engine import NonFiniteLossError, distributed, midepoch
from mmcore.engine.artefacts import check_run_plugins, check_training_state, read_model_json, read_weights
from mmcore.engine.atomic import write_file
from mmcore.engine.averaging import WeightEMA
from mmcore.engine.balancers import build_balancer
from mmcore.engine.checkpoint import (
    CheckpointError,
    checkpoint_folder,
    dumps_json,
    load_training_state,
    load_weights,
    model_state,
    save_checkpoint,
)
from mmcore.engine.config import (
    TrainerOptions,
    check_resume_config,
    config_provenance,
    replanned,
    resolve_paths,
    resolved_config,
    validate_config,
)
from mmcore.engine.datasets import load_datasets, model_data_options  # noqa: F401 - also importable from here
from mmcore.engine.diagnostics import ImbalanceDiagnostics
from mmcore.engine.evaluation import autocast_context, evaluate_counted, to_device
from mmcore.engine.host_memory import retain_freed_memory
from mmcore.engine.loggers import attached_loggers, attached_plugins, build_loggers
from mmcore.engine.metrics import EpochAccumulator, StepMetrics, as_float, lower_is_better
from mmcore.engine.optim import (  # noqa: F401
    adamw,
    build_optimizer,
    build_scheduler,
    parameter_groups,
    schedule_factor,
    warmup_cosine,
)
from mmcore.engine.rundir import SPEC, STATE, WEIGHTS, RunDir
from mmcore.engine.seeding import epoch_seed, loader_seed, rng_state, seed_everything, set_rng_state
from mmcore.engine.views import TrainingView
from mmcore.errors import ConfigError, ConfigIssue, PluginHookError, RunInterrupted, user_input_phase
from mmcore.model import MultimodalModel, build_model
from mmcore.plugin_manager import MmcorePluginManager, get_plugin_manager
from mmcore.yamlio import dump_yaml

#: Training batches whose predictions are collected before one update of the training metrics.
_METRIC_CHUNK = 32
logger = logging.getLogger("mmcore.train")
class Trainer:
    """Trains one model from a config and writes everything into ``trainer.run_dir``.

    ``resume`` names a run directory whose ``last/`` checkpoint (weights, optimiser, scheduler,
    step, RNG states) training continues from, exactly as if it had never stopped; everything in
    it is validated before it is loaded (:mod:`mmcore.engine.artefacts`). ``overwrite`` lets a new
    run write mmcore's files into an existing folder that is not a run (:meth:`RunDir.check`:
    the user's other files stay). :class:`~mmcore.engine.rundir.RunDirError` is raised here,
    before any work, for a folder that may not be written; :meth:`fit` holds the run
    directory's lock until it returns.

    Distributed runs (``torchrun``, ``world_size`` processes; ``trainer.batch_size`` is the global
    batch and must be a multiple of ``world_size``):

    * Data order: every process shuffles the training split identically (``trainer.seed`` +
      epoch) and cuts it into the global batches one process would use; each global batch is
      split contiguously over the processes (:class:`~mmcore.engine.distributed.GlobalBatchSampler`).
      Nothing is padded or dropped: a short last batch gives some processes one sample fewer
      (or none: they run a placeholder sample with loss weight 0, to join the gradient all-reduce).
    * Gradients: process ``r`` scales its mean loss by ``n_r * world_size / n_global`` (its share
      of the global batch, or of the global samples of a gradient-accumulation group) before
      DDP averages the gradients, so every step's gradient is the mean over the global batch's
      samples, as in one process.
    * Metrics: training loss is summed per sample over processes and divided by the real sample
      count; torchmetrics states are merged; validation and test shard the split without
      padding (:func:`~mmcore.engine.evaluation.evaluate_counted`). Each sample counts once;
      ``report["samples"]`` gives the counts. The training split needs at least ``world_size``
      rows (every process needs a sample to have metric states to merge), else a
      :class:`~mmcore.errors.ConfigError` before anything is trained.
    * Randomness: modality dropout and ``trainer.augment`` are drawn per sample from (seed,
      epoch, sample index), the same in any number of processes. Model randomness (dropout
      layers, processors' train-time augmentation such as ``image_cnn``'s shifts, also in
      DataLoader workers) comes from generators that process ``r`` reseeds at the start of
      each epoch with :func:`~mmcore.engine.distributed.process_seed` ``(seed, r, epoch)``:
      distinct per process (not the same masks on every process's different samples), and
      reproducible on resume. A single process keeps one stream seeded with ``trainer.seed``.

    Same weights as one process with the same global ``batch_size``, up to float rounding
    (tested on CPU with 9 rows and 2 processes: within 1e-6) when (1) the head's loss is a mean
    of per-sample losses (classification without ``class_weights``, regression, multilabel; not
    contrastive, whose negatives are the batch, nor captioning, a mean over tokens), (2) the
    model draws no randomness in training (no dropout layer with p > 0, no processor
    augmentation: otherwise the runs are equal in distribution only), and (3) no layer uses
    batch statistics in training (BatchNorm: each process normalises by its own share).
    """

    def __init__(self, config: Mapping[str, Any], *, manager: MmcorePluginManager | None = None,
                 resume: str | Path | None = None, overwrite: bool = False) -> None:
        self.manager = manager or get_plugin_manager()
        self.config = dict(config)
        if resume is None:  # a grown run's config with other epochs: a new plan (a resumed run keeps its own)
            self.config, replan = replanned(self.config)
            if replan:
                logger.warning("%s", replan)
        if resume is not None:  # a plugin the run recorded but not installed here: its package, not "unknown name"
            check_run_plugins(resume, self.manager.registry)
        self.options: TrainerOptions = validate_config(self.config, self.manager.registry)
        if resume is not None:
            self.options.run_dir = str(resume)
        self.resume = Path(resume) if resume is not None else None
        # A flag of this call, never a config value: a resumed run must not inherit it.
        self.overwrite = overwrite
        #: the run directory's names; :meth:`setup` creates, marks and locks it (main process)
        self.rundir = RunDir.check(self.options.run_dir, resume=self.resume is not None, overwrite=overwrite)
        # Built now, so that a balancer refusing its options stops the run before any work (fresh per run).
        self._balancer = build_balancer(self.options, self.manager.registry)
        if self.options.checkpoint_every_steps and self._balancer is not None and not hasattr(self._balancer[1], "mid_epoch_state"):
            raise ConfigError([ConfigIssue("trainer.checkpoint_every_steps", f"{self._balancer[0]} keeps statistics over "
                                           "each epoch that a mid-epoch checkpoint does not hold; checkpoint at epoch ends (null)")])
        self.run_dir = self.rundir.path
        self.config = resolved_config(self.config, self.options)
        if self.resume is not None:
            self._check_resume_config()
        self.model: MultimodalModel | None = None
        self.history: list[dict[str, float]] = []
        #: samples counted (over all processes) by the last training epoch, validation and test
        self.samples: dict[str, int] = {}
        self.step = 0
        self.epoch = 0
        self.dist: distributed.DistContext | None = None
        self._trainable: list[torch.nn.Parameter] | None = None
        #: why a plugin asked training to stop (:meth:`request_stop`), or None
        self.stop_reason: str | None = None
        #: the frozen-feature cache (``trainer.cache_features``), set by :meth:`setup`; None without one
        self.feature_cache = None
        #: ``(rows done, rows in all) -> bool``, or None: with a frozen-feature cache on one process, the
        #: training split's features are computed in a seeded random order, in chunks, while this returns
        #: True (asked before each chunk with the seconds per row seen so far); training then uses the rows
        #: done -- a random sample of the split (``mmcore fit`` stops there when the machine slowed down so
        #: much that the rest would leave no time to train). None: every row, as always.
        self.feature_budget: Callable[[int, int, float], bool] | None = None
        #: ``(rows kept, rows of the split)`` when :attr:`feature_budget` cut the training split, else None
        self.feature_rows: tuple[int, int] | None = None
        self._epoch_state: EpochAccumulator | None = None  # the running epoch's accumulators
        self._resumed_status = "completed"  # "early_stopping" when the resumed run had stopped early
        self._resume_rng: Any = None  # the RNG state a resumed run continues from
        self._resume_partial: dict[str, Any] | None = None  # where a mid-epoch checkpoint stood (midepoch)
        self._stop_now = False  # request_stop(finish_epoch=False): end the running epoch after this step
        self._unreadable_reported = 0  # unreadable inputs already warned about

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.dist.device if self.dist is not None else distributed.resolve_device(self.options.device)

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

    @property
    def world_size(self) -> int:
        """Processes in this run (1 outside ``torchrun``)."""
        return self.dist.world_size if self.dist is not None else 1

    # ------------------------------------------------------------------ the plugins' surface
    def request_stop(self, reason: str, *, finish_epoch: bool = True) -> None:
        """End training after the current epoch (its validation, checkpoint and epoch-end hooks
        run first); ``report.json`` then says ``status: "stopped"`` and ``stop_reason: reason``.

        ``finish_epoch=False`` (from ``mmcore_train_step_end``, e.g. a time limit that one more
        epoch would pass) ends the running epoch after the current optimiser step instead: that
        shorter epoch is validated and checkpointed like any other. One process only: in a
        distributed run the epoch is always finished (the processes must agree on the batches).
        For plugins (a time limit, a tuner pruning a trial); works with or without early stopping.
        The first reason given is kept. Raises TypeError for a reason that is not a non-empty str.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise TypeError(f"request_stop needs a reason (a non-empty str), got {reason!r}")
        if self.stop_reason is None:
            self.stop_reason = reason
        if not finish_epoch:
            self._stop_now = True

    def extend(self, epochs: int) -> None:
        """Train ``epochs`` epochs in all instead of ``options.epochs`` (more, never fewer): the epoch
        loop runs on to the new horizon. From the end of the current epoch (step ``epoch *
        steps_per_epoch``) the learning rate follows a new half cosine from the rate reached there
        down to ``min_lr_ratio`` at the new horizon (:func:`~mmcore.engine.optim.warmup_cosine`):
        continuous, no jump back up; every earlier step keeps its rate.

        What the run did is recorded where the run is reproduced from: ``trainer.epochs`` and
        ``trainer.schedule_extensions`` (``[after_epoch, from_epochs, to_epochs]``; a second call in
        the same epoch updates that entry) in ``options``, ``config`` and the run's ``config.yaml``
        (rewritten atomically, main process), so ``mmcore train RUN/config.yaml`` gives the same rate
        at every step and ``--resume`` continues with the same horizon. For plugins (``fit``: a run
        whose epochs turned out faster than planned), typically from ``mmcore_epoch_end``; in a
        distributed run every process must call it with the same value (decide from values that are
        the same on all of them). Raises ValueError for ``epochs`` that is not a whole number above
        ``options.epochs``, RuntimeError once a stop was requested (the loop ends anyway).
        """
        opts = self.options
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= opts.epochs:
            raise ValueError(f"extend needs more epochs than the {opts.epochs} planned (a whole number), got {epochs!r}")
        if self.stop_reason is not None:
            raise RuntimeError(f"training is stopping ({self.stop_reason}): it cannot be extended")
        extensions = [list(entry) for entry in opts.schedule_extensions]
        if extensions and extensions[-1][0] == self.epoch:
            extensions[-1][2] = epochs
        else:
            extensions.append([self.epoch, opts.epochs, epochs])
        opts.epochs, opts.schedule_extensions = epochs, extensions
        self.total_steps = self.steps_per_epoch * epochs
        factor = schedule_factor(opts, self.total_steps, self.steps_per_epoch)
        # LambdaLR keeps its step count (last_epoch): only the function of the steps to come changes.
        self.scheduler.lr_lambdas = [factor] * len(self.scheduler.lr_lambdas)
        self.config["trainer"] = {**self.config["trainer"], "epochs": epochs,
                                  "schedule_extensions": [list(e) for e in extensions]}
        if self.is_main:
            self._write_config()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the processes of a distributed run, in place; returns it (one process: unchanged)."""
        return self.dist.all_reduce_sum(tensor) if self.dist is not None else tensor

    @property
    def epoch_samples(self) -> int:
        """Training samples this process has counted so far in the current epoch."""
        state = self._epoch_state
        return state.seen if state is not None else 0

    @property
    def epoch_loss(self) -> float:
        """This process's mean training loss so far in the current epoch (reads the device: not every step)."""
        state = self._epoch_state
        return state.total_loss() / max(state.seen, 1) if state is not None else math.nan

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Join the process group, seed, build the model, read the data, build the optimiser."""
        opts = self.options
        self.dist = distributed.setup(opts.device)
        if self.is_main:  # created, marked and locked before any work; released when fit() ends
            self.rundir = RunDir.create(self.run_dir, resume=self.resume is not None, overwrite=self.overwrite)
        ws = self.dist.world_size
        if opts.batch_size % ws:
            raise ConfigError([ConfigIssue("trainer.batch_size", f"the global batch size {opts.batch_size} must be divisible by the number of processes ({ws})")])
        self.local_batch_size = opts.batch_size // ws
        from mmcore.threads import apply_threads

        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) if self.dist.distributed else 1
        #: PyTorch intra-op threads this process uses (``trainer.threads``)
        self.threads = apply_threads(opts.threads, processes=local)
        seed_everything(opts.seed)
        if opts.retain_freed_memory:
            retain_freed_memory()
        # The data before the model: a head's classes (and their count) come from the training split.
        try:
            self.datasets = load_datasets(self.config, self.manager)
        except ValueError as exc:
            if self.resume is None:
                raise
            from mmcore.engine.data_record import unreadable_now

            changed = unreadable_now(self.rundir.read_data_record(), exc, self.resume)
            if changed is exc:
                raise
            raise changed from exc
        self._record_data()
        if len(self.datasets["train"]) == 0:
            raise ValueError("the training split is empty")
        distributed.check_training_rows(len(self.datasets["train"]), ws)
        train = self.datasets["train"]
        head = self.config["model"]["head"]
        # Head.options_from_data, declared with its default; a function factory may carry its own
        fill = getattr(self.manager.registry.get("head", head["name"]).factory, "options_from_data", Head.options_from_data)
        if isinstance(getattr(train, "metadata", None), Mapping):
            try:  # e.g. classification: classes/num_classes from the labels, so config.yaml and model.json carry them
                filled = fill({k: v for k, v in head.items() if k != "name"}, train.metadata)
            except ConfigError as exc:
                raise ConfigError([ConfigIssue(f"model.head.{i.path}", i.message) for i in exc.issues]) from exc
            self.config["model"] = {**self.config["model"], "head": {"name": head["name"], **filled}}
        seed_everything(opts.seed)  # the initial weights do not depend on what reading the data drew
        self.model = build_model(self.config["model"], self.manager.registry)
        # the plugins the config names besides the model's (dataset, loggers, balancer, augmentations), recorded
        # in model.json so that training this run again or resuming it names a missing one's package
        self.model.provenance += config_provenance(self.config, self.options, self.manager.registry)
        self.model.unreadable_inputs = opts.unreadable_inputs  # an input reading fails on (mmcore.unreadable)
        # plugins' own files of the run (fit's column plan), checked against the model and written into it
        self.manager.hook.mmcore_train_setup(trainer=self, config=self.config)
        self._check_monitor()
        cached_slots = self._cacheable_slots() if opts.cache_features else []
        # One pass, sample by sample: a data set read from disk (shards) is streamed, never held whole.
        self.model.fit_processors(train.samples if hasattr(train, "samples") else (train[i] for i in range(len(train))))
        if opts.init is not None and self.resume is None:  # fine-tuning: weights and fitted processors from a checkpoint
            load_weights(self.model, checkpoint_folder(opts.init))
        self.model.to(self.device)
        if opts.train_rows is not None and opts.train_rows < len(train):
            from torch.utils.data import Subset

            self.datasets["train"] = Subset(train, sorted(self._sample_order(len(train))[:opts.train_rows]))
        if cached_slots:
            self._attach_feature_cache(cached_slots)
        if opts.cache_inputs:
            from mmcore.data import memoize_inputs

            memoize_inputs(self.model, exclude=list(opts.augment))  # perturbed raw inputs are new every epoch
        self.train_model: torch.nn.Module = self.model
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Unused parameters are normal here: a batch may lack a modality entirely.
            self.train_model = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)
        if opts.compile:
            backend = opts.compile if isinstance(opts.compile, str) else "inductor"
            self.train_model = torch.compile(self.train_model, backend=backend)
        self.optimizer = build_optimizer(self.model, opts)
        train = self.datasets["train"]  # fewer rows when the feature budget cut the split
        self.micro_batches = math.ceil(len(train) / opts.batch_size)
        self.steps_per_epoch = math.ceil(self.micro_batches / opts.grad_accumulation)
        self.total_steps = self.steps_per_epoch * opts.epochs
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, opts, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda" and opts.precision == "fp16")
        self.augment = self._augmenters()
        #: ``trainer.ema_decay``: the moving average of the weights that validation, ``best/`` and
        #: the test pass use (mmcore.engine.averaging), or None
        self.ema = WeightEMA(self.model, opts.ema_decay) if opts.ema_decay is not None else None
        self.best_value, self.best_epoch, self.bad_epochs = -math.inf, 0, 0
        self.best_weights = model_state(self.model)
        self.start_epoch = 1
        if self.resume is not None:
            self._load_resume_state()
        #: ``(name, logger)`` of ``trainer.loggers`` (main process only), registered while :meth:`fit` runs
        self.loggers = build_loggers(opts, self.manager.registry) if self.is_main else []
        #: ``(plugin name, object)``: the run's balancer (every process) and imbalance diagnostics
        #: (main process), registered while :meth:`fit` runs, before the loggers
        self.run_plugins = [self._balancer] if self._balancer is not None else []
        if opts.diagnostics and self.is_main:
            self.run_plugins.append(("diagnostics", ImbalanceDiagnostics()))
        #: ``trainer.distill`` (every process): its teacher's outputs are computed here, during setup,
        #: so a bad teacher is an error in the user's input
        if opts.distill is not None:
            from mmcore.engine.distill import Distiller

            self.run_plugins.append(("trainer distill", Distiller.for_run(self)))

    def _record_data(self) -> None:
        """A new run records what it trains on; a resumed one refuses data that changed since
        (:mod:`mmcore.engine.data_record`), before the model is built from it."""
        from mmcore.engine.data_record import check_unchanged, summarize

        record = summarize(self.datasets, self.rundir.path)
        if self.resume is not None:
            check_unchanged(self.rundir.read_data_record(), record, self.resume)
        elif self.is_main:
            write_file(self.rundir.data_record, dumps_json(record, indent=1))

    def _check_monitor(self) -> None:
        """Fill ``trainer.monitor`` (the head's first metric) and settle its direction, before any training."""
        metrics = self.model.head.metrics()
        names = ["loss", *metrics]
        if self.options.monitor is None:
            self.options.monitor = names[1] if len(names) > 1 else "loss"
        if self.options.monitor not in names:
            raise ConfigError([ConfigIssue("trainer.monitor", f"the head {self.config['model']['head']['name']!r} reports {names}; got {self.options.monitor!r}")])
        #: whether smaller values of the monitored metric are better (the metric's own higher_is_better)
        self.monitor_lower_is_better = lower_is_better(self.options.monitor, self.options.monitor_mode, metrics=metrics)

    def _cacheable_slots(self) -> list[str]:
        from mmcore.data import is_cacheable

        # Slots whose raw inputs are perturbed at train time would miss (and store) every epoch.
        slots = [slot for slot in self.model.slots if slot not in self.options.augment
                 and is_cacheable(self.model.encoders[slot], self.model.processors[slot])]
        if not slots:
            raise ConfigError([ConfigIssue("trainer.cache_features", "no encoder of the model is frozen, so there is nothing to cache "
                                           "(freeze a pretrained encoder with freeze: true, and leave its augment and "
                                           "trainer.augment off)")])
        return slots

    def _attach_feature_cache(self, slots: Sequence[str]) -> None:
        """Serve the frozen encoders of ``slots`` from one cache, filled now for the training and
        validation splits (the processors are fitted, so the fingerprints are final)."""
        from mmcore.data import FeatureCache, attach_feature_cache, precompute_features

        where = self.options.cache_features
        self.feature_cache = FeatureCache(where if isinstance(where, str) else None)
        batch_size = self.options.eval_batch_size or self.options.batch_size
        for slot in slots:
            attach_feature_cache(self.model, slot, self.feature_cache)
        budget = self.feature_budget if not self.dist.distributed else None  # every process must keep the same rows
        # validation first: it is read whole every epoch; training rows may stop at the budget
        for split in ("val", "train") if budget is not None else ("train", "val"):
            if split == "train" and budget is not None:
                self._precompute_within_budget(slots, budget, batch_size)
                continue
            for slot in slots:
                precompute_features(self.model, slot, self.datasets[split], batch_size=batch_size)

    def _precompute_within_budget(self, slots: Sequence[str], budget: Callable[[int, int, float], bool], batch_size: int) -> None:
        """The training split's frozen features in a random order (seeded by ``trainer.seed``), a batch of
        rows at a time while ``budget`` allows; the split becomes the rows done (at least one batch)."""
        from torch.utils.data import Subset

        from mmcore.data import precompute_features

        train = self.datasets["train"]
        total = len(train)
        order = self._sample_order(total)
        done, seconds, start = 0, 0.0, time.perf_counter()
        minimum = max(self.options.batch_size, 1)
        while done < total:
            if done >= minimum and not budget(done, total, seconds / done):
                break
            rows = [train[i] for i in order[done:done + batch_size]]
            for slot in slots:
                precompute_features(self.model, slot, rows, batch_size=batch_size)
            done += len(rows)
            seconds = time.perf_counter() - start
        if done < total:
            self.datasets["train"] = Subset(train, sorted(order[:done]))
            self.feature_rows = (done, total)
            # recorded as trainer.train_rows (the same seeded sample): config.yaml, written when training
            # starts, trains these rows again, and --resume continues on them
            self.options.train_rows = done
            self.config["trainer"] = {**self.config["trainer"], "train_rows": done}

    def _sample_order(self, total: int) -> list[int]:
        """The training rows in the random order ``trainer.train_rows`` and the feature budget sample them in
        (seeded by ``trainer.seed``: the same rows every run)."""
        return torch.randperm(total, generator=torch.Generator().manual_seed(self.options.seed)).tolist()

    def _augmenters(self) -> dict[str, list]:
        registry = self.manager.registry
        return {slot: [(registry.get("perturbation", name).factory, float(level)) for name, level in items.items()]
                for slot, items in self.options.augment.items()}

    def _dropout_rates(self) -> dict[str, float]:
        p = self.options.modality_dropout
        return dict(p) if isinstance(p, Mapping) else {slot: float(p) for slot in self.model.slots}

    # ------------------------------------------------------------------ resume
    def _training_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "history": self.history,
            "best": {"value": self.best_value, "epoch": self.best_epoch, "bad_epochs": self.bad_epochs},
            "world_size": self.dist.world_size,
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def _check_resume_config(self) -> None:
        """Resuming continues the same run: only options declared ``resume_may_change`` may differ."""
        # RunDir.check refused a run without config.yaml; read_config uses the safe, bounded loader.
        # Runs written before paths were stored absolute held them relative to the current folder.
        check_resume_config(resolve_paths(self.rundir.read_config()), self.config, self.run_dir)

    def _load_resume_state(self) -> None:
        """Check everything of ``last/`` (and ``best/``'s weights) against the live model and
        optimiser, then load it: a damaged or crafted file is a CheckpointError, nothing loaded."""
        last = self.rundir.readable_checkpoint(RunDir.LAST)
        saved = read_model_json(last / SPEC, self.manager.registry)
        if resolve_paths({"model": saved["spec"]})["model"] != self.config["model"]:
            raise ConfigError([ConfigIssue("model", f"differs from the model of the run being resumed ({self.run_dir}); resume with the same config")])
        state = load_training_state(last)
        check_training_state(state, path=last / STATE, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                             scaler=self.scaler, epochs=self.options.epochs, steps_per_epoch=self.steps_per_epoch)
        if self.ema is not None:  # a run that had no average starts one from its weights
            problem = self.ema.check_state(state["ema"], f"{last / STATE}: ema") if "ema" in state else None
            if problem is not None:
                raise CheckpointError(problem)
        best_weights = None
        if self.rundir.has_checkpoint(RunDir.BEST):
            best = self.rundir.readable_checkpoint(RunDir.BEST) / WEIGHTS
            best_weights = read_weights(best, {k: (v.dtype, tuple(v.shape)) for k, v in self.best_weights.items()})
        load_weights(self.model, last)
        if best_weights is not None:
            self.best_weights = best_weights
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if "ema" in state:
                self.ema.load_state_dict(state["ema"])
            else:
                self.ema = WeightEMA(self.model, self.options.ema_decay)  # from the weights just loaded
        if state["scaler"]:  # empty when saved by a disabled scaler (CPU, fp32, bf16): start fresh
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        best = state["best"]
        self.best_value, self.best_epoch, self.bad_epochs = float(best["value"]), int(best["epoch"]), int(best["bad_epochs"])
        self.start_epoch = self.epoch + 1
        if midepoch.PARTIAL in state:  # written inside epoch start_epoch: that epoch goes on after its batches done
            midepoch.check_partial(state[midepoch.PARTIAL], path=last / STATE, epoch=self.epoch, epochs=self.options.epochs,
                                   micro_batches=self.micro_batches, grad_accumulation=self.options.grad_accumulation,
                                   metrics=self.model.head.metrics())
            self._resume_partial = state[midepoch.PARTIAL]
        if self.options.early_stopping is not None and self.bad_epochs >= self.options.early_stopping:
            self.start_epoch = self.options.epochs + 1  # it had stopped early: nothing more to train
            self._resumed_status = "early_stopping"
        self._resume_rng = state["rng"]

    # ------------------------------------------------------------------ data
    def train_loader(self, epoch: int, *, start: int = 0) -> DataLoader:
        """The training batches of ``epoch``: this process's share of each global batch, shuffled by
        (seed, epoch), from global batch ``start`` on. ``loader.batch_sampler.shares`` gives each batch's
        ``(n_local, n_global)`` (the whole epoch's)."""
        opts, dist = self.options, self.dist
        view = TrainingView(self.datasets["train"], epoch=epoch, seed=opts.seed, dropout=self._dropout_rates(), augment=self.augment)
        # One sampler for one process or many: the same global batches either way, none padded.
        sampler = distributed.GlobalBatchSampler(len(view), opts.batch_size, rank=dist.rank, world_size=dist.world_size,
                                                 seed=opts.seed, epoch=epoch, start=start)
        # Worker seeds (processors' train-time augmentation in workers) are drawn from this
        # generator: per process in a distributed run, so processes do not repeat each other's draws.
        seed = loader_seed(opts.seed, epoch, rank=dist.rank, distributed=dist.distributed)
        return make_dataloader(view, self.model, None, batch_sampler=sampler, seed=seed, num_workers=opts.num_workers,
                               pin_memory=self.device.type == "cuda", training=True)

    def evaluate(self, dataset, split: str | None = None, *, observe=None) -> dict[str, float]:
        """Mean loss and the head's metrics over ``dataset`` (synchronised over processes, each sample
        counted once); ``split`` names it in ``self.samples`` (the number of samples counted);
        ``observe``: see :func:`~mmcore.engine.evaluation.evaluate_counted`."""
        results, count = evaluate_counted(
            self.model, dataset, batch_size=self.options.eval_batch_size or self.options.batch_size, device=self.device,
            precision=self.options.precision, rank=self.dist.rank, world_size=self.dist.world_size,
            num_workers=self.options.num_workers, observe=observe)
        if split is not None:
            self.samples[split] = count
        return results

    # ------------------------------------------------------------------ one step
    def forward_backward(self, batch: Mapping[str, Any], *, scale: float = 1.0, sync: bool = True):
        """Forward and backward of one (micro-)batch.

        Returns ``(output, targets, terms)``: the head output (its loss not scaled) and the
        plugins' loss terms ``{name: scalar}`` (``mmcore_train_loss``; empty without such plugins),
        which were added to the head's loss for the backward pass.
        """
        inputs, targets = to_device(batch, self.device, non_blocking=True)
        self.model.unreadable.add(batch.get("unreadable"))  # collated in a worker: recorded here
        if targets is None:
            raise ValueError("training samples need targets, got a batch without them")
        no_sync = getattr(self.train_model, "no_sync", None)
        context = no_sync() if (not sync and no_sync is not None) else contextlib.nullcontext()
        state = self._epoch_state
        terms: dict[str, torch.Tensor] = {}
        #: what this micro-batch's loss is multiplied by before backward (see hookspecs.py)
        self.micro_batch_weight = scale
        with context:
            with autocast_context(self.device, self.options.precision):
                out = self.train_model(inputs, targets)
                if out.loss is None:
                    raise ValueError("the head returned no loss although targets were given")
                loss = out.loss
                if state is not None and state.loss_hooks:
                    extra = {"index": batch["index"].to(self.device)} if "index" in batch else {}
                    terms = self._loss_terms({**batch, **extra, "inputs": inputs, "targets": targets}, out)
                    for term in terms.values():
                        loss = loss + term
            # (A multiplication by 1 would still be an op forward and backward, every step.)
            self.scaler.scale(loss if scale == 1.0 else loss * scale).backward()
        return out, targets, terms

    def _loss_terms(self, batch: Mapping[str, Any], out) -> dict[str, torch.Tensor]:
        """The ``mmcore_train_loss`` terms of one micro-batch, ``{name: scalar tensor}``."""
        terms: dict[str, torch.Tensor] = {}
        for plugin, value in self.manager.call_collect("mmcore_train_loss", trainer=self, batch=batch, output=out):
            items = value.items() if isinstance(value, Mapping) else [(plugin, value)]
            for name, term in items:
                if not isinstance(term, torch.Tensor) or term.numel() != 1 or not term.is_floating_point():
                    shown = f"a tensor of shape {tuple(term.shape)}" if isinstance(term, torch.Tensor) else type(term).__name__
                    raise PluginHookError(plugin, None, "mmcore_train_loss", TypeError(
                        f"term {name!r}: expected a scalar floating-point tensor, got {shown}"))
                term = term.reshape(())
                terms[str(name)] = terms[str(name)] + term if str(name) in terms else term
        return terms

    def optimizer_step(self) -> None:
        """Take one optimiser step with the accumulated gradients (``mmcore_before_optimizer_step``
        hooks first, then clipping, the step, the schedule), and clear the gradients."""
        state = self._epoch_state
        grad_hooks = state is not None and state.grad_hooks
        if self.options.grad_clip or grad_hooks:
            self.scaler.unscale_(self.optimizer)  # hooks and clipping see the true gradients
        if grad_hooks:
            self.manager.call_lifecycle("mmcore_before_optimizer_step", trainer=self, step=self.step + 1)
        if self.options.grad_clip:
            # The trainable parameters, listed once: walking the module tree every step costs
            # about 1% of a small model's step.
            if self._trainable is None:
                self._trainable = [p for p in self.model.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(self._trainable, self.options.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()

    # ------------------------------------------------------------------ the run
    def fit(self) -> dict[str, Any]:
        """Train, keep the best checkpoint, evaluate it on the test split; return the report."""
        start = time.perf_counter()
        finished = False
        try:
            try:
                with user_input_phase("building the run"):  # errors here lie in the config or data
                    self.setup()
            except BaseException:
                if self.is_main:  # a run folder this start made and left empty is not left behind
                    self.rundir.discard_unused()
                raise
            report = self._fit(start)
            finished = True
            return report
        finally:
            self.close(wait=finished)

    def close(self, *, wait: bool = True) -> None:
        """Leave the process group (``wait``: after the other processes) and release the run
        directory's lock. :meth:`fit` calls it; a caller that drove :meth:`setup` and the steps
        itself (a step-time probe) calls it when done. Safe to call twice."""
        if self.dist is not None:
            self.dist.close(wait=wait)
        self.rundir.release()

    def _write_config(self) -> None:
        # dump_yaml: read back unchanged by the config loader (a class named "1e3" stays a string)
        # paths inside the run relative to it: a copy or a move of the folder reads and writes only itself
        write_file(self.rundir.config, dump_yaml(self.rundir.portable(self.config)))

    def _fit(self, start: float) -> dict[str, Any]:
        opts = self.options
        if self.is_main:
            self._write_config()
        status, error = self._resumed_status, None
        done = self.start_epoch - 1  # epochs whose checkpoint is written (what --resume continues from)
        # Outputs (metrics.csv, TensorBoard, progress, plots, third-party loggers) are plugins on
        # the lifecycle hooks, registered for this run on the main process only.
        with attached_plugins(self.manager, self.run_plugins), attached_loggers(self.manager, self.loggers):
            try:
                # Plugins' lifecycle hooks go through the manager: one that raises stops the run
                # cleanly (PluginHookError naming it; report.json says so; checkpoints kept).
                self.manager.call_lifecycle("mmcore_train_start", trainer=self, config=self.config)
                if self._resume_rng is not None:
                    set_rng_state(self._resume_rng)
                epoch = self.start_epoch
                while epoch <= opts.epochs:  # opts.epochs grows when a plugin extends the run (extend)
                    self.epoch = epoch
                    row = self._train_epoch(epoch)
                    with self.averaged_weights():  # validated and kept as best: the average, when there is one
                        row.update(self._validate())
                        improved = self._track_best(row)
                    self.history.append(row)
                    self._checkpoint(improved)
                    done = epoch
                    self.manager.call_lifecycle("mmcore_epoch_end", trainer=self, epoch=epoch, metrics=row)
                    # after the epoch's hooks: the progress logger has closed its bar, so the warning is a line of
                    # its own (written while the bar was open, it ran on from the bar's last frame)
                    self._report_unreadable(epoch)
                    if self.stop_reason is not None:
                        status = "stopped"
                        break
                    if opts.early_stopping is not None and self.bad_epochs >= opts.early_stopping:
                        status = "early_stopping"
                        break
                    epoch += 1
            except KeyboardInterrupt as exc:
                # Ctrl-C: the run says it is partial (report.json status "interrupted", read by Predictor.load)
                # and how to continue; no test evaluation, no end hooks -- the user asked to stop.
                raise self._interrupted(done, start) from exc
            except NonFiniteLossError as exc:
                status, error = "non_finite_loss", exc
            except PluginHookError as exc:
                status, error = "failed", exc
            report = self._finish(status, start, test=error is None, error=error)
        if error is not None:
            raise error
        return report

    def begin_epoch(self, epoch: int) -> EpochAccumulator:
        """Fresh per-epoch accumulators (loss, metrics, non-finite tracking) for :meth:`train_step`.

        In a distributed run it also reseeds this process's generators with
        :func:`~mmcore.engine.distributed.process_seed` ``(seed, rank, epoch)`` (see :class:`Trainer`).
        """
        self.train_model.train()
        if self.dist.distributed:
            seed_everything(epoch_seed(self.options.seed, self.dist.rank, epoch))
        # Non-finite losses are noticed on the device and read every `check_every` steps (each
        # step on one CPU process, where reading costs nothing; sparsely on CUDA and in DDP).
        check_every = 1 if (self.device.type == "cpu" and not self.dist.distributed) else 25
        self._epoch_state = EpochAccumulator(
            epoch=epoch,
            metrics={name: m.to(self.device) for name, m in self.model.head.metrics().items()},
            loss_sum=torch.zeros((), dtype=torch.float64, device=self.device),
            first_bad=torch.zeros((), dtype=torch.long, device=self.device),
            step_counter=torch.full((), self.step, dtype=torch.long, device=self.device),
            check_every=check_every,
            step_hooks=self.manager.has_hook("mmcore_train_step_end"),
            loss_hooks=self.manager.has_hook("mmcore_train_loss"),
            grad_hooks=self.manager.has_hook("mmcore_before_optimizer_step"),
        )
        return self._epoch_state

    def train_step(self, batch: Mapping[str, Any], *, group: int = 1, last_in_group: bool = True, force_check: bool = False,
                   weight: float | None = None, counted: bool = True) -> torch.Tensor:
        """One micro-batch: forward, backward, bookkeeping; the optimiser steps on the group's last one.

        Returns the (detached, unscaled) loss. ``group`` is the number of micro-batches whose
        gradients this optimiser step accumulates; ``weight`` (default ``1 / group``) is this
        micro-batch's share of the step: its samples / the group's samples, so a short last
        micro-batch counts as much as its samples would in one big batch. ``counted=False`` (a
        distributed process's placeholder batch, run with ``weight=0`` only to join the gradient
        all-reduce) leaves the batch out of the loss, the sample count and the metrics.
        """
        state = self._epoch_state
        out, targets, terms = self.forward_backward(batch, scale=1.0 / group if weight is None else weight, sync=last_in_group)
        loss = out.loss.detach()
        # What was backpropagated: the head's loss and the plugins' terms (checked for finiteness together)
        total = loss if not terms else loss + sum(t.detach() for t in terms.values())
        if counted:
            for name, term in terms.items():
                previous = state.term_sums.get(name)
                value = term.detach().double() * len(targets)
                state.term_sums[name] = value if previous is None else previous + value
            if state.check_every == 1:  # one CPU process: reading the loss is free; stop before the bad step is taken
                if terms and not math.isfinite(float(total)):
                    raise NonFiniteLossError(
                        f"a loss term of a plugin ({', '.join(terms)}) became NaN or infinite at step {self.step + 1} "
                        f"(epoch {state.epoch}); training stopped, the last good checkpoint is kept in {self.run_dir}",
                        self.step + 1)
                value = float(loss)
                if not math.isfinite(value):
                    raise NonFiniteLossError(
                        f"the training loss became NaN or infinite at step {self.step + 1} (epoch {state.epoch}); training "
                        f"stopped, the last good checkpoint is kept in {self.run_dir}", self.step + 1)
                state.loss_sum_host += value * len(targets)
            else:  # noticed and summed on the device, read every `check_every` steps
                state.first_bad = torch.where(torch.isfinite(total) | (state.first_bad > 0), state.first_bad, state.step_counter + 1)
                state.loss_sum += loss.double() * len(targets)
            state.seen += len(targets)
            # Metrics are updated in chunks: torchmetrics' per-call checks cost more than a small step.
            state.pending.append((out.predictions.detach(), targets))
            if len(state.pending) >= _METRIC_CHUNK:
                state.flush_metrics()
        if last_in_group:
            self.optimizer_step()
            self.step += 1
            if state.check_every > 1:
                state.step_counter += 1
                if self.step % state.check_every == 0 or force_check:
                    self._raise_if_non_finite(state.first_bad, state.epoch)
            if state.step_hooks:
                # The loss is read (a device sync on CUDA) only when a hook looks at it.
                self.manager.call_lifecycle("mmcore_train_step_end", trainer=self, step=self.step,
                                            metrics=StepMetrics(loss, self.scheduler.get_last_lr()[0]))
        return loss

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        opts, dist = self.options, self.dist
        state = self.begin_epoch(epoch)
        partial, self._resume_partial = self._resume_partial, None  # resumed from a mid-epoch checkpoint
        done = partial["batches"] if partial is not None else 0
        if partial is not None:
            midepoch.restore(state, partial, rank=dist.rank, device=self.device, plugins=self.run_plugins, trainer=self)
            midepoch.restore_rng(partial, rank=dist.rank, world_size=dist.world_size)
        loader = self.train_loader(epoch, start=done)
        epoch_start = time.perf_counter() - (partial["seconds"] if partial is not None else 0.0)
        every = opts.checkpoint_every_steps
        group_start = group = done
        shares = loader.batch_sampler.shares  # (this process's samples, the global batch's samples) per batch
        total = len(shares)
        for index, batch in enumerate(loader, start=done):
            if index == group_start:  # the micro-batches of this optimiser step, and their global samples
                group = min(opts.grad_accumulation, total - group_start)
                group_samples = sum(n_global for _, n_global in shares[group_start:group_start + group])
                group_start += group
            size = shares[index][0]
            # This process's share of the step: DDP averages the processes' gradients (divides by
            # world_size), so the step's gradient is the mean over all of the group's samples.
            last = index == group_start - 1
            self.train_step(batch, group=group, last_in_group=last, force_check=index == total - 1,
                            weight=size * dist.world_size / group_samples, counted=size > 0)
            if self._stop_now and last and not dist.distributed:
                if index < total - 1:
                    self._raise_if_non_finite(state.first_bad, epoch)  # the check the epoch's last step would make
                break
            if every and last and index < total - 1 and self.step % every == 0:
                self._checkpoint_mid_epoch(epoch, index + 1, time.perf_counter() - epoch_start)
        seconds = time.perf_counter() - epoch_start
        totals = dist.all_reduce_sum(torch.stack([state.loss_sum + state.loss_sum_host,
                                                  torch.tensor(float(state.seen), dtype=torch.float64, device=self.device)]))
        row = {"epoch": epoch, "step": self.step, "lr": self.scheduler.get_last_lr()[0], "train/loss": float(totals[0] / totals[1])}
        if state.term_sums:  # the plugins' loss terms, per-sample means (the same names on every process)
            names = sorted(state.term_sums)
            sums = dist.all_reduce_sum(torch.stack([state.term_sums[n].to(torch.float64) for n in names]))
            row.update({f"train/{n}": float(v) / max(float(totals[1]), 1.0) for n, v in zip(names, sums.tolist(), strict=True)})
        state.flush_metrics()
        row.update({f"train/{name}": as_float(m.compute()) for name, m in state.metrics.items()})
        row["samples_per_s"] = float(totals[1]) / max(seconds, 1e-9)
        self.samples["train"] = int(totals[1])
        return row

    def _raise_if_non_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        # The earliest bad step over all processes (steps are 1-based; 0 means none).
        encoded = torch.where(first_bad > 0, 1_000_000_000 - first_bad, torch.zeros_like(first_bad))
        worst = int(self.dist.all_reduce_max(encoded.clone()))
        if worst:
            step = 1_000_000_000 - worst
            raise NonFiniteLossError(
                f"the training loss became NaN or infinite at step {step} (epoch {epoch}); training stopped, "
                f"the last good checkpoint is kept in {self.run_dir}", step)

    def _report_unreadable(self, epoch: int) -> None:
        """A warning for the inputs first found unreadable in this epoch (``trainer.unreadable_inputs: missing``)."""
        log = self.model.unreadable
        new = list(log.entries.values())[self._unreadable_reported:]
        self._unreadable_reported = len(log)
        if new and self.is_main:
            from mmcore.unreadable import describe

            shown = "; ".join(describe(e) for e in new[:3]) + (f"; ... ({len(new) - 3} more)" if len(new) > 3 else "")
            logger.warning("epoch %d: %d input(s) could not be read and are missing modalities of their samples "
                           "(trainer.unreadable_inputs: missing; report.json lists them): %s", epoch, len(new), shown)

    def averaged_weights(self) -> contextlib.AbstractContextManager:
        """A ``with`` block in which the model holds ``trainer.ema_decay``'s averaged weights (the
        optimiser's own weights restored after it); without an average, the model as it is."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def _validate(self) -> dict[str, float]:
        split = "val" if len(self.datasets["val"]) else "train"
        # The diagnostics' end-of-run report reads the last validation pass rather than making its own
        diagnostics = next((p for _, p in self.run_plugins if isinstance(p, ImbalanceDiagnostics)), None)
        tally = diagnostics.tally_validation(self, split) if diagnostics is not None else None
        results = self.evaluate(self.datasets[split], split="val", observe=tally.update if tally is not None else None)
        return {f"val/{k}": v for k, v in results.items()}

    def _track_best(self, row: Mapping[str, float]) -> bool:
        opts = self.options
        key = f"val/{opts.monitor}"
        if key not in row:
            raise ConfigError([ConfigIssue("trainer.monitor", f"validation reported {sorted(k[4:] for k in row if k.startswith('val/'))}, not {opts.monitor!r}")])
        value = -row[key] if self.monitor_lower_is_better else row[key]
        if value > self.best_value:
            self.best_value, self.best_epoch, self.bad_epochs = value, row["epoch"], 0
            self.best_weights = model_state(self.model)
            return True
        self.bad_epochs += 1
        return False

    def _checkpoint(self, improved: bool) -> None:
        if self.is_main:
            extra = {"epoch": self.epoch, "step": self.step}
            if improved:
                save_checkpoint(self.model, self.rundir.checkpoint(RunDir.BEST), weights=self.best_weights, extra=extra)
            save_checkpoint(self.model, self.rundir.checkpoint(RunDir.LAST), training_state=self._training_state(), extra=extra)
        self.dist.barrier()

    def _checkpoint_mid_epoch(self, epoch: int, batches: int, seconds: float) -> None:
        """``last/`` after ``batches`` global micro-batches of ``epoch`` (``trainer.checkpoint_every_steps``;
        every process takes part): the completed epochs' state plus the running epoch's
        (:mod:`mmcore.engine.midepoch`). ``best/`` changes only at epoch ends."""
        if self._epoch_state.check_every > 1:  # losses read sparsely: never checkpoint past a bad step
            self._raise_if_non_finite(self._epoch_state.first_bad, epoch)
        partial = midepoch.capture(self._epoch_state, epoch=epoch, batches=batches, seconds=seconds, dist=self.dist,
                                   plugins=self.run_plugins)
        if self.is_main:
            state = {**self._training_state(), "epoch": epoch - 1, midepoch.PARTIAL: partial}
            save_checkpoint(self.model, self.rundir.checkpoint(RunDir.LAST), training_state=state,
                            extra={"epoch": epoch - 1, "step": self.step, "in_epoch": {"epoch": epoch, "batches": batches}})
        self.dist.barrier()

    def _interrupted(self, done: int, start: float) -> RunInterrupted:
        """Write ``report.json`` of an interrupted run (``status: "interrupted"``, ``epochs_run``: the
        epochs whose checkpoint is written) and return the exception that says how to continue it."""
        if self.is_main:
            report = {"status": "interrupted", "stop_reason": None, "error": None, "best_epoch": self.best_epoch,
                      "epochs_run": done, "epochs_planned": self.options.epochs, "monitor": self.options.monitor,
                      "best_value": (-self.best_value if self.monitor_lower_is_better else self.best_value)
                      if self.best_epoch else None, "test": {}, "history": self.history, "steps": self.step,
                      "seconds": time.perf_counter() - start, "run_dir": str(self.run_dir),
                      "resume": RunInterrupted(str(self.run_dir), done).resume_hint()}
            with contextlib.suppress(OSError):  # a full disk must not hide the Ctrl-C
                write_file(self.rundir.report, dumps_json(report, indent=2))
        return RunInterrupted(str(self.run_dir), done)

    def _finish(self, status: str, start: float, *, test: bool, error: BaseException | None = None) -> dict[str, Any]:
        """Test the best checkpoint, build the report, run the ``mmcore_train_end`` hooks (the loggers
        among them: the plots logger fills ``report["plots"]``), then write ``report.json``."""
        opts = self.options
        results: dict[str, float] = {}
        before_test = test and self.manager.has_hook("mmcore_before_test")
        if test and (len(self.datasets["test"]) or before_test):
            # The best checkpoint (every process holds its weights), not the last epoch's.
            self.model.load_state_dict({k: v.to(self.device) for k, v in self.best_weights.items()})
        failure: PluginHookError | None = None
        if before_test:  # e.g. fit choosing the ensemble's experts: the one test pass scores the choice
            try:
                self.manager.call_lifecycle("mmcore_before_test", trainer=self)
            except PluginHookError as exc:  # the run failed with it: not tested; the end hooks and report.json say so
                status, error, test, failure = "failed", exc, False, exc
        if test and len(self.datasets["test"]):
            results = self.evaluate(self.datasets["test"], split="test")
        parameters = sum(p.numel() for p in self.model.parameters())
        report = {
            "status": status,
            "stop_reason": self.stop_reason if status == "stopped" else None,
            "error": None if error is None else str(error),
            "best_epoch": self.best_epoch,
            "epochs_run": self.epoch,
            "monitor": opts.monitor,
            "best_value": (-self.best_value if self.monitor_lower_is_better else self.best_value)
            if self.best_epoch else None,
            "test": results,
            "history": self.history,
            "steps": self.step,
            "seconds": time.perf_counter() - start,
            "world_size": self.dist.world_size,
            "samples": dict(self.samples),
            "device": str(self.device),
            "threads": self.threads,  # intra-op threads this run used (trainer.threads' choice)
            "parameters": parameters,
            "trainable_parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "run_dir": str(self.run_dir),
            "plots": [],
            "unreadable_inputs": self.model.unreadable.to_json(),
        }
        try:
            self.manager.call_lifecycle("mmcore_train_end", trainer=self, report=report)
        except PluginHookError as exc:  # the run itself is complete, but a plugin failed: say so
            report.update(status="failed", error=str(exc))
            failure = failure or exc
        if self.is_main:
            write_file(self.rundir.report, dumps_json(report, indent=2))
        if failure is not None:
            raise failure
        return report
