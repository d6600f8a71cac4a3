"""Datasets of raw multimodal samples, DataLoader integration and the frozen-feature cache.

A sample is ``{"inputs": {slot: raw | None}, "target": ...}``; None marks a modality the sample
lacks. :func:`make_dataloader` turns a dataset into seeded, collated batches for a model.

Frozen-feature cache
--------------------
A frozen pretrained encoder gives the same features for the same sample every epoch, so they
can be computed once. :class:`FeatureCache` stores per-sample features keyed by
``(encoder fingerprint, sample key)``:

* the *sample key* (:func:`sample_key`) is a hash of the raw input: for a file path, the path
  with the file's size and modification time; for text, arrays, tensors, PIL images and rows,
  their content;
* the *encoder fingerprint* (:func:`encoder_fingerprint`) hashes the encoder's class and its
  frozen tensors (parameters that do not require grad, and buffers) with the processor's
  settings and fitted state: change the weights, the image size or the tokenizer and the old
  entries are simply never hit again.

Encoders take part through two optional methods (the *frozen stage* protocol)::

    encoder.frozen_features(batch) -> Features   # the expensive, frozen, deterministic part
    encoder.from_frozen(features) -> Features    # the trainable tail (a projection, or identity)

with ``forward(batch) == from_frozen(frozen_features(batch))`` and ``encoder.cacheable`` True when
the frozen stage has no trainable parameter. An encoder with no trainable parameter at all and
no such methods is cached whole. :func:`attach_feature_cache` swaps the model's processor for a
:class:`CachingProcessor` (a cache hit skips reading and decoding the raw input too) and
routes the encoder's forward through the cache; :func:`precompute_features` fills the cache
for a data set before training, so every epoch after it skips the frozen backbone entirely.
How a training loop uses it (the trainer can offer it as one option, e.g. ``cache_features: true``)::

    handles = [attach_feature_cache(model, slot, cache) for slot in model.slots
               if is_cacheable(model.encoders[slot], model.processors[slot])]
    for split in ("train", "val"):
        for h in handles: precompute_features(model, h.slot, datasets[split], batch_size=...)
    ... train as usual ...  (misses are computed and stored on the fly)
    for h in handles: h.remove()   # before saving: the model is unchanged by the cache

With DataLoader workers, lookups happen in the workers (each a copy of the cache as it was when
the epoch's workers started) and misses are computed and stored in the main process during the
forward: entries stored in one epoch are seen by the next epoch's workers (or at once by all,
with an on-disk ``directory``).

Raw-level augmentation changes the raw input (so every augmented sample is a miss) and
processor-level augmentation makes features differ per epoch: :func:`attach_feature_cache`
refuses a processor whose ``augment`` is on, and caching is for frozen encoders only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mmcore.components import Processor
from mmcore.features import Features

SPLITS = ("train", "val", "test")

logger = logging.getLogger("mmcore.data")


class SampleDataset(Dataset):
    """A map-style dataset of raw samples, with metadata (e.g. ``num_classes``) for configs and reports.

    Each sample is ``{"inputs": {slot: raw or None}, "target": value}``; None marks a modality
    the sample lacks.
    """

    def __init__(self, samples: Sequence[Mapping[str, Any]], *, metadata: Mapping[str, Any] | None = None) -> None:
        for i, sample in enumerate(samples):
            if not isinstance(sample, Mapping) or not isinstance(sample.get("inputs"), Mapping):
                raise ValueError(f"sample #{i} must be a mapping with an 'inputs' mapping, got {sample!r:.80}")
        self.samples = list(samples)
        self.metadata = dict(metadata or {})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        return self.samples[index]


def seeded_split(n: int, *, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Indices ``0..n-1`` shuffled with ``seed`` and cut into train/val/test."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must leave training data, got {val_fraction + test_fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}


# ---------------------------------------------------------------------- DataLoader integration
class ModelCollate:
    """``model.collate`` as a picklable callable (for worker processes); ``training`` switches the
    processors that have a ``training`` flag (train-time augmentation) on while collating."""

    def __init__(self, model: Any, *, training: bool = False) -> None:
        self.model, self.training = model, training

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        processors = getattr(self.model, "processors", {})
        switched = [p for p in processors.values() if hasattr(p, "training")] if self.training else []
        for p in switched:
            p.training = True
        try:
            return self.model.collate(samples)
        finally:
            for p in switched:
                p.training = False


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and NumPy's generators from the worker's torch seed.

    PyTorch seeds each worker's torch generator with ``base_seed + worker_id`` (``base_seed`` drawn
    from the DataLoader's generator); the other generators would otherwise be copies of the parent's.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is a dependency; seeding must still never be what fails
        pass


def make_dataloader(
    dataset: Dataset,
    model: Any,
    batch_size: int = 32,
    *,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool | None = None,
    training: bool = False,
) -> DataLoader:
    """Batches of ``model.collate`` over ``dataset``: seeded order and workers, pinned memory on CUDA.

    The same ``seed`` gives the same batches in the same order, with or without worker processes.
    ``training=True`` collates with the processors' train-time augmentation on. ``pin_memory``
    defaults to whether CUDA is available.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if not callable(getattr(model, "collate", None)):
        raise TypeError(f"model must have a collate(samples) method (an mmcore.MultimodalModel), got {type(model).__name__}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        collate_fn=ModelCollate(model, training=training),
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers else None,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=False,
    )


# ---------------------------------------------------------------------- keys and fingerprints
def sample_key(raw: Any) -> str:
    """A stable hex key for one raw input (equal inputs -> equal keys, across processes and runs).

    File paths are keyed by absolute path, size and modification time (an edited file is a new
    sample; a folder, by every file in it); strings, arrays, tensors, PIL images,
    ``(waveform, rate)`` pairs and rows of numbers by their content.
    """
    h = hashlib.sha256()
    _feed(h, raw)
    return h.hexdigest()


def _path_stat(raw: Any) -> os.stat_result | None:
    """The stat of the file ``raw`` names, or of the folder (only when written as a path: a word of
    text that happens to match a folder name is text); None when ``raw`` names neither."""
    if not isinstance(raw, (str, os.PathLike)) or (isinstance(raw, str) and len(raw) >= 4096):
        return None
    try:
        path = os.fspath(raw)
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(st.st_mode) or (stat.S_ISDIR(st.st_mode) and (isinstance(raw, os.PathLike) or os.sep in path)):
        return st
    return None


def _feed_path(h: Any, path: str, st: os.stat_result) -> None:
    """A file by path, size and modification time; a folder (e.g. a video's frames) by every file in it."""
    path = os.path.abspath(path)
    if stat.S_ISDIR(st.st_mode):
        h.update(f"dir:{path}[".encode())
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            _feed_path(h, entry.path, entry.stat())
        h.update(b"]")
    else:
        h.update(f"file:{path}:{st.st_size}:{st.st_mtime_ns};".encode())


def _feed(h: Any, raw: Any) -> None:
    # Variable-length fields carry their length, so no two different inputs feed the same bytes.
    st = _path_stat(raw)  # one stat per input: this runs for every sample of every epoch
    if st is not None:
        _feed_path(h, os.fspath(raw), st)
    elif isinstance(raw, str):
        data = raw.encode("utf-8")
        h.update(f"str:{len(data)}:".encode() + data)
    elif isinstance(raw, bytes):
        h.update(f"bytes:{len(raw)}:".encode() + raw)
    elif isinstance(raw, torch.Tensor):
        t = raw.detach().cpu().contiguous()
        h.update(f"tensor:{t.dtype}:{list(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif type(raw).__module__ == "numpy" and hasattr(raw, "tobytes"):
        h.update(f"ndarray:{raw.dtype}:{list(raw.shape)}:".encode() + raw.tobytes() + b";")
    elif type(raw).__module__.startswith("PIL."):
        palette = raw.getpalette() if raw.mode in ("P", "PA") else None  # indices mean nothing without it
        h.update(f"pil:{raw.mode}:{raw.size}:{palette}:".encode() + raw.tobytes() + b";")
    elif isinstance(raw, (tuple, list)):
        h.update(f"{type(raw).__name__}:{len(raw)}[".encode())
        for item in raw:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(raw, Mapping):
        h.update(f"map:{len(raw)}{{".encode())
        for k in sorted(raw, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, k)
            h.update(b"=")
            _feed(h, raw[k])
        h.update(b"}")
    elif raw is None or isinstance(raw, (bool, int, float)):
        h.update(f"{type(raw).__name__}:{raw!r};".encode())
    else:
        raise TypeError(f"cannot make a cache key for a raw input of type {type(raw).__name__}")


def _plain(value: Any) -> Any:
    """JSON-able view of a processor setting (None for anything that is not plain data)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and value.numel() <= 4096:
        return value.tolist()
    return None


def encoder_fingerprint(encoder: torch.nn.Module, processor: Processor | None = None) -> str:
    """A hex digest of everything that decides an encoder's *frozen* output for a raw input.

    Hashes the encoder's class and plain settings (e.g. its pooling), its frozen tensors
    (parameters that do not require grad, and buffers; trainable ones change every step and
    belong to the uncached tail) and the processor's class, plain settings and fitted state.
    """
    h = hashlib.sha256(f"{type(encoder).__module__}.{type(encoder).__qualname__};".encode())
    options = {k: _plain(v) for k, v in sorted(vars(encoder).items()) if not k.startswith("_") and k != "training"}
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    for name, tensor in sorted(encoder.state_dict().items()):
        if name in trainable:
            continue
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{list(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    if processor is not None:
        settings = {k: _plain(v) for k, v in sorted(vars(processor).items()) if k != "training"}
        state = processor.state_dict()
        h.update(f"{type(processor).__qualname__};".encode())
        h.update(json.dumps({"settings": settings, "state": _plain(state)}, sort_keys=True, default=str).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------- the cache
class FeatureCache:
    """Per-sample frozen features ``(tokens [L, D] of the real tokens, pooled [D])``, in memory and
    optionally on disk (``directory``: one safetensors file per sample, shared by worker
    processes and later runs). Keyed by ``(encoder fingerprint, sample key)``."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else None
        self._memory: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._memory)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._memory or (self._file(*key) is not None and self._file(*key).is_file())

    def _file(self, fingerprint: str, key: str) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / fingerprint[:24] / f"{key}.safetensors"

    def get(self, fingerprint: str, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The stored ``(tokens, pooled)`` or None."""
        entry = self._memory.get((fingerprint, key))
        if entry is None and self.directory is not None:
            file = self._file(fingerprint, key)
            if file.is_file():
                from safetensors.torch import load_file

                stored = load_file(str(file))
                entry = (stored["tokens"], stored["pooled"])
                self._memory[(fingerprint, key)] = entry
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, fingerprint: str, key: str, tokens: torch.Tensor, pooled: torch.Tensor) -> None:
        """Store one sample's features (moved to the CPU, detached)."""
        if tokens.dim() != 2 or pooled.dim() != 1 or tokens.shape[1] != pooled.shape[0]:
            raise ValueError(f"expected tokens [L, D] and pooled [D], got {list(tokens.shape)} and {list(pooled.shape)}")
        entry = (tokens.detach().to("cpu", copy=True).contiguous(), pooled.detach().to("cpu", copy=True).contiguous())
        self._memory[(fingerprint, key)] = entry
        if self.directory is not None:
            from safetensors.torch import save_file

            file = self._file(fingerprint, key)
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
            save_file({"tokens": entry[0], "pooled": entry[1]}, str(tmp))
            os.replace(tmp, file)  # atomic: a reader never sees half a file

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        self._memory.clear()


# ---------------------------------------------------------------------- encoder side
def is_cacheable(encoder: torch.nn.Module, processor: Processor | None = None) -> bool:
    """Whether ``encoder``'s frozen stage may be cached (frozen weights, no processor augmentation)."""
    if processor is not None and getattr(processor, "augment", False):
        return False
    if hasattr(encoder, "frozen_features") and hasattr(encoder, "from_frozen"):
        return bool(getattr(encoder, "cacheable", False))
    return not any(p.requires_grad for p in encoder.parameters())


def _stages(encoder: torch.nn.Module) -> tuple[Callable[[Any], Features], Callable[[Features], Features]]:
    if hasattr(encoder, "frozen_features") and hasattr(encoder, "from_frozen"):
        return encoder.frozen_features, encoder.from_frozen
    return encoder.forward, lambda features: features


class _WrappingProcessor(Processor):
    """A processor wrapped around another one (``inner``): the ``training`` flag, fitting, state
    and examples go to ``inner``; subclasses change how raw inputs are processed and collated."""

    inner: Processor

    @property
    def training(self) -> bool:
        return bool(getattr(self.inner, "training", False))

    @training.setter
    def training(self, value: bool) -> None:
        if hasattr(self.inner, "training"):
            self.inner.training = value

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        return self.inner.collate(items)

    def fit(self, raws: Sequence[Any]) -> None:
        self.inner.fit(raws)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def example(self, generator: torch.Generator) -> Any:
        return self.inner.example(generator)


class CachingProcessor(_WrappingProcessor):
    """Wraps an encoder's processor: a cached sample skips ``inner(raw)`` (reading, decoding) entirely.

    Batches it collates hold the cached rows (``cache.tokens/mask/pooled/hit``), the processed
    misses as a sub-batch (``inner.*``, ``cache.miss_rows``) and the misses' keys
    (``cache.miss_keys``, the sha256 digests as ``[M, 32]`` uint8) so the encoder can store them.
    """

    def __init__(self, inner: Processor, cache: FeatureCache, fingerprint: str) -> None:
        self.inner, self.cache, self.fingerprint = inner, cache, fingerprint

    def __call__(self, raw: Any) -> tuple[str, Any]:
        key = sample_key(raw)
        hit = self.cache.get(self.fingerprint, key)
        return (key, hit) if hit is not None else (key, _Miss(self.inner(raw)))

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        present = torch.tensor([item is not None for item in items], dtype=torch.bool)
        hits = [item[1] if item is not None and not isinstance(item[1], _Miss) else None for item in items]
        misses = [(row, item) for row, item in enumerate(items) if item is not None and isinstance(item[1], _Miss)]
        dims = {h[1].shape[0] for h in hits if h is not None}
        width = dims.pop() if dims else 1
        length = max((h[0].shape[0] for h in hits if h is not None), default=1)
        tokens = torch.zeros(len(items), max(length, 1), width)
        mask = torch.zeros(len(items), max(length, 1), dtype=torch.bool)
        pooled = torch.zeros(len(items), width)
        for row, h in enumerate(hits):
            if h is not None:
                tokens[row, : h[0].shape[0]] = h[0]
                mask[row, : h[0].shape[0]] = True
                pooled[row] = h[1]
        batch = {
            "present": present,
            "cache.hit": torch.tensor([h is not None for h in hits], dtype=torch.bool),
            "cache.tokens": tokens,
            "cache.mask": mask,
            "cache.pooled": pooled,
            "cache.miss_rows": torch.tensor([row for row, _ in misses], dtype=torch.long),
            "cache.miss_keys": torch.tensor([list(bytes.fromhex(item[0])) for _, item in misses], dtype=torch.uint8).view(-1, 32),
        }
        if misses:
            for k, v in self.inner.collate([item[1].processed for _, item in misses]).items():
                batch[f"inner.{k}"] = v
        return batch


class MemoizedProcessor(_WrappingProcessor):
    """Wraps a deterministic processor: each raw input read from a file (or given as text) is
    processed once and its tensors kept in memory, so later epochs skip reading, decoding and
    feature extraction (e.g. a WAV file's resampling and log-mel spectrogram).

    Only raw inputs that name their content — file paths and strings — are remembered (keyed
    by :func:`sample_key`: path, size and modification time, or the text); arrays, tensors and
    images are processed every time. Memory grows with the distinct paths and texts seen, so
    slots whose raw inputs are perturbed at train time (new strings every epoch) should not be
    memoized (:func:`memoize_inputs` takes them in ``exclude``). Refuses processors that
    augment: their output differs on every call. With DataLoader workers each worker remembers what it processed during one
    epoch only (workers are new each epoch), so this pays off with ``num_workers=0``.
    """

    def __init__(self, inner: Processor) -> None:
        if getattr(inner, "augment", False) or isinstance(inner, (CachingProcessor, MemoizedProcessor)):
            raise ValueError(f"{type(inner).__name__} cannot be memoized: it augments its inputs or is already cached")
        self.inner = inner
        self.memo: dict[str, Any] = {}

    def __call__(self, raw: Any) -> Any:
        if not isinstance(raw, (str, os.PathLike)):
            return self.inner(raw)
        key = sample_key(raw)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = self.inner(raw)
        return hit

    def fit(self, raws: Sequence[Any]) -> None:
        self.memo.clear()  # fitted statistics change what the processor returns
        self.inner.fit(raws)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.memo.clear()
        self.inner.load_state_dict(state)


def memoize_inputs(model: Any, exclude: Sequence[str] = ()) -> list[str]:
    """Wrap every deterministic processor of ``model`` in a :class:`MemoizedProcessor`; returns the slots.

    "Deterministic" means it does not augment (``augment`` false or absent) and no feature cache
    is attached to it. Slots in ``exclude`` are left alone: those whose raw inputs are perturbed
    at train time (every perturbed text would be a new entry). Undo with :func:`unmemoize_inputs`.
    """
    slots = []
    for slot, processor in list(model.processors.items()):
        if slot in exclude or getattr(processor, "augment", False) or isinstance(processor, (CachingProcessor, MemoizedProcessor)):
            continue
        model.processors[slot] = MemoizedProcessor(processor)
        slots.append(slot)
    return slots


def unmemoize_inputs(model: Any) -> None:
    """Put back the processors :func:`memoize_inputs` wrapped (and drop what they remembered)."""
    for slot, processor in list(model.processors.items()):
        if isinstance(processor, MemoizedProcessor):
            model.processors[slot] = processor.inner


class _Miss:
    """A processed sample the cache did not have (kept apart from the ``(tokens, pooled)`` hits)."""

    __slots__ = ("processed",)

    def __init__(self, processed: Any) -> None:
        self.processed = processed


class FeatureCacheHandle:
    """What :func:`attach_feature_cache` returns; ``remove()`` restores the processor and forward."""

    def __init__(self, model: Any, slot: str, cache: FeatureCache, fingerprint: str, processor: Processor) -> None:
        self.model, self.slot, self.cache, self.fingerprint, self.processor = model, slot, cache, fingerprint, processor

    def remove(self) -> None:
        encoder = self.model.encoders[self.slot]
        encoder.__dict__.pop("forward", None)
        self.model.processors[self.slot] = self.processor


def attach_feature_cache(model: Any, slot: str, cache: FeatureCache) -> FeatureCacheHandle:
    """Serve ``slot``'s frozen features from ``cache`` (computing and storing misses on the fly).

    The model's weights and state dict are untouched; only ``model.processors[slot]`` and the
    encoder instance's ``forward`` are redirected until ``handle.remove()``.
    """
    encoder, processor = model.encoders[slot], model.processors[slot]
    if isinstance(processor, CachingProcessor):
        raise ValueError(f"slot {slot!r} already has a feature cache attached")
    if not is_cacheable(encoder, processor):
        raise ValueError(
            f"the encoder of slot {slot!r} ({type(encoder).__name__}) is not cacheable: its frozen stage has "
            "trainable weights or its processor augments at train time (use freeze: true and augment: false)"
        )
    fingerprint = encoder_fingerprint(encoder, processor)
    frozen, tail = _stages(encoder)
    width = int(getattr(encoder, "frozen_dim", encoder.dim))

    def cached_forward(batch: Mapping[str, torch.Tensor]) -> Features:
        if "cache.hit" not in batch:
            return tail(frozen(batch))
        tokens, mask, pooled = batch["cache.tokens"], batch["cache.mask"], batch["cache.pooled"]
        present = batch["present"].to(torch.bool)
        rows = batch["cache.miss_rows"]
        if rows.numel():
            # In eval mode, as precompute_features does: what is stored is served for good, so it
            # must not carry one forward's dropout.
            was_training = encoder.training
            encoder.eval()
            try:
                with torch.no_grad():
                    fresh = frozen({k[len("inner."):]: v for k, v in batch.items() if k.startswith("inner.")})
            finally:
                encoder.train(was_training)
            tokens, mask, pooled = _merge(tokens, mask, pooled, fresh, rows)
            for j, digest in enumerate(batch["cache.miss_keys"].cpu().tolist()):
                real = fresh.mask[j]
                cache.put(fingerprint, bytes(digest).hex(), fresh.tokens[j][real], fresh.pooled[j])
        elif tokens.shape[2] != width:  # no sample present: nothing cached told the width
            tokens, pooled = tokens.new_zeros(tokens.shape[0], 1, width), pooled.new_zeros(pooled.shape[0], width)
            mask = mask[:, :1] & False
        features = Features(tokens=tokens * mask[..., None].to(tokens.dtype), mask=mask & present[:, None],
                            pooled=pooled * present[:, None].to(pooled.dtype), present=present)
        return tail(features)

    encoder.forward = cached_forward  # instance attribute: state dict and parameters unchanged
    model.processors[slot] = CachingProcessor(processor, cache, fingerprint)
    return FeatureCacheHandle(model, slot, cache, fingerprint, processor)


def _merge(tokens, mask, pooled, fresh: Features, rows: torch.Tensor):
    """Scatter freshly computed rows into the cached batch (growing L or taking D where needed)."""
    b = tokens.shape[0]
    length = max(tokens.shape[1], fresh.tokens.shape[1])
    width = fresh.tokens.shape[2]
    out_tokens = torch.zeros(b, length, width, dtype=fresh.tokens.dtype, device=fresh.tokens.device)
    out_mask = torch.zeros(b, length, dtype=torch.bool, device=fresh.tokens.device)
    out_pooled = torch.zeros(b, width, dtype=fresh.pooled.dtype, device=fresh.tokens.device)
    hit = torch.ones(b, dtype=torch.bool, device=fresh.tokens.device)
    hit[rows] = False
    if tokens.shape[2] == width:
        out_tokens[:, : tokens.shape[1]] = tokens.to(out_tokens)
        out_mask[:, : tokens.shape[1]] = mask & hit[:, None]
        out_pooled[:] = pooled.to(out_pooled) * hit[:, None]
    out_tokens[rows, : fresh.tokens.shape[1]] = fresh.tokens
    out_mask[rows, : fresh.tokens.shape[1]] = fresh.mask
    out_pooled[rows] = fresh.pooled
    return out_tokens, out_mask, out_pooled


@torch.no_grad()
def precompute_features(model: Any, slot: str, dataset: Dataset, *, batch_size: int = 64) -> int:
    """Fill the cache attached to ``slot`` for every sample of ``dataset``; returns how many were computed."""
    processor = model.processors[slot]
    if not isinstance(processor, CachingProcessor):
        raise ValueError(f"attach a feature cache to slot {slot!r} first (attach_feature_cache)")
    encoder = model.encoders[slot]
    was_training = encoder.training
    encoder.eval()
    computed = 0
    try:
        for start in range(0, len(dataset), batch_size):
            raws = [dataset[i]["inputs"].get(slot) for i in range(start, min(start + batch_size, len(dataset)))]
            items = [None if raw is None else processor(raw) for raw in raws]
            batch = processor.collate(items)
            computed += int(batch["cache.miss_rows"].numel())
            if batch["cache.miss_rows"].numel():
                device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
                encoder({k: v.to(device) for k, v in batch.items()})
    finally:
        encoder.train(was_training)
    return computed
