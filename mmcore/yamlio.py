"""The one YAML reader of mmcore: configs, ``key=value`` overrides, a run's ``config.yaml``.

Built on PyYAML's ``SafeLoader`` (nothing in a document can run code or build a Python object),
with the differences a config file needs:

* **Floats as YAML 1.2 reads them.** ``1e-3``, ``1E5``, ``.5e-2``, ``-2e+3``, ``3.``, ``1.5e3``
  are floats (YAML 1.1, PyYAML's default, reads the first two as strings). ``.inf``, ``-.inf``
  and ``.nan`` are floats as before; the bare words ``inf`` and ``nan`` stay strings, so a typo
  never turns into a number.
* **Only plain data.** The allowed tags are YAML's JSON-like core: ``!!null``, ``!!bool``,
  ``!!int``, ``!!float``, ``!!str``, ``!!seq``, ``!!map`` (and ``<<`` merge keys). Every other tag
  -- ``!!python/...``, ``!!binary``, ``!!set``, ``!!timestamp``, any ``!custom`` -- is refused
  with an error naming source, line and column (in overrides too).
* **No implicit dates or sexagesimal numbers.** ``2024-01-01`` and ``12:30`` stay strings
  (YAML 1.2 behaviour); ``yes``/``no``/``on``/``off`` are still booleans (YAML 1.1, as before).
* **Duplicate keys are an error** (PyYAML silently keeps the last one).
* **Bounded.** A document is at most :data:`MAX_DOCUMENT_BYTES`; aliases may add at most
  :data:`MAX_ALIAS_NODES` nodes when expanded (a "billion laughs" document of a few hundred bytes
  would otherwise expand to 10^9 nodes); nesting is at most :data:`MAX_DEPTH` levels; a
  recursive alias (``&a [*a]``) is refused.

Every problem raises :class:`YamlError` (a :class:`~mmcore.errors.UserInputError`, hence a
``ValueError``) whose message reads ``<source>:<line>:<column>: <problem>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mmcore.errors import UserInputError

#: Largest YAML document read, in bytes (configs are a few KB; mmcore's own config.yaml too).
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
#: Most nodes that aliases (``*name``) may add to a document when expanded.
MAX_ALIAS_NODES = 10_000
#: Deepest nesting of sequences and mappings.
MAX_DEPTH = 64

_TAG = "tag:yaml.org,2002:"
#: Tags a document may carry (explicitly or implicitly); everything else is refused.
ALLOWED_TAGS = frozenset(_TAG + name for name in ("null", "bool", "int", "float", "str", "seq", "map", "merge"))

# YAML 1.2 core-schema floats (exponent sign optional, exponent without a dot), PyYAML's 1.1
# digit separators kept; no sexagesimal forms.
_FLOAT = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)
# PyYAML's 1.1 ints without the sexagesimal form (``1:30`` would be 90).
_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0[0-7_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+)$""",
    re.VERBOSE,
)


class YamlError(UserInputError):
    """A YAML document (file or override) that mmcore refuses to read.

    Attributes: ``source`` (a file path or ``override 'key=value'``), ``line`` and ``column``
    (1-based; None when unknown), ``problem``.
    """

    def __init__(self, source: str, problem: str, line: int | None = None, column: int | None = None) -> None:
        self.source, self.problem, self.line, self.column = source, problem, line, column
        where = source + (f":{line}" if line is not None else "") + (f":{column}" if column is not None else "")
        super().__init__(f"{where}: {problem}")


def _resolvers() -> dict[str | None, list[tuple[str, re.Pattern[str]]]]:
    """SafeLoader's implicit resolvers, with 1.2 floats and without timestamps/sexagesimals."""
    table: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {}
    for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items():
        kept = [(tag, regexp) for tag, regexp in entries
                if tag not in (_TAG + "float", _TAG + "int", _TAG + "timestamp", _TAG + "value")]
        if kept:
            table[first] = kept
    for ch in "-+0123456789.":
        # Floats first, as PyYAML orders them; ints only for the characters an int starts with.
        table[ch] = [(_TAG + "float", _FLOAT)] + table.get(ch, []) + ([(_TAG + "int", _INT)] if ch != "." else [])
    return table


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader with 1.2 floats, an allow-list of tags, duplicate-key and size/alias/depth limits."""

    yaml_implicit_resolvers = _resolvers()

    def __init__(self, stream: str, source: str = "<yaml>") -> None:
        super().__init__(stream)
        self.source = source
        self._depth = 0
        #: whether the document used aliases (its values are then copied apart after loading)
        self.aliased = False

    # --------------------------------------------------------------- errors
    def error(self, problem: str, mark: Any = None) -> YamlError:
        if mark is None:
            return YamlError(self.source, problem)
        return YamlError(self.source, problem, mark.line + 1, mark.column + 1)

    # --------------------------------------------------------------- composing
    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self.error(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Node | None:
        node = Composer.get_single_node(self)
        if node is not None:
            self._check_node(node)
        return node

    def _check_node(self, root: Node) -> None:
        """Refuse disallowed tags, recursive aliases and documents whose aliases expand too much."""
        sizes: dict[int, int] = {}
        in_progress: set[int] = set()
        distinct = 0

        def size(node: Node) -> int:
            nonlocal distinct
            key = id(node)
            if key in sizes:
                return sizes[key]
            if key in in_progress:
                raise self.error("a recursive alias (a node containing itself) is not allowed", node.start_mark)
            if node.tag not in ALLOWED_TAGS:
                raise self.error(
                    f"the tag {_short(node.tag)} is not allowed: mmcore reads plain data only "
                    f"(null, bool, int, float, str, lists, mappings)", node.start_mark)
            distinct += 1
            total = 1
            if isinstance(node, (SequenceNode, MappingNode)):
                in_progress.add(key)
                children = node.value if isinstance(node, SequenceNode) else [n for pair in node.value for n in pair]
                for child in children:
                    total += size(child)
                    if total - distinct > MAX_ALIAS_NODES:
                        raise self.error(
                            f"aliases expand this document by more than {MAX_ALIAS_NODES} nodes "
                            f"(a 'billion laughs' document?); write the values out or use fewer aliases",
                            child.start_mark)
                in_progress.discard(key)
            sizes[key] = total
            return total

        self.aliased = size(root) > distinct

    # --------------------------------------------------------------- constructing
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == _TAG + "merge" or not isinstance(key_node, ScalarNode):
                    continue
                key = self.construct_object(key_node)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:
                    continue
                if first is not key_node.start_mark:
                    raise self.error(f"duplicate key {key!r} (first given on line {first.line + 1})", key_node.start_mark)
        return SafeConstructor.construct_mapping(self, node, deep=deep)


class StringScalarLoader(ConfigLoader):
    """:class:`ConfigLoader` that resolves no plain scalar: ``oslo``, ``yes``, ``007``, ``1e-3`` all
    stay strings (the caller converts), with the same tag allow-list and limits."""

    yaml_implicit_resolvers: dict = {}


def _unshare(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _unshare(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_unshare(value) for value in data]
    return data


def _short(tag: str | None) -> str:
    if tag and tag.startswith(_TAG):
        return "!!" + tag[len(_TAG):]
    return repr(tag)


def load_yaml(text: str, *, source: str = "<yaml>", strings: bool = False) -> Any:
    """Parse one YAML document with :class:`ConfigLoader`; ``source`` names it in errors.

    ``strings=True`` keeps every plain scalar a string (:class:`StringScalarLoader`), e.g. for
    command-line values whose types the receiving processor decides.

    :raises YamlError: syntax error, disallowed tag, duplicate key, or a size limit exceeded.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise YamlError(source, f"larger than the {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB mmcore reads as YAML")
    loader = (StringScalarLoader if strings else ConfigLoader)(text, source)
    try:
        data = loader.get_single_data()
        # An alias gives the same Python object in several places: copy them apart, so that an
        # override of one place (or a component mutating its options) never changes another.
        return _unshare(data) if loader.aliased else data
    except YamlError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise YamlError(source, f"not valid YAML: {problem}",
                        mark.line + 1 if mark else None, mark.column + 1 if mark else None) from exc
    except yaml.YAMLError as exc:
        raise YamlError(source, f"not valid YAML: {exc}") from exc
    except RecursionError as exc:  # belt and braces: MAX_DEPTH keeps the parser far from this
        raise YamlError(source, "nested too deeply") from exc
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file (UTF-8) with :func:`load_yaml`; errors name the file.

    :raises YamlError: as :func:`load_yaml`, or when the file is too large or not UTF-8 text.
    :raises FileNotFoundError, IsADirectoryError, PermissionError: from opening ``path``.
    """
    path = Path(path)
    source = str(path)
    with path.open("rb") as fh:
        data = fh.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise YamlError(source, f"larger than the {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB mmcore reads as YAML")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlError(source, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})", line) from exc
    return load_yaml(text, source=source)


def load_override_value(raw: str, *, source: str) -> Any:
    """The value of a ``key=value`` override: YAML when it parses as plain data, else the raw text.

    A value that is not valid YAML (``[1, 2``, ``*.png``) is taken as the string typed; a value
    carrying a refused tag (``!!python/object:os.system``) or exceeding a limit raises.
    """
    try:
        return load_yaml(raw, source=source)
    except YamlError as exc:
        if exc.problem.startswith("not valid YAML"):
            return raw
        raise


class ConfigDumper(yaml.SafeDumper):
    """SafeDumper that quotes a string exactly when :class:`ConfigLoader` would read it as something
    else: it resolves plain scalars with the loader's resolvers, so ``"1e3"`` (a float to YAML 1.2,
    a string to PyYAML's 1.1 dumper) is written ``'1e3'`` and comes back a string."""

    yaml_implicit_resolvers = _resolvers()


def dump_yaml(data: Any) -> str:
    """``data`` as block-style YAML that :func:`load_yaml` reads back unchanged (keys in order)."""
    return yaml.dump(data, Dumper=ConfigDumper, sort_keys=False, allow_unicode=True)
