"""Bounded YAML parsing: a scenario file is refused, in bounded time and memory, before it can hurt.

PyYAML alone trusts its input: aliases can expand a few hundred bytes into
billions of nodes (the "billion laughs"), composing 10,000 nested ``[`` recurses
past Python's stack, a NUL or a huge integer surfaces as a multi-line error or a
traceback. Here the parser's event stream, which PyYAML produces iteratively,
is metered as the composer consumes it: nesting depth, and the number of nodes
the document would hold with every alias expanded, are checked at each event,
so an oversized document is refused at the first event that exceeds a limit,
before the composer recurses or anything is expanded. Anchors, aliases and
merge keys within the limits work as usual.

Every refusal is a one-line :class:`ScenarioError` with the line at fault.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import yaml

from testbed.scenario._error import ScenarioError, format_path

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_NODES",
    "locate_node",
    "parse_yaml",
    "read_scenario_file",
]

MAX_BYTES: Final = 1 << 20
"""The largest scenario file accepted, in bytes (1 MiB; real scenarios are a few KiB)."""
MAX_DEPTH: Final = 64
"""The deepest nesting of mappings and lists accepted, aliases expanded (real scenarios nest under 12)."""
MAX_NODES: Final = 20_000
"""The most YAML nodes a document may hold with every alias expanded (real scenarios hold a few hundred)."""
MAX_INT_DIGITS: Final = 100
"""The longest integer literal accepted, in digits (Python refuses to parse ones past 4,300)."""

_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_INT_TAG: Final = "tag:yaml.org,2002:int"
_FLOAT_TAG: Final = "tag:yaml.org,2002:float"


def locate_node(root: yaml.Node, loc: tuple[str | int, ...], *, skip: Collection[int] = ()) -> tuple[int, str]:
    """The line of the YAML node at ``loc`` and the path as the user wrote it.

    Positions in ``skip`` (a model's union tags) are left out of the path. A last segment the data does not
    contain names a missing field: it is kept in the path, and the line is its parent's.
    """
    node: yaml.Node | None = root
    line = root.start_mark.line + 1
    path: list[str | int] = []
    for position, segment in enumerate(loc):
        last = position == len(loc) - 1
        if position in skip:
            continue
        if isinstance(node, yaml.MappingNode):
            entry = next(
                (
                    (key, value)
                    for key, value in node.value
                    if isinstance(key, yaml.ScalarNode) and key.value == str(segment)
                ),
                None,
            )
            if entry is not None:
                key, node = entry
                line = key.start_mark.line + 1
                path.append(str(segment))
            elif last:
                path.append(str(segment))
            # else: a segment the data lacks before the end is a tag the model walk could not name; skip it
            continue
        if (
            isinstance(node, yaml.SequenceNode)
            and isinstance(segment, int)
            and -len(node.value) <= segment < len(node.value)
        ):
            node = node.value[segment]
            line = node.start_mark.line + 1
            path.append(segment)
            continue
        node = None
        path.append(segment)
    return line, format_path(path)


def read_scenario_file(file: Path) -> str:
    """Read a scenario file as UTF-8 text, reading no more than :data:`MAX_BYTES` + 1 bytes.

    Raises:
        ScenarioError: the file cannot be read, is larger than :data:`MAX_BYTES`, or is not UTF-8.
    """
    source = str(file)
    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)  # bounded: a device such as /dev/zero never ends
    except OSError as error:
        raise ScenarioError(f"cannot read the file: {error.strerror or error}", source=source) from None
    if len(data) > MAX_BYTES:
        raise ScenarioError(_too_large(), source=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ScenarioError(
            f"cannot read the file: not UTF-8 text ({error.reason} at byte {error.start})", source=source, line=line
        ) from None


def parse_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """Parse one YAML document within the limits; return its node tree (for line numbers) and its data.

    Besides the limits, the document is refused when it repeats a key in a mapping
    (PyYAML would keep the last value silently), holds a non-finite float
    (``.inf``, ``.nan``) or an integer longer than :data:`MAX_INT_DIGITS` digits,
    or a scalar whose explicit tag does not fit it (``!!int abc``).

    Returns:
        ``(None, None)`` for a document with no content (empty, or comments only).

    Raises:
        ScenarioError: naming the line (and, below the top level, the field path) at fault.
    """
    if len(text) > MAX_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise ScenarioError(_too_large(), source=source)
    nul = text.find("\0")
    if nul >= 0:
        raise ScenarioError(
            f"the file holds a NUL character (column {nul - text.rfind(chr(10), 0, nul)}): is it a binary file?",
            source=source,
            line=text.count("\n", 0, nul) + 1,
        )
    try:
        loader = _BoundedLoader(text)
    except yaml.reader.ReaderError as error:
        raise _reader_error(error, text, source) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_keys_and_scalars(loader, root, source)
        return root, loader.construct_document(root)
    except _LimitError as error:
        raise ScenarioError(error.message, source=source, line=error.line) from None
    except yaml.MarkedYAMLError as error:
        raise ScenarioError(_describe_yaml_error(error), source=source, line=_yaml_error_line(error)) from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"invalid YAML: {error}", source=source) from None
    finally:
        loader.dispose()


def _too_large() -> str:
    return f"the file is larger than {MAX_BYTES // (1 << 20)} MiB, the limit for a scenario file"


# --- limits on the event stream --------------------------------------------------------------------


class _LimitError(Exception):
    """A document past one of the limits (raised from inside the composer, caught by :func:`parse_yaml`)."""

    def __init__(self, message: str, *, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class _Open:
    """A mapping or sequence whose end event has not come yet."""

    anchor: str | None
    nodes_before: int
    """The expanded node count when it started."""
    height: int = 1
    """Its nesting height so far: 1, plus its deepest child collection's height."""


@dataclass
class _Meter:
    """Depth and expanded size of the document so far, from its events."""

    nodes: int = 0
    open: list[_Open] = field(default_factory=list)
    anchors: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Each closed anchor's expanded size (nodes) and height (0 for a scalar)."""

    def see(self, event: yaml.Event) -> None:
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.CollectionStartEvent):
            self._add(1, line)
            self.open.append(_Open(event.anchor, self.nodes - 1))
            if len(self.open) > MAX_DEPTH:
                raise _LimitError(
                    f"invalid YAML: nested more than {MAX_DEPTH} levels deep (the limit for a scenario file)", line=line
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            closed = self.open.pop()
            self._grow(closed.height)
            if closed.anchor is not None:
                self.anchors[closed.anchor] = (self.nodes - closed.nodes_before, closed.height)
        elif isinstance(event, yaml.ScalarEvent):
            self._add(1, line)
            if event.anchor is not None:
                self.anchors[event.anchor] = (1, 0)
        elif isinstance(event, yaml.AliasEvent):
            anchor = str(event.anchor)
            if any(opened.anchor == anchor for opened in self.open):
                raise _LimitError(
                    f"invalid YAML: alias *{anchor} refers to a collection that contains it (a recursive alias)",
                    line=line,
                )
            if anchor not in self.anchors:
                return  # the composer reports the undefined alias
            size, height = self.anchors[anchor]
            if len(self.open) + height > MAX_DEPTH:
                raise _LimitError(
                    f"invalid YAML: alias *{anchor} nests the document more than {MAX_DEPTH} levels deep "
                    "(the limit for a scenario file)",
                    line=line,
                )
            self._add(size, line, alias=anchor)
            self._grow(height)

    def _add(self, count: int, line: int, *, alias: str | None = None) -> None:
        self.nodes += count
        if self.nodes > MAX_NODES:
            cause = f"alias *{alias} expands it to" if alias is not None else "it holds"
            raise _LimitError(
                f"invalid YAML: {cause} more than {MAX_NODES} nodes"
                f"{' (an alias bomb?)' if alias is not None else ''}; the limit for a scenario file is {MAX_NODES}",
                line=line,
            )

    def _grow(self, child_height: int) -> None:
        if self.open:
            parent = self.open[-1]
            parent.height = max(parent.height, child_height + 1)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, metered (see the module docstring); dates and times stay strings."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._meter = _Meter()

    def get_event(self) -> yaml.Event:
        event = cast(yaml.Event, super().get_event())  # type: ignore[no-untyped-call]
        self._meter.see(event)
        return event


def _timestamp_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    # The resolver tags only plain scalars as timestamps; no scenario field is a date.
    return str(loader.construct_scalar(cast(yaml.ScalarNode, node)))


_BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


# --- checks on the composed tree -----------------------------------------------------------------


def _check_keys_and_scalars(loader: _BoundedLoader, root: yaml.Node, source: str) -> None:
    """Refuse repeated keys, non-finite or huge numbers, and scalars their explicit tag cannot read.

    Each node is visited once (an alias's target is checked where it is defined); the
    metered composer has already bounded the tree's size and depth.
    """
    for node, path, key_line in _walk(root):
        if isinstance(node, yaml.MappingNode):
            _check_duplicate_keys(node, path, source)
        elif isinstance(node, yaml.ScalarNode):
            problem = _scalar_problem(loader, node)
            if problem is not None:
                line = key_line if key_line is not None else node.start_mark.line + 1
                raise ScenarioError(problem, source=source, line=line, path=format_path(path))


def _walk(root: yaml.Node) -> Iterator[tuple[yaml.Node, list[str | int], int | None]]:
    """Yield each node once with its data path and, for a mapping value, its key's line (depth-first)."""
    visited: set[int] = set()
    stack: list[tuple[yaml.Node, list[str | int], int | None]] = [(root, [], None)]
    while stack:
        node, path, key_line = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        yield node, path, key_line
        children: list[tuple[yaml.Node, list[str | int], int | None]] = []
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.tag == _MERGE_TAG:  # merged entries read as the mapping's own
                    merged = value.value if isinstance(value, yaml.SequenceNode) else [value]
                    children.extend((each, path, None) for each in merged)
                    continue
                name: str | int = key.value if isinstance(key, yaml.ScalarNode) else "?"
                children.append((key, [*path, name], None))
                children.append((value, [*path, name], key.start_mark.line + 1))
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, [*path, index], None) for index, item in enumerate(node.value)]
        stack.extend(reversed(children))


def _check_duplicate_keys(node: yaml.MappingNode, path: list[str | int], source: str) -> None:
    first_line: dict[str, int] = {}
    for key, _ in node.value:
        if key.tag == _MERGE_TAG or not isinstance(key, yaml.ScalarNode):
            continue
        line = key.start_mark.line + 1
        if key.value in first_line:
            raise ScenarioError(
                f"duplicate key {key.value!r} (first on line {first_line[key.value]})",
                source=source,
                line=line,
                path=format_path([*path, key.value]),
            )
        first_line[key.value] = line


def _scalar_problem(loader: _BoundedLoader, node: yaml.ScalarNode) -> str | None:
    """Why the scalar cannot be read as data, or ``None`` when it can (its value is then cached)."""
    if node.tag == _INT_TAG:
        digits = sum(char.isdigit() for char in node.value)
        if digits > MAX_INT_DIGITS:
            return f"the integer has {digits} digits; numbers in a scenario have at most {MAX_INT_DIGITS}"
    try:
        value = loader.construct_object(node)
    except (ValueError, KeyError, TypeError, OverflowError):
        tag = node.tag.removeprefix("tag:yaml.org,2002:")
        return f"invalid YAML: {_preview(node.value)} cannot be read as !!{tag}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{node.value} is not a finite number; give a finite one"
    return None


def _preview(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."


# --- PyYAML's own errors -------------------------------------------------------------------------


def _describe_yaml_error(error: yaml.MarkedYAMLError) -> str:
    """PyYAML's own wording (context, then problem), with the line the context started on."""
    problem = error.problem or "syntax error"
    context = error.context or ""
    if context.startswith("while") and error.context_mark is not None:
        context += f" started on line {error.context_mark.line + 1}"
    return f"invalid YAML: {context}, {problem}" if context else f"invalid YAML: {problem}"


def _yaml_error_line(error: yaml.MarkedYAMLError) -> int | None:
    mark = error.problem_mark or error.context_mark
    return mark.line + 1 if mark is not None else None


def _reader_error(error: yaml.reader.ReaderError, text: str, source: str) -> ScenarioError:
    """A character YAML does not allow (a control character, a lone surrogate), with its line."""
    position = error.position
    character = error.character
    code = character if isinstance(character, int) else ord(character) if character else 0
    return ScenarioError(
        f"invalid YAML: the file holds the character U+{code:04X}, which YAML does not allow ({error.reason})",
        source=source,
        line=text.count("\n", 0, position) + 1,
    )
