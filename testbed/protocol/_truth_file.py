"""Truth files: a truth manifest a user writes for a server the testbed does not own.

A scenario's external server (``command:`` or ``url:``) may name one with
``truth: FILE.yaml``: a YAML (or JSON) document of a :class:`ServerTruth`,
checked against the published JSON Schema ``scenarios/truth.schema.json``
(generated from the model, :func:`truth_json_schema`). A file that is not
one is a :class:`TruthFileError` of one line naming the file, the line and
the field: ``det.truth.yaml:7: tools[0].box_convention.units: input should be ...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from testbed._errors import Location, TestbedError, explain_error, format_location, more_errors
from testbed.protocol._truth import ServerTruth

__all__ = [
    "JSON_SCHEMA_DIALECT",
    "TRUTH_FILE_MAX_BYTES",
    "TruthFileError",
    "load_truth_file",
    "truth_json_schema",
    "write_truth_json_schema",
]

TRUTH_FILE_MAX_BYTES: Final = 1 << 20
"""The largest truth file read (real ones are a few kilobytes)."""
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


class TruthFileError(TestbedError, ValueError):
    """A truth file that cannot be read or is not a truth manifest: ``FILE[:LINE]: field: message``.

    A ``ValueError`` too, so that raised while a scenario validates, it is reported at the
    scenario's ``truth:`` field with this text.
    """


def load_truth_file(path: str | Path) -> ServerTruth:
    """Read and validate a truth file.

    Raises:
        TruthFileError: it cannot be read, is not YAML, or is not a :class:`ServerTruth`.
    """
    file = Path(path)
    try:
        with file.open("rb") as stream:
            data = stream.read(TRUTH_FILE_MAX_BYTES + 1)
    except OSError as error:
        raise TruthFileError(f"{file}: cannot read the truth file: {error.strerror or error}") from None
    if len(data) > TRUTH_FILE_MAX_BYTES:
        raise TruthFileError(f"{file}: larger than {TRUTH_FILE_MAX_BYTES >> 20} MiB, the limit for a truth file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TruthFileError(f"{file}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        document = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
        raise TruthFileError(f"{where}: invalid YAML: {_one_line(str(error.problem or error))}") from None
    except yaml.YAMLError as error:
        raise TruthFileError(f"{file}: invalid YAML: {_one_line(str(error))}") from None
    finally:
        loader.dispose()
    if not isinstance(document, dict):
        raise TruthFileError(f"{file}: expected a mapping of truth manifest fields (name, kind, tools, ...)")
    try:
        return ServerTruth.model_validate(document)
    except ValidationError as error:
        loc, message = explain_error(error.errors()[0])
        line = _line_of(root, loc)
        where = f"{file}:{line}" if line is not None else str(file)
        field = format_location(loc) if loc else "(document)"
        message = _one_line(message) + more_errors(len(error.errors()) - 1)
        raise TruthFileError(f"{where}: {field}: {message}") from None


def truth_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a truth file."""
    schema = ServerTruth.model_json_schema(mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, "title": "ServerTruth", **schema}


def write_truth_json_schema(path: str | Path) -> Path:
    """Write :func:`truth_json_schema` to ``path`` as indented JSON with sorted keys; return the path."""
    target = Path(path)
    target.write_text(json.dumps(truth_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target


def _line_of(root: yaml.Node | None, loc: Location) -> int | None:
    """The 1-based line of the node at ``loc`` (a key's line for a mapping entry), as deep as the file goes."""
    if root is None:
        return None
    node: yaml.Node = root
    line = root.start_mark.line + 1
    for segment in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next(
                (
                    (key, value)
                    for key, value in node.value
                    if isinstance(key, yaml.ScalarNode) and key.value == str(segment)
                ),
                None,
            )
            if entry is None:
                break
            key, node = entry
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(segment, int) and 0 <= segment < len(node.value):
            node = node.value[segment]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.strip().splitlines() if part.strip())
