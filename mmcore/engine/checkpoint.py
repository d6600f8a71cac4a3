"""Checkpoints: weights as safetensors, spec and processor state as JSON, training state loaded with
``weights_only=True`` — nothing executable is ever unpickled. Every write is atomic, and
everything read back is validated before it is allocated or loaded (:mod:`mmcore.engine.artefacts`).

A checkpoint is a folder::

    model.safetensors   the model's weights
    model.json          the model spec and every processor's fitted state (rebuilds the model)
    state.pt            optimiser, scheduler, step, epoch, RNG states (only in ``last/``)

A folder is written under a temporary name and then swapped in with renames, so a process
killed at any point leaves either the previous checkpoint or the new one, never a mix; a
single file is written to a temporary file and renamed over the old one. Files are fsynced
before the renames and their folder after them; files and folders get the permissions the
process's umask gives any new file (``0o666 & ~umask``, folders ``0o777 & ~umask``). A full disk
(ENOSPC) or quota (EDQUOT) raises :class:`CheckpointWriteError` and keeps the previous file or
checkpoint untouched.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mmcore.engine.artefacts import (
    CheckpointError,
    check_processor_state,
    expected_state,
    read_model_json,
    read_safetensors_header,
    read_weights,
)
from mmcore.engine.rundir import SPEC, STATE, WEIGHTS
from mmcore.errors import UserInputError
from mmcore.model import MultimodalModel, build_model
from mmcore.registry import Registry

__all__ = ["CheckpointError", "CheckpointWriteError", "MissingCheckpointError", "SPEC", "STATE", "WEIGHTS", "atomic_directory", "atomic_write",
           "checkpoint_folder",
           "current_umask", "dumps_json", "load_model", "load_training_state", "load_weights", "model_state",
           "resolve_checkpoint", "save_checkpoint", "save_model", "write_model"]


class CheckpointWriteError(UserInputError, OSError):
    """A file could not be written for lack of space (ENOSPC) or quota (EDQUOT); the previous one is kept.

    ``str()`` is the one-line message; ``errno`` the cause's."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """A checkpoint folder lacks one of its files."""


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back (not thread-safe; done rarely)
    os.umask(mask)
    return mask


#: The umask when mmcore was imported (kept for callers of the old name; writes read it afresh).
_UMASK = current_umask()
_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def _no_space(exc: BaseException, what: str, kept: str) -> CheckpointWriteError | None:
    if isinstance(exc, OSError) and not isinstance(exc, CheckpointWriteError) and exc.errno in _NO_SPACE:
        error = CheckpointWriteError(f"{_NO_SPACE[exc.errno]} writing {what}; the previous {kept} is kept")
        error.errno = exc.errno
        return error
    return None


def write_file(path: Path, write: Callable[[Any], Any]) -> None:
    """Open ``path`` for binary writing, call ``write(file)``, flush and fsync; an OSError
    raised inside names ``path`` (``exc.filename``)."""
    try:
        with open(path, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: a crash mid-write never replaces a good file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise (_no_space(exc, path.name, path.name) or exc) from exc
    os.close(fd)
    try:
        write(Path(tmp))
        _fsync(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        error = _no_space(exc, path.name, path.name)
        if error is not None:
            raise error from exc
        raise


def atomic_directory(path: Path, write: Callable[[Path], Any]) -> Path:
    """Fill a fresh temporary folder with ``write(folder)``, then swap it in as ``path``.

    The swap is two renames (old -> ``.name.old``, new -> name); a reader finding no ``path``
    but a ``.name.old`` uses that one (:func:`resolve_checkpoint`), so there is always a
    complete checkpoint on disk. Raises CheckpointWriteError (the old folder kept) when the
    disk is full.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise (_no_space(exc, f"{path.name}/", "checkpoint") or exc) from exc
    old = path.parent / f".{path.name}.old"
    try:
        write(tmp)
        umask = current_umask()
        for item in tmp.iterdir():
            if item.is_file():
                _fsync(item)
                os.chmod(item, 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        _fsync(tmp)
        if old.exists():
            if path.exists():
                shutil.rmtree(old)
            else:  # a previous swap died between its renames: the old folder is the good one
                os.replace(old, path)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        name = Path(exc.filename).name if isinstance(exc, OSError) and exc.filename else ""
        error = _no_space(exc, f"{path.name}/{name}", "checkpoint")
        if error is not None:
            raise error from exc
        raise
    return path


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (after renames), to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # some file systems cannot fsync a folder
            raise
    finally:
        os.close(fd)


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
    write_file(folder / WEIGHTS, lambda fh: fh.write(data))
    write_file(folder / SPEC, lambda fh: fh.write(text.encode()))


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
    statistics) and the model's parameter shapes and dtypes — computed on the meta device, so
    without allocating them — are checked against the safetensors header; the weights are then
    read one by one and checked finite. Raises :class:`CheckpointError` (a ValueError) naming
    the file and the tensor or field at fault; FileNotFoundError when a file is missing.
    """
    if registry is None:
        from mmcore.plugin_manager import get_registry

        registry = get_registry()
    directory = _checkpoint_files(directory)
    meta = read_model_json(directory / SPEC, registry)
    header = read_safetensors_header(directory / WEIGHTS)
    expected = expected_state(meta["spec"], registry)
    if expected is not None:
        from mmcore.engine.artefacts import check_header

        check_header(header, expected, directory / WEIGHTS)
    model = build_model(meta["spec"], registry)
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


# ------------------------------------------------------------------------------ training state
def save_checkpoint(model: MultimodalModel, directory: str | Path, *, training_state: dict[str, Any] | None = None,
                    weights: dict[str, torch.Tensor] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """The model (and, for resuming, the training state) as one atomically replaced folder."""

    def write(tmp: Path) -> None:
        write_model(model, tmp, state=weights, extra=extra)
        if training_state is not None:
            write_file(tmp / STATE, lambda fh: torch.save(training_state, fh))

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
