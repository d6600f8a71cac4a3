"""Saving and loading models: weights as safetensors, spec and processor state as JSON; atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mmcore.model import MultimodalModel, build_model
from mmcore.registry import Registry

WEIGHTS = "model.safetensors"
SPEC = "model.json"


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: a crash mid-write never replaces a good file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: MultimodalModel, directory: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` (weights) and ``model.json`` (spec, processor state) into ``directory``."""
    from safetensors.torch import save_file

    if model.spec is None:
        raise ValueError("only models built from a spec (mmcore.build_model) can be saved and rebuilt")
    directory = Path(directory)
    # safetensors refuses tensors that share storage; clone makes every entry its own.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    meta = {
        "spec": model.spec,
        "processors": {slot: proc.state_dict() for slot, proc in model.processors.items()},
        **(extra or {}),
    }
    atomic_write(directory / SPEC, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    return directory


def load_model(directory: str | Path, registry: Registry | None = None, *, device: str = "cpu") -> tuple[MultimodalModel, dict]:
    """Rebuild a model saved by :func:`save_model`; returns ``(model, metadata)``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (WEIGHTS, SPEC):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} holds no saved model: {name} is missing")
    meta = json.loads((directory / SPEC).read_text())
    model = build_model(meta["spec"], registry)
    model.load_state_dict(load_file(str(directory / WEIGHTS), device=device))
    for slot, state in meta.get("processors", {}).items():
        model.processors[slot].load_state_dict(state)
    return model.to(device), meta
