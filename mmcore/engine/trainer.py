"""The training loop: config -> data + model -> AdamW (warmup + cosine) -> checkpoints -> test report.

One :class:`Trainer` runs in every process of a distributed run (``torchrun``): the model is
wrapped in DistributedDataParallel, each process reads its share of every global batch (no sample
repeated or dropped), metrics are synchronised so each sample counts once, and only the main
process prints, logs and writes checkpoints. See :class:`Trainer` for what equals one process.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from mmcore.components import PRIMARY_ARGUMENT
from mmcore.data import SPLITS, seed_worker
from mmcore.engine import NonFiniteLossError, distributed
from mmcore.engine.artefacts import check_training_state, read_model_json, read_weights
from mmcore.engine.checkpoint import (
    atomic_write,
    dumps_json,
    load_training_state,
    load_weights,
    model_state,
    save_checkpoint,
)
from mmcore.engine.config import TrainerOptions, resolve_paths, resolved_config, validate_config
from mmcore.engine.evaluation import autocast_context, evaluate_counted, to_device
from mmcore.engine.host_memory import retain_freed_memory
from mmcore.engine.rundir import SPEC, STATE, WEIGHTS, RunDir
from mmcore.engine.views import TrainCollate, TrainingView
from mmcore.errors import ConfigError, ConfigIssue, PluginHookError, user_input_phase
from mmcore.model import MultimodalModel, build_model
from mmcore.plugin_manager import MmcorePluginManager, get_plugin_manager

#: Training batches whose predictions are collected before one update of the training metrics.
_METRIC_CHUNK = 32
#: Metric names for which smaller is better when ``trainer.monitor_mode`` is auto.
_LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse", "perplexity", "median_rank")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is a dependency, but seeding must never be what fails
        pass


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and plain data (loadable with weights_only=True)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = (name, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached))
    except ImportError:
        pass
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"])[: torch.cuda.device_count()])  # resumed on fewer GPUs
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, cached))


#: Head options the trainer fills from the training split when the config leaves them out.
_FILLED_FROM_DATA = {"model.head.classes", "model.head.num_classes", "model.head.num_labels"}


def model_data_options(model: Any, registry: Any) -> dict[str, Any]:
    """Data-set options the model implies: ``slot_modalities`` ``{slot: encoder modality}`` and what the
    head's ``dataset_options(head_options)`` says (e.g. ``target_type``, ``classes``)."""
    out: dict[str, Any] = {}
    if not isinstance(model, Mapping):
        return out
    try:
        encoders = model.get("encoders") or {}
        out["slot_modalities"] = {slot: registry.get("encoder", e["name"]).modality for slot, e in encoders.items()
                             if registry.get("encoder", e["name"]).modality}
        head = model.get("head") or {}
        hints = getattr(registry.get("head", head["name"]).factory, "dataset_options", None)
    except (KeyError, TypeError, AttributeError):  # an invalid spec is reported by validate_config
        return out
    if callable(hints):
        out.update(hints({k: v for k, v in head.items() if k != "name"}))
    return out


def load_datasets(config: Mapping[str, Any], manager: MmcorePluginManager, splits: Sequence[str] = SPLITS) -> dict[str, Any]:
    """The config's dataset, one object per split. Options the model implies (``model_data_options``)
    go to a dataset factory that takes them, unless the data config sets them."""
    data = dict(config["data"])
    info = manager.registry.get("dataset", data.pop("name"))
    from mmcore.options import factory_parameters

    params, _ = factory_parameters(info.factory)
    for key, value in model_data_options(config.get("model"), manager.registry).items():
        if key in params and key not in data:
            data[key] = value
    with user_input_phase("reading the data"):  # a ValueError/TypeError here lies in the data or its options
        return {split: info.factory(**{PRIMARY_ARGUMENT["dataset"]: split}, **data) for split in splits}


#: Trainer options a resumed run may change: they do not change what is computed.
_RESUME_MAY_DIFFER = {f"trainer.{k}" for k in ("run_dir", "progress", "num_workers", "tensorboard", "plots", "device",
                                               "cache_inputs", "cache_features", "eval_batch_size", "retain_freed_memory")}


def _config_differences(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted path, old, new)`` for every leaf where two configs differ."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _config_differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [(path, old, new)]


def lower_is_better(metric: str, mode: str = "auto") -> bool:
    if mode != "auto":
        return mode == "min"
    return any(word in metric.lower() for word in _LOWER_IS_BETTER)


def warmup_cosine(total_steps: int, warmup_fraction: float, min_ratio: float = 0.0):
    """Linear warmup over ``warmup_fraction`` of the steps, then cosine decay to ``min_ratio``."""
    warmup = max(1, int(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def parameter_groups(model: torch.nn.Module, lr: float, weight_decay: float, multipliers: Mapping[str, float]) -> list[dict]:
    """AdamW groups: per-component learning rates (longest matching module-path prefix wins), and
    no weight decay on 1-D parameters (biases, norms, placeholders). Frozen parameters are left out."""
    ordered = sorted(multipliers.items(), key=lambda kv: -len(kv[0]))
    used = {prefix: False for prefix in multipliers}
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        multiplier = 1.0
        for prefix, value in ordered:
            if name == prefix or name.startswith(prefix + "."):
                multiplier, used[prefix] = float(value), True
                break
        groups.setdefault((multiplier, param.ndim > 1), []).append(param)
    unused = [prefix for prefix, hit in used.items() if not hit]
    if unused:
        raise ConfigError([ConfigIssue(f"trainer.lr_multipliers.{p}", "matches no trainable parameter of the model") for p in unused])
    return [
        {"params": params, "lr": lr * multiplier, "weight_decay": weight_decay if decay else 0.0, "lr_multiplier": multiplier}
        for (multiplier, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]


def adamw(groups: list[dict], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``groups``: the fused implementation (one kernel per parameter) wherever every
    parameter allows it, else PyTorch's default one.

    Both compute the same update, up to float rounding; fused takes about a third of the default's
    time on a small CPU model (benchmarks/RESULTS.md), where the default's per-tensor Python loop
    costs more than the arithmetic. It needs floating-point parameters on a device PyTorch has the
    kernel for (CPU, CUDA, ...), which AdamW checks as it is built.
    """
    try:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # "`fused=True` requires all the params to be floating point Tensors of supported devices"
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


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
        self.options: TrainerOptions = validate_config(self.config, self.manager.registry)
        if resume is not None:
            self.options.run_dir = str(resume)
        self.resume = Path(resume) if resume is not None else None
        # A flag of this call, never a config value: a resumed run must not inherit it.
        self.overwrite = overwrite
        #: the run directory's names; :meth:`setup` creates, marks and locks it (main process)
        self.rundir = RunDir.check(self.options.run_dir, resume=self.resume is not None, overwrite=overwrite)
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

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.dist.device if self.dist is not None else distributed.resolve_device(self.options.device)

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

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
        seed_everything(opts.seed)
        if opts.retain_freed_memory:
            retain_freed_memory()
        # The data before the model: a head's classes (and their count) come from the training split.
        self.datasets = load_datasets(self.config, self.manager)
        if len(self.datasets["train"]) == 0:
            raise ValueError("the training split is empty")
        distributed.check_training_rows(len(self.datasets["train"]), ws)
        train = self.datasets["train"]
        head = self.config["model"]["head"]
        fill = getattr(self.manager.registry.get("head", head["name"]).factory, "options_from_data", None)
        if callable(fill) and isinstance(getattr(train, "metadata", None), Mapping):
            try:  # e.g. classification: classes/num_classes from the labels, so config.yaml and model.json carry them
                filled = fill({k: v for k, v in head.items() if k != "name"}, train.metadata)
            except ConfigError as exc:
                raise ConfigError([ConfigIssue(f"model.head.{i.path}", i.message) for i in exc.issues]) from exc
            self.config["model"] = {**self.config["model"], "head": {"name": head["name"], **filled}}
        seed_everything(opts.seed)  # the initial weights do not depend on what reading the data drew
        self.model = build_model(self.config["model"], self.manager.registry)
        self._check_monitor()
        cached_slots = self._cacheable_slots() if opts.cache_features else []
        self.model.fit_processors(train.samples if hasattr(train, "samples") else [train[i] for i in range(len(train))])
        self.model.to(self.device)
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
        self.optimizer = adamw(parameter_groups(self.model, opts.lr, opts.weight_decay, opts.lr_multipliers), opts.lr, opts.weight_decay)
        self.micro_batches = math.ceil(len(train) / opts.batch_size)
        self.steps_per_epoch = math.ceil(self.micro_batches / opts.grad_accumulation)
        self.total_steps = self.steps_per_epoch * opts.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, opts.warmup_fraction, opts.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda" and opts.precision == "fp16")
        self.augment = self._augmenters()
        self.best_value, self.best_epoch, self.bad_epochs = -math.inf, 0, 0
        self.best_weights = model_state(self.model)
        self.start_epoch = 1
        if self.resume is not None:
            self._load_resume_state()

    def _check_monitor(self) -> None:
        names = ["loss", *self.model.head.metrics()]
        if self.options.monitor is None:
            self.options.monitor = names[1] if len(names) > 1 else "loss"
        if self.options.monitor not in names:
            raise ConfigError([ConfigIssue("trainer.monitor", f"the head {self.config['model']['head']['name']!r} reports {names}; got {self.options.monitor!r}")])

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
            for split in ("train", "val"):
                precompute_features(self.model, slot, self.datasets[split], batch_size=batch_size)

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
        }

    def _check_resume_config(self) -> None:
        """Resuming continues the same run: only options that cannot change its results may differ."""
        # RunDir.check refused a run without config.yaml; read_config uses the safe, bounded loader.
        # Runs written before paths were stored absolute held them relative to the current folder.
        saved = resolve_paths(self.rundir.read_config())
        issues = [ConfigIssue(path, f"differs from the run being resumed ({self.run_dir}): {old!r} there, {new!r} now")
                  for path, old, new in _config_differences(saved, self.config) if path not in _RESUME_MAY_DIFFER
                  and not (new is None and path in _FILLED_FROM_DATA)]  # re-filled (and compared) in setup()
        if issues:
            issues.append(ConfigIssue("", "resume with the run's own config (it is in config.yaml), or start a new run"))
            raise ConfigError(issues)

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
        best_weights = None
        if self.rundir.has_checkpoint(RunDir.BEST):
            best = self.rundir.readable_checkpoint(RunDir.BEST) / WEIGHTS
            best_weights = read_weights(best, {k: (v.dtype, tuple(v.shape)) for k, v in self.best_weights.items()})
        load_weights(self.model, last)
        if best_weights is not None:
            self.best_weights = best_weights
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when saved by a disabled scaler (CPU, fp32, bf16): start fresh
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        best = state["best"]
        self.best_value, self.best_epoch, self.bad_epochs = float(best["value"]), int(best["epoch"]), int(best["bad_epochs"])
        self.start_epoch = self.epoch + 1
        if self.options.early_stopping is not None and self.bad_epochs >= self.options.early_stopping:
            self.start_epoch = self.options.epochs + 1  # it had stopped early: nothing more to train
            self._resumed_status = "early_stopping"
        self._resume_rng = state["rng"]

    # ------------------------------------------------------------------ data
    def train_loader(self, epoch: int) -> DataLoader:
        """The training batches of ``epoch``: this process's share of each global batch, shuffled by
        (seed, epoch). ``loader.batch_sampler.shares`` gives each batch's ``(n_local, n_global)``."""
        opts, dist = self.options, self.dist
        view = TrainingView(self.datasets["train"], epoch=epoch, seed=opts.seed, dropout=self._dropout_rates(), augment=self.augment)
        # One sampler for one process or many: the same global batches either way, none padded.
        sampler = distributed.GlobalBatchSampler(len(view), opts.batch_size, rank=dist.rank, world_size=dist.world_size,
                                                 seed=opts.seed, epoch=epoch)
        # Worker seeds (processors' train-time augmentation in workers) are drawn from this
        # generator: per process in a distributed run, so processes do not repeat each other's draws.
        loader_seed = opts.seed * 7919 + epoch if not dist.distributed else distributed.process_seed(opts.seed, dist.rank, epoch)
        return DataLoader(
            view,
            batch_sampler=sampler,
            collate_fn=TrainCollate(self.model.collate, self.model.processors),
            num_workers=opts.num_workers,
            worker_init_fn=seed_worker if opts.num_workers else None,
            generator=torch.Generator().manual_seed(loader_seed),
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def evaluate(self, dataset, split: str | None = None) -> dict[str, float]:
        """Mean loss and the head's metrics over ``dataset`` (synchronised over processes, each sample
        counted once); ``split`` names it in ``self.samples`` (the number of samples counted)."""
        results, count = evaluate_counted(
            self.model, dataset, batch_size=self.options.eval_batch_size or self.options.batch_size, device=self.device,
            precision=self.options.precision, rank=self.dist.rank, world_size=self.dist.world_size,
            num_workers=self.options.num_workers)
        if split is not None:
            self.samples[split] = count
        return results

    # ------------------------------------------------------------------ one step
    def forward_backward(self, batch: Mapping[str, Any], *, scale: float = 1.0, sync: bool = True):
        """Forward and backward of one (micro-)batch; returns the head output (loss not scaled)."""
        inputs, targets = to_device(batch, self.device, non_blocking=True)
        if targets is None:
            raise ValueError("training samples need targets, got a batch without them")
        no_sync = getattr(self.train_model, "no_sync", None)
        context = no_sync() if (not sync and no_sync is not None) else contextlib.nullcontext()
        with context:
            with autocast_context(self.device, self.options.precision):
                out = self.train_model(inputs, targets)
            if out.loss is None:
                raise ValueError("the head returned no loss although targets were given")
            # (A multiplication by 1 would still be an op forward and backward, every step.)
            self.scaler.scale(out.loss if scale == 1.0 else out.loss * scale).backward()
        return out, targets

    def optimizer_step(self) -> None:
        if self.options.grad_clip:
            self.scaler.unscale_(self.optimizer)
            # The trainable parameters, listed once: walking the module tree every step costs
            # about 1% of a small model's step.
            if self._trainable is None:
                self._trainable = [p for p in self.model.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(self._trainable, self.options.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ the run
    def fit(self) -> dict[str, Any]:
        """Train, keep the best checkpoint, evaluate it on the test split; return the report."""
        start = time.perf_counter()
        finished = False
        try:
            with user_input_phase("building the run"):  # errors here lie in the config or data
                self.setup()
            report = self._fit(start)
            finished = True
            return report
        finally:
            if self.dist is not None:
                self.dist.close(wait=finished)
            self.rundir.release()

    def _fit(self, start: float) -> dict[str, Any]:
        opts = self.options
        loggers = _Loggers(self.rundir, enabled=self.is_main, tensorboard=opts.tensorboard, plots=opts.plots)
        if self.is_main:
            atomic_write(self.rundir.config, lambda p: p.write_text(yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True)))
        status, error = getattr(self, "_resumed_status", "completed"), None
        try:
            # Plugins' lifecycle hooks go through the manager: one that raises stops the run
            # cleanly (PluginHookError naming it; report.json says so; checkpoints kept).
            self.manager.call_lifecycle("mmcore_train_start", trainer=self, config=self.config)
            if getattr(self, "_resume_rng", None) is not None:
                set_rng_state(self._resume_rng)
            for epoch in range(self.start_epoch, opts.epochs + 1):
                self.epoch = epoch
                row = self._train_epoch(epoch)
                row.update(self._validate())
                self.history.append(row)
                improved = self._track_best(row)
                self._checkpoint(improved)
                loggers.epoch(row, self.history)
                if self.is_main and opts.progress:
                    shown = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "step"))
                    print(f"epoch {epoch}/{opts.epochs}  {shown}", flush=True)
                self.manager.call_lifecycle("mmcore_epoch_end", trainer=self, epoch=epoch, metrics=row)
                if opts.early_stopping is not None and self.bad_epochs >= opts.early_stopping:
                    status = "early_stopping"
                    break
        except NonFiniteLossError as exc:
            status, error = "non_finite_loss", exc
        except PluginHookError as exc:
            status, error = "failed", exc
        report = self._finish(status, start, loggers, test=error is None, error=error)
        if error is not None:
            raise error
        return report

    def begin_epoch(self, epoch: int) -> _EpochState:
        """Fresh per-epoch accumulators (loss, metrics, non-finite tracking) for :meth:`train_step`.

        In a distributed run it also reseeds this process's generators with
        :func:`~mmcore.engine.distributed.process_seed` ``(seed, rank, epoch)`` (see :class:`Trainer`).
        """
        self.train_model.train()
        if self.dist.distributed:
            seed_everything(distributed.process_seed(self.options.seed, self.dist.rank, epoch))
        # Non-finite losses are noticed on the device and read every `check_every` steps (each
        # step on one CPU process, where reading costs nothing; sparsely on CUDA and in DDP).
        check_every = 1 if (self.device.type == "cpu" and not self.dist.distributed) else 25
        self._epoch_state = _EpochState(
            epoch=epoch,
            metrics={name: m.to(self.device) for name, m in self.model.head.metrics().items()},
            loss_sum=torch.zeros((), dtype=torch.float64, device=self.device),
            first_bad=torch.zeros((), dtype=torch.long, device=self.device),
            step_counter=torch.full((), self.step, dtype=torch.long, device=self.device),
            check_every=check_every,
            step_hooks=bool(self.manager.hook.mmcore_train_step_end.get_hookimpls()),
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
        out, targets = self.forward_backward(batch, scale=1.0 / group if weight is None else weight, sync=last_in_group)
        loss = out.loss.detach()
        if counted:
            if state.check_every == 1:  # one CPU process: reading the loss is free; stop before the bad step is taken
                value = float(loss)
                if not math.isfinite(value):
                    raise NonFiniteLossError(
                        f"the training loss became NaN or infinite at step {self.step + 1} (epoch {state.epoch}); training "
                        f"stopped, the last good checkpoint is kept in {self.run_dir}", self.step + 1)
                state.loss_sum_host += value * len(targets)
            else:  # noticed and summed on the device, read every `check_every` steps
                state.first_bad = torch.where(torch.isfinite(loss) | (state.first_bad > 0), state.first_bad, state.step_counter + 1)
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
                self.manager.call_lifecycle("mmcore_train_step_end", trainer=self, step=self.step,
                                            metrics={"loss": float(loss), "lr": self.scheduler.get_last_lr()[0]})
        return loss

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        opts, dist = self.options, self.dist
        state = self.begin_epoch(epoch)
        loader = self.train_loader(epoch)
        bar = _progress(len(loader), f"epoch {epoch}/{opts.epochs}", enabled=self.is_main and opts.progress)
        tick, samples_at_tick = time.perf_counter(), 0
        epoch_start = tick
        total = len(loader)
        group_start = group = 0
        shares = loader.batch_sampler.shares  # (this process's samples, the global batch's samples) per batch
        for index, batch in enumerate(loader):
            if index == group_start:  # the micro-batches of this optimiser step, and their global samples
                group = min(opts.grad_accumulation, total - group_start)
                group_samples = sum(n_global for _, n_global in shares[group_start:group_start + group])
                group_start += group
            size = shares[index][0]
            # This process's share of the step: DDP averages the processes' gradients (divides by
            # world_size), so the step's gradient is the mean over all of the group's samples.
            self.train_step(batch, group=group, last_in_group=index == group_start - 1, force_check=index == total - 1,
                            weight=size * dist.world_size / group_samples, counted=size > 0)
            if bar is not None:
                bar.update(1)
                now = time.perf_counter()
                if now - tick > 0.5 or index == total - 1:
                    rate = (state.seen - samples_at_tick) * dist.world_size / max(now - tick, 1e-9)
                    postfix = {"loss": f"{state.total_loss() / max(state.seen, 1):.4f}", "samples/s": f"{rate:.0f}"}
                    if self.history and f"val/{opts.monitor}" in self.history[-1]:
                        postfix[f"val {opts.monitor}"] = f"{self.history[-1][f'val/{opts.monitor}']:.4f}"
                    bar.set_postfix(postfix)
                    tick, samples_at_tick = now, state.seen
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - epoch_start
        totals = dist.all_reduce_sum(torch.stack([state.loss_sum + state.loss_sum_host,
                                                  torch.tensor(float(state.seen), dtype=torch.float64, device=self.device)]))
        row = {"epoch": epoch, "step": self.step, "lr": self.scheduler.get_last_lr()[0], "train/loss": float(totals[0] / totals[1])}
        state.flush_metrics()
        row.update({f"train/{name}": _as_float(m.compute()) for name, m in state.metrics.items()})
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

    def _validate(self) -> dict[str, float]:
        split = "val" if len(self.datasets["val"]) else "train"
        return {f"val/{k}": v for k, v in self.evaluate(self.datasets[split], split="val").items()}

    def _track_best(self, row: Mapping[str, float]) -> bool:
        opts = self.options
        key = f"val/{opts.monitor}"
        if key not in row:
            raise ConfigError([ConfigIssue("trainer.monitor", f"validation reported {sorted(k[4:] for k in row if k.startswith('val/'))}, not {opts.monitor!r}")])
        value = -row[key] if lower_is_better(opts.monitor, opts.monitor_mode) else row[key]
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
            self._write_history()
        self.dist.barrier()

    def _finish(self, status: str, start: float, loggers: _Loggers, *, test: bool,
                error: BaseException | None = None) -> dict[str, Any]:
        opts = self.options
        results: dict[str, float] = {}
        if test and len(self.datasets["test"]):
            # The best checkpoint (every process holds its weights), not the last epoch's.
            self.model.load_state_dict({k: v.to(self.device) for k, v in self.best_weights.items()})
            results = self.evaluate(self.datasets["test"], split="test")
        parameters = sum(p.numel() for p in self.model.parameters())
        report = {
            "status": status,
            "error": None if error is None else str(error),
            "best_epoch": self.best_epoch,
            "epochs_run": self.epoch,
            "monitor": opts.monitor,
            "best_value": (-self.best_value if lower_is_better(opts.monitor, opts.monitor_mode) else self.best_value)
            if self.best_epoch else None,
            "test": results,
            "history": self.history,
            "steps": self.step,
            "seconds": time.perf_counter() - start,
            "world_size": self.dist.world_size,
            "samples": dict(self.samples),
            "device": str(self.device),
            "parameters": parameters,
            "trainable_parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "run_dir": str(self.run_dir),
            "plots": [],
        }
        if self.is_main:
            self._write_history()
            report["plots"] = [str(p) for p in loggers.plots(self.history)]
            if results:
                loggers.test(results, self.step)
            loggers.close()
            atomic_write(self.rundir.report, lambda p: p.write_text(dumps_json(report, indent=2)))
        try:
            self.manager.call_lifecycle("mmcore_train_end", trainer=self, report=report)
        except PluginHookError as exc:  # the run itself is complete, but a plugin failed: say so
            report.update(status="failed", error=str(exc))
            if self.is_main:
                atomic_write(self.rundir.report, lambda p: p.write_text(dumps_json(report, indent=2)))
            raise
        return report

    def _write_history(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]

        def write(path: Path) -> None:
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys)
                writer.writeheader()
                writer.writerows(self.history)

        atomic_write(self.rundir.metrics, write)


@dataclasses.dataclass
class _EpochState:
    epoch: int
    metrics: dict[str, Any]
    loss_sum: torch.Tensor
    first_bad: torch.Tensor
    step_counter: torch.Tensor
    check_every: int
    step_hooks: bool
    seen: int = 0
    #: the loss sum kept on the host where the loss is read every step anyway (one CPU process)
    loss_sum_host: float = 0.0
    pending: list = dataclasses.field(default_factory=list)

    def total_loss(self) -> float:
        return float(self.loss_sum) + self.loss_sum_host

    def flush_metrics(self) -> None:
        if not self.pending:
            return
        with torch.no_grad():
            try:
                predictions = torch.cat([p for p, _ in self.pending])
                targets = torch.cat([t for _, t in self.pending])
                chunks = [(predictions, targets)]
            except RuntimeError:  # shapes that do not concatenate (e.g. ragged sequences): one by one
                chunks = self.pending
            for metric in self.metrics.values():
                for p, t in chunks:
                    metric.update(p, t)
        self.pending = []


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.float().mean())
    return float(value)


def _progress(total: int, description: str, *, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, mininterval=0.5)


class _Loggers:
    """TensorBoard (when installed) and PNG plots (when matplotlib is installed); main process only."""

    def __init__(self, rundir: RunDir, *, enabled: bool, tensorboard: bool, plots: bool) -> None:
        self.rundir, self.enabled, self.writer, self.draw = rundir, enabled, None, plots
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: skip silently
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(log_dir=str(rundir.tensorboard))

    def epoch(self, row: Mapping[str, float], history: Sequence[Mapping[str, float]]) -> None:
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("epoch", "step"):
                    self.writer.add_scalar(key, value, int(row["epoch"]))
            self.writer.flush()

    def test(self, results: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in results.items():
                self.writer.add_scalar(f"test/{key}", value, step)

    def plots(self, history: Sequence[Mapping[str, float]]) -> list[Path]:
        if not self.enabled or not self.draw or not history:
            return []
        return plot_history(history, self.rundir.plots)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_history(history: Sequence[Mapping[str, float]], folder: Path) -> list[Path]:
    """One PNG per quantity (loss, each metric): train and validation curves over epochs.

    Returns the files written; nothing when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = sorted({key.split("/", 1)[1] for row in history for key in row if "/" in key})
    epochs = [row["epoch"] for row in history]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
        for split in ("train", "val"):
            values = [row.get(f"{split}/{name}") for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [math.nan if v is None else v for v in values], marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = folder / f"{name.replace('/', '_')}.png"
        atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png"))
        plt.close(fig)
        written.append(path)
    return written
