"""The ``mlflow`` logger: a run tracked in MLflow -- its config, per-epoch metrics, ``report.json``
and best checkpoint.

``trainer.loggers: [csv, progress, {name: mlflow, tracking_uri: sqlite:///mlflow.db, experiment: demo}]``

* when the run starts: an MLflow run in ``experiment`` (created if missing) named ``run_name``
  (default: the run directory's name), tagged ``mmcore.run_dir``; the resolved config's leaves
  as parameters (dotted keys: ``model.fusion.dim``) and ``config.yaml`` as an artefact;
* after every epoch: the epoch's numbers (``train/loss``, ``val/accuracy``, ``lr``, ...) at
  step = epoch (non-finite values are left out: MLflow's stores differ on them);
* when the run ends: ``test/<metric>``, ``report.json`` and (``log_checkpoint: true``) the best
  checkpoint folder as the artefact ``best/``; the MLflow run ends FINISHED (completed, stopped,
  early stopping) or FAILED (a non-finite loss, a plugin that failed).

Needs ``mlflow-skinny`` (``pip install 'mmcore[mlflow]'``), imported only when a run with this
logger starts; a run configured with it on a machine without it is refused before any work.
Nothing is sent anywhere unless you say so (MLflow's usage telemetry is switched off:
``MLFLOW_DISABLE_TELEMETRY``): ``tracking_uri`` null takes MLflow's own setting
(``MLFLOW_TRACKING_URI``, else its local default, ``sqlite:///mlflow.db`` in the working folder);
a plain folder path (or ``file:`` URI) is MLflow's file store there, which MLflow 3 keeps in
maintenance mode -- choosing it explicitly allows it for this process (``MLFLOW_ALLOW_FILE_STORE``).
``parent_run_id`` nests the run under another MLflow run (``mmcore tune`` logs one parent run
per study and one child per trial this way). A resumed training run is logged as a new MLflow run
with the same ``mmcore.run_dir`` tag.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mmcore

#: MLflow accepts at most this many parameters / metrics in one ``log_batch`` call.
_BATCH = 100
#: and parameter values up to this many characters (longer ones are cut, ending in "...").
_PARAM_CHARS = 6000
_FINISHED = {"completed", "stopped", "early_stopping"}


def resolve_tracking_uri(value: str | None) -> str | None:
    """``value`` as an MLflow tracking URI: None stays None (MLflow's own default); a plain path
    becomes a ``file:`` URI of its absolute path; anything with a scheme is kept."""
    if value is None:
        return None
    if "://" in value or value.startswith("file:"):
        return value
    return Path(value).expanduser().resolve().as_uri()


def allow_file_store(uri: str | None) -> None:
    """MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set: a user who names a
    folder (or ``file:`` URI) chose it, so it is allowed for this process."""
    if uri is not None and uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def require_mlflow() -> None:
    """ValueError (an input error: exit 2) when mlflow is not installed; nothing is imported."""
    if importlib.util.find_spec("mlflow") is None:
        raise ValueError("the mlflow logger needs MLflow: pip install 'mmcore[mlflow]' (mlflow-skinny)")


def client(uri: str | None):
    """An ``mlflow.MlflowClient`` for ``uri`` (see :func:`resolve_tracking_uri`).

    MLflow 3 sends usage telemetry to its developers' servers by default; mmcore switches that
    off before importing it (``MLFLOW_DISABLE_TELEMETRY=true``, unless the variable is set already):
    tracking a run must not talk to anything the user did not name."""
    allow_file_store(uri)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client, name: str) -> str:
    """The id of experiment ``name``, created when it does not exist."""
    found = mlflow_client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else mlflow_client.create_experiment(name)


def flatten(config: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, value as text)`` for every leaf of a nested config (lists as JSON)."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        text = json.dumps(config) if isinstance(config, (list, tuple, bool)) or config is None else str(config)
        yield prefix, text if len(text) <= _PARAM_CHARS else text[: _PARAM_CHARS - 3] + "..."


def log_params(mlflow_client, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in flatten(params)]
    for start in range(0, len(items), _BATCH):
        mlflow_client.log_batch(run_id, params=items[start : start + _BATCH])


def log_metrics(mlflow_client, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(str(k), float(v), now, int(step)) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    for start in range(0, len(items), _BATCH):
        mlflow_client.log_batch(run_id, metrics=items[start : start + _BATCH])


def log_json(mlflow_client, run_id: str, name: str, value: Any, artifact_path: str | None = None) -> None:
    """``value`` as the JSON artefact ``name`` (written to a temporary folder first)."""
    from mmcore.engine.checkpoint import dumps_json

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_text(dumps_json(value, indent=2))
        mlflow_client.log_artifact(run_id, str(path), artifact_path)


class MlflowLogger:
    """Track the run in MLflow: config as parameters, per-epoch metrics, report.json and the best checkpoint."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "mmcore", run_name: str | None = None,
                 log_checkpoint: bool = True, parent_run_id: str | None = None,
                 tags: dict[str, str] | None = None) -> None:
        require_mlflow()
        if not isinstance(experiment, str) or not experiment.strip():
            raise ValueError(f"experiment must be a non-empty name, got {experiment!r}")
        self.uri = resolve_tracking_uri(tracking_uri)
        self.experiment, self.run_name, self.log_checkpoint = experiment, run_name, log_checkpoint
        self.parent_run_id, self.tags = parent_run_id, dict(tags or {})
        self.client = None
        self.run_id: str | None = None

    @mmcore.hookimpl
    def mmcore_train_start(self, trainer, config) -> None:
        self.client = client(self.uri)
        tags = {"mmcore.run_dir": str(trainer.run_dir), **{str(k): str(v) for k, v in self.tags.items()}}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = str(self.parent_run_id)
        run = self.client.create_run(experiment_id(self.client, self.experiment), run_name=self.run_name or Path(trainer.run_dir).name,
                                     tags=tags)
        self.run_id = run.info.run_id
        log_params(self.client, self.run_id, config)
        if trainer.rundir.config.is_file():
            self.client.log_artifact(self.run_id, str(trainer.rundir.config))

    @mmcore.hookimpl
    def mmcore_epoch_end(self, epoch, metrics) -> None:
        if self.run_id is not None:
            log_metrics(self.client, self.run_id, {k: v for k, v in metrics.items() if k not in ("epoch",)}, step=epoch)

    @mmcore.hookimpl
    def mmcore_train_end(self, trainer, report) -> None:
        if self.run_id is None:
            return
        log_metrics(self.client, self.run_id, {f"test/{k}": v for k, v in (report.get("test") or {}).items()}, step=trainer.epoch)
        log_json(self.client, self.run_id, "report.json", report)
        if self.log_checkpoint and trainer.rundir.has_checkpoint("best"):
            self.client.log_artifacts(self.run_id, str(trainer.rundir.readable_checkpoint("best")), "best")
        self.client.set_terminated(self.run_id, "FINISHED" if report.get("status") in _FINISHED else "FAILED")


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_logger("mlflow", MlflowLogger)
