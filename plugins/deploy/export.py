"""``mmcore export``: a trained model -> one self-contained folder (graph, front end, manifest).

The folder::

    manifest.json       inputs (slot, modality, dtype, shape, what "missing" holds) and outputs,
                        each slot's front-end spec with the processors' fitted state (vocabularies,
                        normalisation), the head's task and class names, versions, the source run,
                        and the verification done at export time
    model.onnx          the graph (ONNX, dynamo exporter), and/or model.pt2 (torch.export): both come
                        from one torch.export of the model (``--format onnx,pt2``)
    model.int8.onnx     with --int8: MatMul / Gemm / embeddings in int8 (onnxruntime's dynamic
                        quantisation: activations quantised per call), convolution weights stored as
                        int8 (weight-only: dequantised once at load, run in float); the front end's
                        mel filters left in float
    frontend.py         the numpy/Pillow/soundfile front end (a copy of mmcore_plugins.deploy.frontend):
                        the folder runs without mmcore
    tokenizer_*.json    a Hugging Face text slot's tokenizer

The manifest of a run whose plugin derives the slots' inputs from the user's own columns (``mmcore
fit``: missing-number indicators and medians, date parts, text files read) also holds that plan
(``"columns"``, hook ``mmcore_export_columns``): the front end derives them again, and the export's
users name only the columns of their own table.

Before any work, every component is checked: an encoder, fusion or head that declares
``export_refusal`` (see :class:`mmcore.Encoder`), or a slot whose processor has no front end,
is refused by name with the reason -- all of them in one error. After export the graph is run
on batches of 1, 5 and 9 records with random missing modalities and compared with the eager
model: ``model.pt2`` must reproduce it exactly, ``model.onnx`` within ``ONNX_TOLERANCE``
(the measured differences go into the manifest); anything else fails the export and writes
nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmcore.errors import UserInputError
from mmcore_plugins.deploy import frontend
from mmcore_plugins.deploy.graph import ExportModule
from mmcore_plugins.deploy.inputs import MAX_BATCH, SlotExport, UnsupportedSlot, slot_export

FORMATS = ("onnx", "pt2")
#: Largest |eager - onnxruntime| accepted on any float output at export time (fp32 graphs).
ONNX_TOLERANCE = 1e-4
#: Largest |processors + eager model - front end + exported module| accepted at export time (the front end
#: resizes with Pillow and computes the STFT as a convolution: float rounding, ~1e-6, not algorithms).
FRONT_END_TOLERANCE = 1e-3
#: Batch sizes the export is verified on (records with random missing modalities).
VERIFY_BATCHES = (1, 5, 9)
GRAPH_FILES = {"onnx": "model.onnx", "pt2": "model.pt2"}
INT8_FILE = "model.int8.onnx"


class ExportError(UserInputError):
    """The model cannot be exported (refused components, a missing extra, a bad option); nothing was written."""


class ExportFailed(RuntimeError):
    """An exporter or the verification failed on a component that did not refuse export (a bug to report)."""


# ----------------------------------------------------------------------------------- checks
def refusals(model: Any) -> list[str]:
    """Why ``model`` cannot be exported, one line per component or slot at fault (empty: it can)."""
    spec = model.spec or {}
    reasons = []

    def name(kind: str, entry: Any) -> str:
        return entry.get("name", "?") if isinstance(entry, Mapping) else "?"

    for slot, encoder in model.encoders.items():
        label = f"encoder {name('encoder', spec.get('encoders', {}).get(slot))!r} (slot {slot!r})"
        if getattr(encoder, "export_refusal", None):
            reasons.append(f"{label}: {encoder.export_refusal}")
            continue
        try:
            slot_export(slot, encoder, model.processors[slot])
        except UnsupportedSlot as exc:
            reasons.append(f"{label}: {exc}")
    if model.fusion is not None and getattr(model.fusion, "export_refusal", None):
        reasons.append(f"fusion {name('fusion', spec.get('fusion'))!r}: {model.fusion.export_refusal}")
    if getattr(model.head, "export_refusal", None):
        reasons.append(f"head {name('head', spec.get('head'))!r}: {model.head.export_refusal}")
    return reasons


def formats_of(fmt: str | Sequence[str]) -> tuple[str, ...]:
    """``"onnx"``, ``"pt2"``, ``"onnx,pt2"`` (or a sequence of them) -> the formats, in order, each once;
    ExportError for anything else. The first is the export's default graph (unless --int8)."""
    names = [f.strip() for f in fmt.split(",")] if isinstance(fmt, str) else [str(f).strip() for f in fmt]
    bad = [f for f in names if f not in FORMATS]
    if not names or bad or len(set(names)) != len(names):
        raise ExportError(f"--format: expected one of {', '.join(FORMATS)} or several joined by commas (onnx,pt2), "
                          f"each once; got {fmt if isinstance(fmt, str) else ','.join(names)!r}")
    return tuple(names)


def check_extras(fmt: str | Sequence[str], int8: bool) -> None:
    """ExportError naming the ``mmcore[export]`` extra when what ``fmt`` needs is not installed."""
    import importlib.util

    needed = ["onnx", "onnxruntime", "onnxscript"] if "onnx" in formats_of(fmt) else []
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"--format onnx needs {', '.join(missing)}: pip install 'mmcore[export]'")


def check_options(fmt: str | Sequence[str], int8: bool) -> None:
    if int8 and "onnx" not in formats_of(fmt):
        raise ExportError("--int8 is written as an ONNX graph (onnxruntime's dynamic int8 quantisation); use --format onnx")
    check_extras(fmt, int8)


# ----------------------------------------------------------------------------------- example records
def _numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, list):
        return [_numpy(v) for v in value]
    return value


def example_records(model: Any, count: int, generator: torch.Generator) -> list[dict[str, Any]]:
    """``count`` records of the processors' example values, each slot missing at random (about 30%;
    every record keeps one; with 2+ records every slot is present once and missing once)."""
    slots = list(model.slots)
    present = torch.rand(count, len(slots), generator=generator) >= 0.3
    if count >= 2:
        for j in range(len(slots)):
            present[j % count, j] = True
            present[(j + 1) % count, j] = False if len(slots) > 1 else present[(j + 1) % count, j]
    for i in range(count):
        if not present[i].any():
            present[i, int(torch.randint(len(slots), (1,), generator=generator))] = True
    return [{s: _numpy(model.processors[s].example(generator)) for j, s in enumerate(slots) if present[i, j]}
            for i in range(count)]


# ----------------------------------------------------------------------------------- building
def plan(model: Any) -> list[SlotExport]:
    """Each slot's export description; ExportError listing every refusal."""
    reasons = refusals(model)
    if reasons:
        raise ExportError("this model cannot be exported:\n" + "\n".join(reasons))
    return [slot_export(s, model.encoders[s], model.processors[s]) for s in model.slots]


def front_ends(slots: Sequence[SlotExport], folder: Path) -> dict[str, frontend.Slot]:
    """The front end of every slot (a Hugging Face tokenizer is read from ``folder``, written there first)."""
    for s in slots:
        for file, write in s.files.items():
            if not (folder / file).exists():
                write(folder / file)
    return {s.slot: frontend.SLOT_KINDS[s.kind](s.slot, s.frontend, str(folder)) for s in slots}


def graph_inputs(fronts: Mapping[str, frontend.Slot], module: ExportModule,
                 records: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, ...]:
    """Records -> the graph's input tensors, through the front end."""
    prepared = [{s: (None if r.get(s) is None else f.prepare(r[s])) for s, f in fronts.items()} for r in records]
    arrays = frontend.collate(fronts, prepared, module.input_names)
    return tuple(torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in module.input_names)


def dynamic_shapes(slots: Sequence[SlotExport]) -> tuple[tuple[dict[int, Any], ...]]:
    """torch.export's dynamic sizes per input (one ``Dim`` per name, shared between inputs)."""
    dims: dict[str, Any] = {}

    def dim(name: str, low: int, high: int, scale: int = 1, offset: int = 0):
        if name not in dims:
            dims[name] = torch.export.Dim(name, min=low, max=high)
        return dims[name] if (scale, offset) == (1, 0) else scale * dims[name] + offset

    return (tuple({axis: dim(*spec) for axis, spec in s.dims.get(i.name, {}).items()} for s in slots for i in s.inputs),)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("mmcore", "torch", "onnx", "onnxruntime", "onnxscript", "numpy", "Pillow", "soundfile"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def head_info(model: Any) -> dict[str, Any]:
    """The head's task (classification, multilabel, regression or other), name and class names."""
    from mmcore_plugins.heads.classification import ClassificationHead, MultilabelHead
    from mmcore_plugins.heads.regression import RegressionHead

    head = model.head
    task = ("classification" if isinstance(head, ClassificationHead) else "multilabel" if isinstance(head, MultilabelHead)
            else "regression" if isinstance(head, RegressionHead) else "other")
    classes = getattr(head, "classes", None)
    if task == "classification" and classes is None:
        classes = [str(i) for i in range(head.num_classes)]
    name = (model.spec or {}).get("head", {}).get("name")
    return {"name": name, "task": task, "classes": list(classes) if classes is not None else None}


# ----------------------------------------------------------------------------------- export
def export_model(model: Any, out: str | os.PathLike, *, fmt: str | Sequence[str] = "onnx", int8: bool = False,
                 source: Mapping[str, Any] | None = None, seed: int = 0, overwrite: bool = False,
                 columns: Mapping[str, Any] | None = None) -> Path:
    """Export ``model`` (a :class:`~mmcore.MultimodalModel` with fitted processors) into the new folder ``out``.

    ``fmt``: ``"onnx"``, ``"pt2"`` or both (``"onnx,pt2"``): every graph comes from one ``torch.export``
    of the model (the ONNX exporter translates that same program), each verified against the eager model.
    ``columns``: how the run's slot inputs are derived from the user's own columns (hook
    ``mmcore_export_columns``: a ``mmcore fit`` run's column plan), written into the manifest for the
    front end (:class:`~mmcore_plugins.deploy.frontend.Columns`), which then takes the user's rows.

    Raises :class:`ExportError` (nothing written) for options, a missing extra, refused
    components or an ``out`` that exists (``overwrite`` replaces an earlier export only);
    :class:`ExportFailed` when an exporter fails or the graph does not reproduce the model.
    """
    check_options(fmt, int8)
    target = Path(out)
    if target.exists():
        if not overwrite:
            raise ExportError(f"--out {str(target)!r} exists; choose a new folder or pass --overwrite")
        if not (target / frontend.MANIFEST).is_file():
            raise ExportError(f"--out {str(target)!r} exists and is not an mmcore export: it is never overwritten")
    slots = plan(model)  # refusals before any work
    if columns is not None:
        try:  # the plan must be plain JSON that the front end reads, and fit these slots' columns
            columns = json.loads(json.dumps(columns, allow_nan=False))
            frontend.Columns(columns, {s.slot: s.frontend for s in slots})
        except (TypeError, ValueError) as exc:
            raise ExportFailed(f"the run's column plan cannot travel with the export: {exc}") from exc
    model = model.cpu().eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        manifest = _export_into(work, model, slots, fmt=fmt, int8=int8, source=source, seed=seed)
        if columns is not None:
            manifest["columns"] = columns
        (work / frontend.MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        shutil.copyfile(Path(frontend.__file__), work / "frontend.py")
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def _export_into(work: Path, model: Any, slots: list[SlotExport], *, fmt: str | Sequence[str], int8: bool,
                 source: Mapping[str, Any] | None, seed: int) -> dict[str, Any]:
    module = ExportModule(model, slots).eval()
    fronts = front_ends(slots, work)
    generator = torch.Generator().manual_seed(seed)
    example = graph_inputs(fronts, module, example_records(model, 5, generator))
    larger = graph_inputs(fronts, module, example_records(model, 7, generator))
    outputs = module.probe(example, larger)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # trace the reference path, as verify() runs it
    try:
        # Size-oblivious: a size computed inside the graph (an audio clip's frames after pooling) may be
        # 1 at run time; traced this way the graph holds no guard that it is not. Under no_grad: the
        # graph is for inference, and a frozen encoder's ``set_grad_enabled(False)`` / ``no_grad`` is
        # then a no-op instead of a wrap_with_set_grad_enabled node (which torch.export.load rejects).
        with torch.no_grad(), torch.fx.experimental._config.patch(backed_size_oblivious=True):
            program = torch.export.export(module, example, dynamic_shapes=dynamic_shapes(slots), strict=False)
        program = inline_grad_modes(program, model)
    except ExportFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the tracer raises: report it, nothing is written
        where = component_in_traceback(exc, model)
        raise ExportFailed(f"torch.export failed{f' in {where}' if where else ''}: {type(exc).__name__}: "
                           f"{_first_line(exc)}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    formats = formats_of(fmt)
    graphs = {}
    # One traced program, every graph written from it; model.pt2 first, the program exactly as traced.
    for kind in sorted(formats, key=lambda k: k != "pt2"):
        graph = work / GRAPH_FILES[kind]
        graphs[kind] = GRAPH_FILES[kind]
        if kind == "pt2":
            with warnings.catch_warnings():
                # torch's archive writer warns when weights share one storage (a view of another weight):
                # its "may cause issues when your weights are not on CPU" -- they are on the CPU here.
                warnings.filterwarnings("ignore", message="No complete tensor found in the group")
                torch.export.save(program, graph)
        else:
            _write_onnx(program, module, outputs, graph)
            if int8:
                quantise_int8(graph, work / INT8_FILE)
                graphs["int8"] = INT8_FILE
    records = [example_records(model, n, generator) for n in VERIFY_BATCHES]
    checks = [graph_inputs(fronts, module, r) for r in records]
    verification = verify(module, work, graphs, checks)
    verification["front_end"] = front_end_fidelity(model, module, records, checks, outputs)
    return {
        "format": frontend.FORMAT, "version": frontend.FORMAT_VERSION,
        "graph": {"file": graphs.get("int8", graphs[formats[0]]), "format": formats[0], "formats": list(formats), "int8": int8,
                  "files": {k: {"file": v, "sha256": _sha256(work / v), "bytes": (work / v).stat().st_size}
                            for k, v in graphs.items()}},
        "max_batch": MAX_BATCH,
        "inputs": [i.to_json() for s in slots for i in s.inputs],
        "outputs": outputs,
        "slots": {s.slot: s.frontend for s in slots},
        "head": head_info(model),
        "model": model.spec,
        "source": dict(source or {}),
        "versions": _versions(),
        "verification": verification,
    }


#: Higher-order ops torch.export makes of a grad-mode switch inside forward (a component that turns grad
#: on under no_grad); torch.export.load's verifier rejects them, so the program is inlined first.
GRAD_MODE_OPS = ("wrap_with_set_grad_enabled",)


def component_of(model: Any, path: str) -> str:
    """The component that owns the submodule at ``path`` (``model.encoders.text.model...``), as
    :func:`refusals` names it: ``encoder 'minilm' (slot 'text')``, ``fusion 'gated'``, ``head '...'``."""
    spec = model.spec or {}

    def name(entry: Any) -> str:
        return entry.get("name", "?") if isinstance(entry, Mapping) else "?"

    parts = path.split(".")
    if parts[:1] == ["model"]:
        parts = parts[1:]
    if len(parts) >= 2 and parts[0] == "encoders":
        return f"encoder {name(spec.get('encoders', {}).get(parts[1]))!r} (slot {parts[1]!r})"
    if parts[:1] == ["fusion"]:
        return f"fusion {name(spec.get('fusion'))!r}"
    if parts[:1] == ["head"]:
        return f"head {name(spec.get('head'))!r}"
    return f"module {path or 'model'!r}"


def component_in_traceback(exc: BaseException, model: Any) -> str | None:
    """The component whose code raised ``exc`` (the innermost frame whose ``self`` is one of
    ``model``'s submodules), named as :func:`component_of` does; None when no such frame."""
    paths = {id(m): name for name, m in model.named_modules()}
    found = None
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and id(owner) in paths and paths[id(owner)]:
            found = paths[id(owner)]
        tb = tb.tb_next
    return component_of(model, found) if found else None


def grad_mode_components(program: Any, model: Any) -> list[str]:
    """The components (named as :func:`component_of` does) whose forward left a grad-mode switch in
    ``program``'s graph (a :data:`GRAD_MODE_OPS` node), each once, in graph order."""
    found: list[str] = []
    for node in program.graph.nodes:
        if node.op == "call_function" and getattr(node.target, "__name__", str(node.target)) in GRAD_MODE_OPS:
            stack = [entry[0] for entry in (node.meta.get("nn_module_stack") or {}).values()]
            label = component_of(model, max(stack, key=len) if stack else "")
            if label not in found:
                found.append(label)
    return found


def inline_grad_modes(program: Any, model: Any) -> Any:
    """``program`` without grad-mode switches: a component that switches grad on inside forward (the
    export traces under no_grad, so switching it off is already a no-op) is inlined into plain ATen
    ops (``run_decompositions({})``: no op is decomposed, the switch is dropped -- grad mode means
    nothing to an inference graph). ExportFailed naming the component when a switch remains."""
    if not grad_mode_components(program, model):
        return program
    program = program.run_decompositions({})
    left = grad_mode_components(program, model)
    if left:
        raise ExportFailed(f"{', '.join(left)}: its forward switches grad mode in a way torch.export cannot save "
                           f"(set the component's export_refusal, or drop the switch when not training)")
    return program


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _write_onnx(program: Any, module: ExportModule, outputs: list[dict[str, Any]], path: Path) -> None:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, (), dynamo=True, input_names=module.input_names,
                                             output_names=[o["name"] for o in outputs], verbose=False)
        onnx_program.save(str(path))
    except Exception as exc:  # noqa: BLE001 - the ONNX translation failed: report it, nothing is written
        raise ExportFailed(f"ONNX export failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    strip_metadata(path)


def strip_metadata(path: Path) -> None:
    """Drop the exporter's per-node metadata (source stack traces, module names): most of a small
    model's file, none of its computation."""
    import onnx

    model = onnx.load(str(path))
    graphs = [model.graph] + [f for f in model.functions]
    for graph in graphs:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    onnx.save(model, str(path))


#: Operators that int8 runs in int8 (dynamic quantisation: weights int8 per tensor, activations
#: quantised per call); embeddings (Gather) are stored as int8 and gathered as such.
INT8_OPS = ["MatMul", "Gemm", "Gather"]


def quantise_int8(source: Path, target: Path) -> None:
    """The int8 graph: onnxruntime's dynamic quantisation of every MatMul, Gemm and embedding Gather
    with a constant weight, and every convolution's weights stored as int8 (per output channel,
    symmetric) behind a DequantizeLinear -- weight-only, so the convolution itself runs in float
    (onnxruntime's integer convolution is slower than its float one on CPU) while the file holds
    int8. The front end's mel filters stay in float; its DFT basis is a convolution weight like any."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    front = {name for name in constants if name.startswith("front.") or ".front." in name}
    excluded = [n.name for n in graph.node if n.op_type in INT8_OPS and any(i in front for i in n.input)]
    with quiet_quantisation_advice():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS,
                         nodes_to_exclude=excluded)
    model = onnx.load(str(target))
    convolution_weights_int8(model)
    onnx.save(model, str(target))


#: onnxruntime's advice, logged on the root logger by every quantize_dynamic call, about its own
#: pre-processing script (shape inference, graph optimisation): the export's graph is already
#: optimised by the exporter, so the line is noise to an ``mmcore export`` user.
QUANTISATION_ADVICE = ("Please consider to run pre-processing before quantization",
                       "Please consider pre-processing before quantization")


class _DropAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(QUANTISATION_ADVICE)


@contextlib.contextmanager
def quiet_quantisation_advice():
    """Drop onnxruntime's :data:`QUANTISATION_ADVICE` line, and nothing else: every other record still
    reaches the root logger's handlers. ``logging.warning`` on a root logger without handlers
    installs one (``basicConfig``) that would print every later root record; one installed during
    the call is removed afterwards."""
    root = logging.getLogger()
    before, advice = list(root.handlers), _DropAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)


def convolution_weights_int8(model: Any) -> int:
    """Store every Conv's constant weight ``[C_out, ...]`` as int8 with one float scale per output
    channel (round to nearest, symmetric, [-127, 127]) and a DequantizeLinear giving the weight back
    under its name (onnxruntime folds it once at load). Returns how many weights were converted."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    weights = {n.input[1] for n in graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in initializers}
    nodes = []
    for name in sorted(weights):
        w = numpy_helper.to_array(initializers[name]).astype(np.float32)
        scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
        graph.initializer.remove(initializers[name])
        graph.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale"),
                                  numpy_helper.from_array(np.zeros(len(scale), dtype=np.int8), f"{name}_zero")])
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"], [name],
                                      name=f"{name}_dequantize", axis=0))
    for node in reversed(nodes):  # first in the graph: they read constants only
        graph.node.insert(0, node)
    return len(nodes)


@torch.no_grad()
def verify(module: ExportModule, folder: Path, graphs: Mapping[str, str],
           batches: Sequence[Sequence[torch.Tensor]], sizes: Sequence[int] = VERIFY_BATCHES) -> dict[str, Any]:
    """Compare the graph(s) with the eager module on ``batches`` (``sizes``: each one's records, the
    rest padding); ExportFailed when fp32 disagrees.

    The eager reference runs with PyTorch's fused-transformer fast path off (the exporters trace
    the reference path; the fast path's own kernels differ from it by float rounding).
    """
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        expected = [[o.numpy() for o in module(*batch)] for batch in batches]
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
    report: dict[str, Any] = {"batch_sizes": list(sizes)}
    for kind, file in graphs.items():
        try:  # a graph that cannot be loaded back or run is the export's failure, said in one line
            if kind == "pt2":
                program = torch.export.load(folder / file).module()
                got = [[o.numpy() for o in program(*batch)] for batch in batches]
            else:
                import onnxruntime as ort

                session = ort.InferenceSession(str(folder / file), providers=["CPUExecutionProvider"])
                got = [session.run(module.output_names, {n: t.numpy() for n, t in zip(module.input_names, batch, strict=True)})
                       for batch in batches]
        except Exception as exc:  # noqa: BLE001 - whatever the loader or runtime raises: nothing is written
            raise ExportFailed(f"{file} was written but cannot be loaded back and run: "
                               f"{type(exc).__name__}: {_first_line(exc)}") from exc
        diffs = {name: max(_difference(e[i], g[i]) for e, g in zip(expected, got, strict=True))
                 for i, name in enumerate(module.output_names)}
        entry: dict[str, Any] = {"max_abs_diff": diffs}
        if "predictions" in module.output_names and "probabilities" in module.output_names:
            i = module.output_names.index("predictions")
            same = sum(int(np.array_equal(e[i], g[i])) for e, g in zip(expected, got, strict=True))
            entry["same_predictions"] = f"{same}/{len(batches)} batches"
            # per record, the graph's padding rows left out (a multilabel record agrees when every label does)
            agree = [bool(np.array_equal(a, b)) for n, e, g in zip(sizes, expected, got, strict=True)
                     for a, b in zip(e[i][:n], g[i][:n], strict=True)]
            entry["records_agreeing"] = [sum(agree), len(agree)]
        report[kind] = entry
        if kind == "pt2" and any(v != 0 for v in diffs.values()):
            raise ExportFailed(f"model.pt2 does not reproduce the eager model exactly: {diffs}")
        floats = {n: v for n, v in diffs.items() if np.issubdtype(expected[0][module.output_names.index(n)].dtype, np.floating)}
        if kind == "onnx" and any(v > ONNX_TOLERANCE for v in floats.values()):
            raise ExportFailed(f"model.onnx differs from the eager model by more than {ONNX_TOLERANCE}: {diffs}")
    return report


@torch.no_grad()
def front_end_fidelity(model: Any, module: ExportModule, records: Sequence[Sequence[Mapping[str, Any]]],
                       batches: Sequence[Sequence[torch.Tensor]], outputs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Largest difference between the model fed by its own processors (eager, as ``mmcore predict``
    runs it) and the exported module fed by the front end, on the same records; ExportFailed above
    ``FRONT_END_TOLERANCE`` (a front end that does not compute what the processor does)."""
    from mmcore.engine.evaluation import to_device

    diffs: dict[str, float] = {}
    for rows, batch in zip(records, batches, strict=True):
        inputs, _ = to_device(model.collate([{"inputs": dict(r)} for r in rows]), "cpu")
        reference = module.outputs(model(inputs))
        shapes = {o["name"]: o["shape"] for o in outputs}
        got = {n: frontend.trim(o, len(rows), shapes[n]) for n, o in zip(module.output_names, module(*batch), strict=True)}
        for name in module.output_names:
            diffs[name] = max(diffs.get(name, 0.0), _difference(reference[name].numpy(), got[name].numpy()))
    floats = {n: v for n, v in diffs.items() if got[n].is_floating_point()}
    if any(v > FRONT_END_TOLERANCE for v in floats.values()):
        raise ExportFailed(f"the export's front end does not reproduce the processors (max |difference| {floats})")
    return {"max_abs_diff": diffs}


#: An int8 graph whose probabilities differ from fp32 by more than this (on the verification records)
#: is warned about in the export's summary, as is any record whose prediction differs.
INT8_WARN_PROBABILITY = 0.05


def int8_warning(verification: Mapping[str, Any]) -> str | None:
    """One line warning that the int8 graph's predictions differ from the fp32 model's on the
    verification records (fewer than all agree, or a probability moves by more than
    :data:`INT8_WARN_PROBABILITY`), with the numbers; None when they agree (or no int8 graph)."""
    entry = verification.get("int8")
    if not isinstance(entry, Mapping) or "records_agreeing" not in entry:
        return None
    same, total = entry["records_agreeing"]
    diffs = entry.get("max_abs_diff", {})
    probability, logits = float(diffs.get("probabilities", 0.0)), float(diffs.get("logits", 0.0))
    if same == total and probability <= INT8_WARN_PROBABILITY:
        return None
    return (f"warning: model.int8.onnx predicts as the fp32 model on {same}/{total} verification records "
            f"({100.0 * same / total:.0f}%); max |logit difference| {logits:.2g}, max |probability difference| "
            f"{probability:.2g} -- check it on your own data, or serve model.onnx (mmcore serve --graph model.onnx)")


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        return float((a != b).sum())
    both_nan = np.isnan(a) & np.isnan(b)
    return float(np.where(both_nan, 0.0, np.abs(a.astype(np.float64) - b.astype(np.float64))).max(initial=0.0))
