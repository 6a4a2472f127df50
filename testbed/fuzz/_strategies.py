"""Hypothesis strategies for malformed tool arguments, derived from a tool's published ``inputSchema``.

Each property gets mostly values of its declared type that are wrong in content
(degenerate numbers, path traversal, broken images), and sometimes a value of
another type; required properties go missing and undeclared ones appear.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from testbed.fuzz._payloads import image_payloads
from testbed.protocol import CLOCK_META_KEY, SCOPE_META_KEY

__all__ = ["arguments_strategy", "meta_strategy"]

Json = Any
Strategy = st.SearchStrategy[Any]

SPECIAL_NUMBERS: tuple[float | int, ...] = (
    0,
    -0.0,
    1,
    -1,
    0.5,
    5e-324,
    1e308,
    -1e308,
    math.inf,
    -math.inf,
    math.nan,
    2**31,
    2**63,
    2**64 + 1,
    10**30,
    -(2**63),
    -(10**6),
)
"""Degenerate and huge numbers: signed zero, subnormal, the float range's edges, non-finite, past int64."""

SPECIAL_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "/",
    "~/.ssh/id_rsa",
    "file:///etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "C:\\Windows\\win.ini",
    "a\x00b",
    "x" * 300,
    "d/" * 2000,
    "12; cat /etc/passwd",
    "$(touch /tmp/pwned)",
    "1e309",
    "NaN",
    "null",
    "data:image/png;base64,",
    "data:,",
    "\u00fc\u00df/\u2603.png",
)
"""Strings a careless tool would trust: traversal, absolute and over-long paths, NUL, shell and number injection."""

_HUGE_LENGTHS = (10_000, 1_000_000)
_HUGE_COUNTS = (1_000, 10_000)
"""Array lengths far past any declared size; kept below a million, where argument validation alone takes seconds."""

_CUTS = (0.0, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99)
"""Where images are truncated. A few fixed points: a truncated JPEG still decodes, and each distinct image
that decodes costs a model inference; corrupt bytes go into PNGs only, whose checksums refuse them."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _truncated(payload: bytes, fraction: float) -> bytes:
    return payload[: int(len(payload) * fraction)]


def _corrupted(payload: bytes, position: float, value: int) -> bytes:
    # Keep the 8-byte signature, so the decoder (not the format probe) meets the damage.
    index = 8 + int((len(payload) - 8) * position) if len(payload) > 8 else 0
    return payload[:index] + bytes([value]) + payload[index + 1 :]


def _image_bytes() -> Strategy:
    payloads = image_payloads()
    every = (*payloads.valid, payloads.oversized)
    pngs = tuple(payload for payload in payloads.valid if payload.startswith(b"\x89PNG"))
    return st.one_of(
        st.sampled_from(payloads.valid),
        st.sampled_from(payloads.bombs),
        st.sampled_from(payloads.degenerate),
        st.just(payloads.oversized),
        st.builds(_truncated, st.sampled_from(every), st.sampled_from(_CUTS)),
        st.builds(_corrupted, st.sampled_from(pngs), st.floats(0.0, 1.0), st.integers(0, 255)),
        st.binary(max_size=256),
        st.binary(max_size=256).map(lambda tail: b"\x89PNG\r\n\x1a\n" + tail),
    )


def _image_text() -> Strategy:
    """A string meant as a base64 image: mostly base64 of broken images, sometimes text that is not base64."""
    encoded = _image_bytes().map(_b64)
    return st.one_of(
        encoded,
        encoded,
        encoded,
        encoded.map(lambda text: "data:image/png;base64," + text),
        encoded.map(lambda text: text[:-1]),
        st.text(max_size=24),
        st.sampled_from(SPECIAL_STRINGS),
        st.sampled_from(_HUGE_LENGTHS).map(lambda length: "A" * length),
    )


def _plain_text() -> Strategy:
    return st.one_of(
        st.sampled_from(SPECIAL_STRINGS),
        st.text(max_size=40),
        st.sampled_from(_HUGE_LENGTHS).map(lambda length: "h" * length),
        _image_bytes().map(_b64),
    )


def _looks_like_image(name: str, schema: Mapping[str, Json]) -> bool:
    declared = schema.get("modality") == "image" or schema.get("semantic_role") == "image"
    lowered = name.lower()
    return declared or ("image" in lowered and not lowered.endswith("id")) or "b64" in lowered or "base64" in lowered


def _numbers(integer: bool) -> Strategy:
    typed = st.integers() if integer else st.floats()
    return st.one_of(typed, st.sampled_from(SPECIAL_NUMBERS), st.floats(), st.sampled_from(("1e309", "-0", "3")))


def _wrong_type() -> Strategy:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=4),
        st.dictionaries(st.text(max_size=6), scalars, max_size=3),
    )


def _array(name: str, schema: Mapping[str, Json]) -> Strategy:
    items = _value(name, schema.get("items", {}))
    declared = schema.get("minItems")
    exact = st.lists(items, min_size=declared, max_size=declared) if isinstance(declared, int) else st.nothing()
    return st.one_of(
        exact,
        exact,
        st.lists(items, max_size=6),
        st.lists(items, min_size=40, max_size=50),
        st.sampled_from(_HUGE_COUNTS).map(lambda count: [0] * count),
    )


def _object(schema: Mapping[str, Json]) -> Strategy:
    properties: Mapping[str, Json] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    values = {name: _value(name, sub) for name, sub in properties.items()}
    full = st.fixed_dictionaries(
        {name: strategy for name, strategy in values.items() if name in required},
        optional={name: strategy for name, strategy in values.items() if name not in required},
    )
    partial = st.fixed_dictionaries({}, optional=values)
    extras = st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda key: key not in properties),
        _wrong_type(),
        min_size=1,
        max_size=3,
    )
    with_extras = st.tuples(full, extras).map(lambda pair: {**pair[0], **pair[1]})
    return st.one_of(full, full, full, partial, with_extras)


def _typed(name: str, schema: Mapping[str, Json]) -> Strategy:
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list) and branches:
        rest = {key: value for key, value in schema.items() if key not in ("anyOf", "oneOf")}
        return st.one_of(*(_typed(name, {**rest, **branch}) for branch in branches))
    kind = schema.get("type")
    if kind == "string":
        return _image_text() if _looks_like_image(name, schema) else _plain_text()
    if kind in ("number", "integer"):
        return _numbers(kind == "integer")
    if kind == "array":
        return _array(name, schema)
    if kind == "object":
        return _object(schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return _wrong_type()


def _value(name: str, schema: Mapping[str, Json]) -> Strategy:
    typed = _typed(name, schema)
    return st.one_of(typed, typed, typed, _wrong_type())


def arguments_strategy(input_schema: Mapping[str, Json]) -> st.SearchStrategy[dict[str, Json]]:
    """Malformed arguments for a tool with this ``inputSchema`` (an object schema)."""
    return _object(input_schema)


def meta_strategy() -> st.SearchStrategy[dict[str, Json] | None]:
    """A request ``_meta``: mostly absent, sometimes the testbed's keys with wrong values."""
    wrong = st.fixed_dictionaries({}, optional={SCOPE_META_KEY: _wrong_type(), CLOCK_META_KEY: _wrong_type()})
    return st.one_of(st.none(), st.none(), st.none(), st.none(), st.none(), st.none(), wrong)
