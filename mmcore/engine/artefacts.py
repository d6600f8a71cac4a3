"""Validation of the artefacts a run reads back — ``model.json``, ``model.safetensors``,
``state.pt`` — before anything is allocated or loaded from them.

A damaged or crafted file gives one :class:`CheckpointError` (a ValueError) naming the file
and the tensor or field at fault; it never reaches a model or an optimiser unchecked:

* ``model.json``: read up to :data:`MAX_JSON_BYTES`; a mapping with ``spec`` (a valid model
  spec whose integers are within :data:`MAX_SPEC_INTEGER`) and ``processors`` (one mapping per
  slot: every number finite, standard deviations positive, vocabularies no longer than the
  processor's vocab_size / max_categories allow).
* ``model.safetensors``: the header only is read first (``safetensors.safe_open``, which
  refuses a header over 100 MB, offsets beyond the file and truncated files); names, shapes and
  dtypes must equal the model's exactly (no silent casts, e.g. int8 for float32); the model's
  shapes come from building it on the meta device, so a huge size in ``model.json`` allocates
  nothing. Then each tensor is read and must be finite.
* ``state.pt`` (loaded with ``weights_only=True``): :func:`check_training_state` compares
  its whole structure with the live model, optimiser, scheduler and scaler — parameter-group
  count and sizes, every AdamW moment's shape and dtype, step/epoch ranges, a finite best
  score, the RNG states' types and sizes — because a 3x3 ``exp_avg`` for a 16x6 parameter
  makes the fused AdamW kernel write out of bounds.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mmcore.errors import UserInputError

#: model.json larger than this is refused unread (a real one is kilobytes; vocabularies add a few MB).
MAX_JSON_BYTES = 256 * 2**20
#: the largest integer a model spec may hold (any size larger than this is no real model's).
MAX_SPEC_INTEGER = 2**31 - 1

_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


class CheckpointError(UserInputError):
    """A saved artefact (model.json, model.safetensors, state.pt) is damaged, crafted or does not fit the model."""


def _shape(shape: Any) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


# ------------------------------------------------------------------------------ model.json
def read_model_json(path: Path, registry: Any = None) -> dict[str, Any]:
    """``model.json`` parsed and checked (see the module docstring); ``registry`` also checks the spec's components."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is {size / 2**20:.0f} MiB; a model.json is at most {MAX_JSON_BYTES // 2**20} MiB")

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"non-finite number {name}")

    try:
        meta = json.loads(path.read_bytes().decode("utf-8"), parse_constant=refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid model.json: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object with spec and processors, got {type(meta).__name__}")
    spec, processors = meta.get("spec"), meta.get("processors", {})
    if not isinstance(spec, dict):
        raise CheckpointError(f"{path}: 'spec' must be the model spec (an object), got {type(spec).__name__}")
    if not isinstance(processors, dict) or not all(isinstance(v, dict) for v in processors.values()):
        raise CheckpointError(f"{path}: 'processors' must map each slot to its fitted state (objects)")
    for key in ("epoch", "step"):
        value = meta.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SPEC_INTEGER:
            raise CheckpointError(f"{path}: {key!r} must be an integer >= 0, got {value!r}")
    _check_numbers(spec, f"{path}: spec", integer_bound=MAX_SPEC_INTEGER)
    if registry is not None:
        from mmcore.model import validate_model_spec

        issues = validate_model_spec(spec, registry, path="spec")
        if issues:
            raise CheckpointError(f"{path}: " + "; ".join(str(i) for i in issues[:5]))
    slots = spec.get("encoders") if isinstance(spec.get("encoders"), dict) else {}
    unknown = [s for s in processors if s not in slots]
    if unknown:
        raise CheckpointError(f"{path}: processors for unknown slot(s) {unknown}; the spec's slots are {list(slots)}")
    meta["processors"] = processors
    return meta


def _check_numbers(value: Any, where: str, *, integer_bound: int | None = None) -> None:
    """Every float finite and every integer within ``integer_bound``, anywhere in ``value``."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if integer_bound is not None and abs(value) > integer_bound:
            raise CheckpointError(f"{where}: {value} is out of range (at most {integer_bound})")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CheckpointError(f"{where}: {value} is not a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{where}.{key}", integer_bound=integer_bound)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_numbers(item, f"{where}[{i}]", integer_bound=integer_bound)


def check_processor_state(states: Mapping[str, Any], model: Any, path: Path) -> None:
    """Fitted processor state: known slots, finite numbers, positive standard deviations, and what
    each processor checks itself (:meth:`~mmcore.components.Processor.check_state`: e.g. vocabularies
    that fit its embedding tables)."""
    for slot, state in states.items():
        if slot not in model.processors:
            raise CheckpointError(f"{path}: processors.{slot}: the model has no slot {slot!r} (slots: {model.slots})")
        where = f"{path}: processors.{slot}"
        _check_numbers(state, where)
        for key in ("std", "scale"):
            values = state.get(key)
            items = values if isinstance(values, list) else [values] if values is not None else []
            for i, v in enumerate(items):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                    raise CheckpointError(f"{where}.{key}[{i}] is {v!r}; a fitted {key} must be a positive finite number "
                                          "(the file is damaged or was edited)")
        try:  # the processor's own checks (Processor.check_state): vocabularies that fit its tables, ...
            model.processors[slot].check_state(state)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{where}.{exc}") from exc


# ------------------------------------------------------------------------------ safetensors
def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` from a safetensors file's header, without reading its data."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return {name: (fh.get_slice(name).get_dtype(), tuple(fh.get_slice(name).get_shape())) for name in fh.keys()}
    except Exception as exc:  # SafetensorError: truncated file, lying offsets, header too large, bad JSON
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc


def expected_state(spec: Mapping[str, Any], registry: Any, path: Path | str = "model.json"
                   ) -> dict[str, tuple[torch.dtype, tuple[int, ...]]] | None:
    """Names, dtypes and shapes of the state dict of the model ``spec`` builds, computed on the
    meta device (nothing allocated); None where a component cannot be built there.

    Raises :class:`CheckpointError` naming ``path`` when the spec describes tensors whose size
    overflows (``dim: 2147483647`` makes a 2**31 x 2**31 x 5 convolution): building that model for
    real, as a None here would, tried to allocate 512 GB (found by benchmarks/attack_surface.py)."""
    from mmcore.model import build_model

    try:
        # A pretrained encoder loads its packaged weights in its constructor; into meta parameters
        # that is a no-op, which torch reports once per parameter — not the user's concern here.
        with torch.device("meta"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*meta parameter.*no-op", category=UserWarning)
            model = build_model(spec, registry)
        return {k: (v.dtype, tuple(v.shape)) for k, v in model.state_dict().items()}
    except Exception as exc:  # a plugin that cannot build on meta: the real model is checked after building
        if isinstance(exc, OverflowError) or "overflow" in str(exc).lower():
            raise CheckpointError(f"{path}: the model it describes cannot exist: {' '.join(str(exc).split())[:300]}") from exc
        return None


def check_header(header: Mapping[str, tuple[str, tuple[int, ...]]], expected: Mapping[str, tuple[torch.dtype, tuple[int, ...]]],
                 path: Path) -> None:
    """The header's tensors must be the expected ones exactly: names, shapes and dtypes."""
    problems = []
    missing = [k for k in expected if k not in header]
    unexpected = [k for k in header if k not in expected]
    if missing:
        problems.append(f"missing tensor(s) {missing[:5]}")
    if unexpected:
        problems.append(f"unexpected tensor(s) {unexpected[:5]}")
    for name, (dtype, shape) in expected.items():
        if name not in header:
            continue
        got_dtype, got_shape = header[name]
        if tuple(got_shape) != tuple(shape):
            problems.append(f"tensor {name!r} has shape {_shape(got_shape)}, expected {_shape(shape)}")
        want = _SAFETENSORS_DTYPES.get(dtype, str(dtype))
        if got_dtype != want:
            problems.append(f"tensor {name!r} has dtype {got_dtype}, expected {want}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{path} does not fit the model: " + "; ".join(problems[:3]) + more)


def read_weights(path: Path, expected: Mapping[str, tuple[torch.dtype, tuple[int, ...]]], *, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, after its header is checked against ``expected``; each must be finite."""
    from safetensors import safe_open

    check_header(read_safetensors_header(path), expected, path)
    tensors = {}
    try:
        with safe_open(str(path), framework="pt", device=device) as fh:
            for name in expected:
                tensor = fh.get_tensor(name)
                if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
                    raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values")
                tensors[name] = tensor
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc
    return tensors


# ------------------------------------------------------------------------------ state.pt
def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CheckpointError(f"{where} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _like(saved: Any, live: Any, where: str) -> None:
    """``saved`` has the type and structure of ``live`` (numbers finite, sequences as long)."""
    if isinstance(live, bool) or live is None or isinstance(live, str):
        if type(saved) is not type(live) and not (live is None and saved is None):
            raise CheckpointError(f"{where} must be {type(live).__name__}, got {type(saved).__name__} {saved!r}")
    elif isinstance(live, (int, float)):
        _finite(saved, where)
        if isinstance(live, int) and not isinstance(saved, int):
            raise CheckpointError(f"{where} must be an integer, got {saved!r}")
    elif isinstance(live, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(live):
            raise CheckpointError(f"{where} must be a sequence of {len(live)}, got {type(saved).__name__} {saved!r}"[:300])
        for i, (s, v) in enumerate(zip(saved, live, strict=True)):
            _like(s, v, f"{where}[{i}]")
    elif isinstance(live, torch.Tensor):
        if not isinstance(saved, torch.Tensor) or saved.shape != live.shape or saved.dtype != live.dtype:
            raise CheckpointError(f"{where} must be a {live.dtype} tensor of shape {_shape(live.shape)}, got {_describe(saved)}")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {_shape(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:120]


def check_training_state(state: Mapping[str, Any], *, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         scheduler: Any, scaler: Any, epochs: int, steps_per_epoch: int) -> None:
    """Check a loaded ``state.pt`` against the live objects it would be loaded into (see the
    module docstring); CheckpointError naming ``path`` and the field at fault."""
    required = ("epoch", "step", "optimizer", "scheduler", "scaler", "rng", "history", "best")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path}: the training state lacks {missing}")
    epoch = _int(state["epoch"], f"{path}: epoch", 0, epochs)
    step = _int(state["step"], f"{path}: step", 0, epoch * steps_per_epoch)
    if "world_size" in state:
        _int(state["world_size"], f"{path}: world_size", 1, 2**20)
    _check_optimizer(state["optimizer"], optimizer, model, path, step)
    _check_scheduler(state["scheduler"], scheduler, path, step)
    _check_scaler(state["scaler"], path)
    _check_rng(state["rng"], path)
    history = state["history"]
    if not isinstance(history, list) or len(history) > epoch:
        raise CheckpointError(f"{path}: history must be a list of at most {epoch} epoch rows, got {_describe(history)}")
    for i, row in enumerate(history):
        if not isinstance(row, dict) or not all(isinstance(k, str) and not isinstance(v, bool) and isinstance(v, (int, float))
                                                for k, v in row.items()):
            raise CheckpointError(f"{path}: history[{i}] must map metric names to numbers, got {_describe(row)}")
    best = state["best"]
    if not isinstance(best, dict) or set(best) != {"value", "epoch", "bad_epochs"}:
        raise CheckpointError(f"{path}: best must be {{value, epoch, bad_epochs}}, got {_describe(best)}")
    best_epoch = _int(best["epoch"], f"{path}: best.epoch", 0, epoch)
    _int(best["bad_epochs"], f"{path}: best.bad_epochs", 0, epoch)
    value = best["value"]
    # -inf is the start value: no epoch improved on it yet.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) or (value == -math.inf and best_epoch == 0)):
        raise CheckpointError(f"{path}: best.value must be a finite score, got {value!r}")


def _check_optimizer(saved: Any, optimizer: torch.optim.Optimizer, model: torch.nn.Module, path: Path, step: int) -> None:
    where = f"{path}: optimizer"
    live = optimizer.state_dict()
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        raise CheckpointError(f"{where} must hold state and param_groups, got {_describe(saved)}")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(live["param_groups"]):
        count = len(groups) if isinstance(groups, list) else _describe(groups)
        raise CheckpointError(f"{where}: {count} parameter groups, expected {len(live['param_groups'])} (the model's)")
    for g, (group, live_group) in enumerate(zip(groups, live["param_groups"], strict=True)):
        gw = f"{where}.param_groups[{g}]"
        if not isinstance(group, dict) or group.get("params") != live_group["params"]:
            got = group.get("params") if isinstance(group, dict) else group
            raise CheckpointError(f"{gw}: params must be {_short(live_group['params'])} ({len(live_group['params'])} parameters), "
                                  f"got {_short(got)}")
        for key, value in group.items():
            if key == "params":
                continue
            if key in live_group:
                _like(value, live_group[key], f"{gw}.{key}")
            elif not (value is None or isinstance(value, (bool, str)) or (isinstance(value, (int, float)) and math.isfinite(value))):
                raise CheckpointError(f"{gw}.{key}: unexpected value {_describe(value)}")
        for key in ("lr", "initial_lr", "weight_decay", "eps"):
            if key in group and group[key] < 0:
                raise CheckpointError(f"{gw}.{key} must be >= 0, got {group[key]!r}")
    names = {id(p): n for n, p in model.named_parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = saved["state"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}.state must map parameter indices to their state, got {_describe(state)}")
    amsgrad = any(group.get("amsgrad") for group in optimizer.param_groups)
    moments = {"exp_avg", "exp_avg_sq", *(["max_exp_avg_sq"] if amsgrad else [])}
    for index, entry in state.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(params):
            raise CheckpointError(f"{where}.state: key {index!r} names no parameter (0..{len(params) - 1})")
        param = params[index]
        pw = f"{where}.state[{index}] ({names.get(id(param), '?')})"
        if not isinstance(entry, dict) or set(entry) != {"step", *moments}:
            raise CheckpointError(f"{pw} must hold {sorted({'step', *moments})}, got {sorted(entry) if isinstance(entry, dict) else _describe(entry)}")
        count = entry["step"]
        if isinstance(count, torch.Tensor):
            if count.dim() != 0 or not count.is_floating_point() or count.device.type != "cpu":
                raise CheckpointError(f"{pw}: step must be a 0-d floating tensor, got {_describe(count)}")
            count = float(count)
        if isinstance(count, bool) or not isinstance(count, (int, float)) or not (math.isfinite(count) and 0 <= count <= step
                                                                                  and count == int(count)):
            raise CheckpointError(f"{pw}: step must be a whole number in [0, {step}], got {count!r}")
        for key in sorted(moments):
            value = entry[key]
            if not isinstance(value, torch.Tensor) or value.shape != param.shape or value.dtype != param.dtype:
                raise CheckpointError(f"{pw}: {key} must be a {param.dtype} tensor of shape {_shape(param.shape)} "
                                      f"(the parameter's), got {_describe(value)}")
            if not bool(torch.isfinite(value).all()) or (key != "exp_avg" and bool((value < 0).any())):
                raise CheckpointError(f"{pw}: {key} holds {'NaN or infinite' if key == 'exp_avg' else 'negative, NaN or infinite'} values")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_scheduler(saved: Any, scheduler: Any, path: Path, step: int) -> None:
    where = f"{path}: scheduler"
    live = scheduler.state_dict()
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where} must be a mapping, got {_describe(saved)}")
    # LambdaLR.load_state_dict sets every key as an attribute: only the scheduler's own may come.
    harmless = {"verbose", "_get_lr_called_within_step", "_is_initial"}
    unknown = [k for k in saved if k not in live and k not in harmless]
    if unknown:
        raise CheckpointError(f"{where}: unexpected field(s) {unknown}")
    for key, value in saved.items():
        if key == "lr_lambdas":
            if not isinstance(value, list) or len(value) != len(live.get(key, [])) or any(v is not None for v in value):
                raise CheckpointError(f"{where}.lr_lambdas must be {live.get(key)!r}, got {_short(value)}")
        elif key in live:
            _like(value, live[key], f"{where}.{key}")
    for key in ("last_epoch", "_step_count"):
        if key in saved:
            _int(saved[key], f"{where}.{key}", -1, step + 1)


def _check_scaler(saved: Any, path: Path) -> None:
    where = f"{path}: scaler"
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where} must be a mapping, got {_describe(saved)}")
    allowed = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
    unknown = [k for k in saved if k not in allowed]
    if unknown:
        raise CheckpointError(f"{where}: unexpected field(s) {unknown}")
    for key, value in saved.items():
        if _finite(value, f"{where}.{key}") < 0 or (key == "scale" and value == 0):
            raise CheckpointError(f"{where}.{key} must be positive, got {value!r}")


def _check_rng(saved: Any, path: Path) -> None:
    where = f"{path}: rng"
    if not isinstance(saved, dict) or "torch" not in saved or "python" not in saved:
        raise CheckpointError(f"{where} must hold the torch and python generator states, got {_describe(saved)}")
    _like(saved["torch"], torch.get_rng_state(), f"{where}.torch")
    python = saved["python"]
    if not (isinstance(python, (tuple, list)) and len(python) == 3 and isinstance(python[1], (tuple, list)) and len(python[1]) == 625):
        raise CheckpointError(f"{where}.python must be random.getstate() (version, 625 integers, gauss), got {_short(python)}")
    _int(python[0], f"{where}.python[0]", 1, 3)
    for i, word in enumerate(python[1][:624]):
        _int(word, f"{where}.python[1][{i}]", 0, 2**32 - 1)
    _int(python[1][624], f"{where}.python[1][624]", 0, 624)
    if python[2] is not None:
        _finite(python[2], f"{where}.python[2]")
    for i, item in enumerate(saved.get("cuda", [])):
        if not isinstance(item, torch.Tensor) or item.dtype != torch.uint8 or item.dim() != 1 or item.numel() > 1024:
            raise CheckpointError(f"{where}.cuda[{i}] must be a small uint8 tensor, got {_describe(item)}")
    if "numpy" in saved:
        state = saved["numpy"]
        if not (isinstance(state, (tuple, list)) and len(state) == 5 and state[0] == "MT19937"):
            raise CheckpointError(f"{where}.numpy must be ('MT19937', keys, pos, has_gauss, cached), got {_short(state)}")
        keys = state[1]
        if not isinstance(keys, torch.Tensor) or keys.shape != (624,) or keys.dtype != torch.int64 or bool(((keys < 0) | (keys >= 2**32)).any()):
            raise CheckpointError(f"{where}.numpy[1] must be 624 int64 words in [0, 2**32), got {_describe(keys)}")
        _int(state[2], f"{where}.numpy[2]", 0, 624)
        _int(state[3], f"{where}.numpy[3]", 0, 1)
        _finite(state[4], f"{where}.numpy[4]")
