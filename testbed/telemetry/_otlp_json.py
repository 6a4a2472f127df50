"""OTLP/JSON as the OpenTelemetry specification writes it, not as protobuf's JSON mapping does.

The OTLP JSON encoding differs from protobuf's canonical mapping in two ways that matter to a collector's
``otlpjsonfile`` receiver: trace and span IDs are hex strings (not base64), and enums are integers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, Final

from google.protobuf.json_format import MessageToDict, ParseDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = ["otlp_json", "parse_otlp_json"]

_ID_FIELDS: Final = frozenset({"traceId", "spanId", "parentSpanId"})


def otlp_json(request: ExportTraceServiceRequest) -> str:
    """One request as one line of OTLP JSON (hex IDs, integer enums)."""
    document = MessageToDict(request, use_integers_for_enums=True)
    return json.dumps(_map_ids(document, _base64_to_hex), separators=(",", ":"))


def parse_otlp_json(line: str) -> ExportTraceServiceRequest:
    """A request read back from one line of OTLP JSON.

    Raises:
        ValueError: not OTLP JSON of an ``ExportTraceServiceRequest`` (a malformed line, or an ID that is not hex).
    """
    request = ExportTraceServiceRequest()
    ParseDict(_map_ids(json.loads(line), _hex_to_base64), request)
    return request


def _map_ids(value: Any, convert: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {
            key: convert(item) if key in _ID_FIELDS and isinstance(item, str) else _map_ids(item, convert)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_map_ids(item, convert) for item in value]
    return value


def _base64_to_hex(text: str) -> str:
    return base64.b64decode(text).hex()


def _hex_to_base64(text: str) -> str:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"OTLP JSON IDs are hex strings, got {text!r}") from None
    return base64.b64encode(raw).decode("ascii")
