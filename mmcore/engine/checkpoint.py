"""Checkpoints: weights as safetensors, spec and processor state as JSON, training state loaded with
``weights_only=True`` — nothing executable is ever unpickled. Every write is atomic, and
everything read back is validated before it is allocated or loaded (:mod:`mmcore.engine.artefacts`).

A checkpoint is a folder::

    model.safetensors   the model's weights
    model.json          the model spec and every processor's fitted state (rebuilds the model)
    state.pt            optimiser, scheduler, step, epoch, RNG states (only in ``last/``)

A folder is written under a temporary name and then swapped in with renames, so a process
killed at any point leaves either the previous checkpoint or the new one, never a mix; a
single file is written to a temporary file and renamed over the old one (never through a link). Files are fsynced
before the renames and their folder after them; files and folders get the permissions the
process's umask gives any new file (``0o666 & ~umask``, folders ``0o777 & ~umask``). A full disk
(ENOSPC) or quota (EDQUOT) raises :class:`CheckpointWriteError` and keeps the previous file or
checkpoint untouched. The writing itself (atomic files and folders, fsync, permissions) is
:mod:`mmcore.engine.atomic`'s; its names are importable from here too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from mmcore.engine.artefacts import (
    CheckpointError,
    build_checked,
    check_processor_state,
    read_model_json,
    read_safetensors_header,
    read_weights,
)
from mmcore.engine.atomic import (  # re-exported: the names callers have always imported from here
    _UMASK,  # noqa: F401 - tests compare permissions with it
    CheckpointWriteError,
    atomic_directory,
    atomic_write,
    current_umask,
    write_file,  # noqa: F401 - the atomic writer of single files
    write_fsynced,
)
from mmcore.engine.rundir import SPEC, STATE, WEIGHTS
from mmcore.model import MultimodalModel
from mmcore.registry import Registry

__all__ = ["CheckpointError", "CheckpointWriteError", "MissingCheckpointError", "SPEC", "STATE", "WEIGHTS", "atomic_directory", "atomic_write",
           "checkpoint_folder",
           "current_umask", "dumps_json", "load_model", "load_run", "load_training_state", "load_weights", "model_state",
           "resolve_checkpoint", "save_checkpoint", "save_model", "write_model"]


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """A checkpoint folder lacks one of its files."""


def resolve_checkpoint(path: str | Path) -> Path:
    """``path``, or the previous checkpoint kept while ``path`` was being replaced."""
    path = Path(path)
    old = path.parent / f".{path.name}.old"
    if not (path / WEIGHTS).is_file() and (old / WEIGHTS).is_file():
        return old
    return path


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """Strict JSON (no NaN/Infinity, which are not JSON): non-finite floats become null, and a
    mapping at the top level gets ``"non_finite": [dotted paths]`` naming them."""
    found: list[str] = []

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            found.append(where)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    out = clean(obj, "")
    if found and isinstance(out, dict):
        out["non_finite"] = found
    return json.dumps(out, allow_nan=False, **kwargs)


# ------------------------------------------------------------------------------ the model
def model_state(model: MultimodalModel) -> dict[str, torch.Tensor]:
    """CPU copies of the weights (safetensors refuses tensors that share storage: each is cloned)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def write_model(model: MultimodalModel, folder: Path, *, state: dict[str, torch.Tensor] | None = None,
                extra: dict[str, Any] | None = None) -> None:
    """Write ``model.safetensors`` and ``model.json`` into an existing ``folder`` (not atomic by itself)."""
    import safetensors.torch

    if model.spec is None:
        raise ValueError("only models built from a spec (mmcore.build_model) can be saved and rebuilt")
    meta = {
        "spec": model.spec,
        "processors": {slot: proc.state_dict() for slot, proc in model.processors.items()},
        # which plugin (distribution, version) each component came from: a missing one is named on load
        "components": getattr(model, "provenance", None) or [],
        **(extra or {}),
    }
    try:
        text = json.dumps(meta, indent=2, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"{SPEC}: the model spec or a processor's fitted state holds NaN or infinity ({exc}); "
                         "nothing was saved") from exc
    # Serialised in memory and written through Python: the file gets the umask's permissions
    # (safetensors.save_file makes it 0600) and a full disk is an OSError with its errno.
    data = safetensors.torch.save(state if state is not None else model_state(model))
    write_fsynced(folder / WEIGHTS, lambda fh: fh.write(data))  # inside the fresh folder atomic_directory swaps in
    write_fsynced(folder / SPEC, lambda fh: fh.write(text.encode()))


def save_model(model: MultimodalModel, directory: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` (weights) and ``model.json`` (spec, processor state) as the folder ``directory``."""
    return atomic_directory(Path(directory), lambda tmp: write_model(model, tmp, extra=extra))


def _checkpoint_files(directory: str | Path) -> Path:
    directory = resolve_checkpoint(directory)
    for name in (WEIGHTS, SPEC):
        if not (directory / name).is_file():
            raise MissingCheckpointError(f"{directory} holds no saved model: {name} is missing")
    return directory


def checkpoint_folder(path: str | Path) -> Path:
    """``path`` as a checkpoint folder: itself when it holds a saved model, else (a run directory) its
    ``best/`` checkpoint. :class:`MissingCheckpointError` when it is neither."""
    path = Path(path).expanduser()
    if (resolve_checkpoint(path) / WEIGHTS).is_file():
        return resolve_checkpoint(path)
    best = resolve_checkpoint(path / "best")
    if (best / WEIGHTS).is_file():
        return best
    raise MissingCheckpointError(f"{path} holds no saved model: expected {WEIGHTS} in it, or a run directory with best/{WEIGHTS}")


def load_model(directory: str | Path, registry: Registry | None = None, *, device: str | torch.device = "cpu") -> tuple[MultimodalModel, dict]:
    """Rebuild a model saved by :func:`save_model`; returns ``(model, metadata)``.

    Before anything is built, ``model.json`` is checked (types, sizes, finite processor
    statistics) and the safetensors header read; the model is then built under an allocation
    budget drawn from that header (:func:`~mmcore.engine.artefacts.build_checked`: a crafted size
    is refused before its tensor is allocated), its parameter names, shapes and dtypes are checked
    against the header exactly, and the weights are read one by one and checked finite. Raises :class:`CheckpointError` (a ValueError) naming
    the file and the tensor or field at fault; FileNotFoundError when a file is missing.
    """
    if registry is None:
        from mmcore.plugin_manager import get_registry

        registry = get_registry()
    directory = _checkpoint_files(directory)
    meta = read_model_json(directory / SPEC, registry)
    header = read_safetensors_header(directory / WEIGHTS)
    # Built for real under a budget from the header (not first on the meta device, whose Python
    # kernels import torch._dynamo: 45% of a cold `mmcore predict`); the shapes are compared next.
    model = build_checked(meta["spec"], registry, header, directory / SPEC, directory / WEIGHTS)
    check_processor_state(meta["processors"], model, directory / SPEC)
    tensors = read_weights(directory / WEIGHTS, _layout(model), device="cpu")
    model.load_state_dict(tensors)
    _load_processors(model, meta["processors"], directory / SPEC)
    return model.to(device), meta


def load_weights(model: MultimodalModel, directory: str | Path) -> dict:
    """Load a checkpoint's weights and processor state into an existing ``model``; returns its metadata.

    Everything is checked against ``model`` first (names, shapes, dtypes, finite values,
    processor state): CheckpointError, and ``model`` untouched, when anything differs.
    """
    directory = _checkpoint_files(directory)
    meta = read_model_json(directory / SPEC, None)
    check_processor_state(meta["processors"], model, directory / SPEC)
    device = next(iter(model.state_dict().values())).device
    tensors = read_weights(directory / WEIGHTS, _layout(model), device=str(device))
    model.load_state_dict(tensors)
    _load_processors(model, meta["processors"], directory / SPEC)
    return meta


def _layout(model: torch.nn.Module) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    return {k: (v.dtype, tuple(v.shape)) for k, v in model.state_dict().items()}


def _load_processors(model: MultimodalModel, states: dict[str, Any], path: Path) -> None:
    for slot, state in states.items():
        try:
            model.processors[slot].load_state_dict(state)
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: processors.{slot}: the fitted state does not fit the processor: {exc}") from exc


def load_run(run_dir: str | Path, registry: Registry | None = None, checkpoint: str = "best") -> tuple[MultimodalModel, dict]:
    """A run directory's model (from its ``checkpoint``: ``best`` or ``last``) and resolved config.

    RunDirError when ``run_dir`` is not a run; CheckpointError when its files are damaged (both
    checked before anything is built, see :func:`load_model`). The config's path options are
    absolute in runs written since they are stored so; an older run's relative ones are taken
    relative to the current folder, as when it was trained. Errors here are the user's input's
    (exit 2 on the command line).
    """
    from mmcore.engine.config import resolve_paths
    from mmcore.engine.rundir import RunDir
    from mmcore.errors import user_input_phase

    run = RunDir.open(run_dir, checkpoint)
    with user_input_phase(f"reading the run {run_dir}"):  # a damaged run directory is the user's to fix
        config = resolve_paths(run.read_config())  # safe and bounded: config.yaml may have been edited
        model, _ = load_model(run.readable_checkpoint(checkpoint), registry)
    return model, config


# ------------------------------------------------------------------------------ training state
def save_checkpoint(model: MultimodalModel, directory: str | Path, *, training_state: dict[str, Any] | None = None,
                    weights: dict[str, torch.Tensor] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """The model (and, for resuming, the training state) as one atomically replaced folder."""

    def write(tmp: Path) -> None:
        write_model(model, tmp, state=weights, extra=extra)
        if training_state is not None:
            write_fsynced(tmp / STATE, lambda fh: torch.save(training_state, fh))

    return atomic_directory(Path(directory), write)


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """The training state of a checkpoint, unpickled with ``weights_only=True`` (tensors and plain data only).

    Only its outer structure is checked here; :func:`mmcore.engine.artefacts.check_training_state`
    checks it against the live model and optimiser before anything is loaded into them.
    """
    path = resolve_checkpoint(directory) / STATE
    if not path.is_file():
        raise MissingCheckpointError(f"{Path(directory)} holds no training state ({STATE} is missing): nothing to resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged zip, a pickle naming a forbidden global, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a training state mmcore can load: {first}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a mapping of training state, got {type(state).__name__}")
    return state
