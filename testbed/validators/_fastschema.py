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
        for item in value.values():
            if isinstance(item, dict | list):
                _collect(item, found)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                _collect(item, found)


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
            self.is_object: Check = lambda value: isinstance(value, dict) and not _is_blob(value)
            self.is_string: Check = lambda value: isinstance(value, str) or _is_blob(value)
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
        checks: list[Check] = []
        if "type" in schema:
            checks.append(self._type(schema["type"]))
        checks.extend(self._object(schema))
        checks.extend(self._array(schema))
        checks.extend(self._scalar(schema))
        for keyword in ("anyOf", "allOf"):
            if keyword in schema:
                subschemas = schema[keyword]
                if not isinstance(subschemas, list) or not subschemas:
                    raise _UnsupportedError
                checks.append(_combined(keyword, tuple(self.compile(sub) for sub in subschemas)))
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

    def _object(self, schema: dict[str, Any]) -> list[Check]:
        is_object = self.is_object
        checks: list[Check] = []
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise _UnsupportedError
        compiled = tuple((name, self.compile(sub)) for name, sub in properties.items())
        if compiled:

            def check_properties(value: Any) -> bool:
                if not is_object(value):
                    return True
                return all(check(value[name]) for name, check in compiled if name in value)

            checks.append(check_properties)
        if "required" in schema:
            required = schema["required"]
            if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
                raise _UnsupportedError
            names = tuple(required)
            checks.append(lambda value: not is_object(value) or all(name in value for name in names))
        if "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            known = frozenset(properties)
            if extra is False:
                checks.append(lambda value: not is_object(value) or all(key in known for key in value))
            elif isinstance(extra, dict):
                check_extra = self.compile(extra)
                checks.append(
                    lambda value: (
                        not is_object(value)
                        or all(check_extra(item) for key, item in value.items() if key not in known)
                    )
                )
            elif extra is not True:
                raise _UnsupportedError
        if "minProperties" in schema:
            fewest = _count(schema["minProperties"])
            checks.append(lambda value: not is_object(value) or not len(value) < fewest)
        if "maxProperties" in schema:
            most = _count(schema["maxProperties"])
            checks.append(lambda value: not is_object(value) or not len(value) > most)
        return checks

    def _array(self, schema: dict[str, Any]) -> list[Check]:
        checks: list[Check] = []
        if "items" in schema:
            each = self.compile(schema["items"])  # no prefixItems here (it is left to jsonschema): every item
            checks.append(lambda value: not isinstance(value, list) or all(map(each, value)))
        if "minItems" in schema:
            least = _count(schema["minItems"])
            checks.append(lambda value: not isinstance(value, list) or not len(value) < least)
        if "maxItems" in schema:
            most = _count(schema["maxItems"])
            checks.append(lambda value: not isinstance(value, list) or not len(value) > most)
        return checks

    def _scalar(self, schema: dict[str, Any]) -> list[Check]:
        is_string, is_text = self.is_string, self.is_text
        checks: list[Check] = []
        if "minLength" in schema:
            shortest = _count(schema["minLength"])
            checks.append(lambda value: not is_string(value) or (is_text(value) and not len(value) < shortest))
        if "maxLength" in schema:
            longest = _count(schema["maxLength"])
            checks.append(lambda value: not is_string(value) or (is_text(value) and not len(value) > longest))
        if "minimum" in schema:
            low = _limit(schema["minimum"])
            checks.append(lambda value: not _is_number(value) or not value < low)
        if "maximum" in schema:
            high = _limit(schema["maximum"])
            checks.append(lambda value: not _is_number(value) or not value > high)
        if "exclusiveMinimum" in schema:
            above = _limit(schema["exclusiveMinimum"])
            checks.append(lambda value: not _is_number(value) or not value <= above)
        if "exclusiveMaximum" in schema:
            below = _limit(schema["exclusiveMaximum"])
            checks.append(lambda value: not _is_number(value) or not value >= below)
        return checks
