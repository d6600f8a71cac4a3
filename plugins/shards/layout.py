"""A shard folder: its names, who owns it, and its index (``index.json``) written and read back checked.

A folder of shards is mmcore's alone, like a run directory (docs/reliability.md): it is marked
(``.mmcore-shards``), never created over a user's files, and ``--overwrite`` writes only its own names
(the marker, ``index.json``, ``<split>-NNNNNN.tar``) and refuses to replace a file of those names that
mmcore did not write. The index is written last, atomically (:func:`mmcore.engine.atomic.write_file`):
a folder whose writing was interrupted holds either the previous complete index or none.

``index.json``::

    {"format": "mmcore-shards", "version": 1,
     "source": {"file", "sha256", "rows", "columns"} (each table read: the manifest's own record),
     "slots": {slot: {"column": name or null, "kind": "file" | "value", "modality": name or null}},
     "target_type": ..., "classes": [...] or null, "options": {the manifest options used},
     "splits": {split: {"samples": N, "metadata": {...},
                        "shards": [{"name": "train-000000.tar", "samples": n, "bytes": b,
                                    "offsets": [n + 1 byte offsets: sample i spans offsets[i]..offsets[i+1]]}]}}}

A sample's members lie together in its tar (``KEY.json`` and one ``KEY.<slot>.<ext>`` per present file
cell): ``offsets`` make any sample readable with one read, which is what lets training draw the
samples in any order (the trainer's (seed, epoch) permutation) instead of shard by shard.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmcore.errors import UserInputError

FORMAT, VERSION = "mmcore-shards", 1
MARKER = ".mmcore-shards"
INDEX = "index.json"
#: shard file names: ``<split>-<6 digits>.tar``
SHARD_NAME = re.compile(r"^(train|val|test)-(\d{6})\.tar$")
#: the largest index read back (about 20 MB per million samples): bounded before it is parsed
MAX_INDEX_BYTES = 1 << 31
SPLITS = ("train", "val", "test")


class ShardsError(UserInputError):
    """A shard folder that cannot be written or read (exit 2, one line naming the folder or file)."""


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def check_out(out: Path, *, overwrite: bool) -> None:
    """Whether ``mmcore shard`` may write the folder ``out``; raises :class:`ShardsError` if not. Touches nothing.

    The rules of run directories: not the file-system root, not the home folder (or above it), not a
    file; an existing non-empty folder that mmcore did not mark only with ``overwrite``, and then no
    name mmcore writes may already be there (a user's ``index.json`` is never replaced)."""
    raw = str(out)
    if not raw.strip():
        raise ShardsError("--out is empty: name a folder for the shards")
    real = Path(os.path.abspath(out.expanduser())).resolve()
    if real.parent == real:
        raise ShardsError(f"--out {raw!r} is the root of the file system; choose a folder of its own")
    home = Path.home().resolve()
    if real == home or real in home.parents:
        raise ShardsError(f"--out {raw!r} is your home folder{'' if real == home else ' or above it'}; choose a folder of its own")
    if out.exists() and not out.is_dir():
        raise ShardsError(f"--out {raw!r} exists and is not a folder")
    if not out.is_dir():
        return
    for name in (MARKER, INDEX):
        if (out / name).is_symlink():
            raise ShardsError(f"{raw}/{name} is a symbolic link; mmcore writes its own file there and never through a link")
    entries = sorted(p.name for p in out.iterdir())
    if not entries or (out / MARKER).is_file():
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    if real == Path.cwd().resolve():
        raise ShardsError(f"--out {raw!r} is the current folder, which is not empty and holds no shards (it holds {shown}); "
                          "choose a folder of its own")
    if not overwrite:
        raise ShardsError(f"--out {raw!r} exists, is not empty and holds no mmcore shards (it holds {shown}); pass --overwrite "
                          f"to write the shards into it (only {MARKER}, {INDEX} and <split>-NNNNNN.tar are written; nothing "
                          "else is touched), or choose another --out")
    ours = [name for name in entries if name == INDEX or SHARD_NAME.match(name)]
    if ours:
        raise ShardsError(f"--overwrite: {raw}/{ours[0]} is a file of yours; mmcore writes its own {ours[0]} there and never "
                          "replaces a file it did not write. Move it, or choose another --out")


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def read_index(folder: Path) -> dict[str, Any]:
    """The index of the shard folder ``folder``, its structure checked against the files there (names,
    sizes, offsets ascending and inside each file) before anything else is read. Raises
    :class:`ShardsError` naming the folder or file."""
    from mmcore.engine.atomic import read_json

    if not folder.is_dir():
        raise ShardsError(f"shards folder {str(folder)!r} {'is not a folder' if folder.exists() else 'does not exist'}")
    path = folder / INDEX
    if not path.exists():
        raise ShardsError(f"{folder} holds no {INDEX}: not a folder written by `mmcore shard` (or its writing was interrupted)")
    try:
        index = read_json(path, max_bytes=MAX_INDEX_BYTES, what="shard index")
    except (OSError, ValueError) as exc:
        raise ShardsError(f"cannot read {path}: {exc}") from exc

    def bad(why: str) -> ShardsError:
        return ShardsError(f"{path}: {why} (not an index written by this mmcore `shard`; write the shards again)")

    if not isinstance(index, Mapping) or index.get("format") != FORMAT:
        raise bad(f"expected an object with format {FORMAT!r}")
    if index.get("version") != VERSION:
        raise bad(f"version {index.get('version')!r}, this mmcore reads version {VERSION}")
    slots = index.get("slots")
    if not isinstance(slots, Mapping) or not slots or not all(
            isinstance(s, str) and isinstance(v, Mapping) and v.get("kind") in ("file", "value") for s, v in slots.items()):
        raise bad("'slots' must map each slot to {kind: file | value, ...}")
    splits = index.get("splits")
    if not isinstance(splits, Mapping) or set(splits) != set(SPLITS):
        raise bad(f"'splits' must hold exactly {', '.join(SPLITS)}")
    for split, entry in splits.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("shards"), list) or not isinstance(entry.get("metadata"), Mapping):
            raise bad(f"split {split!r} must hold 'shards' (a list) and 'metadata'")
        total = 0
        for shard in entry["shards"]:
            name = shard.get("name") if isinstance(shard, Mapping) else None
            if not isinstance(name, str) or not SHARD_NAME.match(name) or not name.startswith(split + "-"):
                raise bad(f"split {split!r}: shard name {name!r} is not {split}-NNNNNN.tar")
            samples, size, offsets = shard.get("samples"), shard.get("bytes"), shard.get("offsets")
            if not (isinstance(samples, int) and samples >= 1 and isinstance(size, int) and isinstance(offsets, list)
                    and len(offsets) == samples + 1 and all(type(o) is int for o in offsets)
                    and offsets[0] >= 0 and all(a < b for a, b in zip(offsets, offsets[1:], strict=False)) and offsets[-1] <= size):
                raise bad(f"shard {name}: 'samples', 'bytes' and 'offsets' (samples + 1 ascending byte offsets within the file) disagree")
            file = folder / name
            try:
                actual = os.stat(file)
            except OSError as exc:
                raise ShardsError(f"shard {file} listed in {path} cannot be read: {exc.strerror or exc}") from exc
            if not os.path.isfile(file) or actual.st_size != size:
                raise ShardsError(f"shard {file} is {actual.st_size} bytes, its index says {size}: it changed after "
                                  "`mmcore shard` wrote it; write the shards again")
            total += samples
        if entry.get("samples") != total:
            raise bad(f"split {split!r} says {entry.get('samples')!r} samples, its shards hold {total}")
    return dict(index)
