"""References: the ``$root.path`` strings that bind a node's arguments to other values.

Grammar (whitespace is not allowed)::

    reference := "$" root segment*
    root      := "scene" | "item" | <node id>            identifiers: [A-Za-z_][A-Za-z0-9_-]*
    segment   := "." name | "[" integer "]" | "[*]" | ".@content" (first segment only)

* ``$scene`` holds the run's scene: ``image`` (base64 PNG), ``image_path``,
  ``width`` and ``height``; a scene reference must name one of these fields.
* ``$item`` is the current element of a ``for_each`` node's list.
* ``$<node id>`` is that node's payload (its structured result); for a
  ``for_each`` node, the list of its per-item payloads. ``$<node id>.@content``
  addresses the node's raw MCP content blocks instead (for a ``for_each`` node,
  one list of blocks per item).
* ``[*]`` maps the rest of the path over a list: ``$detect.detections[*].bbox``
  is the list of every detection's ``bbox``.

Any string argument starting with ``$`` is a reference; ``$$`` at the start
escapes a literal dollar (``"$$5"`` is the string ``"$5"``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Annotated, Any, Final, Literal, NoReturn

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from testbed._errors import TestbedError

__all__ = [
    "CONTENT_SEGMENT",
    "IDENTIFIER_JSON_SCHEMA",
    "IDENTIFIER_PATTERN",
    "ITEM_ROOT",
    "NO_ITEM",
    "SCENE_FIELDS",
    "SCENE_ROOT",
    "BindingContext",
    "BindingError",
    "ContentSegment",
    "EachSegment",
    "FieldSegment",
    "IndexSegment",
    "InvalidReferenceError",
    "Reference",
    "ReferenceText",
    "Segment",
    "check_identifier",
    "format_path",
    "is_reference",
    "iter_references",
    "parse_reference",
    "resolve",
    "resolve_value",
]

SCENE_ROOT: Final = "scene"
"""The root naming the run's scene."""
ITEM_ROOT: Final = "item"
"""The root naming the current element of a ``for_each`` node's list."""
SCENE_FIELDS: Final = ("image", "image_path", "width", "height")
"""The fields a ``$scene`` reference may name."""
CONTENT_SEGMENT: Final = "@content"
"""The first segment that addresses a node's raw MCP content blocks instead of its payload."""
IDENTIFIER_PATTERN: Final = r"[A-Za-z_][A-Za-z0-9_-]*"
"""What a root, a node id or a field name in a path looks like."""

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
IDENTIFIER_JSON_SCHEMA: Final = {"type": "string", "pattern": f"^{IDENTIFIER_PATTERN}$"}
"""The JSON Schema of an identifier (a node id, a server alias)."""


def check_identifier(value: str, *, what: str) -> str:
    """Return ``value`` if it is an identifier (:data:`IDENTIFIER_PATTERN`).

    Raises:
        ValueError: it is not; the message names ``what`` it was meant to be.
    """
    if _IDENTIFIER.fullmatch(value) is None:
        raise ValueError(f"{what} {value!r} must start with a letter or '_' and hold only letters, digits, '_' and '-'")
    return value


_BRACKET = re.compile(r"\[(\*|-?[0-9]+)\]")
_ESCAPE: Final = "$$"
_MARK: Final = "$"


class InvalidReferenceError(TestbedError, ValueError):
    """A string that starts with ``$`` but is not a well-formed reference."""


class BindingError(TestbedError):
    """A reference that cannot be resolved against a run's values.

    Attributes:
        reference: the reference as written.
        segment: the segment at which resolution failed (``""`` for the root).
    """

    def __init__(self, message: str, *, reference: str, segment: str) -> None:
        super().__init__(message)
        self.reference = reference
        self.segment = segment


_SEGMENT_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class FieldSegment(BaseModel):
    """``.name``: a key of a mapping."""

    model_config = _SEGMENT_CONFIG

    kind: Literal["field"] = "field"
    """Discriminator."""
    name: str
    """The key to look up."""

    def __str__(self) -> str:
        return f".{self.name}"


class IndexSegment(BaseModel):
    """``[n]``: one element of a list; negative indexes count from the end."""

    model_config = _SEGMENT_CONFIG

    kind: Literal["index"] = "index"
    """Discriminator."""
    index: int
    """The element's position."""

    def __str__(self) -> str:
        return f"[{self.index}]"


class EachSegment(BaseModel):
    """``[*]``: apply the rest of the path to every element of a list."""

    model_config = _SEGMENT_CONFIG

    kind: Literal["each"] = "each"
    """Discriminator."""

    def __str__(self) -> str:
        return "[*]"


class ContentSegment(BaseModel):
    """``.@content``: the node's raw MCP content blocks (only as a node reference's first segment)."""

    model_config = _SEGMENT_CONFIG

    kind: Literal["content"] = "content"
    """Discriminator."""

    def __str__(self) -> str:
        return f".{CONTENT_SEGMENT}"


Segment = Annotated[FieldSegment | IndexSegment | EachSegment | ContentSegment, Field(discriminator="kind")]
"""One step of a reference's path."""


def format_path(path: Sequence[Segment]) -> str:
    """Write a path without its root and leading dot, e.g. ``detections[*].bbox`` or ``@content[0].data``."""
    return "".join(str(segment) for segment in path).removeprefix(".")


class Reference(BaseModel):
    """A parsed reference: a root and a path of segments. ``str()`` gives it back as written."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    root: str
    """``scene``, ``item`` or a node id."""
    path: tuple[Segment, ...] = ()
    """The segments after the root."""

    def __str__(self) -> str:
        return f"{_MARK}{self.root}{''.join(str(segment) for segment in self.path)}"

    @property
    def path_text(self) -> str:
        """The path without the root, e.g. ``detections[*].bbox`` (``""`` for the root itself)."""
        return format_path(self.path)

    @property
    def is_node(self) -> bool:
        """Whether the root is a node id (not ``scene`` or ``item``)."""
        return self.root not in (SCENE_ROOT, ITEM_ROOT)

    @property
    def uses_content(self) -> bool:
        """Whether the reference addresses the node's raw content blocks (``.@content``)."""
        return bool(self.path) and isinstance(self.path[0], ContentSegment)


def is_reference(value: object) -> bool:
    """Whether an argument value is a reference (a string starting with ``$`` but not ``$$``)."""
    return isinstance(value, str) and value.startswith(_MARK) and not value.startswith(_ESCAPE)


@functools.lru_cache(maxsize=4096)
def parse_reference(text: str) -> Reference:
    """Parse a reference such as ``$detect.detections[*].bbox``.

    A workflow's references are parsed again at every call it binds: each text's (immutable) parse is kept.

    Raises:
        InvalidReferenceError: ``text`` is not a well-formed reference; the message names the
            position and what was expected there.
    """
    if not is_reference(text):
        raise InvalidReferenceError(f"{text!r} is not a reference: a reference starts with '$' (and '$$' escapes it)")
    match = _IDENTIFIER.match(text, 1)
    if match is None:
        raise InvalidReferenceError(
            f"invalid reference {text!r}: expected a name after '$' (write '$$' for a literal '$')"
        )
    root = match.group()
    position = match.end()
    path: list[Segment] = []
    while position < len(text):
        char = text[position]
        if char == "." and text.startswith(CONTENT_SEGMENT, position + 1):
            if path or root in (SCENE_ROOT, ITEM_ROOT):
                raise InvalidReferenceError(
                    f"invalid reference {text!r}: '.{CONTENT_SEGMENT}' may only follow a node id, as the first segment"
                )
            path.append(ContentSegment())
            position += 1 + len(CONTENT_SEGMENT)
        elif char == ".":
            match = _IDENTIFIER.match(text, position + 1)
            if match is None:
                raise InvalidReferenceError(
                    f"invalid reference {text!r}: expected a field name after '.' at position {position}"
                )
            path.append(FieldSegment(name=match.group()))
            position = match.end()
        elif char == "[":
            match = _BRACKET.match(text, position)
            if match is None:
                raise InvalidReferenceError(
                    f"invalid reference {text!r}: expected '[<integer>]' or '[*]' at position {position}"
                )
            inner = match.group(1)
            path.append(EachSegment() if inner == "*" else IndexSegment(index=int(inner)))
            position = match.end()
        else:
            raise InvalidReferenceError(
                f"invalid reference {text!r}: unexpected {char!r} at position {position} (expected '.' or '[')"
            )
    if root == SCENE_ROOT:
        first = path[0] if path else None
        if not isinstance(first, FieldSegment) or first.name not in SCENE_FIELDS:
            raise InvalidReferenceError(
                f"invalid reference {text!r}: $scene must be followed by one of: "
                + ", ".join(f".{name}" for name in SCENE_FIELDS)
            )
    return Reference(root=root, path=tuple(path))


def _coerce_reference(value: object) -> object:
    if isinstance(value, str):
        return parse_reference(value)
    return value


ReferenceText = Annotated[
    Reference,
    BeforeValidator(_coerce_reference),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\$[A-Za-z_]", "description": "A reference such as $detect.boxes"}),
]
"""A :class:`Reference` written as its text in YAML and JSON (``"$detect.detections"``)."""


def iter_references(
    value: object, *, prefix: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Yield ``(location, text)`` for every reference inside a nested argument value.

    ``location`` is the path of keys and list indexes from the top of ``value``
    (prefixed by ``prefix``); ``$$`` escapes are not references and are skipped.
    """
    if isinstance(value, str):
        if is_reference(value):
            yield prefix, value
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            yield from iter_references(inner, prefix=(*prefix, str(key)))
    elif isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            yield from iter_references(inner, prefix=(*prefix, index))


class _NoItem(Enum):
    NO_ITEM = "no item"


NO_ITEM: Final = _NoItem.NO_ITEM
"""The :attr:`BindingContext.item` of a context outside any ``for_each`` node."""


@dataclass(frozen=True, kw_only=True)
class BindingContext:
    """The values references resolve against during one run.

    All values are plain JSON values (dicts, lists, strings, numbers); MCP
    content blocks are given as their JSON dicts (``block.model_dump(mode="json", by_alias=True)``).
    """

    scene: Mapping[str, Any]
    """The scene's fields: ``image`` (base64 PNG), ``image_path``, ``width`` and ``height``."""
    payloads: Mapping[str, Any] = field(default_factory=dict)
    """Each finished node's payload, by node id; for a ``for_each`` node, the list of its per-item payloads."""
    contents: Mapping[str, Any] = field(default_factory=dict)
    """Each finished node's content blocks, by node id; for a ``for_each`` node, one list of blocks per item."""
    item: Any = NO_ITEM
    """The current element of the ``for_each`` list, or :data:`NO_ITEM` outside a ``for_each`` node."""

    def with_item(self, item: Any) -> BindingContext:
        """Return a copy whose current ``for_each`` element is ``item``."""
        return replace(self, item=item)


def resolve(reference: Reference, context: BindingContext) -> Any:
    """Return the value ``reference`` points at in ``context``.

    Raises:
        BindingError: the root is not available (a node that has not run, ``$item`` outside a
            ``for_each`` node) or a segment does not fit the value it is applied to; the message
            names the reference and the failing segment.
    """
    path = reference.path
    if reference.root == SCENE_ROOT:
        value: Any = context.scene
    elif reference.root == ITEM_ROOT:
        if context.item is NO_ITEM:
            text = str(reference)
            raise BindingError(
                f"cannot resolve {text}: $item is only available inside a for_each node", reference=text, segment=""
            )
        value = context.item
    elif reference.uses_content:
        if reference.root not in context.contents:
            text = str(reference)
            raise BindingError(
                f"cannot resolve {text}: node {reference.root!r} has no content blocks (has it run?)",
                reference=text,
                segment=str(path[0]),
            )
        value = context.contents[reference.root]
        path = path[1:]
    else:
        if reference.root not in context.payloads:
            text = str(reference)
            raise BindingError(
                f"cannot resolve {text}: node {reference.root!r} has no result (has it run?)",
                reference=text,
                segment="",
            )
        value = context.payloads[reference.root]
    return _walk(value, path, reference)


def _walk(value: Any, path: Sequence[Segment], reference: Reference) -> Any:
    for position, segment in enumerate(path):
        if isinstance(segment, EachSegment):
            if not isinstance(value, list | tuple):
                _fail(reference, segment, f"expected a list, got {_describe(value)}")
            rest = path[position + 1 :]
            return [_walk(element, rest, reference) for element in value]
        if isinstance(segment, FieldSegment):
            if type(value) is not dict and not isinstance(value, Mapping):  # a dict told without the ABC check
                _fail(reference, segment, f"expected a mapping with field {segment.name!r}, got {_describe(value)}")
            if segment.name not in value:
                available = ", ".join(repr(str(key)) for key in value) or "none"
                _fail(reference, segment, f"no field {segment.name!r} (fields: {available})")
            value = value[segment.name]
        elif isinstance(segment, IndexSegment):
            if not isinstance(value, list | tuple):
                _fail(reference, segment, f"expected a list, got {_describe(value)}")
            if not -len(value) <= segment.index < len(value):
                _fail(reference, segment, f"index {segment.index} is out of range for a list of {len(value)}")
            value = value[segment.index]
        else:  # ContentSegment: only valid first, which resolve() has consumed
            _fail(reference, segment, f"'.{CONTENT_SEGMENT}' is only valid right after a node id")
    return value


def _fail(reference: Reference, segment: Segment, problem: str) -> NoReturn:
    text = str(reference)  # only now: resolving is hot, failing is not
    raise BindingError(f"cannot resolve {text}: at '{segment}': {problem}", reference=text, segment=str(segment))


def _describe(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    if value is None:
        return "null"
    return type(value).__name__


def resolve_value(value: Any, context: BindingContext) -> Any:
    """Resolve every reference inside a nested argument value and unescape ``$$``.

    Returns a new value; mappings and lists are copied, other values are returned as they are.

    Raises:
        InvalidReferenceError: a string starting with ``$`` is not a well-formed reference.
        BindingError: a reference cannot be resolved.
    """
    if isinstance(value, str):
        if value.startswith(_ESCAPE):
            return value[1:]
        if value.startswith(_MARK):
            return resolve(parse_reference(value), context)
        return value
    if type(value) is dict or isinstance(value, Mapping):  # a dict told without the ABC check
        return {key: resolve_value(inner, context) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [resolve_value(inner, context) for inner in value]
    return value
