"""What ``mmcore serve`` runs: a run directory (the eager model and its processors) or an export
folder (its front end and graph), behind one interface.

A backend turns one record (``{slot: value}``; uploads as bytes) into a prepared item --
decoding, resizing, tokenising, each value checked -- and a list of prepared items into one
result per record, in one batched forward pass. Nothing here opens a path: image, audio and video
values are bytes of uploaded files, read by :mod:`mmcore_plugins.io` with the same checks and
limits as files (decompression bombs, absurd audio headers); text values are the text itself;
table values are numbers and categories.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Slot kinds whose values come as uploaded files (never as a JSON string, which could name a path).
FILE_MODALITIES = ("image", "audio", "video")


class FieldError(ValueError):
    """A request's field is missing, of the wrong type, or unreadable: ``field`` names it (a slot, a
    slot's column ``slot.column``, or ``records[i].slot``); the message says what was expected."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.reason = field, message


@dataclass
class SlotInfo:
    """One modality slot as the API and the page show it."""

    name: str
    modality: str
    kind: str  # "file" (image / audio: one upload), "frames" (video: several image uploads), "text", "table"
    columns: list[str]
    categorical: list[str]
    categories: dict[str, list[str]]
    accept: str
    #: For a slot whose columns a plugin derives from the user's own (a ``mmcore fit`` run's numbers and
    #: categories, hook ``mmcore_table_slot``): the user's row ``{column: value or None}`` -> the
    #: processor's row (missing numbers filled, their indicators set). ``columns``/``categorical`` are
    #: then the user's columns, and a number may be left out (a missing cell, as in the training table).
    derive: Any = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "modality": self.modality, "input": self.kind}
        if self.kind == "table":
            out.update(numeric=self.columns, categorical=self.categorical, categories=self.categories)
            if self.derive is not None:
                out["missing_numbers"] = "allowed: a number left out (or null) is a missing cell"
        if self.accept:
            out["accept"] = self.accept
        return out


def _slot_info(name: str, modality: str, columns: Sequence[str] | None = None, categorical: Sequence[str] = (),
               num_features: int = 0, vocabularies: Mapping[str, Any] | None = None) -> SlotInfo:
    accept = {"image": "image/*", "audio": "audio/*,.wav,.flac,.ogg,.mp3", "video": "image/*"}.get(modality, "")
    if modality in ("image", "audio"):
        return SlotInfo(name, modality, "file", [], [], {}, accept)
    if modality == "video":
        return SlotInfo(name, modality, "frames", [], [], {}, accept)
    if modality == "tabular" or columns or categorical or num_features:
        numeric = list(columns) if columns else [f"#{i}" for i in range(num_features)]
        categories = {c: sorted(v, key=lambda x: v[x]) if isinstance(v, Mapping) else list(v) for c, v in (vocabularies or {}).items()}
        return SlotInfo(name, modality, "table", numeric, list(categorical), categories, "")
    return SlotInfo(name, modality, "text", [], [], {}, "")


class Backend:
    """Common parts: validating a record's values against the slots before any decoding."""

    slots: list[SlotInfo]
    head: dict[str, Any]
    description: dict[str, Any]

    def check(self, record: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """The record's values by slot (None = missing), each of the type its slot takes; FieldError otherwise."""
        if not isinstance(record, Mapping):
            raise FieldError(where or "record", f"expected an object {{slot: value}}, got {type(record).__name__}")
        out: dict[str, Any] = {}
        names = [s.name for s in self.slots]
        for key in record:
            if key not in names:
                raise FieldError(f"{where}.{key}" if where else str(key), f"not a slot of this model; its slots are {names}")
        for s in self.slots:
            value = record.get(s.name)
            field = f"{where}.{s.name}" if where else s.name
            if value is None:
                out[s.name] = None
            elif s.kind == "file":
                if not isinstance(value, (bytes, bytearray)):
                    raise FieldError(field, f"{s.modality} slots take an uploaded file (multipart/form-data), not "
                                            f"{type(value).__name__} (a path is never opened)")
                out[s.name] = bytes(value)
            elif s.kind == "frames":
                if not isinstance(value, list) or not value or not all(isinstance(v, (bytes, bytearray)) for v in value):
                    raise FieldError(field, "video slots take one or more uploaded frame images (multipart/form-data)")
                out[s.name] = [bytes(v) for v in value]
            elif s.kind == "text":
                if not isinstance(value, str):
                    raise FieldError(field, f"expected text (a string), got {type(value).__name__}")
                out[s.name] = value if value.strip() else None
            else:
                out[s.name] = self._table_value(s, value, field)
        if all(v is None for v in out.values()):
            raise FieldError(where or "record", f"needs at least one of the slots {[s.name for s in self.slots]}")
        return out

    @staticmethod
    def _table_value(s: SlotInfo, value: Any, field: str) -> Any:
        if isinstance(value, list) and not s.categorical:
            bad = [i for i, v in enumerate(value) if isinstance(v, bool) or not isinstance(v, (int, float))]
            if bad:
                raise FieldError(f"{field}[{bad[0]}]", f"expected a number, got {value[bad[0]]!r}")
            if len(value) != len(s.columns):
                raise FieldError(field, f"expected {len(s.columns)} numbers, got {len(value)}")
            return value
        if not isinstance(value, Mapping):
            raise FieldError(field, f"expected an object {{column: value}} with columns {s.columns + s.categorical}, got "
                                    f"{type(value).__name__}")
        unknown = [k for k in value if k not in s.columns and k not in s.categorical]
        if unknown:
            raise FieldError(f"{field}.{unknown[0]}", f"not a column of this slot; its columns are {s.columns + s.categorical}")
        row: dict[str, Any] = {}
        for c in s.columns:
            v = value.get(c)
            if v is None and s.derive is not None:  # a missing cell: the plugin fills it as training did
                row[c] = None
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise FieldError(f"{field}.{c}", f"expected a finite number, got {v!r}")
            row[c] = v
        for c in s.categorical:
            v = value.get(c)
            if v is not None and not isinstance(v, (str, int, float)):
                raise FieldError(f"{field}.{c}", f"expected a category (a string), got {type(v).__name__}")
            row[c] = v
        return row if s.columns and s.columns[0] != "#0" else [row[c] for c in s.columns]

    # To implement: prepare(checked record) -> item; predict(items) -> results.
    def prepare(self, record: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def predict(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        raise NotImplementedError


def _decode_error(field: str, exc: Exception) -> FieldError:
    """The reader's message about an upload, worded for one (no stream object's repr, no "file")."""
    import re

    message = str(exc).replace("image (the given stream)", "the uploaded image").replace("audio from the given stream",
                                                                                        "the uploaded audio")
    return FieldError(field, re.sub(r"Error opening <[^>]*>: ", "", message))


class RunBackend(Backend):
    """A run directory's best checkpoint, eager, with its processors."""

    def __init__(self, run_dir: str | Path, manager: Any, checkpoint: str = "best") -> None:
        import torch

        from mmcore.cli import load_run

        self.model, self.config = load_run(run_dir, manager, checkpoint)
        self.model.eval()
        self.torch = torch
        self.slots = []
        for name in self.model.slots:
            p = self.model.processors[name]
            modality = getattr(self.model.encoders[name], "modality", "unknown")
            self.slots.append(_slot_info(name, modality, getattr(p, "columns", None), getattr(p, "categorical", None) or (),
                                         getattr(p, "num_features", 0) if modality == "tabular" else 0,
                                         getattr(p, "vocabularies", None)))
        classes = getattr(self.model.head, "classes", None)
        self.head = {"name": (self.model.spec or {}).get("head", {}).get("name"), "classes": classes}
        self.description = {"kind": "run", "path": str(Path(run_dir).resolve()), "checkpoint": checkpoint}
        for s in self.slots:  # a run whose plugin derives columns from the user's own: the user's columns
            answer = manager.hook.mmcore_table_slot(run_dir=Path(run_dir), slot=s.name) if s.kind == "table" else None
            if answer is not None:
                numeric, categorical, s.derive = answer
                s.columns, s.categorical = list(numeric), list(categorical)
                s.categories = {c: v for c, v in s.categories.items() if c in s.categorical}

    def prepare(self, record: Mapping[str, Any]) -> dict[str, Any]:
        item = {}
        for s in self.slots:
            value = record.get(s.name)
            if value is None:
                item[s.name] = None
                continue
            processor = self.model.processors[s.name]
            try:
                if s.kind == "file":
                    item[s.name] = processor(io.BytesIO(value))
                elif s.kind == "frames":
                    item[s.name] = processor([io.BytesIO(v) for v in value])
                elif s.derive is not None:
                    item[s.name] = processor(s.derive(value))
                else:
                    item[s.name] = processor(value)
            except (ValueError, TypeError) as exc:
                raise _decode_error(s.name, exc) from exc
        return item

    def predict(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        from mmcore_plugins.deploy.frontend import json_safe

        torch = self.torch
        inputs = {s.name: self.model.processors[s.name].collate([i[s.name] for i in items]) for s in self.slots}
        with torch.no_grad():
            out = self.model(inputs)
        predictions = self.model.head.format_predictions(out)
        probabilities = out.extras.get("probabilities") if isinstance(out.extras, dict) else None
        classes = self.head.get("classes")
        results = []
        for row, item in enumerate(items):
            result: dict[str, Any] = {"prediction": json_safe(predictions[row])}
            if isinstance(probabilities, torch.Tensor) and probabilities.dim() == 2:
                values = [round(float(p), 6) for p in probabilities[row]]
                result["probabilities"] = dict(zip(classes, values, strict=True)) if classes and len(classes) == len(values) else values
            result["modalities"] = [s.name for s in self.slots if item[s.name] is not None]
            results.append(result)
        return results


class ExportBackend(Backend):
    """An export folder (``mmcore export``): its front end and graph (onnxruntime or torch)."""

    def __init__(self, folder: str | Path, graph: str | None = None, threads: int | None = None) -> None:
        from mmcore_plugins.deploy import frontend

        self.artefact = frontend.load(folder, graph=graph, threads=threads)
        manifest = self.artefact.manifest
        self.slots = []
        for name, spec in manifest["slots"].items():
            self.slots.append(_slot_info(name, spec["modality"] if spec["kind"] != "tabular" else "tabular",
                                         spec.get("columns"), spec.get("categorical") or (), spec.get("num_features", 0),
                                         spec.get("vocabularies")))
        columns = self.artefact.columns
        for s in self.slots:  # a fit run's export: the table slot takes the user's columns, derived as fit derives them
            if columns is not None and s.kind == "table":
                s.columns = list(columns.slots[s.name]["numeric"])
                s.categorical = [*columns.slots[s.name]["categorical"], *columns.slots[s.name].get("dates", [])]
                s.categories = {c: v for c, v in s.categories.items() if c in s.categorical}
                s.derive = lambda values, slot=s.name, numeric=list(s.columns): columns.table_row(
                    slot, values if isinstance(values, Mapping) else dict(zip(numeric, values, strict=True)))  # a list of the numbers
        self.head = dict(manifest["head"])
        self.description = {"kind": "export", "path": str(Path(folder).resolve()), "graph": self.artefact.graph_file,
                            "format": manifest["graph"]["format"], "int8": self.artefact.graph_file.endswith(".int8.onnx"),
                            "source": manifest.get("source", {}), "verification": manifest.get("verification", {})}

    def _decode(self, s: SlotInfo, value: Any) -> Any:
        from mmcore_plugins.io import read_audio, read_image

        spec = self.artefact.slots[s.name].spec
        if s.kind == "file" and s.modality == "image" or s.kind == "frames":
            frame = spec if s.kind == "file" else spec["frame"]
            read = lambda data: read_image(io.BytesIO(data), channels=frame["channels"], background=frame["background"]).numpy()
            return read(value) if s.kind == "file" else [read(v) for v in value]
        if s.kind == "file":
            return read_audio(io.BytesIO(value), sample_rate=spec["sample_rate"], max_seconds=spec["max_seconds"]).numpy()
        return value

    def prepare(self, record: Mapping[str, Any]) -> dict[str, Any]:
        from mmcore_plugins.deploy.frontend import FrontEndError

        item = {}
        for s in self.slots:
            value = record.get(s.name)
            try:
                if value is not None and s.derive is not None:
                    value = s.derive(value)
                item[s.name] = None if value is None else self.artefact.slots[s.name].prepare(self._decode(s, value))
            except FrontEndError as exc:
                raise FieldError(s.name, exc.reason) from exc
            except (ValueError, TypeError) as exc:
                raise _decode_error(s.name, exc) from exc
        return item

    def predict(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        outputs = self.artefact.run(self.artefact.collate(items), len(items))
        return self.artefact.results(outputs, items)


def open_backend(path: str | Path, manager: Any = None, *, graph: str | None = None, threads: int | None = None) -> Backend:
    """A run directory or an export folder (told apart by the export's manifest.json)."""
    from mmcore_plugins.deploy.frontend import MANIFEST

    folder = Path(path)
    if (folder / MANIFEST).is_file():
        return ExportBackend(folder, graph=graph, threads=threads)
    if graph is not None:
        raise FieldError("--graph", f"{str(folder)!r} is a run directory; --graph picks a graph file of an export folder")
    if manager is None:
        from mmcore.plugin_manager import get_plugin_manager

        manager = get_plugin_manager()
    return RunBackend(folder, manager)
