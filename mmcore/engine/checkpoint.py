"""Checkpoints: weights as safetensors, spec and processor state as JSON, training state loaded with
``weights_only=True`` — nothing executable is ever unpickled. Every write is atomic.

A checkpoint is a folder::

    model.safetensors   the model's weights
    model.json          the model spec and every processor's fitted state (rebuilds the model)
    state.pt            optimiser, scheduler, step, epoch, RNG states (only in ``last/``)

A folder is written under a temporary name and then swapped in with renames, so a process
killed at any point leaves either the previous checkpoint or the new one, never a mix; a
single file is written to a temporary file and renamed over the old one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mmcore.model import MultimodalModel, build_model
from mmcore.registry import Registry


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: mkstemp/mkdtemp create owner-only files and folders; what we rename into place gets the
#: permissions any other file the user writes would have (so others can read a shared run).
_UMASK = _read_umask()

WEIGHTS = "model.safetensors"
SPEC = "model.json"
STATE = "state.pt"


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: a crash mid-write never replaces a good file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_directory(path: Path, write: Callable[[Path], Any]) -> Path:
    """Fill a fresh temporary folder with ``write(folder)``, then swap it in as ``path``.

    The swap is two renames (old -> ``.name.old``, new -> name); a reader finding no ``path``
    but a ``.name.old`` uses that one (:func:`resolve_checkpoint`), so there is always a
    complete checkpoint on disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = path.parent / f".{path.name}.old"
    try:
        write(tmp)
        _fsync_dir(tmp)
        os.chmod(tmp, 0o777 & ~_UMASK)
        if old.exists():
            if path.exists():
                shutil.rmtree(old)
            else:  # a previous swap died between its renames: the old folder is the good one
                os.replace(old, path)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """``path``, or the previous checkpoint kept while ``path`` was being replaced."""
    path = Path(path)
    old = path.parent / f".{path.name}.old"
    if not (path / WEIGHTS).is_file() and (old / WEIGHTS).is_file():
        return old
    return path


def _fsync_dir(folder: Path) -> None:
    for item in folder.iterdir():
        if item.is_file():
            with item.open("rb") as fh:
                os.fsync(fh.fileno())


# ------------------------------------------------------------------------------ the model
def model_state(model: MultimodalModel) -> dict[str, torch.Tensor]:
    """CPU copies of the weights (safetensors refuses tensors that share storage: each is cloned)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def write_model(model: MultimodalModel, folder: Path, *, state: dict[str, torch.Tensor] | None = None,
                extra: dict[str, Any] | None = None) -> None:
    """Write ``model.safetensors`` and ``model.json`` into an existing ``folder`` (not atomic by itself)."""
    from safetensors.torch import save_file

    if model.spec is None:
        raise ValueError("only models built from a spec (mmcore.build_model) can be saved and rebuilt")
    save_file(state if state is not None else model_state(model), str(folder / WEIGHTS))
    meta = {
        "spec": model.spec,
        "processors": {slot: proc.state_dict() for slot, proc in model.processors.items()},
        **(extra or {}),
    }
    (folder / SPEC).write_text(json.dumps(meta, indent=2))


def save_model(model: MultimodalModel, directory: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` (weights) and ``model.json`` (spec, processor state) as the folder ``directory``."""
    return atomic_directory(Path(directory), lambda tmp: write_model(model, tmp, extra=extra))


def load_model(directory: str | Path, registry: Registry | None = None, *, device: str | torch.device = "cpu") -> tuple[MultimodalModel, dict]:
    """Rebuild a model saved by :func:`save_model`; returns ``(model, metadata)``."""
    from safetensors.torch import load_file

    directory = resolve_checkpoint(directory)
    for name in (WEIGHTS, SPEC):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} holds no saved model: {name} is missing")
    meta = json.loads((directory / SPEC).read_text())
    model = build_model(meta["spec"], registry)
    model.load_state_dict(load_file(str(directory / WEIGHTS)))
    for slot, state in meta.get("processors", {}).items():
        model.processors[slot].load_state_dict(state)
    return model.to(device), meta


def load_weights(model: MultimodalModel, directory: str | Path) -> dict:
    """Load a checkpoint's weights and processor state into an existing ``model``; returns its metadata."""
    from safetensors.torch import load_file

    directory = resolve_checkpoint(directory)
    meta = json.loads((directory / SPEC).read_text())
    device = next(iter(model.state_dict().values())).device
    model.load_state_dict(load_file(str(directory / WEIGHTS), device=str(device)))
    for slot, state in meta.get("processors", {}).items():
        model.processors[slot].load_state_dict(state)
    return meta


# ------------------------------------------------------------------------------ training state
def save_checkpoint(model: MultimodalModel, directory: str | Path, *, training_state: dict[str, Any] | None = None,
                    weights: dict[str, torch.Tensor] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """The model (and, for resuming, the training state) as one atomically replaced folder."""

    def write(tmp: Path) -> None:
        write_model(model, tmp, state=weights, extra=extra)
        if training_state is not None:
            torch.save(training_state, tmp / STATE)

    return atomic_directory(Path(directory), write)


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """The training state of a checkpoint, unpickled with ``weights_only=True`` (tensors and plain data only)."""
    path = resolve_checkpoint(directory) / STATE
    if not path.is_file():
        raise FileNotFoundError(f"{Path(directory)} holds no training state ({STATE} is missing): nothing to resume")
    return torch.load(path, map_location="cpu", weights_only=True)
