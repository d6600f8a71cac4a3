"""The frozen-feature cache: frozen encoders' features computed once, served every epoch after.

A frozen pretrained encoder gives the same features for the same sample every epoch, so they
can be computed once. :class:`FeatureCache` stores per-sample features keyed by
``(encoder fingerprint, sample key)``:

* the *sample key* (:func:`sample_key`) is a SHA-256 of the raw input: for a file path, the
  path with the file's size and modification time; for text, arrays, tensors, PIL images and
  rows, their content;
* the *encoder fingerprint* (:func:`encoder_fingerprint`) hashes the encoder's class and its
  frozen tensors (parameters that do not require grad, and buffers) with the processor's
  settings and fitted state: change the weights, the image size or the tokenizer and the old
  entries are simply never hit again.

Encoders take part through two optional methods (the *frozen stage* protocol)::

    encoder.frozen_features(batch) -> Features   # the expensive, frozen, deterministic part
    encoder.from_frozen(features) -> Features    # the trainable tail (a projection, or identity)

with ``forward(batch) == from_frozen(frozen_features(batch))`` and ``encoder.cacheable`` True when
the frozen stage has no trainable parameter. An encoder with no trainable parameter at all and
no such methods is cached whole.

How the model uses it -- an explicit path, nothing patched
-----------------------------------------------------------
:func:`attach_feature_cache` records a :class:`SlotCache` in ``model.feature_caches[slot]``; the
model's processors and encoders are left exactly as they are. :meth:`MultimodalModel.collate
<mmcore.model.MultimodalModel.collate>` asks the slot cache to collate that slot: a hit carries its
stored features (reading and decoding the raw input are skipped), a miss is processed by the
slot's own processor. The batch is marked with :data:`CACHED` and
:meth:`MultimodalModel.encode <mmcore.model.MultimodalModel.encode>` hands a marked batch to
:meth:`SlotCache.encode`, which runs the encoder's frozen stage on the misses only (storing them)
and its trainable tail on all rows. An encoder's ``forward`` only ever sees batches its own
processor collated. :func:`precompute_features` fills the cache for a data set before training,
so every epoch after it skips the frozen backbone entirely::

    handles = [attach_feature_cache(model, slot, cache) for slot in model.slots
               if is_cacheable(model.encoders[slot], model.processors[slot])]
    for split in ("train", "val"):
        for h in handles: precompute_features(model, h.slot, datasets[split], batch_size=...)
    ... train as usual ...  (misses are computed and stored on the fly)
    for h in handles: h.remove()   # optional: weights and processors were never touched

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
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmcore.components import Processor
from mmcore.features import Features

#: The key marking a slot batch that :class:`SlotCache` collated (``[B]`` bool: the sample was a hit).
CACHED = "cache.hit"
#: An on-disk entry larger than this is not one mmcore wrote (a ViT-B's 197 x 768 float32 tokens
#: are 0.6 MB; 256 MiB leaves room for 80k tokens of 768): it is never read.
MAX_ENTRY_BYTES = 256 * 2**20
#: The dtypes :meth:`FeatureCache.put` stores (an encoder's features, as computed).
_ENTRY_DTYPES = ("F32", "F16", "BF16", "F64")


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
    processes and later runs). Keyed by ``(encoder fingerprint, sample key)``.

    On disk, entries are written by :func:`mmcore.engine.atomic.write_file` (atomic, unpredictable
    temporaries, the sub-folders below ``directory`` never links) and checked before they are
    read: a regular file (not a link) of at most :data:`MAX_ENTRY_BYTES`, a safetensors header
    (read alone; safetensors checks every offset against the file's size) holding exactly
    ``tokens [L, D]`` and ``pooled [D]`` of a float dtype, ``D`` the slot's width, finite values.
    An entry failing a check is not used: it is computed again and replaced (one warning).
    """

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

    def get(self, fingerprint: str, key: str, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The stored ``(tokens, pooled)`` or None; ``width``: the features' ``D`` an entry on disk must have."""
        entry = self._memory.get((fingerprint, key))
        if entry is None and self.directory is not None:
            entry = self._read(self._file(fingerprint, key), width)
            if entry is not None:
                self._memory[(fingerprint, key)] = entry
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def _read(self, file: Path, width: int | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """An entry from disk, checked before it is read (class docstring); None when absent or refused."""
        try:
            info = os.lstat(file)
        except OSError:
            return None
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "not a regular file (a link, a FIFO or a folder)"
        elif info.st_size > MAX_ENTRY_BYTES:
            problem = f"{info.st_size} bytes, more than the {MAX_ENTRY_BYTES}-byte limit of an entry"
        else:
            from safetensors import safe_open

            try:
                with safe_open(str(file), framework="pt") as fh:
                    names = sorted(fh.keys())
                    if names != ["pooled", "tokens"]:
                        raise ValueError(f"holds {names}, expected pooled and tokens")
                    t, p = fh.get_slice("tokens"), fh.get_slice("pooled")
                    shapes, dtypes = (t.get_shape(), p.get_shape()), (t.get_dtype(), p.get_dtype())
                    if len(shapes[0]) != 2 or len(shapes[1]) != 1 or shapes[0][1] != shapes[1][0]:
                        raise ValueError(f"shapes {shapes[0]} and {shapes[1]}, expected tokens [L, D] and pooled [D]")
                    if width is not None and shapes[1][0] != width:
                        raise ValueError(f"width {shapes[1][0]}, the slot's features have {width}")
                    if any(d not in _ENTRY_DTYPES for d in dtypes):
                        raise ValueError(f"dtypes {dtypes}, expected float")
                    tokens, pooled = fh.get_tensor("tokens"), fh.get_tensor("pooled")
                if not (torch.isfinite(tokens).all() and torch.isfinite(pooled).all()):
                    raise ValueError("holds NaN or infinite values")
                return tokens, pooled
            except Exception as exc:  # noqa: BLE001 - SafetensorError for a damaged header, ValueError above
                problem = str(exc) or type(exc).__name__
        if not getattr(self, "_warned", False):
            import warnings

            self._warned = True
            warnings.warn(f"feature cache: {file} is not an entry mmcore wrote ({problem}); it is computed again and "
                          "replaced", stacklevel=3)
        return None

    def put(self, fingerprint: str, key: str, tokens: torch.Tensor, pooled: torch.Tensor) -> None:
        """Store one sample's features (moved to the CPU, detached)."""
        if tokens.dim() != 2 or pooled.dim() != 1 or tokens.shape[1] != pooled.shape[0]:
            raise ValueError(f"expected tokens [L, D] and pooled [D], got {list(tokens.shape)} and {list(pooled.shape)}")
        entry = (tokens.detach().to("cpu", copy=True).contiguous(), pooled.detach().to("cpu", copy=True).contiguous())
        self._memory[(fingerprint, key)] = entry
        if self.directory is not None:
            from safetensors.torch import save

            from mmcore.engine.atomic import write_file

            # Atomic (a reader never sees half a file), never through a link below the directory.
            write_file(self._file(fingerprint, key), save({"tokens": entry[0], "pooled": entry[1]}), root=self.directory)

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        self._memory.clear()


# ---------------------------------------------------------------------- encoder side
def is_cacheable(encoder: torch.nn.Module, processor: Processor | None = None) -> bool:
    """Whether ``encoder``'s frozen stage may be cached (frozen weights, no processor augmentation)."""
    if processor is not None and processor.augment:
        return False
    return bool(encoder.cacheable)  # Encoder.cacheable: by default, no parameter trains


def _stages(encoder: torch.nn.Module) -> tuple[Callable[[Any], Features], Callable[[Features], Features]]:
    # Encoder's defaults: the whole encoder (called as a module: its hooks run), then nothing
    return encoder.frozen_features, encoder.from_frozen


class _Miss:
    """A processed sample the cache did not have (kept apart from the ``(tokens, pooled)`` hits)."""

    __slots__ = ("processed",)

    def __init__(self, processed: Any) -> None:
        self.processed = processed


class SlotCache:
    """The feature cache as one modality slot of a model uses it (``model.feature_caches[slot]``).

    :meth:`collate` turns the slot's raw inputs into a batch holding the cached rows
    (``cache.tokens [B, L, D]``, ``cache.mask [B, L]``, ``cache.pooled [B, D]``, :data:`CACHED`
    ``[B]`` bool), the processed misses as a sub-batch of the processor's own keys prefixed
    ``inner.`` (rows ``cache.miss_rows [M]``) and the misses' keys (``cache.miss_keys``, the
    SHA-256 digests as ``[M, 32]`` uint8) so :meth:`encode` can store them. All values are
    tensors, so the batch moves to a device like any other.
    """

    def __init__(self, cache: FeatureCache, fingerprint: str, width: int, *, entry_width: int | None = None) -> None:
        self.cache, self.fingerprint, self.width = cache, fingerprint, width
        #: the ``D`` every stored entry must have, when the encoder declares it (None: not checked)
        self.entry_width = entry_width

    def collate(self, raws: Sequence[Any], processor: Processor) -> dict[str, torch.Tensor]:
        """Raw inputs of one slot (None = missing) -> a cached batch (hits skip ``processor(raw)``)."""
        items: list[tuple[str, Any] | None] = []
        for raw in raws:
            if raw is None:
                items.append(None)
                continue
            key = sample_key(raw)
            hit = self.cache.get(self.fingerprint, key, self.entry_width)
            items.append((key, hit) if hit is not None else (key, _Miss(processor(raw))))
        present = torch.tensor([item is not None for item in items], dtype=torch.bool)
        hits = [item[1] if item is not None and not isinstance(item[1], _Miss) else None for item in items]
        misses = [(row, item) for row, item in enumerate(items) if item is not None and isinstance(item[1], _Miss)]
        length = max((h[0].shape[0] for h in hits if h is not None), default=1)
        width = next((h[1].shape[0] for h in hits if h is not None), 1)
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
            CACHED: torch.tensor([h is not None for h in hits], dtype=torch.bool),
            "cache.tokens": tokens,
            "cache.mask": mask,
            "cache.pooled": pooled,
            "cache.miss_rows": torch.tensor([row for row, _ in misses], dtype=torch.long),
            "cache.miss_keys": torch.tensor([list(bytes.fromhex(item[0])) for _, item in misses], dtype=torch.uint8).view(-1, 32),
        }
        if misses:
            for k, v in processor.collate([item[1].processed for _, item in misses]).items():
                batch[f"inner.{k}"] = v
        return batch

    def encode(self, encoder: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> Features:
        """A batch from :meth:`collate` -> the encoder's Features: cached rows as stored, misses
        through the frozen stage (in eval mode, without gradients, then stored), all rows through
        the encoder's trainable tail."""
        frozen, tail = _stages(encoder)
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
                self.cache.put(self.fingerprint, bytes(digest).hex(), fresh.tokens[j][real], fresh.pooled[j])
        elif tokens.shape[2] != self.width:  # no sample present: nothing cached told the width
            tokens, pooled = tokens.new_zeros(tokens.shape[0], 1, self.width), pooled.new_zeros(pooled.shape[0], self.width)
            mask = mask[:, :1] & False
        features = Features(tokens=tokens * mask[..., None].to(tokens.dtype), mask=mask & present[:, None],
                            pooled=pooled * present[:, None].to(pooled.dtype), present=present)
        return tail(features)


class FeatureCacheHandle:
    """What :func:`attach_feature_cache` returns; ``remove()`` detaches the cache from the slot."""

    def __init__(self, model: Any, slot: str, cache: FeatureCache, fingerprint: str) -> None:
        self.model, self.slot, self.cache, self.fingerprint = model, slot, cache, fingerprint

    def remove(self) -> None:
        self.model.feature_caches.pop(self.slot, None)


def attach_feature_cache(model: Any, slot: str, cache: FeatureCache) -> FeatureCacheHandle:
    """Serve ``slot``'s frozen features from ``cache`` (computing and storing misses on the fly).

    Records a :class:`SlotCache` in ``model.feature_caches[slot]``, which ``model.collate`` and
    ``model.encode`` honour; the weights, state dict, processors and encoders are untouched.
    Call it after the processors are fitted (their state is part of the fingerprint).

    Raises:
        ValueError: the slot already has a cache, its encoder has trainable frozen-stage weights,
            or its processor augments.
    """
    caches = getattr(model, "feature_caches", None)
    if not isinstance(caches, dict):
        raise TypeError(f"model must be an mmcore.MultimodalModel (with feature_caches), got {type(model).__name__}")
    encoder, processor = model.encoders[slot], model.processors[slot]
    if slot in caches:
        raise ValueError(f"slot {slot!r} already has a feature cache attached")
    if not is_cacheable(encoder, processor):
        raise ValueError(
            f"the encoder of slot {slot!r} ({type(encoder).__name__}) is not cacheable: its frozen stage has "
            "trainable weights or its processor augments at train time (use freeze: true and augment: false)"
        )
    fingerprint = encoder_fingerprint(encoder, processor)
    width = int(encoder.frozen_dim or encoder.dim)
    # The stored width is known when the encoder declares its frozen stage's (frozen_dim) or keeps the
    # default stage (the whole encoder: its dim); an overridden stage without frozen_dim is not checked.
    from mmcore.components import Encoder

    declared = encoder.frozen_dim is not None or type(encoder).frozen_features is Encoder.frozen_features
    caches[slot] = SlotCache(cache, fingerprint, width, entry_width=width if declared else None)
    return FeatureCacheHandle(model, slot, cache, fingerprint)


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
def precompute_features(model: Any, slot: str, dataset: Any, *, batch_size: int = 64) -> int:
    """Fill the cache attached to ``slot`` for every sample of ``dataset``; returns how many were computed.

    Raises:
        ValueError: no cache is attached to ``slot`` (:func:`attach_feature_cache`).
    """
    slot_cache = getattr(model, "feature_caches", {}).get(slot)
    if slot_cache is None:
        raise ValueError(f"attach a feature cache to slot {slot!r} first (attach_feature_cache)")
    encoder = model.encoders[slot]
    was_training = encoder.training
    encoder.eval()
    computed = 0
    device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
    try:
        for start in range(0, len(dataset), batch_size):
            samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            # through the model: an input its processor cannot read follows model.unreadable_inputs
            batch = model.collate_slot(slot, [s["inputs"].get(slot) for s in samples], samples)
            computed += int(batch["cache.miss_rows"].numel())
            if batch["cache.miss_rows"].numel():
                slot_cache.encode(encoder, {k: v.to(device) for k, v in batch.items()})
    finally:
        encoder.train(was_training)
    return computed
