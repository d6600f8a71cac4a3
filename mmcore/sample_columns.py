"""Samples stored column by column: what a large table's data set holds in memory.

A list of sample dicts costs ~0.9 KB a row in Python objects (a dict per sample and per nested
mapping, a ``str`` object per cell, a ``float`` object per number); a million rows is ~1 GB before
the first step (issue 26). :class:`SampleColumns` keeps the same samples as columns -- every string
cell of a column in one UTF-8 buffer with int64 offsets, numbers and fixed-length rows of numbers
in typed arrays (:mod:`array`), values shared by every row (one table name, one dict of column names) once -- and
builds each sample's dict when it is asked for. A column whose values fit none of these (mixed
types, ragged lists, anything else) keeps its Python objects as they are, so every sample comes
back equal to what was stored, with the same types: ``str``, ``int``, ``float``, ``list`` and
``None`` exactly, nested ``dict``\\ s in their key order.

Samples may come in batches (:meth:`SampleColumns.extend`): each batch is encoded as its own part
when it comes, so a table read batch by batch is never held whole as dicts (issue 26: the parse of a
million-row manifest). :meth:`SampleColumns.field` reads one value of one sample without building
the rest of it.

The same layout as Apache Arrow's variable-length strings (offsets + one data buffer); kept in the
standard library's :mod:`array` here because a sample is read back cell by cell as Python objects,
which pyarrow (a scalar object per cell, ~1 us) and numpy (a numpy scalar per element) do slower.
"""

from __future__ import annotations

import operator
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, chain, repeat
from typing import Any

_INT64 = (-(2**63), 2**63 - 1)


class SampleColumns(Sequence):
    """A read-only sequence of samples (nested ``dict``\\ s) held as columns (module docstring).

    ``SampleColumns(samples)[i] == samples[i]`` for every ``i``, with the same types; each access
    returns new dicts and lists of numbers (changing one does not change what is stored); an object
    every sample shared, or one kept as it is, is handed out itself. A slice returns a ``list`` of
    samples. Raises ``IndexError`` / ``TypeError`` for a bad index. ``nbytes``: the memory the columns hold (typed arrays, string buffers;
    Python objects kept as they are are counted at 8 bytes a reference).
    """

    def __init__(self, samples: Iterable[Mapping[str, Any]] = ()) -> None:
        self._n = 0
        self._starts: list[int] = []  # the first sample of each part
        self._roots: list[Any] = []  # each part's columns
        self.extend(samples)

    def extend(self, samples: Iterable[Mapping[str, Any]]) -> None:
        """Append ``samples`` (one batch), encoded as a part of its own: memory follows the columns and
        one batch of dicts, however many batches come. Parts are independent (a column of strings in one
        batch may hold numbers in the next); every sample still comes back as it was given."""
        samples = samples if isinstance(samples, list) else list(samples)
        if not samples:
            return
        self._starts.append(self._n)
        self._roots.append(_encode(samples))
        self._n += len(samples)

    def __len__(self) -> int:
        return self._n

    def _index(self, index: Any) -> int:
        try:
            i = operator.index(index)  # an int, or a numpy integer a sampler hands out
        except TypeError:
            raise TypeError(f"sample indices must be integers or slices, not {type(index).__name__}") from None
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"sample index {index} out of range for {self._n} samples")
        return i

    def _part(self, i: int) -> tuple[Any, int]:
        if len(self._roots) == 1:
            return self._roots[0], i
        k = bisect_right(self._starts, i) - 1
        return self._roots[k], i - self._starts[k]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        root, i = self._part(self._index(index))
        return root.get(i)

    def field(self, index: int, *keys: Any, default: Any = None) -> Any:
        """``samples[index][keys[0]][keys[1]]...`` without building the rest of the sample; ``default``
        where a key is absent (or a value on the way is None). Raises ``IndexError`` / ``TypeError`` for a
        bad index, as indexing does."""
        col, i = self._part(self._index(index))
        for n, key in enumerate(keys):
            if type(col) is _Dicts:
                col = col.by_key.get(key)
                if col is None:
                    return default
                continue
            value = col.get(i)
            for key in keys[n:]:
                if not isinstance(value, Mapping) or key not in value:
                    return default
                value = value[key]
            return value
        return col.get(i)

    def parts(self) -> Iterator[tuple[int, list[Any]]]:
        """``(index of its first sample, its samples)`` for each part (each batch given to :meth:`extend`),
        the samples built column by column (a part's strings decoded together): a table's rows batch by
        batch, equal to indexing them one by one, in a fraction of the time."""
        for root, start, end in self._spans():
            n = end - start
            if type(root) is _Dicts and root.keys:
                keys = root.keys
                yield start, [dict(zip(keys, values, strict=True)) for values in zip(*(c.all(n) for c in root.columns), strict=True)]
            else:
                yield start, root.all(n)

    def values(self, key: Any, indices: Iterable[int] | None = None, *, default: Any = None) -> Iterator[Any]:
        """``samples[i].get(key, default)`` for each ``i`` of ``indices`` (default every sample), in order,
        read column by column (a part's strings decoded together): a table's column without its rows.
        ``indices`` in ascending order are read part by part; others sample by sample."""
        if indices is None:
            for root, start, end in self._spans():
                yield from _column(root, key, end - start, default)
            return
        spans = list(self._spans())
        k, part, last = -1, [], -1
        for i in indices:
            if i < last or not 0 <= i < self._n:  # not ascending (or out of range): one sample at a time
                yield self.field(i, key, default=default)
                continue
            last = i
            while k < 0 or i >= spans[k][2]:
                k += 1
                part = None
            root, start, end = spans[k]
            if part is None:
                part = _column(root, key, end - start, default)
            yield part[i - start]

    def _spans(self) -> Iterator[tuple[Any, int, int]]:
        """``(columns, first, end)`` of each part."""
        return zip(self._roots, self._starts, [*self._starts[1:], self._n], strict=False)

    def first_without_mapping(self, key: Any) -> int | None:
        """The index of the first sample that is not a mapping holding a mapping under ``key``, or None:
        a part whose columns say so is passed without building its samples."""
        for root, start, end in self._spans():
            inner = root.by_key.get(key) if type(root) is _Dicts else None
            if type(inner) is _Dicts or (type(inner) is _Same and isinstance(inner.value, Mapping)):
                continue
            for i in range(end - start):
                sample = root.get(i)
                if not isinstance(sample, Mapping) or not isinstance(sample.get(key), Mapping):
                    return start + i
        return None

    def __iter__(self) -> Iterator[Any]:
        for root, start, end in self._spans():
            get = root.get
            for i in range(end - start):
                yield get(i)

    @property
    def nbytes(self) -> int:
        return sum(root.nbytes for root in self._roots)

    def __repr__(self) -> str:
        return f"SampleColumns({self._n} samples, {self.nbytes / 2**20:.1f} MiB)"


def _encode(values: list[Any]) -> Any:
    """The column for one field's values (one per sample)."""
    if not values:
        return _Objects(values)
    # The loops below run once per value of a column: kept in C (map, set, min, max) where they can be.
    first = values[0]
    if all(map(operator.is_, values, repeat(first))):  # one object every sample shares stays one object
        return _Same(first)
    kinds = set(map(type, values))
    if type(first) is dict and kinds == {dict}:
        keys = tuple(first)
        if all(map(keys.__eq__, map(tuple, values))):  # every dict has these keys, in this order
            return _Dicts(keys, [_encode(list(map(operator.itemgetter(k), values))) for k in keys])
    kinds.discard(type(None))
    if kinds == {str}:
        return _Strings(values)
    if kinds == {int}:
        present = [v for v in values if v is not None] if None in values else values
        if _INT64[0] <= min(present) and max(present) <= _INT64[1]:
            return _Numbers(values, "q")
    if kinds == {float}:
        return _Numbers(values, "d")
    if kinds == {list}:
        rows = [v for v in values if v is not None]
        width = len(rows[0])
        items = set(map(type, chain.from_iterable(rows)))
        if width and all(len(row) == width for row in rows) and len(items) == 1:
            item = items.pop()
            if item is float or (item is int and _INT64[0] <= min(map(min, rows)) and max(map(max, rows)) <= _INT64[1]):
                return _Rows(values, width, "d" if item is float else "q")
    return _Objects(values)


def _column(root: Any, key: Any, n: int, default: Any) -> list[Any]:
    """One part's values under ``key`` (``default`` where a sample lacks it), as a list."""
    inner = root.by_key.get(key) if type(root) is _Dicts else None
    if inner is not None:
        return inner.all(n)
    values = []
    for i in range(n):
        sample = root.get(i)
        values.append(sample.get(key, default) if isinstance(sample, Mapping) else default)
    return values


def _missing(values: list[Any]) -> bytearray | None:
    """Where the column's value is None (one byte a row), or None when no value is (``values``: strings,
    numbers or lists, and None: ``in`` compares them with None in C)."""
    if None not in values:
        return None
    return bytearray(v is None for v in values)


class _Dicts:
    def __init__(self, keys: tuple[Any, ...], columns: list[Any]) -> None:
        self.keys, self.columns = keys, columns
        self.pairs = list(zip(keys, columns, strict=True))
        self.by_key = dict(self.pairs)

    def get(self, i: int) -> dict[Any, Any]:
        return {k: c.get(i) for k, c in self.pairs}

    def all(self, n: int) -> list[Any]:
        return [self.get(i) for i in range(n)]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.columns)


class _Same:
    """A value every sample shares (the same object: a table's name, a dict of column names)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self, i: int) -> Any:
        return self.value

    def all(self, n: int) -> list[Any]:
        return [self.value] * n

    nbytes = 8


class _Strings:
    """``str`` cells (or None): one UTF-8 buffer and int64 offsets (Arrow's string layout). Lone
    surrogates (file names read with ``surrogateescape``) survive (``surrogatepass``)."""

    def __init__(self, values: list[Any]) -> None:
        self.missing = _missing(values)
        texts = values if self.missing is None else ["" if v is None else v for v in values]
        joined = "".join(texts)
        if joined.isascii():  # one encode; a character is a byte
            self.data = joined.encode("ascii")
            self.offsets = array("q", accumulate(map(len, texts), initial=0))
        else:
            encoded = [v.encode("utf-8", "surrogatepass") for v in texts]
            self.offsets = array("q", accumulate(map(len, encoded), initial=0))
            self.data = b"".join(encoded)

    def get(self, i: int) -> str | None:
        if self.missing is not None and self.missing[i]:
            return None
        return self.data[self.offsets[i]:self.offsets[i + 1]].decode("utf-8", "surrogatepass")

    def all(self, n: int) -> list[str | None]:
        offsets = self.offsets
        if self.data.isascii():  # one decode; byte offsets are character offsets
            text = self.data.decode("ascii")
            values: list[Any] = [text[a:b] for a, b in zip(offsets, offsets[1:], strict=False)]
        else:
            data = self.data
            values = [data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(offsets, offsets[1:], strict=False)]
        if self.missing is not None:
            for i, gone in enumerate(self.missing):
                if gone:
                    values[i] = None
        return values

    @property
    def nbytes(self) -> int:
        return len(self.data) + len(self.offsets) * 8 + (0 if self.missing is None else len(self.missing))


class _Numbers:
    """``int`` (within int64) or ``float`` cells, or None: one typed array (``q`` / ``d``); read back as
    Python ints / floats, exactly."""

    def __init__(self, values: list[Any], code: str) -> None:
        self.missing = _missing(values)
        fill = 0 if code == "q" else 0.0
        self.array = array(code, values if self.missing is None else (fill if v is None else v for v in values))

    def get(self, i: int) -> int | float | None:
        if self.missing is not None and self.missing[i]:
            return None
        return self.array[i]

    def all(self, n: int) -> list[Any]:
        values = self.array.tolist()
        if self.missing is not None:
            for i, gone in enumerate(self.missing):
                if gone:
                    values[i] = None
        return values

    @property
    def nbytes(self) -> int:
        return len(self.array) * self.array.itemsize + (0 if self.missing is None else len(self.missing))


class _Rows:
    """Lists of one length of ``float``\\ s (or of ``int``\\ s), or None: one flat typed array; read
    back as a new ``list`` of Python numbers."""

    def __init__(self, values: list[Any], width: int, code: str) -> None:
        self.missing = _missing(values)
        self.width = width
        zeros = [0 if code == "q" else 0.0] * width
        self.array = array(code, chain.from_iterable(values if self.missing is None else (zeros if v is None else v for v in values)))

    def get(self, i: int) -> list[Any] | None:
        if self.missing is not None and self.missing[i]:
            return None
        return self.array[i * self.width:(i + 1) * self.width].tolist()

    def all(self, n: int) -> list[Any]:
        return [self.get(i) for i in range(n)]

    @property
    def nbytes(self) -> int:
        return len(self.array) * self.array.itemsize + (0 if self.missing is None else len(self.missing))


class _Objects:
    """Anything else, kept as it is (a list of the Python objects)."""

    def __init__(self, values: list[Any]) -> None:
        self.values = list(values)

    def get(self, i: int) -> Any:
        return self.values[i]

    def all(self, n: int) -> list[Any]:
        return list(self.values)

    @property
    def nbytes(self) -> int:
        return 8 * len(self.values)
