"""``mmcore tune``'s study: Optuna asks, an ordinary training run answers, a killed study resumes.

Every trial is a normal run directory (``OUT/trial-007``) trained by the same
:class:`~mmcore.engine.trainer.Trainer` as ``mmcore train``, from the base config (``CONFIG`` and
its ``key=value`` overrides) with the trial's values applied (:mod:`.space`). Optuna's TPE sampler
(Bergstra et al. 2011) proposes them; a single-objective study prunes with the median rule or
Hyperband (Li et al. 2017), fed the objective's validation value after every epoch from the
``mmcore_epoch_end`` hook -- a trial judged dominated is stopped at the end of that very epoch
(``trainer.request_stop``; report status ``stopped``, its reason naming the pruner).

Resuming (the same command again, after a crash or ``kill -9``): the study lives in an Optuna
storage (default ``sqlite:///OUT/study.db``), written when a trial starts and when it ends. A
trial still marked running belonged to the dead process (one process per study folder: a lock
says so) and is finished, not repeated: a run that had ended is only read back, one with a
checkpoint continues from it (``--resume``: the same epochs, the same numbers), one without is
moved aside and started again. Trials are then asked until the study holds ``--trials`` finished
ones (complete, pruned or failed): none lost, none counted twice.

The config as given is the first trial when each searched key's value in it (or its default)
lies in the space (``--no-baseline``: not): the bar the search is judged against, trained under the
very same conditions.

Objectives (``--objective``): a validation metric of the head (default: the run's monitor, e.g.
``accuracy``; its best epoch's value, the number that picks the checkpoint -- test results are
reported, never used to choose), and optionally costs of the trial's best checkpoint as
``mmcore compare`` measures them (:func:`mmcore.engine.compare.measure_cost`): ``latency`` (median
forward time in ms of one test sample, batch 1), ``parameters``, ``flops``. Several objectives give
a multi-objective study whose Pareto set is reported (Optuna does not prune those).

``--time-limit`` is a promise: before any trial a probe times the base config (setup, training
steps reading inputs for the first time and again, evaluation) and estimates one trial; a limit
that cannot hold ``--trials`` of them is refused with the estimate. While the study runs, a trial
that would not finish before the deadline is not started, and a running one stops at the end of
the epoch after which another would pass it (keeping its best checkpoint).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

import mmcore
from mmcore.errors import ConfigError, ConfigIssue, UserInputError
from mmcore_plugins.tune.space import Dimension, apply_params, baseline_params, encode

STUDY_JSON, BEST_YAML, PARETO = "study.json", "best.yaml", "pareto"
LOCK = ".mmcore-tune.lock"
#: Costs an objective may name -> the key of measure_cost's result (all minimised).
COSTS = {"latency": "latency_ms", "parameters": "parameters", "flops": "flops_per_sample"}
#: Times the latency of one sample is measured (median) for the ``latency`` objective.
LATENCY_REPEATS = 30
#: Training batches timed by the probe (each pass; its first step is not counted).
PROBE_BATCHES = 6


class TuneError(UserInputError):
    """A study that cannot run as asked (its folder is in use, it was started with another space)."""


@dataclass
class Objective:
    """One objective: a validation metric of the head (``metric``) or a cost (``cost``)."""

    name: str
    direction: str  # "maximize" | "minimize"
    metric: str | None = None
    cost: str | None = None


def parse_objectives(text: str | None) -> list[tuple[str, str]]:
    """``"accuracy,latency"`` -> ``[("metric", "accuracy"), ("cost", "latency")]``; ``val/`` prefixes
    are accepted. At most one metric (it picks the checkpoint), each name once."""
    if text is None:
        return [("metric", "")]
    out, seen = [], set()
    for raw in text.split(","):
        name = raw.strip().removeprefix("val/")
        if not name:
            raise ConfigError([ConfigIssue("--objective", f"empty objective in {text!r}")])
        if name in seen:
            raise ConfigError([ConfigIssue("--objective", f"{name!r} is named twice")])
        seen.add(name)
        out.append(("cost", name) if name in COSTS else ("metric", name))
    metrics = [n for kind, n in out if kind == "metric"]
    if len(metrics) > 1:
        raise ConfigError([ConfigIssue("--objective", f"at most one validation metric (it picks each trial's best checkpoint), "
                                                      f"got {metrics}; costs: {', '.join(COSTS)}")])
    if not metrics:
        raise ConfigError([ConfigIssue("--objective", f"name a validation metric of the head too (e.g. accuracy,{out[0][1]}): a "
                                                      "cost alone is minimised by the emptiest model")])
    return out


@dataclass
class Estimate:
    """What the probe measured (seconds) and the trial time it implies."""

    setup: float
    cold_step: float
    warm_step: float
    eval_sample: float
    steps_per_epoch: int
    epochs: int
    val_rows: int
    test_rows: int
    trial: float = 0.0
    after_training: float = 0.0

    def __post_init__(self) -> None:
        per_epoch = self.steps_per_epoch * self.warm_step + self.val_rows * self.eval_sample
        first = self.steps_per_epoch * max(0.0, self.cold_step - self.warm_step)
        # testing the best checkpoint + measuring its cost (a few forward passes, one backward)
        self.after_training = self.test_rows * self.eval_sample + 2.0
        self.trial = self.setup + first + self.epochs * per_epoch + self.after_training


def probe(config: Mapping[str, Any], *, manager, epochs: int) -> tuple[Estimate, str, bool]:
    """Time the base config on a few batches in a throw-away run: returns the estimate, the
    monitored metric and whether it is lower-is-better (the trainer's own checks, so an unknown
    metric is a ConfigError here, before any trial)."""
    from mmcore.engine.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="mmcore-tune-probe-") as tmp:
        cfg = json.loads(json.dumps(config))
        cfg["trainer"] = {**cfg.get("trainer", {}), "epochs": 1, "run_dir": str(Path(tmp) / "run"), "loggers": []}
        trainer = Trainer(cfg, manager=manager)
        start = time.perf_counter()
        trainer.setup()
        setup = time.perf_counter() - start
        try:
            passes = [_timed_pass(trainer) for _ in range(2)]
            val = trainer.datasets["val"]
            rows = [val[i] for i in range(min(64, len(val)))] or [trainer.datasets["train"][0]]
            from mmcore.data import SampleDataset

            sample = SampleDataset(rows)
            trainer.evaluate(sample)  # reads (and may remember) the inputs
            start = time.perf_counter()
            trainer.evaluate(sample)
            eval_sample = (time.perf_counter() - start) / len(rows)
            metric, lower = trainer.options.monitor, trainer.monitor_lower_is_better
            estimate = Estimate(setup=setup, cold_step=max(passes), warm_step=passes[1], eval_sample=eval_sample,
                                steps_per_epoch=trainer.steps_per_epoch, epochs=epochs, val_rows=len(val),
                                test_rows=len(trainer.datasets["test"]))
        finally:
            trainer.dist.close(wait=True)
            trainer.rundir.release()
    return estimate, metric, lower


def _timed_pass(trainer) -> float:
    """Mean seconds per training step (loading included) over the first PROBE_BATCHES batches."""
    trainer.begin_epoch(1)
    durations = []
    start = time.perf_counter()
    for i, batch in enumerate(trainer.train_loader(1)):
        if i >= PROBE_BATCHES:
            break
        trainer.train_step(batch)
        now = time.perf_counter()
        durations.append(now - start)
        start = now
    timed = durations[1:] or durations
    return sum(timed) / len(timed)


class TrialMonitor:
    """The per-trial plugin: reports the objective to Optuna after each epoch, stops a trial the
    pruner judges dominated or that the deadline would cut, at the end of that epoch."""

    def __init__(self, trial, metric: str, prune: bool, pruner_name: str, deadline: float | None, after_training: float) -> None:
        self.trial, self.metric, self.prune, self.pruner_name = trial, metric, prune, pruner_name
        self.deadline, self.after_training = deadline, after_training
        self.pruned_at: int | None = None
        self.timed_out_at: int | None = None
        self._last = time.monotonic()

    @mmcore.hookimpl
    def mmcore_epoch_end(self, trainer, epoch, metrics) -> None:
        now = time.monotonic()
        took, self._last = now - self._last, now
        value = metrics.get(f"val/{self.metric}")
        if self.prune and value is not None and math.isfinite(value):
            self.trial.report(float(value), step=int(epoch))
            if epoch < trainer.options.epochs and self.trial.should_prune():
                self.pruned_at = epoch
                trainer.request_stop(f"pruned by optuna's {self.pruner_name} pruner after epoch {epoch} "
                                     f"(val/{self.metric} {value:.4g})")
                return
        if self.deadline is not None and epoch < trainer.options.epochs and now + took + self.after_training > self.deadline:
            self.timed_out_at = epoch
            trainer.request_stop(f"the study's time limit: another epoch would end after it (stopped after epoch {epoch})")


@dataclass
class StudyOptions:
    trials: int
    out: Path
    storage: str | None = None
    study_name: str = "mmcore-tune"
    objective: str | None = None
    pruner: str = "median"
    time_limit: float | None = None
    seed: int = 0
    mlflow: str | None = None
    mlflow_experiment: str = "mmcore-tune"
    use_mlflow: bool = False
    #: the config as given (when its values lie in the space) is the first trial
    baseline: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def study_lock(out: Path):
    """One process per study folder: a second one is refused (its trials would be taken for dead ones)."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TuneError(f"another mmcore tune is running the study in {out} (wait for it, or use another --out)") from None
        yield
    finally:
        os.close(fd)


def sampler_seed(seed: int, stored_trials: int) -> int:
    """The TPE sampler's seed for a process that finds ``stored_trials`` trials in the study: ``seed`` for a new
    study; for a resumed one a number of its own, fixed by both (so a resume repeats no earlier draw)."""
    if stored_trials == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{stored_trials}".encode()).digest()[:4], "little")


def make_pruner(name: str, epochs: int):
    import optuna

    if name == "median":
        # Optuna's defaults, except that a trial's first epoch is never judged (n_warmup_steps=2:
        # steps are epochs, 1-based): a first epoch says more about the learning rate's warm-up than
        # about the config. Five trials must have finished before any is pruned.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError([ConfigIssue("--pruner", f"expected median, hyperband or none, got {name!r}")])


def finished(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]


def run_study(config: Mapping[str, Any], dims: Sequence[Dimension], options: StudyOptions, *, manager,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the study; returns the summary written as ``study.json``."""
    import optuna

    started = time.monotonic()
    deadline = started + options.time_limit if options.time_limit else None
    out = options.out
    kinds = parse_objectives(options.objective)
    from mmcore.engine.config import new_plan

    # each trial is a run of its own plan (its epochs may be a searched value): how the base config's
    # run grew (a fit run's config.yaml) is no part of it
    base = json.loads(json.dumps(new_plan(config)))
    metric_name = next(n for kind, n in kinds if kind == "metric")
    if metric_name:
        base.setdefault("trainer", {})["monitor"] = metric_name
    epochs_dim = next((d for d in dims if d.key == "trainer.epochs"), None)
    epochs = max(int(v) for v in epochs_dim.extremes()) if epochs_dim else int((base.get("trainer") or {}).get("epochs", 20))
    with study_lock(out):
        log("probing the base config to estimate a trial's time ...")
        estimate, metric, lower = probe(base, manager=manager, epochs=epochs)
        base["trainer"]["monitor"] = metric
        objectives = [Objective(metric, "minimize" if lower else "maximize", metric=metric) if kind == "metric"
                      else Objective(name, "minimize", cost=COSTS[name]) for kind, name in kinds]
        storage = options.storage or f"sqlite:///{(out / 'study.db').resolve()}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        multi = len(objectives) > 1
        pruner_name = "none" if multi else options.pruner
        study = optuna.create_study(storage=storage, study_name=options.study_name, load_if_exists=True,
                                    directions=[o.direction for o in objectives],
                                    sampler=optuna.samplers.TPESampler(seed=options.seed),
                                    pruner=make_pruner(pruner_name, epochs))
        identity = {"config": base, "space": [_dim_json(d) for d in dims], "objectives": [asdict(o) for o in objectives]}
        _check_same_study(study, identity, storage)
        # The sampler's generator starts afresh in every process: seeded with --seed alone, a study
        # resumed after a kill would draw its first trials' values again (trial 3 = trial 1). Seeded
        # with the trials already stored as well, a fresh study keeps its numbers and a resumed one
        # draws values of its own -- reproducibly, for the same history.
        study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(options.seed, len(study.get_trials(deepcopy=False))))
        if options.baseline and not study.get_trials(deepcopy=False):
            params, why = baseline_params(base, dims, manager.registry)
            if params is not None:  # the config as given is trial 0: the bar every other trial is judged against
                study.enqueue_trial(params, user_attrs={"baseline": True})
                log("trial 0 is the config as given (its values lie in the space)")
            else:
                log(f"the config as given is not a trial: {why}")
        done = finished(study)
        remaining = options.trials - len(done) - len(_running(study))
        log(f"one trial: about {estimate.trial:.0f} s (setup {estimate.setup:.1f} s, {estimate.steps_per_epoch} steps of "
            f"{1000 * estimate.warm_step:.0f} ms ({1000 * estimate.cold_step:.0f} ms reading inputs the first time) x "
            f"{epochs} epochs, validation and test)")
        if options.time_limit is not None:
            need = estimate.trial * (len(_running(study)) + max(0, remaining))
            if need > options.time_limit:
                fits = int(options.time_limit // estimate.trial)
                raise ConfigError([ConfigIssue("--time-limit", (
                    f"{options.time_limit:.0f} s cannot hold the {len(_running(study)) + max(0, remaining)} trial(s) left: at "
                    f"about {estimate.trial:.0f} s each they need about {need:.0f} s (measured on the base config before "
                    f"any trial); give --time-limit {math.ceil(need / 60)}m or more, or --trials "
                    f"{len(done) + fits} (what fits)"))])
        parent = _mlflow_parent(study, options, identity) if options.use_mlflow else None
        stopped_by_limit = False
        runner = _TrialRunner(study, dims, base, objectives, options, manager, estimate, deadline, pruner_name, parent, log)
        for trial in _running(study):  # left running by a process that died: finish it, do not repeat it
            runner.run(trial.number, resumed=True)
        while len(finished(study)) < options.trials:
            if deadline is not None and time.monotonic() + runner.expected() > deadline:
                stopped_by_limit = True
                log(f"time limit: another trial (about {runner.expected():.0f} s) would end after it; "
                    f"{len(finished(study))} of {options.trials} trials done")
                break
            trial = study.ask({d.key: d.distribution() for d in dims})
            runner.run(trial.number)
        summary = summarise(study, dims, objectives, base, options, estimate, time.monotonic() - started, stopped_by_limit)
        write_outputs(summary, study, dims, base, objectives, out)
        if parent is not None:
            _mlflow_finish(parent, out)
    return summary


def _running(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]


def _dim_json(d: Dimension) -> dict[str, Any]:
    out = {"key": d.key}
    if d.choices is not None:
        out["choices"] = [encode(c) for c in d.choices]
    else:
        out.update(low=d.low, high=d.high, log=d.log, step=d.step)
    return out


def _check_same_study(study, identity: Mapping[str, Any], storage: str) -> None:
    """A resumed study must be the one that was started: same base config, space and objectives."""
    saved = study.user_attrs.get("mmcore")
    if saved is None:
        if study.get_trials(deepcopy=False):
            raise TuneError(f"the study {study.study_name!r} in {storage} was not started by mmcore tune; use another "
                            "--study-name or --storage")
        study.set_user_attr("mmcore", json.loads(json.dumps(identity)))
        return
    from mmcore.engine.config import config_differences

    fresh = json.loads(json.dumps(identity))
    diffs = config_differences(saved, fresh)
    ignored = ("config.trainer.run_dir",)
    diffs = [d for d in diffs if not d[0].startswith(ignored)]
    if diffs:
        shown = "; ".join(f"{path}: {old!r} then, {new!r} now" for path, old, new in diffs[:5])
        raise TuneError(f"the study {study.study_name!r} in {storage} was started with another config, space or objective "
                        f"({shown}); resume with the same ones, or use another --out / --study-name")


class _TrialRunner:
    def __init__(self, study, dims, base, objectives, options: StudyOptions, manager, estimate: Estimate, deadline, pruner_name,
                 parent, log) -> None:
        self.study, self.dims, self.base, self.objectives, self.options = study, dims, base, objectives, options
        self.manager, self.estimate, self.deadline, self.pruner_name = manager, estimate, deadline, pruner_name
        self.parent, self.log = parent, log
        self.durations: list[float] = []

    def expected(self) -> float:
        """Seconds one more trial is expected to take: the probe's estimate, or the longest full trial so far."""
        return max([self.estimate.trial * 0.5, *self.durations]) if self.durations else self.estimate.trial

    def trial_config(self, number: int, params: Mapping[str, Any]) -> dict[str, Any]:
        config = apply_params(self.base, self.dims, params)
        trainer = config.setdefault("trainer", {})
        trainer["run_dir"] = str(self.options.out / f"trial-{number:03d}")
        trainer.setdefault("progress", False)
        if self.parent is not None:
            from mmcore.engine.config import DEFAULT_LOGGERS

            loggers = list(trainer.get("loggers") or DEFAULT_LOGGERS)
            loggers.append({"name": "mlflow", "tracking_uri": self.parent["uri"], "experiment": self.options.mlflow_experiment,
                            "parent_run_id": self.parent["run_id"], "run_name": f"trial-{number:03d}"})
            trainer["loggers"] = loggers
        return config

    def run(self, number: int, *, resumed: bool = False) -> None:
        import optuna
        from optuna.trial import TrialState

        from mmcore.engine import NonFiniteLossError
        from mmcore.engine.rundir import RunDir
        from mmcore.engine.trainer import Trainer
        from mmcore.errors import PluginHookError

        frozen = self.study.get_trials(deepcopy=False)[number]
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        config = self.trial_config(number, frozen.params)
        run_dir = Path(config["trainer"]["run_dir"])
        started = time.monotonic()
        shown = "  ".join(f"{d.key}={json.dumps(d.value(frozen.params[d.key]))}" for d in self.dims if d.key in frozen.params)
        self.log(f"trial {number}{' (resumed)' if resumed else ''}: {shown}")
        report, error, monitor = None, None, None
        run = RunDir(run_dir)
        if run.report.is_file():  # it had ended; only the study had not been told
            report = json.loads(run.report.read_text())
        else:
            resume = None
            if run_dir.exists():
                if run.has_checkpoint(RunDir.LAST):
                    resume = run_dir
                else:  # died before its first checkpoint: kept aside, started again
                    aside = _free_name(run_dir.with_name(run_dir.name + ".incomplete"))
                    shutil.move(str(run_dir), aside)
            metric = next(o.metric for o in self.objectives if o.metric)
            monitor = TrialMonitor(trial, metric, prune=len(self.objectives) == 1 and self.pruner_name != "none",
                                   pruner_name=self.pruner_name, deadline=self.deadline,
                                   after_training=self.estimate.after_training)
            name = f"mmcore tune trial {number}"
            self.manager.register(monitor, name=name)
            try:
                report = Trainer(config, manager=self.manager, resume=resume).fit()
            except (UserInputError, ValueError, TypeError, NonFiniteLossError, PluginHookError) as exc:
                error = exc
            finally:
                self.manager.unregister(name=name)
        seconds = time.monotonic() - started
        attrs = {"run_dir": str(run_dir), "seconds": seconds}
        if error is None and (report.get("status") not in ("completed", "early_stopping", "stopped") or report.get("best_value") is None):
            error = RuntimeError(f"the run ended with status {report.get('status')!r}: {report.get('error') or 'no checkpoint'}")
        if error is not None:
            attrs["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            self._set_attrs(trial, attrs)
            self.study.tell(number, state=TrialState.FAIL)
            self.log(f"  failed: {attrs['error']}")
            return
        attrs.update(status=report["status"], stop_reason=report.get("stop_reason"), epochs_run=report["epochs_run"],
                     best_epoch=report["best_epoch"], test=report.get("test") or {}, parameters=report.get("parameters"))
        pruned = report["status"] == "stopped" and str(report.get("stop_reason") or "").startswith("pruned by optuna")
        if pruned:
            attrs["pruned_after_epoch"] = report["epochs_run"]
        needs_cost = any(o.cost for o in self.objectives)
        cost = _cost(run_dir, self.manager, config) if (needs_cost or not pruned) else {}
        attrs["cost"] = cost
        self._set_attrs(trial, attrs)
        if pruned:
            self.study.tell(number, state=TrialState.PRUNED)
            self.log(f"  pruned after epoch {report['epochs_run']}  ({seconds:.0f} s)")
        else:
            values = []
            for o in self.objectives:
                values.append(float(report["best_value"]) if o.metric else float(cost[o.cost]))
            if not all(math.isfinite(v) for v in values):
                self.study.tell(number, state=TrialState.FAIL)
                self.log(f"  failed: non-finite objective {values}")
                return
            self.study.tell(number, values)
            if report["status"] == "completed" or report["status"] == "early_stopping":
                self.durations.append(seconds)
            shown = ", ".join(f"{o.name} {v:.4g}" for o, v in zip(self.objectives, values, strict=True))
            test = report.get("test") or {}
            self.log(f"  {shown}  (test {self.objectives[0].name} {test.get(self.objectives[0].name, float('nan')):.4g}; "
                     f"{report['epochs_run']} epochs, {seconds:.0f} s)")
        if self.parent is not None:
            _mlflow_trial(self.parent, number, self.objectives, self.study)

    @staticmethod
    def _set_attrs(trial, attrs: Mapping[str, Any]) -> None:
        for key, value in attrs.items():
            trial.set_user_attr(key, json.loads(json.dumps(value, default=str)))


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _cost(run_dir: Path, manager, config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`measure_cost` of the trial's best checkpoint on one test sample (batch 1)."""
    from mmcore.engine.checkpoint import load_model
    from mmcore.engine.compare import measure_cost
    from mmcore.engine.datasets import load_datasets
    from mmcore.engine.rundir import RunDir

    run = RunDir(run_dir)
    if not run.has_checkpoint(RunDir.BEST):
        return {}
    model, _ = load_model(run.readable_checkpoint(RunDir.BEST), manager.registry)
    data = load_datasets(config, manager, splits=("test",))["test"]
    if not len(data):
        data = load_datasets(config, manager, splits=("val",))["val"]
    cost = measure_cost(model, [data[0]], repeats=LATENCY_REPEATS)
    return {k: cost[k] for k in ("parameters", "flops_per_sample", "latency_ms")}


def summarise(study, dims, objectives, base, options: StudyOptions, estimate: Estimate, seconds: float,
              stopped_by_limit: bool) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = []
    for t in study.get_trials(deepcopy=False):
        trials.append({"number": t.number, "state": t.state.name.lower(),
                       "values": list(t.values) if t.values is not None else None,
                       "params": {d.key: d.value(t.params[d.key]) for d in dims if d.key in t.params},
                       **{k: v for k, v in t.user_attrs.items()}})
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = [t.number for t in study.best_trials] if complete else []
    if len(objectives) == 1 and complete:
        best = [study.best_trial.number]
    summary = {"study_name": study.study_name, "objectives": [asdict(o) for o in objectives], "trials_asked": options.trials,
               "trials": trials, "best": best, "seconds": seconds, "stopped_by_time_limit": stopped_by_limit,
               "estimate": asdict(estimate), "space": [_dim_json(d) for d in dims]}
    lead = lead_over_baseline(trials, best, objectives, estimate.val_rows)
    if lead is not None:
        summary["lead_over_baseline"] = lead
    return summary


def lead_over_baseline(trials: Sequence[Mapping[str, Any]], best: Sequence[int], objectives: Sequence[Objective],
                       records: int) -> dict[str, Any] | None:
    """How far the best trial leads the config as given (the baseline trial) on an accuracy objective, against
    the noise of an accuracy measured on ``records`` validation records.

    The standard error of the difference of two accuracies ``a``, ``b`` on ``n`` records is taken as
    ``sqrt(a(1-a)/n + b(1-b)/n)`` (two independent binomial proportions; the trials share the records, so this
    overstates it somewhat when their errors coincide). A lead under twice it is reported as within noise: on a
    few hundred records a search cannot tell configs a point or two apart (the demo's 20-trial study: r = -0.44
    between validation and test accuracy over its complete trials). None when there is one objective that is not
    a maximised accuracy, no complete baseline trial or no best trial.
    """
    if len(objectives) != 1 or not best or records < 1:
        return None
    objective = objectives[0]
    if objective.direction != "maximize" or not (objective.metric or "").endswith("accuracy"):
        return None
    by_number = {t["number"]: t for t in trials}
    baseline = next((t for t in trials if t.get("baseline") and t["state"] == "complete" and t.get("values")), None)
    top = by_number.get(best[0])
    if baseline is None or top is None or not top.get("values"):
        return None
    a, b = float(top["values"][0]), float(baseline["values"][0])
    if not (0.0 <= a <= 1.0 and 0.0 <= b <= 1.0):
        return None
    se = math.sqrt(a * (1 - a) / records + b * (1 - b) / records)
    return {"trial": top["number"], "baseline_trial": baseline["number"], "metric": objective.metric,
            "points": 100 * (a - b), "standard_error_points": 100 * se, "records": records,
            "within_noise": top["number"] != baseline["number"] and a - b < 2 * se}


def trial_yaml(base: Mapping[str, Any], dims, params: Mapping[str, Any], run_dir: Path) -> str:
    config = apply_params(base, dims, params)
    config.setdefault("trainer", {})["run_dir"] = str(run_dir)
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def write_outputs(summary: Mapping[str, Any], study, dims, base, objectives, out: Path) -> None:
    """``study.json``; ``best.yaml`` (the best trial's config: ``mmcore train best.yaml`` trains it
    again, same seed, same numbers); for several objectives ``pareto/trial-NNN.yaml`` per Pareto
    trial, and ``best.yaml`` the Pareto trial best on the first objective."""
    from mmcore.engine.atomic import write_file
    from mmcore.engine.checkpoint import dumps_json

    # The one writer (mmcore.engine.atomic): atomic, and a link planted at pareto/ is refused
    write_file(out / STUDY_JSON, dumps_json(summary, indent=2), root=out)
    if not summary["best"]:
        return
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if len(objectives) > 1:
        for number in summary["best"]:
            text = trial_yaml(base, dims, trials[number].params, out / PARETO / f"trial-{number:03d}")
            write_file(out / PARETO / f"trial-{number:03d}.yaml", text, root=out)
        sign = -1.0 if objectives[0].direction == "maximize" else 1.0
        chosen = min(summary["best"], key=lambda n: sign * trials[n].values[0])
    else:
        chosen = summary["best"][0]
    text = f"# mmcore tune: trial {chosen} of study {study.study_name!r} ({out})\n" + \
        trial_yaml(base, dims, trials[chosen].params, out / "best")
    write_file(out / BEST_YAML, text, root=out)


def format_summary(summary: Mapping[str, Any]) -> str:
    objectives = summary["objectives"]
    head = objectives[0]["name"]
    lines = [f"{'trial':>5} {'state':<8} " + " ".join(f"{o['name']:>11}" for o in objectives)
             + f" {'test ' + head:>11} {'epochs':>6} {'s':>6}"]
    for t in summary["trials"]:
        values = t.get("values") or [None] * len(objectives)
        shown = " ".join(f"{v:>11.4g}" if v is not None else f"{'-':>11}" for v in values)
        test = (t.get("test") or {}).get(head)
        lines.append(f"{t['number']:>5} {t['state']:<8} {shown} {test if test is None else round(test, 4)!s:>11} "
                     f"{t.get('epochs_run', '-')!s:>6} {t.get('seconds', 0):>6.0f}")
    states = [t["state"] for t in summary["trials"]]
    lines.append(f"{states.count('complete')} complete, {states.count('pruned')} pruned, {states.count('fail')} failed; "
                 f"{summary['seconds'] / 60:.1f} min" + ("; stopped by the time limit" if summary["stopped_by_time_limit"] else ""))
    if summary["best"]:
        label = "best" if len(objectives) == 1 else "Pareto set"
        lines.append(f"{label}: trial(s) {', '.join(str(n) for n in summary['best'])}")
    lead = summary.get("lead_over_baseline")
    if lead and lead["trial"] == lead["baseline_trial"]:
        lines.append(f"the config as given (trial {lead['baseline_trial']}) is the best trial")
    elif lead:
        lines.append(
            f"trial {lead['trial']} leads the config as given (trial {lead['baseline_trial']}) by {lead['points']:.2f} points of "
            f"validation {lead['metric']} on {lead['records']} records; the standard error of that difference is about "
            f"{lead['standard_error_points']:.2f} points, so "
            + ("the lead is within noise: check it on more data or other seeds before adopting best.yaml"
               if lead["within_noise"] else "the lead is more than twice its standard error"))
    return "\n".join(lines)


# ------------------------------------------------------------------ MLflow: one parent run per study
def _mlflow_parent(study, options: StudyOptions, identity: Mapping[str, Any]) -> dict[str, Any]:
    from mmcore_plugins.loggers import mlflow as tracking

    tracking.require_mlflow()
    uri = tracking.resolve_tracking_uri(options.mlflow)
    client = tracking.client(uri)
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id is None:
        run = client.create_run(tracking.experiment_id(client, options.mlflow_experiment), run_name=study.study_name,
                                tags={"mmcore.tune_out": str(options.out)})
        run_id = run.info.run_id
        study.set_user_attr("mlflow_parent_run_id", run_id)
        tracking.log_params(client, run_id, {"trials": options.trials, "objectives": [o["name"] for o in identity["objectives"]],
                                             "space": {d["key"]: json.dumps({k: v for k, v in d.items() if k != "key"})
                                                       for d in identity["space"]}})
        tracking.log_json(client, run_id, "base_config.json", identity["config"])
    return {"client": client, "run_id": run_id, "uri": uri, "tracking": tracking}


def _mlflow_trial(parent: Mapping[str, Any], number: int, objectives, study) -> None:
    trial = study.get_trials(deepcopy=False)[number]
    if trial.values:
        parent["tracking"].log_metrics(parent["client"], parent["run_id"],
                                       {f"trial/{o.name}": v for o, v in zip(objectives, trial.values, strict=True)}, step=number)


def _mlflow_finish(parent: Mapping[str, Any], out: Path) -> None:
    client = parent["client"]
    for name in (STUDY_JSON, BEST_YAML):
        if (out / name).is_file():
            client.log_artifact(parent["run_id"], str(out / name))
    client.set_terminated(parent["run_id"], "FINISHED")
