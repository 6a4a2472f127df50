"""Schema-format validators: output schemas (missing, loose, violated), arguments, error payloads, field names.

A tool's schemas are read from the listing recorded in the header (what the
server declared when the experiment started); results from the recorded
``tools/call`` responses, with blob references resolved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from testbed.events import CallEvent, CallOutcomeKind
from testbed.validators._fastschema import Check, blob_references, compile_check
from testbed.validators._model import RunRecord, ValidatorSpec, Violation

__all__ = [
    "VALIDATORS",
    "check_arguments_invalid",
    "check_error_in_payload",
    "check_field_name_divergence",
    "check_output_schema_loose",
    "check_output_schema_missing",
    "check_structured_mismatch",
    "check_text_json_without_schema",
    "listed_tool",
    "schema_errors",
]

_INDEX = re.compile(r"\[[^\]]*\]")


def listed_tool(record: RunRecord, alias: str, tool: str) -> dict[str, Any] | None:
    """The tool as its server listed it when the experiment started (blob references resolved), or ``None``.

    Shared by every run of the experiment: treat it as read-only.
    """
    return record.listed_tools(alias).get(tool)


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Every way ``value`` fails JSON Schema (draft 2020-12) ``schema``, as ``path: message`` lines.

    An invalid schema is itself reported as one error.
    """
    try:
        if proven_valid(value, schema):
            return []
        validator = compiled(schema)
        errors = sorted(validator.iter_errors(value), key=lambda error: list(error.absolute_path))
    except SchemaError as error:
        return [f"invalid schema: {error.message}"]
    return [f"{error.json_path}: {_short(error.message)}" for error in errors]


_Compiled = tuple[dict[str, Any], Draft202012Validator, Check | None, Check | None]
_compiled: dict[int, _Compiled] = {}
"""Validators by schema identity (listings are parsed once per experiment, so their schemas are shared)."""


def _compiled_entry(schema: dict[str, Any]) -> _Compiled:
    cached = _compiled.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached
    if len(_compiled) >= 1024:
        _compiled.clear()
    entry = _compiled[id(schema)] = (
        schema,
        Draft202012Validator(schema),
        compile_check(schema),
        compile_check(schema, opaque_blobs=True),
    )
    return entry


def compiled(schema: dict[str, Any]) -> Draft202012Validator:
    """``Draft202012Validator(schema)``, built once per schema object (the schema must not change afterwards)."""
    return _compiled_entry(schema)[1]


def proven_valid(value: Any, schema: dict[str, Any]) -> bool:
    """Whether a fast check proves ``value`` valid under ``schema`` (``False``: ask :func:`compiled`'s validator)."""
    check = _compiled_entry(schema)[2]
    return check is not None and check(value)


def proven_valid_as_recorded(record: RunRecord, value: Any, schema: dict[str, Any]) -> bool:
    """:func:`proven_valid` for a value as recorded (blob references unresolved): reads no blob, only checks
    that each one it refers to exists."""
    check = _compiled_entry(schema)[3]
    if check is None or not check(value):
        return False
    if type(value) is dict and not (len(value) == 1 and "$blob" in value):  # arguments, as recorded
        return all(record.blob_exists(digest) for digest in _references(record, value))
    return all(record.blob_exists(digest) for digest in blob_references(value))


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _called(record: RunRecord) -> tuple[tuple[int, CallEvent], ...]:
    """Calls that reached a server (skipped calls name no tool), once per run (read-only)."""
    found: tuple[tuple[int, CallEvent], ...] | None = record._memo.get(_CALLED)
    if found is None:
        found = record.memo(_CALLED, lambda: tuple(_reached(record)))
    return found


def _reached(record: RunRecord) -> Iterator[tuple[int, CallEvent]]:
    skipped = CallOutcomeKind.SKIPPED
    for entry in record.call_events():
        call = entry[1]
        if call.outcome is not skipped and call.tool:
            yield entry


_CALLED = "schema.called"


def _result(record: RunRecord, call: CallEvent) -> dict[str, Any] | None:
    """The JSON-RPC result answering ``call`` (first response recorded for it), blob references resolved.

    Content blocks other than text blocks are left as recorded (no check here reads them; their blobs, images
    mostly, are only checked to exist, so a missing one still fails as reading it would).
    """
    raw = _raw_result(record, call)
    if raw is None:
        return None
    result = record.memo(("schema.result", id(raw)), lambda: _readable(record, raw))
    return result if isinstance(result, dict) else None


def _raw_result(record: RunRecord, call: CallEvent) -> dict[str, Any] | None:
    """The JSON-RPC result answering ``call`` as recorded (blob references unresolved)."""
    results: dict[tuple[str, str | None, int | None], dict[str, Any]] | None = record._memo.get("schema.results")
    if results is None:
        results = record.memo("schema.results", lambda: _first_results(record))
    return results.get((call.server, call.node, call.item))


def _readable_keys(record: RunRecord, raw: dict[str, Any]) -> bool:
    """Whether ``raw`` has the keys :func:`_result` gives it, and :func:`_result` reads it without error (every blob
    it refers to exists): a check that reads one key may then read it alone."""
    if len(raw) == 1 and "$blob" in raw:
        return False
    key = ("schema.blobs_exist", id(raw))
    found: bool | None = record._memo.get(key)
    if found is None:
        found = record.memo(key, lambda: all(record.blob_exists(digest) for digest in _references(record, raw)))
    return found


def _references(record: RunRecord, raw: dict[str, Any]) -> Iterator[str]:
    """``blob_references(raw)`` of a dict that is no reference itself (a result, arguments): its values'
    references in order, a value the record internalized as it is (a structured result, boxes read by another
    validator) known to hold none."""
    for value in raw.values():
        kind = type(value)
        if kind is dict:
            if len(value) == 1 and "$blob" in value:
                yield value["$blob"]
                continue
            if _LEAVES.issuperset(map(type, value.values())):
                continue  # an object of leaves (a size, server info): no reference
        elif kind is list:
            if _LEAVES.issuperset(map(type, value)):
                continue
        elif kind in _LEAVES:
            continue
        if not record.internalized_as_is(value):
            yield from blob_references(value)


_LEAVES = frozenset({str, int, float, bool, type(None)})
"""Types that hold no blob reference."""


def _no_text_block(raw: dict[str, Any]) -> bool:
    """Whether no content block of ``raw`` can be a text block once its blob references are resolved (each is a
    recorded object whose ``type``, as recorded, is no reference and not ``text``, or no object at all)."""
    content = raw.get("content")
    if type(content) is not list:
        return False
    for block in content:
        if isinstance(block, dict):
            kind = block.get("type")
            if kind == "text" or isinstance(kind, dict) or (len(block) == 1 and "$blob" in block):
                return False
        elif isinstance(block, list):
            return False  # resolved, still no object; left to the full reading all the same
    return True


def _first_results(record: RunRecord) -> dict[tuple[str, str | None, int | None], dict[str, Any]]:
    found: dict[tuple[str, str | None, int | None], dict[str, Any]] = {}
    for _, message in record.messages_to_client():
        if isinstance(message.message.get("result"), dict):
            found.setdefault((message.server, message.node, message.item), message.message["result"])
    return found


def _readable(record: RunRecord, raw: dict[str, Any]) -> Any:
    content = raw.get("content")
    if not isinstance(content, list) or (len(raw) == 1 and "$blob" in raw):
        return record.internalize(raw)
    blocks = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        unread = isinstance(kind, str) and kind != "text" and not (len(block) == 1 and "$blob" in block)
        if unread and all(record.blob_exists(digest) for digest in blob_references(block)):
            blocks.append(block)
        else:
            blocks.append(record.internalize(block))
    return {key: blocks if key == "content" else record.internalize(value) for key, value in raw.items()}


def _text_json(result: dict[str, Any]) -> Any:
    """The JSON object or array inside the result's first text block, or ``None``."""
    for block in result.get("content") or []:
        if isinstance(block, dict) and block.get("type") == "text":
            try:
                value = json.loads(str(block.get("text", "")))
            except ValueError:
                return None
            return value if isinstance(value, dict | list) else None
    return None


def _by_tool(
    record: RunRecord, calls: Iterable[tuple[int, CallEvent]]
) -> dict[tuple[str, str], list[tuple[int, CallEvent]]]:
    grouped: dict[tuple[str, str], list[tuple[int, CallEvent]]] = {}
    for position, call in calls:
        grouped.setdefault((call.server, call.tool), []).append((position, call))
    return grouped


def _tool_violation(record: RunRecord, violation_id: str, calls: list[tuple[int, CallEvent]], detail: str) -> Violation:
    first = calls[0][1]
    return Violation(
        id=violation_id,
        run=record.started.run,
        server=first.server,
        node=first.node,
        item=first.item,
        detail=detail,
        evidence=tuple(position for position, _ in calls),
    )


def check_output_schema_missing(record: RunRecord) -> Iterator[Violation]:
    """``schema.output_schema_missing``: a tool returned structured data or JSON in text but lists no outputSchema.

    Once per tool and run; the evidence is every such call.
    """
    returning = [
        (i, call) for i, call in _called(record) if call.outcome is CallOutcomeKind.OK and call.payload is not None
    ]
    for (alias, tool), calls in _by_tool(record, returning).items():
        listed = listed_tool(record, alias, tool)
        if listed is not None and "outputSchema" not in listed:
            detail = f"{alias}.{tool} returned structured results in {len(calls)} call(s) but lists no outputSchema"
            yield _tool_violation(record, "schema.output_schema_missing", calls, detail)


def check_output_schema_loose(record: RunRecord) -> Iterator[Violation]:
    """``schema.output_schema_loose``: a called tool's outputSchema declares no properties. Once per tool and run."""
    for (alias, tool), calls in _by_tool(record, _called(record)).items():
        listed = listed_tool(record, alias, tool)
        schema = listed.get("outputSchema") if listed is not None else None
        if isinstance(schema, dict) and not schema.get("properties"):
            detail = f"{alias}.{tool} outputSchema is {json.dumps(schema, sort_keys=True)[:80]} with no properties"
            yield _tool_violation(record, "schema.output_schema_loose", calls, detail)


def check_structured_mismatch(record: RunRecord) -> Iterator[Violation]:
    """``schema.structured_mismatch``: a successful result's structuredContent fails the listed outputSchema.

    A successful result with no structuredContent from a tool that lists an
    outputSchema is a mismatch too (the spec requires it). One violation per call.
    """
    for position, call in _called(record):
        if call.outcome is not CallOutcomeKind.OK:
            continue
        listed = listed_tool(record, call.server, call.tool)
        schema = listed.get("outputSchema") if listed is not None else None
        raw = _raw_result(record, call)
        if raw is None or _readable_keys(record, raw):  # else reading it raises: read it as before
            if not isinstance(schema, dict) or raw is None:
                continue
            check = _compiled_entry(schema)[3]
            if "structuredContent" in raw and check is not None and check(raw["structuredContent"]):
                continue  # valid as recorded (its blobs exist, as _readable_keys found), so valid with them read
        result = _result(record, call)
        if not isinstance(schema, dict) or result is None:
            continue
        if "structuredContent" not in result:
            problem = "no structuredContent"
        else:
            errors = schema_errors(result["structuredContent"], schema)
            if not errors:
                continue
            problem = "; ".join(errors[:3]) + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else "")
        yield Violation.at_call(
            "schema.structured_mismatch",
            record.started.run,
            position,
            call,
            f"{call.server}.{call.tool} result does not match its outputSchema: {problem}",
        )


def check_text_json_without_schema(record: RunRecord) -> Iterator[Violation]:
    """``schema.text_json_without_schema``: a tool with no outputSchema returned JSON inside a text block.

    Once per tool and run.
    """
    returning: list[tuple[int, CallEvent]] = []
    for position, call in _called(record):
        if call.outcome is not CallOutcomeKind.OK:
            continue
        raw = _raw_result(record, call)
        if raw is not None and ("structuredContent" in raw or _no_text_block(raw)) and _readable_keys(record, raw):
            continue  # it has structuredContent, or no block that reads as a text block: no text needs reading
        result = _result(record, call)
        if result is not None and "structuredContent" not in result and _text_json(result) is not None:
            returning.append((position, call))
    for (alias, tool), calls in _by_tool(record, returning).items():
        listed = listed_tool(record, alias, tool)
        if listed is not None and "outputSchema" not in listed:
            detail = f"{alias}.{tool} returned JSON in a text block in {len(calls)} call(s) with no outputSchema"
            yield _tool_violation(record, "schema.text_json_without_schema", calls, detail)


def check_arguments_invalid(record: RunRecord) -> Iterator[Violation]:
    """``schema.arguments_invalid``: a call's arguments (blobs resolved) fail the tool's listed inputSchema."""
    for position, call in _called(record):
        listed = listed_tool(record, call.server, call.tool)
        schema = listed.get("inputSchema") if listed is not None else None
        if not isinstance(schema, dict) or proven_valid_as_recorded(record, call.arguments, schema):
            continue
        errors = schema_errors(record.internalize(call.arguments), schema)
        if errors:
            yield Violation.at_call(
                "schema.arguments_invalid",
                record.started.run,
                position,
                call,
                f"{call.server}.{call.tool} arguments fail its inputSchema: {'; '.join(errors[:3])}",
            )


def check_error_in_payload(record: RunRecord) -> Iterator[Violation]:
    """``schema.error_in_payload``: a result not flagged isError whose payload is an object with an ``error`` key."""
    for position, call in _called(record):
        if call.outcome is CallOutcomeKind.OK and isinstance(call.payload, dict) and "error" in call.payload:
            message = record.internalize(call.payload["error"])
            yield Violation.at_call(
                "schema.error_in_payload",
                record.started.run,
                position,
                call,
                f"{call.server}.{call.tool} reported a failure as a payload: {_short(str(message), 80)}",
            )


def check_field_name_divergence(record: RunRecord) -> Iterator[Violation]:
    """``schema.field_name_divergence``: servers of the run name the same semantic role differently.

    Field names come from each server's truth manifest (the last field of each
    output path) and from ``semantic_role`` keywords declared in its outputSchemas.
    One run-level violation (server ``None``) per divergent role, naming each server's fields.
    """
    for detail in record.per_experiment("schema.divergent_roles", lambda: _divergent_roles(record)):
        yield Violation(
            id="schema.field_name_divergence",
            run=record.started.run,
            server=None,
            node=None,
            item=None,
            detail=detail,
            evidence=(0,),
        )


def _divergent_roles(record: RunRecord) -> tuple[str, ...]:
    """Per role the run's servers name differently, in role order, what :func:`check_field_name_divergence` says
    of it (a function of the servers' records alone, so once per experiment)."""
    names: dict[str, dict[str, set[str]]] = {}  # role -> alias -> field names
    for alias in record.servers:
        for role, field_name in _server_role_fields(record, alias):
            names.setdefault(role, {}).setdefault(alias, set()).add(field_name)
    details = []
    for role, by_alias in sorted(names.items()):
        distinct = set().union(*by_alias.values())
        if len(by_alias) < 2 or len(distinct) < 2:
            continue
        listing = ", ".join(f"{alias}: {'/'.join(sorted(fields))}" for alias, fields in sorted(by_alias.items()))
        details.append(f"role {role!r} has different field names across servers ({listing})")
    return tuple(details)


def _server_role_fields(record: RunRecord, alias: str) -> tuple[tuple[str, str], ...]:
    """:func:`_role_fields`, once per server record (they read only its truth and listing)."""
    return record.per_server(alias, "schema.role_fields", lambda _: tuple(_role_fields(record, alias)))


def _role_fields(record: RunRecord, alias: str) -> Iterator[tuple[str, str]]:
    truth = record.truth(alias)
    if truth is not None:
        for tool in truth.tools:
            for role, path in tool.paths.items():
                field_name = _last_field(path)
                if field_name:
                    yield role.value, field_name
    for listed in record.tools(alias):
        schema = listed.get("outputSchema")
        if isinstance(schema, dict):
            yield from _declared_roles(schema, None)


def _last_field(path: str) -> str:
    return _INDEX.sub("", path).rsplit(".", 1)[-1]


def _declared_roles(schema: dict[str, Any], name: str | None) -> Iterator[tuple[str, str]]:
    role = schema.get("semantic_role")
    if isinstance(role, str) and name is not None:
        yield role, name
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for child_name, child in properties.items():
            if isinstance(child, dict):
                yield from _declared_roles(child, str(child_name))
    items = schema.get("items")
    if isinstance(items, dict):
        yield from _declared_roles(items, None)


VALIDATORS: tuple[ValidatorSpec, ...] = (
    ValidatorSpec("schema.output_schema_missing", ("schema.output_schema_missing",), check_output_schema_missing),
    ValidatorSpec("schema.output_schema_loose", ("schema.output_schema_loose",), check_output_schema_loose),
    ValidatorSpec("schema.structured_mismatch", ("schema.structured_mismatch",), check_structured_mismatch),
    ValidatorSpec(
        "schema.text_json_without_schema", ("schema.text_json_without_schema",), check_text_json_without_schema
    ),
    ValidatorSpec("schema.arguments_invalid", ("schema.arguments_invalid",), check_arguments_invalid),
    ValidatorSpec("schema.error_in_payload", ("schema.error_in_payload",), check_error_in_payload),
    ValidatorSpec("schema.field_name_divergence", ("schema.field_name_divergence",), check_field_name_divergence),
)
