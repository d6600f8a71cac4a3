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
  dtypes must equal the model's exactly (no silent casts, e.g. int8 for float32). The model is
  built for real under :class:`AllocationGuard`, whose budget is a small multiple of the bytes the
  header's tensors hold: a huge size in ``model.json`` is refused before its tensor is allocated.
  Then each tensor is read and must be finite.
* ``state.pt`` (loaded with ``weights_only=True``): :func:`check_training_state` compares
  its whole structure with the live model, optimiser, scheduler and scaler — parameter-group
  count and sizes, every AdamW moment's shape and dtype, step/epoch ranges, a finite best
  score, the RNG states' types and sizes — because a 3x3 ``exp_avg`` for a 16x6 parameter
  makes the fused AdamW kernel write out of bounds.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

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
    components = _check_components(meta.get("components", []), path)
    if registry is not None:
        from mmcore.model import MODEL_KINDS, validate_model_spec

        # the model's own components only: a run's logger or balancer plugin is not needed to load its model
        problem = missing_plugins([c for c in components if c["kind"] in MODEL_KINDS], registry, "the model's")
        if problem:  # a plugin the run was trained with is not installed: name the package, not a look-alike
            raise CheckpointError(f"{path}: {problem}")
        issues = validate_model_spec(spec, registry, path="spec")
        if issues:
            raise CheckpointError(f"{path}: " + "; ".join(str(i) for i in issues[:5]))
    slots = spec.get("encoders") if isinstance(spec.get("encoders"), dict) else {}
    unknown = [s for s in processors if s not in slots]
    if unknown:
        raise CheckpointError(f"{path}: processors for unknown slot(s) {unknown}; the spec's slots are {list(slots)}")
    meta["processors"] = processors
    return meta


def missing_plugins(components: list[dict[str, str]], registry: Any, whose: str) -> str | None:
    """What to say when a recorded component's plugin is not installed here (``components``: model.json's
    ``{kind, name, plugin, distribution, version}`` entries; ``whose``: "the model's", "the run's"): the first
    one's plugin, distribution and version and the ``pip install 'dist==version'`` that brings it back, the
    others named; None when every one is registered (or was a runtime plugin, with no package to name)."""
    absent = [c for c in components if (c["kind"], c["name"]) not in registry and c["distribution"]]
    if not absent:
        return None
    c = absent[0]
    pin = f"{c['distribution']}=={c['version']}" if c["version"] else c["distribution"]
    return (f"{whose} {c['kind']} {c['name']!r} comes from the plugin {c['plugin']!r} of distribution "
            f"{c['distribution']!r}" + (f" {c['version']}" if c["version"] else "")
            + f", which is not installed here; install it: pip install '{pin}'"
            + (f" (also missing: {', '.join(repr(o['name']) for o in absent[1:])})" if absent[1:] else ""))


def check_run_plugins(run_dir: str | Path, registry: Any) -> None:
    """Before a run is trained again from its own config or resumed: every plugin it recorded (its model's
    components and the plugins its config names: dataset, loggers, balancer, augmentations) is installed;
    else CheckpointError naming the first one's package, ``pip install 'dist==version'``. A run without a
    checkpoint, or written before its config's plugins were recorded, is checked for what it recorded."""
    from mmcore.engine.rundir import SPEC, RunDir

    run = RunDir(run_dir)
    for which in (RunDir.LAST, RunDir.BEST):
        path = run.checkpoint(which) / SPEC
        if path.is_file():
            problem = missing_plugins(read_model_json(path).get("components", []), registry, "the run's")
            if problem:
                raise CheckpointError(f"{run.path}: {problem}")
            return


#: At most this many components recorded (encoders + fusion + head), each field at most this long.
MAX_COMPONENTS, MAX_COMPONENT_FIELD = 256, 256


def _check_components(value: Any, path: Path) -> list[dict[str, str]]:
    """``model.json``'s ``components`` (which plugin each component came from; absent in older runs):
    a list of ``{kind, name, plugin, distribution, version}`` strings, bounded."""
    fields = ("kind", "name", "plugin", "distribution", "version")
    if not isinstance(value, list) or len(value) > MAX_COMPONENTS:
        raise CheckpointError(f"{path}: 'components' must be a list of at most {MAX_COMPONENTS} entries")
    for i, entry in enumerate(value):
        if (not isinstance(entry, dict) or set(entry) != set(fields)
                or not all(isinstance(entry[f], str) and len(entry[f]) <= MAX_COMPONENT_FIELD for f in fields)):
            raise CheckpointError(f"{path}: components[{i}] must be {{{', '.join(fields)}}} strings of at most "
                                  f"{MAX_COMPONENT_FIELD} characters")
    return value


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


#: Building a model from model.json may allocate at most this many times the bytes of the tensors
#: its weights file holds (parameters and buffers are those tensors; initialisation temporaries such
#: as ``torch.randn(n, d) * 0.02`` and non-persistent buffers take the rest) ...
ALLOCATION_FACTOR = 4
#: ... plus this much (a few non-persistent buffers of a small model).
ALLOCATION_SLACK = 64 * 2**20

# Tensor constructors whose size is in their arguments: checked before they allocate.
_SIZED = {"empty", "zeros", "ones", "rand", "randn", "full", "new_empty", "new_zeros", "new_ones", "new_full"}
_LIKE = {"empty_like", "zeros_like", "ones_like", "rand_like", "randn_like", "full_like", "randint_like"}


def tensor_bytes(header: Mapping[str, tuple[str, tuple[int, ...]]]) -> int:
    """Bytes of the tensors a :func:`read_safetensors_header` header describes."""
    sizes = {name: dtype.itemsize for dtype, name in _SAFETENSORS_DTYPES.items()}
    return sum(sizes.get(dtype, 8) * math.prod(shape) for dtype, shape in header.values())


def _human(n: int | float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _size_argument(args: tuple, kwargs: Mapping[str, Any], skip: int) -> tuple[int, ...] | None:
    """The size a constructor was asked for: ``f(2, 3)``, ``f((2, 3))`` or ``f(size=(2, 3))``
    (``skip`` leading arguments are not the size: the tensor of ``new_zeros``)."""
    size = kwargs.get("size")
    if size is None:
        rest = args[skip:]
        size = rest[0] if rest and isinstance(rest[0], (tuple, list, torch.Size)) else rest  # f((2, 3)) or f(2, 3)
    try:  # a NumPy integer or a 0-d integer tensor counts as its value; anything else is not a size
        return tuple(operator.index(d) for d in size if not isinstance(d, bool))
    except TypeError:
        return None


class AllocationGuard(TorchFunctionMode):
    """Refuses, before it allocates, a tensor constructor call that would take the bytes asked of
    constructors inside it past ``budget`` in all.

    Used while a model described by a (possibly crafted) ``model.json`` is built: the constructors
    modules make their parameters and buffers with (``torch.empty`` in ``nn.Linear``,
    ``torch.randn``, ``torch.zeros``, ``Tensor.new_*``, ``*_like``, ``arange``, ``eye``,
    ``empty_strided``, ...) are checked against the size they are asked for, computed with Python
    integers (a size whose element count overflows int64 is refused, not wrapped). The count is
    cumulative (a constructor's temporary counts although it is freed: the budget allows for it).
    What other operations allocate (``x.repeat(n)``, a probe forward pass) is not foreseen: a
    failed allocation there is a :class:`CheckpointError` in :func:`build_checked`. Raises
    :class:`CheckpointError` naming ``path``, the shape asked for and the budget.

    Why not the meta device: a build there runs arithmetic and ``normal_`` through ``torch._refs``,
    whose first use imports ``torch._dynamo`` (1.5-3 s, 45% of a cold ``mmcore predict``), and then
    the model is built a second time for real; under this guard it is built once.
    """

    def __init__(self, budget: int, path: Path | str, weights: Path | str) -> None:
        super().__init__()
        self.budget, self.path, self.weights, self.used = budget, path, weights, 0
        #: the error raised when the budget was passed (a component may wrap it in its own)
        self.refusal: CheckpointError | None = None

    def _dtype(self, kwargs: Mapping[str, Any], like: Any = None, integer: bool = False) -> torch.dtype:
        dtype = kwargs.get("dtype")
        if isinstance(dtype, torch.dtype):
            return dtype
        if isinstance(like, torch.Tensor):
            return like.dtype
        return torch.int64 if integer else torch.get_default_dtype()

    def _requested(self, name: str, args: tuple, kwargs: Mapping[str, Any]) -> tuple[tuple[int, ...], torch.dtype] | None:
        """(shape, dtype) a constructor is about to allocate; None for any other function."""
        if name in _SIZED:
            method = name.startswith("new_")
            shape = _size_argument(args, kwargs, 1 if method else 0)
            return None if shape is None else (shape, self._dtype(kwargs, args[0] if method else None))
        if name in _LIKE and args and isinstance(args[0], torch.Tensor):
            return tuple(args[0].shape), self._dtype(kwargs, args[0])
        if name in ("randint", "normal") and isinstance(kwargs.get("size", args[-1] if args else None), (tuple, list, torch.Size)):
            return _size_argument((), {"size": kwargs.get("size", args[-1])}, 0), self._dtype(kwargs, integer=name == "randint")
        if name == "randperm" and args and isinstance(args[0], int):
            return (args[0],), self._dtype(kwargs, integer=True)
        if name == "eye" and args and isinstance(args[0], int):
            return (args[0], args[1] if len(args) > 1 and isinstance(args[1], int) else args[0]), self._dtype(kwargs)
        if name == "empty_strided" and len(args) >= 2:
            size, stride = _size_argument(args[:1], {}, 0), _size_argument(args[1:2], {}, 0)
            if size and stride and all(d > 0 for d in size):
                return (1 + sum((d - 1) * abs(s) for d, s in zip(size, stride, strict=False)),), self._dtype(kwargs)
            return None
        if name in ("arange", "linspace", "logspace"):
            numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
            if name == "arange" and numbers:
                start, end, step = (0, numbers[0], 1) if len(numbers) == 1 else (*numbers[:2], numbers[2] if len(numbers) > 2 else 1)
                count = math.ceil((end - start) / step) if step and math.isfinite(end - start) else 0
                integer = all(isinstance(n, int) for n in numbers)
                return (max(0, count),), self._dtype(kwargs, integer=integer)
            steps = kwargs.get("steps", numbers[2] if len(numbers) > 2 else None)
            if isinstance(steps, int):
                return (steps,), self._dtype(kwargs)
        return None

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Mapping[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        asked = self._requested(name, args, kwargs)
        if asked is not None:
            shape, dtype = asked
            size = math.prod(max(0, d) for d in shape) * dtype.itemsize
            self._count(size, f"a {str(dtype).replace('torch.', '')} tensor of shape {_shape(shape)} ({name})")
        return func(*args, **kwargs)

    def _count(self, size: int, what: str) -> None:
        if self.used + size > self.budget:
            self.refusal = CheckpointError(
                f"{self.path}: the model it describes is larger than its weights: building it asked for {what}, "
                f"{_human(size)} after {_human(self.used)}; at most {_human(self.budget)} is allowed for the "
                f"{_human((self.budget - ALLOCATION_SLACK) / ALLOCATION_FACTOR)} of tensors in {self.weights} "
                "(the file is damaged or was edited)")
            raise self.refusal
        self.used += size


def build_checked(spec: Mapping[str, Any], registry: Any, header: Mapping[str, tuple[str, tuple[int, ...]]],
                  path: Path | str = "model.json", weights: Path | str = "model.safetensors") -> Any:
    """The model ``spec`` describes, built under an :class:`AllocationGuard` whose budget is
    :data:`ALLOCATION_FACTOR` x the bytes of ``header``'s tensors + :data:`ALLOCATION_SLACK`.

    Raises :class:`CheckpointError` naming ``path`` when the model would pass the budget (refused
    before the tensor is allocated: ``dim: 2147483647`` asked a 2**31 x 2**31 x 5 convolution,
    512 GB; found by benchmarks/attack_surface.py) or cannot be built for lack of memory."""
    from mmcore.model import build_model

    guard = AllocationGuard(ALLOCATION_FACTOR * tensor_bytes(header) + ALLOCATION_SLACK, path, weights)
    try:
        with guard:
            return build_model(spec, registry)
    except Exception as exc:
        if guard.refusal is not None:  # build_model names the component; the refusal names the file
            raise guard.refusal from exc
        if isinstance(exc, (MemoryError, RuntimeError, OverflowError)):  # an allocation no constructor check saw
            raise CheckpointError(f"{path}: the model it describes cannot be built: "
                                  f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
        raise


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
    # a checkpoint written inside epoch + 1 (mmcore.engine.midepoch) is past its epoch-end steps
    step = _int(state["step"], f"{path}: step", 0, (epoch + ("partial_epoch" in state)) * steps_per_epoch)
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
