"""Column inference: what each column of a table holds, judged from its content, never its name.

Rules, in order (each column's ``why`` says which one decided):

* **files** -- a string cell naming an existing file or folder (relative to the table's folder, or
  absolute; it must lie inside the table's folder -- ``..`` and links resolved -- unless
  ``allow_outside_paths``: :mod:`mmcore_plugins.io.paths`, the rule ``mmcore train`` follows). A column where most non-empty cells do (or carry a media suffix) is a file column;
  its kind comes from the files themselves, through :mod:`mmcore_plugins.io`: folders holding
  image frames -> ``video``; ``looks_like_image`` (suffix or magic bytes, Pillow) -> ``image``;
  ``looks_like_audio`` (libsndfile) -> ``audio``; text files -> ``text`` (read into the cell).
  Every file is then checked (headers only, ``check_media``): a missing or unreadable file makes
  that cell missing (counted in ``why``); a column whose files *mostly* do not exist is reported
  (a ``warning`` under the table: the table likely lies elsewhere than its files); a column whose
  files are *all* missing or unreadable is an error (:class:`ColumnError`).
* **numbers** -- every non-empty cell parses as a finite number -> ``numeric``; integers that are
  unique per row and fill a dense range (an index, a row number) -> ``ignore`` (identifier). At least
  20 numbers and at most 5% other cells (a decimal comma, a unit, a note) -> ``numeric``, those
  cells missing measurements named in the column's line (``--strict``: each an error).
* **dates and times** -- ``datetime`` / ``date`` / ``time`` values (Parquet, DataFrames) or strings in
  one common format (:mod:`.dates`: ISO 8601, ``03/04/2021``, ``4 Mar 2021``, ``10:30``, ...) ->
  ``date``: days since the earliest, year, hour, month and weekday go to the table slot (never
  to a sentence encoder); a date that is the same in every row -> ``ignore``.
* **strings** -- unique per row without spaces (codes, UUIDs, file names of nothing) -> ``ignore``;
  single tokens that carry digits and repeat only a few times (``SKU-00123``, user ids) ->
  ``ignore``; few distinct values (at most ``MAX_CATEGORIES``, and few per row) -> ``categorical``;
  single words with more values that repeat (brands, cities) -> ``categorical`` (the most frequent
  embedded); otherwise (varied or multi-word strings) -> ``text``.
* **split** -- a string column whose values are all split names (train / val / test and their
  usual aliases) -> used as the split, not as an input.
* **target** -- decided on its finite values (an ``inf`` / ``nan`` cell is an error naming its row,
  or, for a declared regression, a row left out and counted). Numbers with many distinct values,
  not all integers -> ``regression``; lists
  (JSON arrays) or strings joined by one delimiter (``;``, ``|``, ``,``) over a small label
  vocabulary -> ``multilabel``; anything else -> ``classification``. Class and label names follow
  mmcore's one rule (:mod:`mmcore.labels`): as the table writes them, one class per value.

A column empty in every row is an error too: nothing can be learned from it, and it is most
likely a mistake in the table (``--column NAME=ignore`` drops it).
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcore.errors import UserInputError
from mmcore.labels import fit_classes, is_missing, label_values, multilabel_names

#: Kinds an input column can have; ``--column NAME=KIND`` accepts these.
INPUT_KINDS = ("image", "audio", "video", "text", "categorical", "numeric", "date", "ignore")
#: Kinds a target column can have.
TARGET_KINDS = ("classification", "multilabel", "regression")
#: Modalities whose cells are file (or folder) paths.
FILE_KINDS = ("image", "audio", "video")
#: Most distinct values a string column may have to count as categorical.
MAX_CATEGORIES = 50
#: Most distinct labels of a multilabel target.
MAX_LABELS = 200
#: Split names (lower case) -> the split.
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test", "eval": "test"}
MULTILABEL_DELIMITERS = (";", "|", ",")


class ColumnError(UserInputError):
    """A column that cannot be used as it is (all files unreadable, empty in every row, a target
    that cannot be learned, a bad ``--column`` override); the message names the column."""


#: How an inferred identifier's reason begins (``ColumnInfo.why``, ``autofit.json``'s ``columns``): the
#: columns fit ignores as ids, which ``mmcore predict --data`` carries into each output line.
IDENTIFIER = "identifier: "


def identifier_columns(columns: list[dict[str, Any]]) -> list[str]:
    """The names of the columns fit inferred as identifiers (ignored for training; a user's ``--column
    X=ignore`` is not one), from ``autofit.json``'s ``columns`` entries ``{name, kind, why, ...}``."""
    return [c["name"] for c in columns if isinstance(c, dict) and isinstance(c.get("name"), str)
            and c.get("kind") == "ignore" and str(c.get("why", "")).startswith(IDENTIFIER)]


@dataclass
class ColumnInfo:
    """One column's inferred role. ``kind``: an input kind (:data:`INPUT_KINDS`), a target kind
    (:data:`TARGET_KINDS`) or ``"split"``; ``missing``: fraction of rows with no usable value;
    ``details``: what later stages need (unreadable rows, image sizes, delimiter, ...)."""

    name: str
    kind: str
    why: str
    missing: float
    role: str = "input"  # input | target | split | ignored
    details: dict[str, Any] = field(default_factory=dict)


def as_number(value: Any) -> float | None:
    """A finite number from a number or a numeric string; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def resolve_path(value: Any, base: Path, *, allow_outside: bool = True, paths: Any = None) -> Path | None:
    """The existing file or folder a cell names (relative to ``base``, resolved), or None.

    ``allow_outside=False``: an existing path outside ``base`` raises
    :class:`~mmcore_plugins.io.paths.OutsidePathError` (the rule of :mod:`mmcore_plugins.io.paths`).
    ``paths``: a :func:`cell_paths` resolver of ``base`` shared by the cells of one table (each folder
    resolved once, one ``lstat`` a cell: a column of 100,000 paths took ~30 s in pathlib's full
    ``resolve`` of every component, three times a cell); None resolves this cell alone.
    """
    from mmcore_plugins.io.paths import resolve_cell_path

    if not isinstance(value, str) or not value.strip() or len(value) > 4096 or "\n" in value or "\x00" in value:
        return None
    cell = value.strip()
    try:
        if paths is None:
            path = str(resolve_cell_path(cell, base, allow_outside=True))
        else:
            path = paths.text(cell)
        if not os.path.exists(path):
            return None
    except (OSError, ValueError, RuntimeError):  # a name the system cannot resolve, a loop of links
        return None
    if not allow_outside and not _inside(path, paths.base if paths is not None else str(Path(base).expanduser().resolve())):
        resolve_cell_path(cell, base, opt_in="--allow-outside-paths")  # raises the rule's own error, naming the cell
    return Path(path)


def _inside(path: str, folder: str) -> bool:
    """Whether the resolved ``path`` is the resolved ``folder`` or lies in it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def cell_paths(base: Path) -> Any:
    """A resolver of the cells of one table in ``base`` for :func:`resolve_path` (links followed, reading
    outside allowed: ``resolve_path`` applies the rule). Make one per table read: it remembers each
    folder's resolved path for its life."""
    from mmcore_plugins.io.paths import CellPaths

    return CellPaths(base, allow_outside=True)


@functools.cache
def _media_suffixes() -> frozenset[str]:
    from mmcore_plugins.io import AUDIO_SUFFIXES, IMAGE_SUFFIXES

    return frozenset(IMAGE_SUFFIXES | AUDIO_SUFFIXES)


def _looks_like_path(value: str) -> bool:
    """A string shaped like a file name with a media suffix (whether or not the file exists)."""
    text = value.strip()
    if not text or " " in text and "/" not in text:
        return False
    return os.path.splitext(text)[1].lower() in _media_suffixes() or text.endswith(("/", os.sep))


def _file_kind(path: Path) -> str | None:
    from mmcore_plugins.io import TEXT_SUFFIXES, looks_like_audio, looks_like_image

    if path.is_dir():
        from mmcore_plugins.io import video_frames

        try:
            video_frames(path)
        except ValueError:
            return None
        return "video"
    if looks_like_image(path):
        return "image"
    if looks_like_audio(path):
        return "audio"
    if path.suffix.lower() in TEXT_SUFFIXES:
        return "text"
    return None


def _percent(count: int, total: int) -> str:
    return f"{100 * count / max(total, 1):.0f}%"


def infer_columns(rows: Sequence[Mapping[str, Any]], *, target: str, base: str | Path = ".",
                  overrides: Mapping[str, str] | None = None, allow_outside_paths: bool = False) -> list[ColumnInfo]:
    """One :class:`ColumnInfo` per column of ``rows`` (in the table's column order).

    ``base``: the folder relative file paths start from (the table's folder). ``overrides``:
    ``{column: kind}`` from ``--column NAME=KIND``, taken as given (files are still checked).
    ``allow_outside_paths``: let cells name files outside ``base`` (else ColumnError naming the
    row and column, before anything is read from them).
    Raises :class:`ColumnError` naming the column for an unknown target or override column, a
    bad override kind, an input column empty in every row, a file column whose files are all
    missing or unreadable, and a target that cannot be learned (fewer than two classes, ...).
    """
    overrides = dict(overrides or {})
    base = Path(base)
    seen: dict[str, None] = {}  # insertion-ordered and hashed: linear in cells (a 100k-column CSV)
    for row in rows:
        seen.update(dict.fromkeys(row))
    columns = list(seen)
    if not rows:
        raise ColumnError("the table has no rows")
    if target not in columns:
        import difflib

        close = difflib.get_close_matches(target, columns, n=1)
        raise ColumnError(f"--target: the table has no column {target!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f" (its columns: {', '.join(columns)})")
    for name, kind in overrides.items():
        if name not in columns:
            raise ColumnError(f"--column {name}={kind}: the table has no column {name!r} (its columns: {', '.join(columns)})")
        allowed = TARGET_KINDS if name == target else INPUT_KINDS
        if kind not in allowed:
            raise ColumnError(f"--column {name}={kind}: expected one of {', '.join(allowed)} for "
                              f"{'the target' if name == target else 'an input column'}, got {kind!r}")
    infos = []
    for name in columns:
        values = [row.get(name) for row in rows]
        if name == target:
            infos.append(infer_target(name, values, overrides.get(name)))
        else:
            infos.append(infer_input(name, values, base, overrides.get(name), allow_outside_paths=allow_outside_paths))
    splits = [i for i in infos if i.kind == "split"]
    for extra in splits[1:]:  # one split column is used; others are ignored, said so
        extra.kind, extra.role, extra.why = "ignore", "ignored", f"a second split column ({splits[0].name!r} is used)"
    return infos


def infer_input(name: str, values: Sequence[Any], base: Path, override: str | None = None, *,
                allow_outside_paths: bool = False) -> ColumnInfo:
    """Infer one input column (see the module docstring). A few empty cells (under 1% of the rows)
    are counted in ``why``, with the first one's row and text; a column of strings that are mostly
    decimal-comma numbers gets a hint to read them as numbers (``--decimal ,``)."""
    info = _infer_input(name, values, base, override, allow_outside_paths=allow_outside_paths)
    empty = [(i, v) for i, v in enumerate(values) if is_missing(v)]
    if empty and len(empty) < 0.01 * len(values):
        i, v = empty[0]
        info.why += (f"; {len(empty)} empty cell{'s' if len(empty) > 1 else ''} (row {i + 1}: {v!r}"
                     + (", ..." if len(empty) > 1 else "") + ")")
    if override is None and info.kind in ("ignore", "categorical", "text"):
        strings = [v.strip() for v in values if isinstance(v, str) and not is_missing(v)]
        from mmcore_plugins.io.tables import DECIMAL_COMMA

        if strings and sum(bool(DECIMAL_COMMA.fullmatch(v)) for v in strings) >= 0.5 * len(strings):
            info.why += _decimal_hint(strings)
    return info


def _infer_input(name: str, values: Sequence[Any], base: Path, override: str | None = None, *,
                 allow_outside_paths: bool = False) -> ColumnInfo:
    n = len(values)
    present = [(i, v) for i, v in enumerate(values) if not is_missing(v)]
    missing = 1 - len(present) / max(n, 1)
    if override == "ignore":
        return ColumnInfo(name, "ignore", "--column override", missing, role="ignored")
    if not present:
        raise ColumnError(f"column {name!r} is empty in every row ({n} rows): nothing to learn from; "
                          f"remove it or pass --column {name}=ignore")
    if override in FILE_KINDS or override is None:
        info = _file_column(name, present, n, base, override, allow_outside_paths)
        if info is not None:
            return info
        if override in FILE_KINDS:
            raise ColumnError(f"--column {name}={override}: none of its {len(present)} non-empty cells names an existing "
                              f"file or folder (relative to {str(base)!r})")
    if any(isinstance(v, (list, dict)) for _, v in present):
        if override is None:
            return ColumnInfo(name, "ignore", "lists/objects (understood only as a multilabel target)", missing, role="ignored")
    numbers = [as_number(v) for _, v in present]
    distinct = len({str(v).strip() for _, v in present})
    if override == "date" or (override is None and not all(x is not None for x in numbers)):
        info = _date_column(name, present, missing, n, override)
        if info is not None:
            return info
    if override is None and not all(x is not None for x in numbers):
        info = _mostly_numbers(name, present, numbers, missing, n)
        if info is not None:
            return info
    if override == "numeric" or (override is None and all(x is not None for x in numbers)):
        if override == "numeric" and any(x is None for x in numbers):
            bad = next(v for (_, v), x in zip(present, numbers, strict=True) if x is None)
            raise ColumnError(f"--column {name}=numeric: cell {bad!r} is not a number" + _decimal_hint([bad]))
        if override is None and _is_identifier_numbers(numbers, n):
            return ColumnInfo(name, "ignore", f"{IDENTIFIER}{len(numbers)} distinct integers, one per row", missing,
                              role="ignored")
        kind_why = "--column override" if override else f"numbers ({distinct} distinct)"
        return ColumnInfo(name, "numeric", kind_why, missing, details={"median": _median([x for x in numbers if x is not None])})
    strings = [str(v).strip() for _, v in present]
    if override is None:
        lowered = {s.lower() for s in strings}
        if lowered <= set(SPLIT_NAMES) and {SPLIT_NAMES[s] for s in lowered} & {"train"}:
            return ColumnInfo(name, "split", f"split names ({', '.join(sorted(lowered))})", missing, role="split")
        single = not any(any(ch.isspace() for ch in s) for s in strings)
        if distinct == len(strings) and len(strings) >= 20 and single:
            return ColumnInfo(name, "ignore", f"{IDENTIFIER}a distinct single token in each of {len(strings)} rows",
                              missing, role="ignored")
        if single and distinct > MAX_CATEGORIES and _is_code_column(strings, distinct):
            return ColumnInfo(name, "ignore", f"{IDENTIFIER}codes with digits, {distinct} distinct in {len(strings)} rows "
                                              "(a value repeats only a few times)", missing, role="ignored")
    words = sum(len(s.split()) for s in strings) / len(strings)
    few = distinct <= MAX_CATEGORIES and distinct <= max(2, len(strings) // 5)
    if override is None and not few and words <= 1.0 and distinct <= len(strings) // 2:
        # Single words with many values that repeat (brands, cities, product lines): categories -- the
        # encoder embeds the most frequent ones -- not sentences for a sentence encoder.
        return ColumnInfo(name, "categorical", f"{distinct} distinct single words in {len(strings)} rows (the "
                                               "most frequent are embedded)", missing, details={"values": distinct})
    if override == "categorical" or (override is None and few):
        why = "--column override" if override else f"{distinct} distinct strings in {len(strings)} rows"
        return ColumnInfo(name, "categorical", why, missing, details={"values": distinct})
    why = "--column override" if override else (
        f"varied strings ({distinct} distinct in {len(strings)} rows, {words:.1f} words on average)")
    return ColumnInfo(name, "text", why, missing, details={"words": words})


#: Least share of a column's non-empty cells that must read as numbers for the rest to be stray cells
#: (a typo, a decimal comma, "approx. 3") of a number column rather than a column of strings.
MIN_NUMBER_SHARE = 0.95


def _mostly_numbers(name: str, present: list[tuple[int, Any]], numbers: list[float | None], missing: float,
                    n: int) -> ColumnInfo | None:
    """A number column with a few cells that are not numbers (one ``3,5`` among 246 numbers): numeric,
    its stray cells counted and named as missing measurements (the training median fills them, as
    for an empty cell; ``--strict`` makes each an error), never the whole column turned into an
    identifier or categories. None when fewer than :data:`MIN_NUMBER_SHARE` of the cells are numbers
    or fewer than 20 are (too few to tell a stray cell from a column of strings)."""
    good = [x for x in numbers if x is not None]
    if len(good) < 20 or len(good) < MIN_NUMBER_SHARE * len(numbers):
        return None
    stray = [(i, v) for (i, v), x in zip(present, numbers, strict=True) if x is None]
    unusable = {i: f"expected a number, got {v!r}" for i, v in stray}
    why = (f"numbers ({len(set(good))} distinct); {len(stray)} cell(s) not numbers (e.g. row {stray[0][0] + 1}: "
           f"{stray[0][1]!r}) -> treated as missing")
    return ColumnInfo(name, "numeric", why, missing + len(unusable) / max(n, 1),
                      details={"median": _median(good), "unusable": unusable})


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _is_identifier_numbers(numbers: list[float | None], n_rows: int) -> bool:
    """Integers, one distinct per row, filling a dense range (an index or row number)."""
    values = [x for x in numbers if x is not None]
    if len(values) < 20 or len(values) < 0.9 * n_rows or any(x != int(x) for x in values):
        return False
    if len(set(values)) != len(values):
        return False
    return (max(values) - min(values) + 1) <= 2 * len(values)


def _is_code_column(strings: list[str], distinct: int) -> bool:
    """Single tokens that are codes (``SKU-00123``, ``u8812``): nearly all carry a digit and a value
    repeats on average fewer than three times -- an identifier of something rows share, not a category."""
    with_digit = sum(any(ch.isdigit() for ch in s) for s in strings)
    return with_digit >= 0.9 * len(strings) and len(strings) < 3 * distinct


def _date_column(name: str, present: list[tuple[int, Any]], missing: float, n: int,
                 override: str | None) -> ColumnInfo | None:
    """A ``date`` :class:`ColumnInfo` when the non-empty cells ``present`` (``(row index, value)``) are
    dates/times (:mod:`.dates`), else None (ColumnError for ``--column NAME=date`` on cells that do not
    read as dates). The cells that do not read are its ``unusable`` ones (missing in training, noted;
    ``--strict`` makes each an error), as a number column's stray cells are."""
    from mmcore_plugins.autofit import dates

    values = [v for _, v in present]
    found = dates.detect(values)
    if found is None:
        if override == "date":
            example = next((v for v in values if all(dates.parse(v, f) is None for f in (dates.ISO, *dates.FORMATS))), values[0])
            raise ColumnError(f"--column {name}=date: cell {example!r} is not a date or time in a format fit reads "
                              "(ISO 8601 such as 2021-03-04 or 2021-03-04T10:30:00, 03/04/2021, 4 Mar 2021, 10:30, ...)")
        return None
    fmt, read = found
    details = dates.describe(values, fmt)
    if not details.get("time_only") and details["first"] == details["last"]:
        return ColumnInfo(name, "ignore", f"date/time, the same in every row ({details['first']})", missing, role="ignored")
    numeric, categorical = dates.parts_of(details)
    unread = len(values) - read
    shown = "ISO 8601" if fmt == dates.ISO else fmt
    why = ("--column override; " if override else "") + (
        f"date/time ({shown}; {details['first']} .. {details['last']}) -> tabular: {', '.join([*numeric, *categorical])}")
    if unread:
        why += f"; {unread} cells do not read -> treated as missing"
    expected = dates.expected(fmt, time_only=bool(details.get("time_only")))
    unusable = {i: f"expected {expected}, got {v!r}" for i, v in present if not dates.reads(v, details)}
    return ColumnInfo(name, "date", why, 1 - read / max(n, 1), details={**details, "unusable": unusable})


#: String columns with more cells than this are first tested on a spread sample of this many.
PATH_SAMPLE = 256


def _file_column(name: str, present: list[tuple[int, Any]], n: int, base: Path, override: str | None,
                 allow_outside: bool = False) -> ColumnInfo | None:
    """A :class:`ColumnInfo` when the cells are file paths, else None. Checks every file."""
    from mmcore_plugins.io import MediaError, check_media
    from mmcore_plugins.io.paths import OutsidePathError

    strings = [(i, v) for i, v in present if isinstance(v, str)]
    if len(strings) < len(present):
        return None
    if override is None and all(as_number(v) is not None for _, v in strings):
        return None  # numbers (a 100k-column table of them needs no file lookups)
    if override is None and len(strings) > PATH_SAMPLE:
        # Text, codes, dates: a spread sample settles it without resolving every cell (each
        # resolution is a realpath; 10,000 rows x 4 string columns took minutes on a busy machine).
        step = len(strings) / PATH_SAMPLE
        sample = [strings[int(k * step)][1] for k in range(PATH_SAMPLE)]
        hits = sum(1 for v in sample if _looks_like_path(v) or resolve_path(v, base) is not None)
        if hits < 0.25 * len(sample):
            return None
    paths = cell_paths(base)
    resolved = [(i, v, resolve_path(v, base, paths=paths)) for i, v in strings]
    existing = [(i, v, p) for i, v, p in resolved if p is not None]
    shaped = sum(_looks_like_path(v) for _, v, p in resolved if p is None)
    if override is None and len(existing) + shaped < 0.5 * len(strings):
        return None
    if override is None and not existing:
        raise ColumnError(f"column {name!r}: all {len(strings)} non-empty cells name files that do not exist "
                          f"(e.g. {strings[0][1]!r}, relative to {str(base)!r})")
    # A file column: its files are read (a text file's contents go into the run), so each must lie
    # inside the table's folder unless allowed -- before any of them is opened.
    outside = []
    for i, v, p in existing:
        if allow_outside or _inside(str(p), paths.base):
            continue
        try:
            resolve_path(v, base, allow_outside=False, paths=paths)  # the rule's own error, naming the cell
        except OutsidePathError as exc:
            outside.append(f"row {i + 1}: {exc}")
    if outside:
        more = f" (and {len(outside) - 3} more rows)" if len(outside) > 3 else ""
        raise ColumnError(f"column {name!r}: " + "; ".join(outside[:3]) + more)
    kinds = Counter(_file_kind(p) for _, _, p in existing[:200])
    kind = override or next((k for k, _ in kinds.most_common() if k is not None), None)
    if kind is None:
        if override is None and shaped == 0 and len(existing) < 0.5 * len(strings):
            return None
        raise ColumnError(f"column {name!r}: its files are neither images, audio, text nor frame folders "
                          f"(e.g. {existing[0][1]!r}); pass --column {name}=KIND or --column {name}=ignore")
    unusable: dict[int, str] = {i: f"file {v!r} does not exist" for i, v, p in resolved if p is None}
    check = "text" if kind == "text" else kind
    for i, value, p in existing:
        try:
            check_media(p, check)
        except (MediaError, ValueError, OSError) as exc:
            why = str(exc)
            unusable[i] = why if str(value).strip() in why else f"file {value!r}: {why}"  # the cell's own path named
    usable = len(strings) - len(unusable)
    if usable == 0:
        example = next(iter(unusable.values()))
        raise ColumnError(f"column {name!r} ({kind}): none of its {len(strings)} files can be read, e.g. {example}")
    missing = 1 - usable / max(n, 1)
    why = "--column override" if override else f"{kind} files ({'frame folders' if kind == 'video' else 'suffix/magic bytes'})"
    if unusable:
        cells = {i: v for i, v, _ in resolved}
        noted = sorted(unusable)[:NOTED_UNUSABLE]
        listed = ", ".join(f"row {i + 1} {str(cells[i]).strip()!r}" for i in noted) + (", ..." if len(unusable) > len(noted) else "")
        why += f"; {len(unusable)} missing/unreadable ({listed}) -> treated as missing"
    details: dict[str, Any] = {"unusable": unusable, "files": True}
    absent = [v for _, v, p in resolved if p is None]
    if len(absent) > 0.5 * len(strings):  # most files absent: a wrong folder more likely than missing data
        details["warning"] = (f"{len(absent)} of its {len(strings)} files ({_percent(len(absent), len(strings))}) do not exist "
                              f"(e.g. {absent[0]!r}, relative to {str(base)!r}): if the table lies elsewhere than its files, "
                              "move it or make its paths relative to its own folder; the absent files are missing cells")
    details.update(_media_stats(kind, [p for i, _, p in existing if i not in unusable][:64]))
    if kind == "text":
        return ColumnInfo(name, "text", why + " (file contents)", missing, details=details)
    return ColumnInfo(name, kind, why, missing, details=details)


#: Images larger than this are checked for detail beyond it (an upscaled thumbnail holds none).
DETAIL_SIDE = 32
#: Images decoded for that check (the first of the column's readable files).
DETAIL_SAMPLE = 16


def detail_error(paths: list[Path], side: int) -> float:
    """How much of the images is lost at ``side`` px: the median over ``paths`` of the RMS difference
    between each grey image and its ``side`` px copy (box-filtered down, bilinear back up), divided by
    the image's own standard deviation (its contrast). Near 0: the images hold no detail beyond
    ``side`` px (a thumbnail or a digit upscaled); photos lose a quarter of their contrast or more.
    1.0 for no readable image."""
    import numpy as np
    from PIL import Image

    errors = []
    for path in paths:
        try:
            with Image.open(path) as img:
                grey = img.convert("L")
                grey.load()
        except (OSError, ValueError):
            continue
        w, h = grey.size
        if max(w, h) <= side:
            errors.append(0.0)
            continue
        scale = side / max(w, h)
        small = grey.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX)
        a = np.asarray(grey, dtype=np.float32) / 255.0
        back = np.asarray(small.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
        errors.append(float(np.sqrt(((a - back) ** 2).mean()) / (a.std() + 1e-6)))
    return float(np.median(errors)) if errors else 1.0


def _media_stats(kind: str, paths: list[Path]) -> dict[str, Any]:
    """Sizes the config builder needs: image side and colour, audio duration and rate (from headers)."""
    from mmcore_plugins.io import probe_audio, probe_image, video_frames

    if kind == "image" or kind == "video":
        sides, colour = [], False
        for p in paths:
            first = Path(video_frames(p)[0]) if kind == "video" else p
            info = probe_image(first)
            sides.append(max(info.width, info.height))
            colour |= info.mode not in ("L", "1", "I", "F", "LA", "I;16")
        out: dict[str, Any] = {"side": _median(sides), "colour": colour}
        if kind == "video":
            out["frames"] = _median([len(video_frames(p)) for p in paths])
        elif out["side"] > DETAIL_SIDE:
            out["detail"] = detail_error(paths[:DETAIL_SAMPLE], DETAIL_SIDE)
        return out
    if kind == "audio":
        durations, rates = [], []
        for p in paths:
            info = probe_audio(p)
            durations.append(info.frames / info.sample_rate)
            rates.append(info.sample_rate)
        durations.sort()
        return {"seconds_p95": durations[min(len(durations) - 1, int(0.95 * len(durations)))] if durations else 1.0,
                "rate": _median(rates)}
    return {}


def is_nonfinite(value: Any) -> bool:
    """A cell that is a number but not a finite one: ``inf``, ``-inf``, ``"Infinity"``, ``"nan"``
    (a float NaN is a missing cell, :func:`mmcore.labels.is_missing`)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)) or (type(value).__module__ == "numpy" and hasattr(value, "item")):
        try:
            return not math.isfinite(float(value))
        except (TypeError, ValueError, OverflowError):
            return False
    if isinstance(value, str):
        try:
            return not math.isfinite(float(value.strip()))
        except ValueError:
            return False
    return False


def infer_target(name: str, values: Sequence[Any], override: str | None = None) -> ColumnInfo:
    """Infer the target column: classification, multilabel or regression (see the module docstring).

    The kind is decided on the finite values. A non-finite number (``inf``, ``-inf``, ``"nan"``)
    in the target is a data error naming its row and the column (:class:`ColumnError`) -- unless
    the target is declared ``regression`` (``--column NAME=regression``): then such rows are left
    out and counted (``details["nonfinite"]``: ``{row index: value}``), as rows with an empty target
    are, and as a non-finite number in an input column is a missing cell.
    """
    n = len(values)
    nonfinite = {i: v for i, v in enumerate(values) if not is_missing(v) and is_nonfinite(v)}
    present = [v for i, v in enumerate(values) if not is_missing(v) and i not in nonfinite]
    missing = 1 - len(present) / max(n, 1)
    if not present:
        raise ColumnError(f"target column {name!r} is empty in every row"
                          + (f" (or holds no finite number: {len(nonfinite)} non-finite)" if nonfinite else ""))
    kind, why, details = override, "--column override", {}
    lists = [v for v in present if isinstance(v, (list, tuple))]
    numbers = [as_number(v) for v in present]
    if kind is None:
        if lists:
            kind, why = "multilabel", "lists of labels"
        elif all(x is not None for x in numbers):
            distinct = len(set(numbers))
            integral = all(x == int(x) for x in numbers)
            if integral and distinct <= max(20, min(100, len(numbers) // 20)):
                kind, why = "classification", f"{distinct} distinct integers"
            else:
                kind, why = "regression", f"numbers, {distinct} distinct" + ("" if integral else ", not all integers")
        else:
            delimiter = _multilabel_delimiter([str(v) for v in present])
            if delimiter is not None:
                kind, why = "multilabel", f"labels joined by {delimiter!r}"
            else:
                kind, why = "classification", f"{len({str(v).strip() for v in present})} distinct labels"
    if nonfinite:
        row, value = next(iter(nonfinite.items()))
        if override != "regression":
            decided = "declared" if override else f"inferred from its {len(present)} finite values"
            more = f" ({len(nonfinite)} such rows)" if len(nonfinite) > 1 else ""
            raise ColumnError(
                f"row {row + 1}, target {name!r}: {value!r} is not a finite number{more}; the target is {kind} "
                f"({decided}), which has no place for it -- empty the cell to leave the row out"
                + (f", or pass --column {name}=regression to leave out every non-finite row (counted)"
                   if all(x is not None for x in numbers) else ""))
        details["nonfinite"] = dict(nonfinite)
        why += f"; {len(nonfinite)} non-finite (inf/nan) rows left out"
    if kind == "regression":
        if any(x is None for x in numbers):
            i, bad = next((i, v) for i, v in enumerate(values)
                          if not is_missing(v) and i not in nonfinite and as_number(v) is None)
            raise ColumnError(f"row {i + 1}, target {name!r}: regression needs numbers, got {bad!r}")
    elif kind == "multilabel":
        delimiter = None if lists and len(lists) == len(present) else _multilabel_delimiter([str(v) for v in present]) or ";"
        details["delimiter"] = delimiter
        try:
            labels = fit_classes(label for v in present for label in multilabel_names(v, delimiter))
        except ValueError as exc:
            raise ColumnError(f"{_first_bad_row(values, lambda v: multilabel_names(v, delimiter))}target {name!r}: {exc}") from exc
        if len(labels) < 2 or len(labels) > MAX_LABELS:
            raise ColumnError(f"target {name!r}: a multilabel target needs 2 to {MAX_LABELS} distinct labels, got {len(labels)}")
        details["labels"] = labels
        why += f", {len(labels)} labels"
    else:
        try:
            classes = fit_classes(present)
        except ValueError as exc:
            raise ColumnError(f"{_first_bad_row(values, lambda v: fit_classes([v]))}target {name!r}: {exc}") from exc
        if len(classes) < 2:
            raise ColumnError(f"target {name!r}: classification needs at least 2 classes, every row has {classes[0]!r}")
        if len(classes) > max(100, len(present) // 2):
            raise ColumnError(f"target {name!r}: {len(classes)} distinct values in {len(present)} rows is not a set of "
                              f"classes; pass --column {name}=regression if it is a number to predict")
        details["classes"] = classes
        details["class_values"] = label_values(classes, present)  # what predictions give back: the table's own values
    return ColumnInfo(name, kind, why, missing, role="target", details=details)


def _first_bad_row(values: Sequence[Any], check: Any) -> str:
    """``"row N, "`` for the first cell ``check`` raises ValueError on ("" when none does)."""
    for i, value in enumerate(values):
        if is_missing(value):
            continue
        try:
            check(value)
        except ValueError:
            return f"row {i + 1}, "
    return ""


def _multilabel_delimiter(strings: list[str]) -> str | None:
    """The delimiter joining several labels per cell, when there is one."""
    for delimiter in MULTILABEL_DELIMITERS:
        joined = [s for s in strings if delimiter in s]
        if len(joined) < max(2, 0.1 * len(strings)):
            continue
        labels = Counter(p.strip() for s in strings for p in s.split(delimiter) if p.strip())
        # Labels repeat across rows (a vocabulary), and are short tokens, not sentences.
        if 2 <= len(labels) <= min(MAX_LABELS, max(2, len(strings) // 2)) and all(len(label.split()) <= 3 for label in labels):
            return delimiter
    return None


#: Unusable cells (missing/unreadable files, stray cells) listed by row in autofit.json, per column.
LISTED_UNUSABLE = 20
#: ... in the column table's note, per column.
NOTED_UNUSABLE = 3
#: ... in ``--strict``'s one-line error, over all columns.
STRICT_LISTED = 20


def unusable_json(unusable: Mapping[int, str], limit: int = LISTED_UNUSABLE) -> dict[str, Any]:
    """A column's unusable cells for ``autofit.json``: the count and the first ``limit`` as ``{row, why}``
    (rows numbered from 1, as the table's data rows; ``why`` names the file and what is wrong)."""
    return {"count": len(unusable), "listed": [{"row": i + 1, "why": why} for i, why in sorted(unusable.items())[:limit]]}


def unusable_lines(where: str, dropped: Sequence[tuple[int, str, str]], limit: int = NOTED_UNUSABLE) -> list[str]:
    """One line per column of a ``--val``/``--test`` table's cells treated as missing (``(row index, column,
    why)``, ``why`` naming the file and what is wrong), listed as the training table's are: ``--val
    'val.csv': column 'photo': 3 missing/unreadable -> treated as missing: row 2: file 'a.png' does not exist
    (...); row 5: ...; and 1 more (autofit.json lists up to 20)``."""
    lines = []
    for column in dict.fromkeys(c for _, c, _ in dropped):
        cells = sorted((i, why) for i, c, why in dropped if c == column)
        listed = "; ".join(f"row {i + 1}: {why}" for i, why in cells[:limit])
        more = f"; and {len(cells) - limit} more (autofit.json lists up to {LISTED_UNUSABLE})" if len(cells) > limit else ""
        lines.append(f"{where}: column {column!r}: {len(cells)} missing/unreadable -> treated as missing: {listed}{more}")
    return lines


def strict_error(infos: Sequence[ColumnInfo], limit: int = STRICT_LISTED) -> ColumnError | None:
    """``--strict``: every unusable cell inference found (missing/unreadable files, stray cells of a
    number column), up to ``limit`` of them named by row and column in one error; None when there is none."""
    cells = [(index, info.name, why) for info in infos for index, why in info.details.get("unusable", {}).items()]
    if not cells:
        return None
    cells.sort(key=lambda c: (c[0], c[1]))
    listed = "; ".join(f"row {i + 1}, column {name!r}: {why}" for i, name, why in cells[:limit])
    more = f"; and {len(cells) - limit} more" if len(cells) > limit else ""
    head = f"{len(cells)} unusable cells (missing/unreadable files, cells that are no number): " if len(cells) > 1 else ""
    return ColumnError(f"{head}{listed}{more} (--strict)")


def _decimal_hint(cells: Sequence[Any]) -> str:
    """A hint for cells written with a decimal comma (``0,314``) that were not read as numbers."""
    from mmcore_plugins.io.tables import DECIMAL_COMMA

    comma = next((c for c in cells if isinstance(c, str) and DECIMAL_COMMA.fullmatch(c.strip())), None)
    # Worded for every surface: a table read by fit/predict (the option) and a served record (a point).
    return (f"; {comma!r} reads as a number with a decimal comma: write it with a point, or read the table with "
            f"--decimal , (decimal=',' from Python)" if comma is not None else "")


def note_table_format(infos: Sequence[ColumnInfo], fmt: Any) -> None:
    """Say in each column's ``why`` what reading the table did to it: decimal commas read as numbers
    (``fmt``: the :class:`~mmcore_plugins.io.tables.TableFormat` the table was read with)."""
    for info in infos:
        if info.name in getattr(fmt, "decimal_columns", ()):
            info.why += "; decimal commas read as numbers (0,5 -> 0.5)"


def table_format_lines(fmt: Any) -> list[str]:
    """Lines under the column table saying how the table was read, when it was not a plain
    comma-separated, decimal-point file (a delimiter found by sniffing, decimal commas)."""
    lines = []
    if getattr(fmt, "sep_detected", False):
        lines.append(f"table: {fmt.sep!r}-separated (found from its first lines; --sep gives the delimiter)")
    if getattr(fmt, "decimal_columns", None):
        lines.append(f"table: decimal commas in {', '.join(repr(c) for c in fmt.decimal_columns)} read as numbers"
                     + (" (found in the cells; --decimal . keeps them as written)" if fmt.decimal_detected else ""))
    return lines


def split_warnings(table: Sequence[Mapping[str, Any]], target: str, split_column: str) -> list[str]:
    """One warning line per class (a classification target's label in ``table[i][target]``) that is
    absent from a split that has rows (``table[i][split_column]``: train / val / test): too few rows
    (or none given there) for it to appear in every split -- saying how many rows it has and where
    they went. A class absent from val is never checked there; one absent from train is never learned."""
    order = ("train", "val", "test")
    present = {r.get(split_column) for r in table}
    by_class: dict[Any, Counter] = {}
    for r in table:
        label = r.get(target)
        if isinstance(label, (str, int)) and not isinstance(label, bool):
            by_class.setdefault(label, Counter())[r.get(split_column)] += 1
    lines = []
    for label, counts in by_class.items():
        absent = [s for s in order if s in present and not counts[s]]
        if not absent:
            continue
        total = sum(counts.values())
        where = ", ".join(f"{counts[s]} in {s}" for s in order if counts[s])
        effect = ("the model never sees it" if "train" in absent else
                  f"{' and '.join(s for s in absent)} results say nothing about it")
        lines.append(f"warning: class {label!r} has {total} row{'s' if total != 1 else ''} ({where}), none in "
                     f"{' or '.join(absent)}: too few to appear in every split; {effect} (add rows of it, or give "
                     "--val/--test tables that hold it)")
    return lines


def _missing_percent(fraction: float) -> str:
    """A column's missing share for the table: ``<1%`` for a few cells (never ``0%`` when one is missing),
    ``>99%`` for all but a few."""
    if 0 < fraction < 0.01:
        return "<1%"
    if 0.99 < fraction < 1:
        return ">99%"
    return f"{100 * fraction:.0f}%"


def format_table(infos: Sequence[ColumnInfo]) -> str:
    """The inference as a text table: column, inferred as, missing %, why."""
    rows = [("column", "inferred as", "missing", "why")]
    for info in infos:
        kind = f"target: {info.kind}" if info.role == "target" else info.kind
        rows.append((info.name, kind, _missing_percent(info.missing), info.why))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    lines += [f"warning: column {info.name!r}: {info.details['warning']}" for info in infos if info.details.get("warning")]
    return "\n".join(lines)
