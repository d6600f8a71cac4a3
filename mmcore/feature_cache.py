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
forward: entries stored in one epoch are seen by the next epoch's workers.

Storage: in memory, or (a ``directory``) on disk only -- append-only files per encoder
fingerprint, memory-mapped for reading, so the features live in the page cache and not in the
process's heap as well. A model whose fusion and head read only pooled vectors
(:func:`reads_pooled_only`) gets pooled-only entries: one vector per sample instead of every token.

Raw-level augmentation changes the raw input (so every augmented sample is a miss) and
processor-level augmentation makes features differ per epoch: :func:`attach_feature_cache`
refuses a processor whose ``augment`` is on, and caching is for frozen encoders only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmcore.components import Encoder, Processor
from mmcore.features import Features

#: The key marking a slot batch that :class:`SlotCache` collated (``[B]`` bool: the sample was a hit).
CACHED = "cache.hit"


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
    elif isinstance(raw, io.BytesIO):  # a file's bytes (a shard's member): keyed by its content
        with raw.getbuffer() as data:
            h.update(f"bytes:{len(data)}:".encode())
            h.update(data)
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
#: An on-disk entry larger than this is not one mmcore wrote (a ViT-B's 197 x 768 float32 tokens
#: are 0.6 MB; 256 MiB leaves room for 80k tokens of 768): it is never read.
MAX_ENTRY_BYTES = 256 * 2**20
#: The dtypes an entry may hold, by their code in the index.
_DTYPES = {0: torch.float32, 1: torch.float16, 2: torch.bfloat16, 3: torch.float64}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
#: One index record: the sample key (SHA-256 digest), the entry's byte offset in its data file, its
#: token count L, its width D and dtype code (tokens [L, D] then pooled [D], little-endian).
_RECORD = np.dtype([("key", "V32"), ("offset", "<u8"), ("length", "<u4"), ("width", "<u4"), ("dtype", "u1"), ("pad", "V7")])
#: Most bytes of one index file read (4.8M entries): a bigger one is not one mmcore wrote.
MAX_INDEX_BYTES = 256 * 2**20


class _Pack:
    """The entries of one encoder fingerprint on disk: append-only data files (``*.bin``) with their
    index files (``*.idx``, :data:`_RECORD` rows), one pair per writing process, memory-mapped for
    reading. An entry is indexed only after its data is written, so a reader never sees half of one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.entries: dict[str, tuple[int, int, int, int, int]] = {}  # key -> (file, offset, L, D, dtype)
        self.files: list[Path] = []
        self.maps: list[Any] = []
        self.sizes: list[int] = []
        self._writer: tuple[int, int, int, int] | None = None  # (file, data fd, index fd, offset)
        self.refused = 0
        if folder.is_dir() and not folder.is_symlink():
            # Oldest first: a key written again later (an entry found bad and recomputed) takes the newer.
            for _, index in sorted((_mtime(p), p) for p in folder.glob("*.idx")):
                self._load(index)

    def _load(self, index: Path) -> None:
        data = index.with_suffix(".bin")
        try:
            info, data_info = os.lstat(index), os.lstat(data)
        except OSError:
            return
        if not (stat.S_ISREG(info.st_mode) and stat.S_ISREG(data_info.st_mode)) or info.st_size > MAX_INDEX_BYTES:
            self.refused += 1
            return
        with open(index, "rb", opener=_no_follow) as fh:
            raw = fh.read(info.st_size - info.st_size % _RECORD.itemsize)
        records = np.frombuffer(raw, dtype=_RECORD)
        file = len(self.files)
        self.files.append(data)
        self.maps.append(None)
        self.sizes.append(data_info.st_size)
        for record in records:
            offset, length, width, code = int(record["offset"]), int(record["length"]), int(record["width"]), int(record["dtype"])
            if code not in _DTYPES or not 0 < width <= 2**16 or offset + _nbytes(length, width, code) > data_info.st_size \
                    or _nbytes(length, width, code) > MAX_ENTRY_BYTES:
                self.refused += 1  # not an entry mmcore wrote: never read (computed again if needed)
                continue
            self.entries[bytes(record["key"]).hex()] = (file, offset, length, width, code)

    def get(self, key: str, width: int | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        found = self.entries.get(key)
        if found is None:
            return None
        file, offset, length, d, code = found
        if width is not None and d != width:
            self.refused += 1
            return None
        nbytes = _nbytes(length, d, code)
        view = self._map(file, offset + nbytes)
        if view is None:
            return None
        raw = torch.from_numpy(np.frombuffer(view, dtype=np.uint8, count=nbytes, offset=offset).copy())
        values = raw.view(_DTYPES[code])
        if not torch.isfinite(values).all():
            self.refused += 1
            del self.entries[key]  # computed again and stored anew
            return None
        return values[: length * d].view(length, d), values[length * d:]

    def _map(self, file: int, end: int) -> Any:
        """The data file mapped (read-only) far enough to hold ``end`` bytes, or None."""
        import mmap

        if self.maps[file] is None or len(self.maps[file]) < end:
            try:
                with open(self.files[file], "rb", opener=_no_follow) as fh:
                    size = os.fstat(fh.fileno()).st_size
                    if size < end:
                        return None
                    self.maps[file] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                return None
        return self.maps[file]

    def put(self, key: str, tokens: torch.Tensor, pooled: torch.Tensor) -> None:
        if self._writer is None:
            self._open_writer()
        file, data_fd, index_fd, offset = self._writer
        code = _CODES.get(tokens.dtype, 0)
        dtype = _DTYPES[code]
        payload = torch.cat([tokens.reshape(-1).to(dtype), pooled.to(dtype)]).contiguous()
        data = payload.view(torch.uint8).numpy().tobytes()
        _write_all(data_fd, data)
        record = np.zeros(1, dtype=_RECORD)
        record["key"], record["offset"], record["length"] = np.void(bytes.fromhex(key)), offset, tokens.shape[0]
        record["width"], record["dtype"] = pooled.shape[0], code
        _write_all(index_fd, record.tobytes())  # after the data: an indexed entry is complete
        self.entries[key] = (file, offset, int(tokens.shape[0]), int(pooled.shape[0]), code)
        self._writer = (file, data_fd, index_fd, offset + len(data))
        self.sizes[file] = offset + len(data)

    def _open_writer(self) -> None:
        import secrets

        self.folder.mkdir(parents=True, exist_ok=True)
        if self.folder.is_symlink() or not self.folder.is_dir():
            raise OSError(f"feature cache: {self.folder} is not a folder of its own (a link?); refusing to write there")
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        data_fd = os.open(self.folder / f"{name}.bin", flags, 0o644)
        index_fd = os.open(self.folder / f"{name}.idx", flags, 0o644)
        self.files.append(self.folder / f"{name}.bin")
        self.maps.append(None)
        self.sizes.append(0)
        self._writer = (len(self.files) - 1, data_fd, index_fd, 0)

    def close(self) -> None:
        if self._writer is not None:
            os.close(self._writer[1])
            os.close(self._writer[2])
            self._writer = None
        for m in self.maps:
            if m is not None:
                m.close()
        self.maps = [None] * len(self.maps)

    def __getstate__(self) -> dict[str, Any]:  # a copy (a worker process) reads; it maps the files itself
        return {**self.__dict__, "maps": [None] * len(self.maps), "_writer": None}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _mtime(path: Path) -> int:
    try:
        return os.lstat(path).st_mtime_ns
    except OSError:
        return 0


def _nbytes(length: int, width: int, code: int) -> int:
    return (length + 1) * width * _DTYPES[code].itemsize


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class FeatureCache:
    """Per-sample frozen features ``(tokens [L, D] of the real tokens, pooled [D])`` keyed by
    ``(encoder fingerprint, sample key)``.

    Without ``directory`` the entries are held in memory. With one, they live on disk only, one
    folder per fingerprint of append-only data files memory-mapped for reading (the page cache
    holds them, not the process: a million pooled EfficientNet vectors are 5 GB on disk and none of
    it in the heap), shared by worker processes and later runs. What is read back is checked: index
    records pointing outside their data file, of an unknown dtype, a width other than the slot's or
    over :data:`MAX_ENTRY_BYTES`, and entries holding NaN or infinite values are not used (computed
    again; one warning); files and folders that are links are neither read nor written through.

    An entry whose ``tokens`` has no row (``L = 0``) stands for its pooled vector alone: a slot
    cached pooled-only (:func:`attach_feature_cache`) serves it as one token equal to ``pooled``.
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else None
        self._memory: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._packs: dict[str, _Pack] = {}
        self._warned = False
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._memory) + sum(len(p.entries) for p in self._packs.values())

    def __contains__(self, key: tuple[str, str]) -> bool:
        if key in self._memory:
            return True
        return self.directory is not None and key[1] in self._pack(key[0]).entries

    def _pack(self, fingerprint: str) -> _Pack:
        pack = self._packs.get(fingerprint)
        if pack is None:
            pack = self._packs[fingerprint] = _Pack(self.directory / fingerprint[:24])
        return pack

    def get(self, fingerprint: str, key: str, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The stored ``(tokens, pooled)`` or None; ``width``: the features' ``D`` an entry on disk must have."""
        entry = self._memory.get((fingerprint, key))
        if entry is None and self.directory is not None:
            pack = self._pack(fingerprint)
            refused = pack.refused
            entry = pack.get(key, width)
            if pack.refused != refused:
                self._warn(pack.folder)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def _warn(self, folder: Path) -> None:
        if not self._warned:
            import warnings

            self._warned = True
            warnings.warn(f"feature cache: {folder} holds entries mmcore did not write (out of bounds, another width "
                          "or dtype, or non-finite values); they are computed again", stacklevel=3)

    def put(self, fingerprint: str, key: str, tokens: torch.Tensor, pooled: torch.Tensor) -> None:
        """Store one sample's features (moved to the CPU, detached); ``tokens`` may have no row (pooled only)."""
        if tokens.dim() != 2 or pooled.dim() != 1 or tokens.shape[1] != pooled.shape[0]:
            raise ValueError(f"expected tokens [L, D] and pooled [D], got {list(tokens.shape)} and {list(pooled.shape)}")
        tokens, pooled = tokens.detach().to("cpu").contiguous(), pooled.detach().to("cpu").contiguous()
        if self.directory is None:
            self._memory[(fingerprint, key)] = (tokens.clone(), pooled.clone())
        else:
            self._pack(fingerprint).put(key, tokens, pooled)

    def nbytes(self) -> int:
        """Bytes the stored features take: in memory, or on disk in the folders of the fingerprints used."""
        memory = sum(t.numel() * t.element_size() + p.numel() * p.element_size() for t, p in self._memory.values())
        return memory + sum(sum(pack.sizes) for pack in self._packs.values())

    def clear(self) -> None:
        """Forget the in-memory entries and close the files (entries on disk stay, read again when asked)."""
        self._memory.clear()
        for pack in self._packs.values():
            pack.close()
        self._packs.clear()

    close = clear


def disk_bytes(directory: str | os.PathLike) -> int:
    """Bytes of the regular files under a feature-cache ``directory`` (links not followed; 0 when absent)."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


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

    def __init__(self, cache: FeatureCache, fingerprint: str, width: int, *, entry_width: int | None = None,
                 pooled_only: bool = False) -> None:
        self.cache, self.fingerprint, self.width = cache, fingerprint, width
        #: the ``D`` every stored entry must have, when the encoder declares it (None: not checked)
        self.entry_width = entry_width
        #: store each sample's pooled vector alone (served as one token): the model reads no tokens
        self.pooled_only = pooled_only

    def collate(self, raws: Sequence[Any], processor: Processor) -> dict[str, torch.Tensor]:
        """Raw inputs of one slot (None = missing) -> a cached batch (hits skip ``processor(raw)``)."""
        items: list[tuple[str, Any] | None] = []
        for raw in raws:
            if raw is None:
                items.append(None)
                continue
            key = sample_key(raw)
            hit = self.cache.get(self.fingerprint, key, self.entry_width)
            if hit is not None and hit[0].shape[0] == 0:  # stored pooled-only: one token, the pooled vector
                hit = (hit[1][None], hit[1])
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
                stored = fresh.tokens[j][:0] if self.pooled_only else fresh.tokens[j][real]
                self.cache.put(self.fingerprint, bytes(digest).hex(), stored, fresh.pooled[j])
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


def reads_pooled_only(model: Any, slot: str) -> bool:
    """Whether ``model`` uses nothing of ``slot``'s frozen features but their pooled vector: the encoder's
    trainable tail commutes with pooling (:attr:`~mmcore.Encoder.pooled_cache_exact`), the fusion
    (if any) and the head read no tokens (``reads_tokens`` False)."""
    fusion = getattr(model, "fusion", None)
    return (bool(model.encoders[slot].pooled_cache_exact) and (fusion is None or not fusion.reads_tokens)
            and not model.head.reads_tokens)


def attach_feature_cache(model: Any, slot: str, cache: FeatureCache, *, pooled_only: bool | None = None) -> FeatureCacheHandle:
    """Serve ``slot``'s frozen features from ``cache`` (computing and storing misses on the fly).

    Records a :class:`SlotCache` in ``model.feature_caches[slot]``, which ``model.collate`` and
    ``model.encode`` honour; the weights, state dict, processors and encoders are untouched.
    Call it after the processors are fitted (their state is part of the fingerprint).

    ``pooled_only`` (default: :func:`reads_pooled_only`): keep each sample's pooled vector alone and
    serve it as the one token -- the same outputs for a model that reads only pooled vectors, at a
    fraction of the size (EfficientNet-Lite0 at 224 px: 1 x 1280 values instead of 50 x 1280). Its
    entries are kept apart from full ones (another fingerprint).

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
    pooled_only = reads_pooled_only(model, slot) if pooled_only is None else bool(pooled_only)
    if pooled_only:
        fingerprint = hashlib.sha256(f"{fingerprint}:pooled-only".encode()).hexdigest()
    width = int(encoder.frozen_dim or encoder.dim)
    # The stored width is known when the encoder declares its frozen stage's (frozen_dim) or is cached whole.
    declared = encoder.frozen_dim is not None or type(encoder).frozen_features is Encoder.frozen_features
    caches[slot] = SlotCache(cache, fingerprint, width, entry_width=width if declared else None, pooled_only=pooled_only)
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
