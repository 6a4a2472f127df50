"""Loading scenario files, with one-line errors that point at the offending YAML line.

Every failure is a :class:`ScenarioError` whose text is
``FILE:LINE: field.path: message``: the line of the YAML node at fault (the
key's line for a mapping entry) and the field path with ``[i]`` for list
indexes, as in ``agent.workflow.nodes[1].args.box``. The line is left out
where there is none (an unreadable file); the path where the error concerns
the whole document (a YAML syntax error).
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, Union, cast, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from testbed._errors import TestbedError
from testbed.faults import FaultError
from testbed.scenario._model import BASE_DIR_CONTEXT, FieldError, Scenario
from testbed.scenes import packaged_images
from testbed.workflow import Location, WorkflowError

__all__ = ["ScenarioError", "load_scenario", "load_scenario_text"]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_INPUT_PREVIEW = 60
_PLAIN_KEY = re.compile(r"[A-Za-z_@][A-Za-z0-9_-]*")


class ScenarioError(TestbedError):
    """An invalid scenario file, reported as one line: ``FILE:LINE: field.path: message``.

    Attributes:
        source: the file name (or ``<string>``).
        line: the 1-based line of the offending YAML node, or ``None``.
        path: the dotted field path (``""`` for the whole document).
        message: what is wrong.
    """

    def __init__(self, message: str, *, source: str, line: int | None = None, path: str = "") -> None:
        self.source = source
        self.line = line
        self.path = path
        self.message = message
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; relative image paths resolve against its folder.

    Raises:
        ScenarioError: the file cannot be read, is not valid YAML, or is not a valid scenario.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError(f"cannot read the file: {error.strerror or error}", source=str(file)) from None
    except UnicodeDecodeError as error:
        raise ScenarioError(f"cannot read the file: not UTF-8 text ({error.reason})", source=str(file)) from None
    return load_scenario_text(text, source=str(file), base_dir=file.parent)


def load_scenario_text(text: str, *, source: str = "<string>", base_dir: str | Path | None = None) -> Scenario:
    """Validate a scenario given as YAML text.

    Args:
        text: the YAML document.
        source: the name errors report as the file.
        base_dir: the folder relative image paths resolve against; ``None`` leaves them relative
            (to the working directory).

    Raises:
        ScenarioError: the text is not valid YAML or not a valid scenario.
    """
    root, data = _parse_yaml(text, source)
    if root is None:
        raise ScenarioError("the file is empty; expected a mapping of scenario fields", source=source)
    _check_duplicate_keys(root, source)
    if not isinstance(data, dict):
        raise ScenarioError(
            f"the top level must be a mapping of scenario fields (name, seed, runs, ...), got {_kind_of(data)}",
            source=source,
            line=root.start_mark.line + 1,
        )
    context = {BASE_DIR_CONTEXT: Path(base_dir)} if base_dir is not None else None
    try:
        scenario = Scenario.model_validate(data, context=context)
    except ValidationError as error:
        raise _scenario_error(error, root, source) from None
    _check_images(scenario, root, source)
    _check_fault_tools(scenario, root, source)
    return scenario


class _ScenarioLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that dates and times stay strings (no scenario field is a date)."""


def _timestamp_as_text(loader: _ScenarioLoader, node: yaml.Node) -> str:
    # The resolver tags only plain scalars as timestamps.
    return str(loader.construct_scalar(cast(yaml.ScalarNode, node)))


_ScenarioLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def _parse_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """Return the composed node tree (for line numbers) and the constructed data."""
    loader = _ScenarioLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as error:
        raise ScenarioError(_describe_yaml_error(error), source=source, line=_yaml_error_line(error)) from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"invalid YAML: {error}", source=source) from None
    finally:
        loader.dispose()
    return root, data


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


def _check_duplicate_keys(root: yaml.Node, source: str) -> None:
    """Reject a mapping that repeats a key (PyYAML would silently keep the last value)."""
    visited: set[int] = set()

    def visit(node: yaml.Node, path: list[str | int]) -> None:
        if id(node) in visited:
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key, value in node.value:
                if key.tag == _MERGE_TAG or not isinstance(key, yaml.ScalarNode):
                    continue
                line = key.start_mark.line + 1
                if key.value in first_line:
                    raise ScenarioError(
                        f"duplicate key {key.value!r} (first on line {first_line[key.value]})",
                        source=source,
                        line=line,
                        path=_format_path([*path, key.value]),
                    )
                first_line[key.value] = line
                visit(value, [*path, key.value])
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                visit(item, [*path, index])

    visit(root, [])


def _scenario_error(error: ValidationError, root: yaml.Node, source: str) -> ScenarioError:
    """Turn pydantic's errors into one line: the first error in the file, and how many more there are."""
    located: list[tuple[bool, int, int, str, str]] = []
    for order, details in enumerate(error.errors()):
        loc, message = _explain(details)
        line, path = _locate(root, loc)
        # Problems with values that are there come before missing fields, then in file order.
        located.append((details["type"] == "missing", line, order, path, message))
    _, line, _, path, message = min(located)
    more = len(located) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return ScenarioError(message, source=source, line=line, path=path)


def _explain(details: ErrorDetails) -> tuple[Location, str]:
    """Return the full location and a readable message for one pydantic error."""
    loc: Location = tuple(details["loc"])
    kind = details["type"]
    context: Mapping[str, Any] = details.get("ctx") or {}
    cause = context.get("error")
    if isinstance(cause, WorkflowError | FieldError | FaultError):
        return (*loc, *cause.loc), cause.message
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(context.get("discriminator", "kind")).strip("'")
        if kind == "union_tag_not_found":
            return (*loc, discriminator), f"missing required field {discriminator!r}"
        return (*loc, discriminator), f"unknown {discriminator} {context.get('tag')!r}; expected one of: " + str(
            context.get("expected_tags")
        )
    if kind == "missing":
        return loc, "missing required field"
    if kind == "extra_forbidden":
        return loc, "unknown field" + _field_hint(loc)
    message = details["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind != "value_error":
        message = message[:1].lower() + message[1:]
        value = details.get("input")
        if isinstance(value, str | int | float | bool) or value is None:
            preview = repr(value)
            if len(preview) <= _MAX_INPUT_PREVIEW:
                message += f" (got {preview})"
    return loc, message


def _field_hint(loc: Location) -> str:
    """Suggest the intended field for an unknown one, or list the valid fields."""
    _, fields = _walk_models(loc[:-1])
    if not fields:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(fields)}"


def _walk_models(loc: Location) -> tuple[frozenset[int], list[str] | None]:
    """Follow ``loc`` through the scenario's annotations.

    Returns:
        The positions in ``loc`` that are union tags (pydantic puts the ``kind`` of a
        discriminated union member into the location), and the field names of the model
        ``loc`` ends at (``None`` where it does not end at a model or cannot be followed).
    """
    annotation: Any = Scenario
    tags: set[int] = set()
    for position, segment in enumerate(loc):
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = {info.alias or name: info for name, info in annotation.model_fields.items()}
            if segment in fields:
                annotation = fields[segment].annotation
            elif _tag_of(annotation) == segment:
                tags.add(position)
            else:
                return frozenset(tags), None
        elif _is_union(annotation):
            members = [member for member in get_args(annotation) if _tag_of(_unwrap(member)) == segment]
            if len(members) != 1:
                return frozenset(tags), None
            tags.add(position)
            annotation = members[0]
        elif get_origin(annotation) in (tuple, list) and isinstance(segment, int):
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return frozenset(tags), None
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return frozenset(tags), [info.alias or name for name, info in annotation.model_fields.items()]
    return frozenset(tags), None


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``| None`` from an annotation."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif _is_union(annotation):
            members = [member for member in get_args(annotation) if member is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _tag_of(annotation: Any) -> object:
    """The ``kind`` literal of a discriminated union member, or ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        kind = annotation.model_fields.get("kind")
        if kind is not None:
            return kind.default
    return None


def _locate(root: yaml.Node, loc: Location) -> tuple[int, str]:
    """Return the line of the YAML node at ``loc`` and the path as the user wrote it.

    Union tags are left out of the path. A last segment the data does not contain
    names a missing field: it is kept in the path, and the line is its parent's.
    """
    tags, _ = _walk_models(loc)
    node: yaml.Node | None = root
    line = root.start_mark.line + 1
    path: list[str | int] = []
    for position, segment in enumerate(loc):
        last = position == len(loc) - 1
        if position in tags or segment == "[key]":  # "[key]": pydantic's marker for an invalid mapping key
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
    return line, _format_path(path)


def _format_path(path: list[str | int]) -> str:
    """``a.b[0].c``; a key that is not an identifier is quoted in brackets (``servers["de.t"]``)."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        elif _PLAIN_KEY.fullmatch(segment):
            text += f".{segment}"
        else:
            text += f"[{json.dumps(segment)}]"
    return text.removeprefix(".")


def _kind_of(data: object) -> str:
    if isinstance(data, list):
        return "a list"
    if isinstance(data, str):
        return "a string"
    return type(data).__name__


def _check_images(scenario: Scenario, root: yaml.Node, source: str) -> None:
    """Check that the images a scenario names exist on this machine."""
    images = scenario.scene.images
    if images is None:
        return
    if images.packaged is not None:
        available = packaged_images()
        for index, name in enumerate(images.packaged):
            if name not in available:
                known = ", ".join(available) or "none installed"
                _fail(
                    root,
                    source,
                    ("scene", "images", "packaged", index),
                    f"no packaged image {name!r} (available: {known})",
                )
    for index, file in enumerate(images.paths or ()):
        if not file.is_file():
            _fail(root, source, ("scene", "images", "paths", index), f"no such image file: {file}")
    if images.folder is not None and not images.folder.is_dir():
        _fail(root, source, ("scene", "images", "folder"), f"no such folder: {images.folder}")


def _check_fault_tools(scenario: Scenario, root: yaml.Node, source: str) -> None:
    """Check that each fault aimed at a tool names one its (testbed-owned) server has."""
    from servers import SERVERS  # the registry; imported late because servers build on testbed

    for index, fault in enumerate(scenario.faults):
        tool = fault.target.tool
        ref = scenario.servers[fault.target.server]
        entry = SERVERS.get(ref.server)
        if tool is None or entry is None:
            continue
        tools = [t.name for t in entry.truth.tools]
        if tool not in tools:
            _fail(
                root,
                source,
                ("faults", index, "target", "tool"),
                f"server {fault.target.server!r} ({ref.server}) has no tool {tool!r} (tools: {', '.join(tools)})",
            )


def _fail(root: yaml.Node, source: str, loc: Location, message: str) -> NoReturn:
    line, path = _locate(root, loc)
    raise ScenarioError(message, source=source, line=line, path=path)
