"""`MultimodalModel`: encoders (one per modality slot) -> fusion -> head, assembled from a spec."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mmcore.bulk import collector_paused
from mmcore.components import (
    PRIMARY_ARGUMENT,
    RESERVED_ARGUMENTS,
    Encoder,
    Fusion,
    Head,
    HeadOutput,
    Processor,
    fitter_for,
)
from mmcore.errors import ConfigError, ConfigIssue, InputReadError, UnknownComponentError
from mmcore.feature_cache import CACHED, SlotCache
from mmcore.features import Features
from mmcore.options import check_options, factory_parameters
from mmcore.registry import ComponentInfo, Registry
from mmcore.unreadable import UnreadableInputs, describe, record

#: One training/evaluation sample: raw inputs per modality slot (None = missing) and a target.
Sample = dict[str, Any]


class MultimodalModel(nn.Module):
    """Encoders -> fusion -> head.

    ``forward(inputs, targets=None)`` takes ``{slot: batch}`` as produced by :meth:`collate`.
    A slot absent from ``inputs`` counts as missing for every sample. With a single encoder
    the fusion may be omitted: the encoder's features go straight to the head.
    """

    def __init__(
        self,
        encoders: Mapping[str, Encoder],
        fusion: Fusion | None,
        head: Head,
        *,
        spec: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("a MultimodalModel needs at least one encoder, got none")
        for slot, encoder in encoders.items():
            if not isinstance(encoder, Encoder):
                raise TypeError(f"encoder for slot {slot!r} must be an mmcore.Encoder, got {type(encoder).__name__}")
        if fusion is None and len(encoders) != 1:
            raise ValueError(f"a fusion is required for {len(encoders)} encoders ({', '.join(encoders)}); got none")
        if fusion is not None and not isinstance(fusion, Fusion):
            raise TypeError(f"fusion must be an mmcore.Fusion, got {type(fusion).__name__}")
        if not isinstance(head, Head):
            raise TypeError(f"head must be an mmcore.Head, got {type(head).__name__}")
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.head = head
        self.spec = copy.deepcopy(dict(spec)) if spec is not None else None
        self.processors: dict[str, Processor] = {slot: enc.processor() for slot, enc in encoders.items()}
        #: Frozen-feature caches by slot (:func:`mmcore.feature_cache.attach_feature_cache`): the
        #: explicit path by which :meth:`collate` and :meth:`encode` serve cached features. Not
        #: part of the state dict; empty unless a cache is attached.
        self.feature_caches: dict[str, SlotCache] = {}
        #: What :meth:`collate` does with an input its processor cannot read
        #: (:class:`~mmcore.errors.InputReadError`): ``"error"`` raises it naming the sample's table,
        #: row and column; ``"missing"`` makes it a missing modality of that sample, listed in the
        #: batch's ``"unreadable"`` and in :attr:`unreadable` (:mod:`mmcore.unreadable`). The trainer
        #: sets it from ``trainer.unreadable_inputs``; not saved with the model.
        self.unreadable_inputs = "error"
        #: The inputs treated as missing so far under ``unreadable_inputs="missing"``.
        self.unreadable = UnreadableInputs()

    @property
    def slots(self) -> list[str]:
        return list(self.encoders.keys())

    # ------------------------------------------------------------------ data preparation
    @collector_paused()  # a value per sample gathered in chunks: mmcore.bulk says why
    def fit_processors(self, samples: Iterable[Sample], *, chunk_size: int = 4096) -> None:
        """Fit each processor's statistics (and the head's target statistics) on the training split.

        One pass over ``samples`` (any iterable: a data set read sample by sample streams), which
        are not kept: each processor that fits something gets its slot's raw values in chunks of
        ``chunk_size`` through :func:`~mmcore.components.fitter_for` (its own streaming
        :class:`~mmcore.components.PartialFit`, or its values gathered for ``fit``); the targets are
        gathered only when the head overrides ``fit_targets``, which is called when every sample has
        one. The result equals ``processor.fit`` of each slot's whole list (the PartialFit contract).
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        fitters = {slot: f for slot, processor in self.processors.items() if (f := fitter_for(processor)) is not None}
        wants_targets = type(self.head).fit_targets is not Head.fit_targets
        chunks: dict[str, list[Any]] = {slot: [] for slot in fitters}
        targets: list[Any] = []
        seen, every_target = 0, True
        for sample in samples:
            seen += 1
            inputs = sample["inputs"]
            for slot, chunk in chunks.items():
                chunk.append(inputs.get(slot))
            if wants_targets and every_target:
                target = sample.get("target")
                every_target = target is not None
                targets.append(target)
            if seen % chunk_size == 0:
                for slot, chunk in chunks.items():
                    fitters[slot].update(chunk)
                    chunks[slot] = []
        for slot, chunk in chunks.items():
            if chunk:
                fitters[slot].update(chunk)
            fitters[slot].finish()
        if wants_targets and seen and every_target:
            self.head.fit_targets(targets)

    def collate(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Raw samples -> ``{"inputs": {slot: batch}, "targets": tensor | None}``.

        A slot whose raw value is None (or absent) is missing for that sample. A slot with a
        feature cache attached is collated by it (:meth:`SlotCache.collate`): cached samples carry
        their stored features and skip the processor. An input the processor cannot read follows
        :attr:`unreadable_inputs`; under ``"missing"`` the batch also holds ``"unreadable"``, a list
        of records (:func:`mmcore.unreadable.record`: table, row, column, the reader's message).
        """
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        inputs, unreadable = {}, []
        for slot in self.processors:
            inputs[slot] = self.collate_slot(slot, [sample.get("inputs", {}).get(slot) for sample in samples], samples,
                                             unreadable)
        targets = None
        if all(sample.get("target") is not None for sample in samples):
            targets = self.head.collate_targets([sample["target"] for sample in samples])
        batch = {"inputs": inputs, "targets": targets}
        if unreadable:
            batch["unreadable"] = unreadable
        return batch

    def collate_slot(self, slot: str, raws: Sequence[Any], samples: Sequence[Sample] | None = None,
                     unreadable: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """One slot's raw inputs (None = missing) -> its batch, through the slot's feature cache when one
        is attached. ``samples`` (the raws' samples) name where an unreadable input came from; its
        record is appended to ``unreadable`` and to :attr:`unreadable` (see :meth:`collate`)."""
        processor, cache = self.processors[slot], self.feature_caches.get(slot)
        raws = list(raws)
        if cache is None:
            return processor.collate([None if raw is None else self._read(slot, i, raw, samples, unreadable)
                                      for i, raw in enumerate(raws)])
        guarded = _GuardedProcessor(processor)
        while True:  # the cache calls the processor on its misses; an unreadable one is retried as missing
            try:
                return cache.collate(raws, guarded)
            except _Unreadable as failure:
                for i, raw in enumerate(raws):
                    if raw is failure.raw:
                        raws[i] = None
                        self._unreadable(slot, i, samples, failure.error, unreadable)

    def _read(self, slot: str, i: int, raw: Any, samples: Sequence[Sample] | None,
              unreadable: list[dict[str, Any]] | None) -> Any:
        try:
            return self.processors[slot](raw)
        except InputReadError as exc:
            self._unreadable(slot, i, samples, exc, unreadable)
            return None

    def _unreadable(self, slot: str, i: int, samples: Sequence[Sample] | None, exc: InputReadError,
                    unreadable: list[dict[str, Any]] | None) -> None:
        """Record (``"missing"``) or raise (``"error"``) an input of ``slot`` that could not be read."""
        entry = record(slot, samples[i] if samples is not None and i < len(samples) else None, exc)
        if self.unreadable_inputs != "missing":
            if entry["file"] is None and entry["row"] is None:
                raise exc
            raise InputReadError(describe(entry)) from exc
        self.unreadable.add([entry])
        if unreadable is not None:
            unreadable.append(entry)

    # ------------------------------------------------------------------ forward
    def encode(self, inputs: Mapping[str, Any]) -> dict[str, Features]:
        """``{slot: batch}`` -> ``{slot: Features}``; slots not in ``inputs`` come back absent.

        A batch marked as cached (:data:`mmcore.feature_cache.CACHED`, from :meth:`collate` with a
        feature cache attached to the slot) goes to the slot's cache, which runs the encoder's
        frozen stage on the misses only; every other batch goes to the encoder's ``forward``.
        """
        unknown = set(inputs) - set(self.encoders)
        if unknown:
            raise ValueError(f"inputs for unknown modality slot(s) {sorted(unknown)}; the model has {self.slots}")
        if not inputs:
            raise ValueError(f"inputs must hold at least one of the model's modality slots {self.slots}, got none")
        features: dict[str, Features] = {}
        for slot, batch in inputs.items():
            cache = self.feature_caches.get(slot)
            if cache is not None and CACHED in batch:
                out = cache.encode(self.encoders[slot], batch)
            else:
                out = self.encoders[slot](batch)
            if not isinstance(out, Features):
                raise TypeError(f"encoder of slot {slot!r} returned {type(out).__name__}, expected mmcore.Features")
            features[slot] = out
        reference = next(iter(features.values()))
        for slot, encoder in self.encoders.items():
            if slot not in features:
                like = reference.unmasked_pooled  # (reading tokens would run the lazy zeroing)
                features[slot] = Features.absent(reference.batch_size, encoder.dim, device=like.device, dtype=like.dtype)
        return features

    def forward(self, inputs: Mapping[str, Any], targets: torch.Tensor | None = None) -> HeadOutput:
        features = self.encode(inputs)
        fused = self.fusion(features) if self.fusion is not None else next(iter(features.values()))
        out = self.head(fused, targets, features)
        # Kept on the output for training plugins (mmcore_train_loss): they are alive until
        # backward anyway, so this costs no memory.
        out.features, out.fused = features, fused
        return out


# ---------------------------------------------------------------------- building from a spec
def validate_model_spec(spec: Any, registry: Registry, *, path: str = "model") -> list[ConfigIssue]:
    """Every problem with a model spec, found without building anything."""
    issues: list[ConfigIssue] = []
    if not isinstance(spec, Mapping):
        return [ConfigIssue(path, f"expected a mapping with encoders, fusion and head, got {type(spec).__name__}")]
    allowed = {"encoders", "fusion", "head"}
    for key in spec:
        if key not in allowed:
            issues.append(ConfigIssue(_join(path, key), f"unknown section; expected one of {', '.join(sorted(allowed))}"))
    encoders = spec.get("encoders")
    if not isinstance(encoders, Mapping) or not encoders:
        issues.append(ConfigIssue(_join(path, "encoders"), "expected a non-empty mapping {slot: {name: ..., options}}"))
        encoders = {}
    for slot, entry in encoders.items():
        issues += _check_component(registry, "encoder", entry, _join(path, f"encoders.{slot}"))
    if spec.get("fusion") is None:
        if len(encoders) > 1:
            issues.append(ConfigIssue(_join(path, "fusion"), f"required when there is more than one encoder ({len(encoders)})"))
    else:
        issues += _check_component(registry, "fusion", spec["fusion"], _join(path, "fusion"))
    if spec.get("head") is None:
        issues.append(ConfigIssue(_join(path, "head"), "missing; expected {name: <registered head>, options}"))
    else:
        issues += _check_component(registry, "head", spec["head"], _join(path, "head"))
    return issues


def build_model(spec: Mapping[str, Any], registry: Registry | None = None, *, path: str = "model") -> MultimodalModel:
    """Build a :class:`MultimodalModel` from ``{"encoders": {...}, "fusion": {...}, "head": {...}}``.

    Every component name and option is checked first; all problems are raised together as
    one :class:`ConfigError`.
    """
    if registry is None:
        from mmcore.plugin_manager import get_registry

        registry = get_registry()
    issues = validate_model_spec(spec, registry, path=path)
    if issues:
        raise ConfigError(issues)
    encoders = {
        slot: _build(registry, "encoder", entry, _join(path, f"encoders.{slot}"))
        for slot, entry in spec["encoders"].items()
    }
    for slot, encoder in encoders.items():
        where = _join(path, f"encoders.{slot}")
        if not isinstance(encoder, Encoder):
            raise TypeError(f"{where}: factory returned {type(encoder).__name__}, expected an mmcore.Encoder")
        info = registry.get("encoder", spec["encoders"][slot]["name"])
        if info.modality and encoder.modality not in ("unknown", info.modality):  # a factory function's product
            raise TypeError(f"{where}: encoder {info.name!r} ({info.owner}) was registered with modality {info.modality!r} "
                            f"but built a {type(encoder).__name__} whose modality is {encoder.modality!r}")
    input_dims = {slot: int(encoder.dim) for slot, encoder in encoders.items()}
    fusion = None
    if spec.get("fusion") is not None:
        fusion = _build(registry, "fusion", spec["fusion"], _join(path, "fusion"), input_dims=input_dims)
        head_dim = int(fusion.dim)
    else:
        head_dim = next(iter(input_dims.values()))
    head = _build(registry, "head", spec["head"], _join(path, "head"), input_dim=head_dim, input_dims=input_dims)
    model = MultimodalModel(encoders, fusion, head, spec=spec)
    model.provenance = component_provenance(spec, registry)
    return model


#: The component kinds a model is built from: a model loads only where their plugins are installed. A run's
#: config names plugins of other kinds too (its dataset, loggers, balancer, augmentations), needed to train
#: it again or resume it, not to load its model (:func:`mmcore.engine.config.config_provenance`).
MODEL_KINDS = ("encoder", "fusion", "head")


def component_provenance(spec: Mapping[str, Any], registry: Registry) -> list[dict[str, str]]:
    """Where each component of ``spec`` comes from: ``[{kind, name, plugin, distribution, version}]``
    (``distribution``/``version`` empty for runtime plugins). Saved in ``model.json`` so that a run
    loaded where a plugin is not installed names the package to install, not a similar built-in."""
    entries = [("encoder", e["name"]) for e in spec["encoders"].values()]
    entries += [(kind, spec[kind]["name"]) for kind in ("fusion", "head") if spec.get(kind) is not None]
    return plugin_provenance(entries, registry)


def plugin_provenance(entries: Sequence[tuple[str, str]], registry: Registry) -> list[dict[str, str]]:
    """``[{kind, name, plugin, distribution, version}]`` of each registered ``(kind, name)`` in ``entries``
    (repeats and names not registered left out): the plugin that registered it, the installed distribution
    that ships it and that distribution's version (empty for runtime plugins and source trees)."""
    from importlib import metadata

    out, seen = [], set()
    for kind, name in entries:
        if (kind, name) in seen or (kind, name) not in registry:
            continue
        seen.add((kind, name))
        info = registry.get(kind, name)
        version = ""
        if info.distribution:
            try:
                version = metadata.version(info.distribution)
            except metadata.PackageNotFoundError:  # registered from a source tree: no version to pin
                version = ""
        out.append({"kind": kind, "name": name, "plugin": info.plugin, "distribution": info.distribution or "",
                    "version": version})
    return out


def _check_component(registry: Registry, kind: str, entry: Any, path: str) -> list[ConfigIssue]:
    if not isinstance(entry, Mapping):
        return [ConfigIssue(path, f"expected a mapping {{name: <registered {kind}>, options...}}, got {type(entry).__name__}")]
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        return [ConfigIssue(_join(path, "name"), f"missing; expected the name of a registered {kind} ({', '.join(registry.names(kind)) or 'none registered'})")]
    try:
        info = registry.get(kind, name)
    except UnknownComponentError as exc:
        return [ConfigIssue(_join(path, "name"), str(exc))]
    options = {k: v for k, v in entry.items() if k != "name"}
    return check_options(info, options, reserved=RESERVED_ARGUMENTS[kind], path=path)


def _build(registry: Registry, kind: str, entry: Mapping[str, Any], path: str, **reserved: Any) -> Any:
    info: ComponentInfo = registry.get(kind, entry["name"])
    params, var_keyword = factory_parameters(info.factory)
    # A reserved argument goes to the factory when it names it; a factory taking only **kwargs
    # gets the kind's primary one (input_dims for a fusion, input_dim for a head).
    supplied = {k: v for k, v in reserved.items() if k in params}
    primary = PRIMARY_ARGUMENT.get(kind)
    if var_keyword and primary in reserved:
        supplied.setdefault(primary, reserved[primary])
    options = {k: v for k, v in entry.items() if k != "name"}
    try:
        return info.factory(**supplied, **options)
    except (ValueError, TypeError) as exc:
        raise ConfigError([ConfigIssue(path, f"{kind} {info.name!r} ({info.owner}) rejected its options: {exc}")]) from exc
    except (MemoryError, RuntimeError) as exc:
        # `dim: 1099511627776` asks torch for 52 TB: an input error (exit 2), not an internal one
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, RuntimeError) and not _TOO_LARGE.search(text):
            raise
        raise ConfigError([ConfigIssue(path, f"{kind} {info.name!r} with these options is too large to build: "
                                             f"{text[:200]}")]) from exc


#: How torch says a tensor of these sizes cannot be allocated (CPU, CUDA) or its size overflows.
_TOO_LARGE = re.compile(r"can't allocate memory|out of memory|overflow|Cannot allocate memory", re.IGNORECASE)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Unreadable(Exception):
    """Raised through a feature cache's collate when the processor cannot read ``raw``."""

    def __init__(self, raw: Any, error: InputReadError) -> None:
        super().__init__(str(error))
        self.raw, self.error = raw, error


class _GuardedProcessor:
    """A processor whose unreadable inputs surface as :class:`_Unreadable` (naming the raw input),
    for :meth:`MultimodalModel.collate_slot` to retry them as missing."""

    def __init__(self, inner: Processor) -> None:
        self.inner = inner

    def __call__(self, raw: Any) -> Any:
        try:
            return self.inner(raw)
        except InputReadError as exc:
            raise _Unreadable(raw, exc) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
