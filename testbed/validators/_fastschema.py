"""A fast proof of JSON Schema validity for the plain schemas tool listings use; jsonschema decides the rest.

:func:`compile_check` compiles a draft 2020-12 schema built only from ``type``,
``properties``, ``required``, ``additionalProperties``, ``items``, ``minItems``,
``maxItems``, ``minLength``, ``maxLength``, ``minProperties``,
``maxProperties``, ``minimum``, ``maximum``, ``exclusiveMinimum``,
``exclusiveMaximum``, ``anyOf``, ``allOf`` and ``format`` (an annotation for a
validator built without a format checker), plus keywords jsonschema ignores:
annotations and the testbed's extension keywords, into a predicate that
mirrors ``jsonschema``'s own keyword functions. The predicate answers ``True``
only when the value is valid; ``False`` means *not proven*, and the caller
asks jsonschema, which also writes the error messages. A schema using any
other keyword that jsonschema implements (``$ref``, ``enum``, ``pattern``,
...) or a keyword value of an unexpected type compiles to nothing, so it is
always left to jsonschema. Either way the answer equals jsonschema's.

With ``opaque_blobs`` the predicate reads a value as recorded, before its blob
references are resolved: a ``{"$blob": digest}`` stands for a string whose
content it does not need (a base64 image checked only for being a string), so
proving it valid reads no blob. Anything that would need the string itself (a
length) is not proven.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["Check", "blob_references", "compile_check"]

Check = Callable[[Any], bool]
"""``True``: the value is valid under the schema; ``False``: not proven (ask jsonschema)."""

_IMPLEMENTED = frozenset(Draft202012Validator.VALIDATORS)
"""Keywords jsonschema acts on; any other keyword is ignored by it, and so here."""

_HANDLED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "anyOf",
        "allOf",
        "format",  # an annotation only: the validators here are built without a format checker
    }
)


class _UnsupportedError(Exception):
    """The schema uses something this module does not mirror."""


_PLAIN_NUMBERS = (int, float)
"""The number types JSON decodes to, tested by exact type before the slower abstract :class:`numbers.Number`."""


def _is_number(value: Any) -> bool:
    return type(value) in _PLAIN_NUMBERS or (not isinstance(value, bool) and isinstance(value, numbers.Number))


def _is_integer(value: Any) -> bool:  # draft 6 and later: 1.0 is an integer
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def compile_check(schema: Any, *, opaque_blobs: bool = False) -> Check | None:
    """A validity predicate for ``schema``, or ``None`` when it uses anything not mirrored here."""
    try:
        return _Compiler(opaque_blobs).compile(schema)
    except _UnsupportedError:
        return None


def blob_references(value: Any) -> list[str]:
    """The digests of every blob reference inside a recorded value (as :func:`testbed.events.internalize` sees them)."""
    found: list[str] = []
    _collect(value, found)
    return found


def _collect(value: Any, found: list[str]) -> None:
    if isinstance(value, dict):
        if len(value) == 1 and "$blob" in value:
            found.append(value["$blob"])
            return
        _collect_in(value.values(), found)
    elif isinstance(value, list):
        _collect_in(value, found)


def _collect_in(items: Any, found: list[str]) -> None:
    """:func:`_collect` of each of a container's items, in order; a plain list or dict of leaves (a box, a size)
    is passed over here, without a call."""
    if _LEAVES.issuperset(map(type, items)):  # no container inside (checked at C speed)
        return
    leaves = _LEAVES
    for item in items:
        kind = type(item)
        if kind is dict:
            if len(item) == 1 and "$blob" in item:
                found.append(item["$blob"])
            elif not leaves.issuperset(map(type, item.values())):
                _collect_in(item.values(), found)
        elif kind is list:
            if not leaves.issuperset(map(type, item)):
                _collect_in(item, found)
        elif isinstance(item, dict | list):
            _collect(item, found)


_LEAVES = frozenset({str, int, float, bool, type(None)})
"""Types that hold no blob reference."""


def _is_blob(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "$blob" in value


def _always(value: Any) -> bool:
    return True


def _never(value: Any) -> bool:
    return False


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _UnsupportedError
    return value


def _limit(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _UnsupportedError
    return value


def _combined(keyword: str, parts: tuple[Check, ...]) -> Check:
    if keyword == "anyOf":
        return lambda value: any(part(value) for part in parts)
    return _all_of(parts)


_CHAINED_CHECKS = 16
"""At most this many checks are chained by :func:`_all_of`; more go through one ``all``."""


def _all_of(checks: tuple[Check, ...]) -> Check:
    """Whether every check holds, in order, stopping at the first that fails (a chain of ``and``, no generator)."""
    if len(checks) > _CHAINED_CHECKS:  # a schema's long allOf: no deep recursion
        return lambda value: all(check(value) for check in checks)
    first, rest = checks[0], checks[1:]
    if not rest:
        return first
    later = _all_of(rest)
    return lambda value: first(value) and later(value)


class _Compiler:
    def __init__(self, opaque_blobs: bool) -> None:
        if opaque_blobs:
            self.is_object: Check = lambda value: isinstance(value, dict) and not (len(value) == 1 and "$blob" in value)
            self.is_string: Check = lambda value: (
                isinstance(value, str) or (isinstance(value, dict) and len(value) == 1 and "$blob" in value)
            )  # _is_blob, inlined
            self.is_text: Check = lambda value: isinstance(value, str)
            """A string whose content is known (a blob's is not read)."""
        else:
            self.is_object = lambda value: isinstance(value, dict)
            self.is_string = self.is_text = lambda value: isinstance(value, str)
        self.types: dict[str, Check] = {
            "array": lambda value: isinstance(value, list),
            "boolean": lambda value: isinstance(value, bool),
            "integer": _is_integer,
            "null": lambda value: value is None,
            "number": _is_number,
            "object": self.is_object,
            "string": self.is_string,
        }

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise _UnsupportedError
        if any(key in _IMPLEMENTED and key not in _HANDLED for key in schema):
            raise _UnsupportedError
        test = self._type(schema["type"]) if "type" in schema else None
        objects, arrays, numbers = self._object(schema), self._array(schema), _Numbers.of(schema)
        scalars = self._scalar(schema, numbers)
        combined: list[Check] = []
        for keyword in ("anyOf", "allOf"):
            if keyword in schema:
                subschemas = schema[keyword]
                if not isinstance(subschemas, list) or not subschemas:
                    raise _UnsupportedError
                combined.append(_combined(keyword, tuple(self.compile(sub) for sub in subschemas)))
        # One type fuses its keywords into one check: the other types' keywords hold for any value of it.
        if test is not None and schema["type"] == "object" and objects.checks:
            return _all_of((objects.fused(test), *combined))
        if test is not None and schema["type"] == "array" and arrays.checks:
            return _all_of((arrays.fused(test), *combined))
        if test is not None and schema["type"] in ("number", "integer") and numbers.bounds:
            return _all_of((numbers.fused(test), *combined))
        checks = [*([test] if test is not None else []), *objects.checks, *arrays.checks, *scalars, *combined]
        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]
        return _all_of(tuple(checks))

    def _type(self, types: Any) -> Check:
        names = [types] if isinstance(types, str) else types
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n in self.types for n in names):
            raise _UnsupportedError  # jsonschema raises UnknownType or SchemaError on these: let it
        tests = tuple(self.types[name] for name in names)
        if len(tests) == 1:
            return tests[0]
        return lambda value: any(test(value) for test in tests)

    def _object(self, schema: dict[str, Any]) -> _Objects:
        is_object = self.is_object
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise _UnsupportedError
        parts = _Objects(is_object, tuple((name, self.compile(sub)) for name, sub in properties.items()))
        parts.known = frozenset(properties)
        if "required" in schema:
            required = schema["required"]
            if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
                raise _UnsupportedError
            parts.required = tuple(required)
        if "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            if extra is False:
                parts.extra = _never
            elif isinstance(extra, dict):
                parts.extra = self.compile(extra)
            elif extra is not True:
                raise _UnsupportedError
        if "minProperties" in schema:
            parts.fewest = _count(schema["minProperties"])
        if "maxProperties" in schema:
            parts.most = _count(schema["maxProperties"])
        parts.checks = parts.separate()
        return parts

    def _array(self, schema: dict[str, Any]) -> _Arrays:
        parts = _Arrays()
        if "items" in schema:
            parts.each = self.compile(schema["items"])  # no prefixItems here (it is left to jsonschema): every item
        if "minItems" in schema:
            parts.least = _count(schema["minItems"])
        if "maxItems" in schema:
            parts.most = _count(schema["maxItems"])
        parts.checks = parts.separate()
        return parts

    def _scalar(self, schema: dict[str, Any], numbers: _Numbers) -> list[Check]:
        is_string, is_text = self.is_string, self.is_text
        checks: list[Check] = []
        if "minLength" in schema:
            shortest = _count(schema["minLength"])
            checks.append(lambda value: not is_string(value) or (is_text(value) and not len(value) < shortest))
        if "maxLength" in schema:
            longest = _count(schema["maxLength"])
            checks.append(lambda value: not is_string(value) or (is_text(value) and not len(value) > longest))
        checks.extend(numbers.separate())
        return checks


class _Objects:
    """An object schema's keywords: each as its own check (:meth:`separate`), or fused with a type test."""

    def __init__(self, is_object: Check, properties: tuple[tuple[str, Check], ...]) -> None:
        self.is_object = is_object
        self.properties = properties
        self.known: frozenset[str] = frozenset()
        self.required: tuple[str, ...] | None = None
        self.extra: Check | None = None
        """``additionalProperties``' check (:func:`_never` for ``false``); ``None``: absent or ``true``."""
        self.fewest: int | None = None
        self.most: int | None = None
        self.checks: list[Check] = []

    def separate(self) -> list[Check]:
        """One check per keyword, each holding for a value that is not an object."""
        is_object, compiled, known, extra = self.is_object, self.properties, self.known, self.extra
        checks: list[Check] = []
        if compiled:

            def check_properties(value: Any) -> bool:
                if not is_object(value):
                    return True
                return all(check(value[name]) for name, check in compiled if name in value)

            checks.append(check_properties)
        if (names := self.required) is not None:
            checks.append(lambda value: not is_object(value) or all(name in value for name in names))
        if extra is _never:
            checks.append(lambda value: not is_object(value) or all(key in known for key in value))
        elif extra is not None:
            checks.append(
                lambda value: (
                    not is_object(value) or all(extra(item) for key, item in value.items() if key not in known)
                )
            )
        if (fewest := self.fewest) is not None:
            checks.append(lambda value: not is_object(value) or not len(value) < fewest)
        if (most := self.most) is not None:
            checks.append(lambda value: not is_object(value) or not len(value) > most)
        return checks

    def fused(self, test: Check) -> Check:
        """``test`` (an object type test) and every keyword, in one check: the keywords read an object."""
        compiled, known, extra = self.properties, self.known, self.extra
        required = self.required or ()
        fewest, most = self.fewest, self.most

        def check_object(value: Any) -> bool:
            if not test(value):
                return False
            for name, check in compiled:
                if name in value and not check(value[name]):
                    return False
            for name in required:
                if name not in value:
                    return False
            if extra is _never:
                for key in value:
                    if key not in known:
                        return False
            elif extra is not None:
                for key, item in value.items():
                    if key not in known and not extra(item):
                        return False
            return (fewest is None or not len(value) < fewest) and (most is None or not len(value) > most)

        return check_object


class _Arrays:
    """An array schema's keywords: each as its own check (:meth:`separate`), or fused with a type test."""

    def __init__(self) -> None:
        self.each: Check | None = None
        self.least: int | None = None
        self.most: int | None = None
        self.checks: list[Check] = []

    def separate(self) -> list[Check]:
        """One check per keyword, each holding for a value that is not an array."""
        checks: list[Check] = []
        if (each := self.each) is not None:
            every = _every(each)
            checks.append(lambda value: not isinstance(value, list) or every(value))
        if (least := self.least) is not None:
            checks.append(lambda value: not isinstance(value, list) or not len(value) < least)
        if (most := self.most) is not None:
            checks.append(lambda value: not isinstance(value, list) or not len(value) > most)
        return checks

    def fused(self, test: Check) -> Check:
        """``test`` (an array type test) and every keyword, in one check."""
        each, least, most = self.each, self.least, self.most
        every = _every(each) if each is not None else None

        def check_array(value: Any) -> bool:
            if not test(value):
                return False
            if (least is not None and len(value) < least) or (most is not None and len(value) > most):
                return False
            return every is None or every(value)

        return check_array


def _every(each: Check) -> Check:
    """Whether ``each`` holds for every item of a list: for a plain number or integer type test, the items' types
    are looked at once (at C speed) first, and only a list holding any other type is tested item by item."""
    if each is _is_number:
        return lambda items: _PLAIN_TYPES.issuperset(map(type, items)) or all(map(each, items))
    if each is _is_integer:
        return lambda items: _INTEGER_TYPES.issuperset(map(type, items)) or all(map(each, items))
    return lambda items: all(map(each, items))


_PLAIN_TYPES = frozenset(_PLAIN_NUMBERS)
"""Types every value of which :func:`_is_number` holds for."""
_INTEGER_TYPES = frozenset({int})
"""Types every value of which :func:`_is_integer` holds for."""


class _Numbers:
    """A schema's numeric bounds: each as its own check (:meth:`separate`), or fused with a number type test."""

    def __init__(self, bounds: list[tuple[str, int | float]]) -> None:
        self.bounds = bounds

    @classmethod
    def of(cls, schema: dict[str, Any]) -> _Numbers:
        keywords = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        return cls([(keyword, _limit(schema[keyword])) for keyword in keywords if keyword in schema])

    def separate(self) -> list[Check]:
        """One check per bound, each holding for a value that is not a number."""
        return [_bounded(keyword, limit) for keyword, limit in self.bounds]

    def fused(self, test: Check) -> Check:
        """``test`` (a number or integer type test, so the value is a number) and every bound, in one check."""
        low = high = above = below = None
        for keyword, limit in self.bounds:
            if keyword == "minimum":
                low = limit
            elif keyword == "maximum":
                high = limit
            elif keyword == "exclusiveMinimum":
                above = limit
            else:
                below = limit

        def check_number(value: Any) -> bool:
            return (
                test(value)
                and (low is None or not value < low)
                and (high is None or not value > high)
                and (above is None or not value <= above)
                and (below is None or not value >= below)
            )

        return check_number


def _bounded(keyword: str, limit: int | float) -> Check:
    if keyword == "minimum":
        return lambda value: not _is_number(value) or not value < limit
    if keyword == "maximum":
        return lambda value: not _is_number(value) or not value > limit
    if keyword == "exclusiveMinimum":
        return lambda value: not _is_number(value) or not value <= limit
    return lambda value: not _is_number(value) or not value >= limit
