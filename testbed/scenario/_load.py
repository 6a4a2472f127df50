"""Loading scenario files, with one-line errors that point at the offending YAML line.

Every failure is a :class:`ScenarioError` whose text is
``FILE:LINE: field.path: message``: the line of the YAML node at fault (the
key's line for a mapping entry) and the field path with ``[i]`` for list
indexes, as in ``agent.workflow.nodes[1].args.box``. The line is left out
where there is none (an unreadable file); the path where the error concerns
the whole document (a YAML syntax error).

Beyond the models' own validation, loading resolves everything that can be
known before a run: the YAML is parsed within limits (:mod:`._yaml`), numbers
are finite, expected violation IDs are catalogued, faults are scheduled in runs
and nodes that exist, images exist and decode, and names, arguments and
references fit the registered servers (:mod:`._resolve`).
"""

from __future__ import annotations

import difflib
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, Union, get_args, get_origin

import yaml
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from testbed._errors import explain_error
from testbed.catalog import CATALOG
from testbed.registry import by_kind
from testbed.scenario._error import ScenarioError
from testbed.scenario._model import FieldError, Scenario
from testbed.scenario._resolve import check_against_registry, check_bindings
from testbed.scenario._yaml import locate_node, parse_yaml, read_scenario_file
from testbed.scenes import BASE_DIR_CONTEXT, IMAGE_SUFFIXES, packaged_images
from testbed.workflow import Location

__all__ = ["ScenarioError", "load_scenario", "load_scenario_text"]


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; relative image paths resolve against its folder.

    Raises:
        ScenarioError: the file cannot be read, is not valid YAML, or is not a valid scenario.
    """
    file = Path(path)
    text = read_scenario_file(file)
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
    root, data = parse_yaml(text, source)
    if root is None:
        raise ScenarioError("the file is empty; expected a mapping of scenario fields", source=source)
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
    try:
        _check_finite(scenario, ())
        _check_images(scenario)
        _check_expect(scenario)
        _check_fault_schedule(scenario)
        check_against_registry(scenario)
        check_bindings(scenario)
    except FieldError as error:
        _fail(root, source, error.loc, error.message)
    return scenario


def _scenario_error(error: ValidationError, root: yaml.Node, source: str) -> ScenarioError:
    """Turn pydantic's errors into one line: the first error in the file, and how many more there are."""
    explained = [(details, *_explain(details)) for details in error.errors()]
    located: list[tuple[bool, bool, int, int, str, str]] = []
    for order, (details, loc, message) in enumerate(explained):
        line, path = _locate(root, loc)
        # A list's length error that follows from an invalid item (pydantic drops it, then counts) is a consequence.
        consequence = any(len(other) > len(loc) and other[: len(loc)] == loc for _, other, _ in explained)
        # Problems with values that are there come before missing fields and consequences, then in file order.
        located.append((details["type"] == "missing", consequence, line, order, path, message))
    _, _, line, _, path, message = min(located)
    more = len(located) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return ScenarioError(message, source=source, line=line, path=path)


def _explain(details: ErrorDetails) -> tuple[Location, str]:
    """Return the full location and a readable message for one pydantic error."""
    return explain_error(details, unknown_field=_field_hint)


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
        if isinstance(annotation, _Dispatched):
            # The registry validates the spec of the kind the data names; pydantic puts no tag in the location.
            found = [info for spec in annotation.specs if (info := _fields(spec).get(str(segment))) is not None]
            if not found:
                return frozenset(tags), None
            annotation = _field_annotation(found[0])
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = _fields(annotation)
            if segment in fields:
                annotation = _field_annotation(fields[segment])
            elif _tag_of(annotation) == segment:
                tags.add(position)
            else:
                return frozenset(tags), None
        elif _is_union(annotation):
            members = [member for member in get_args(annotation) if _tag_of(_unwrap(member)) == segment]
            if len(members) == 1:
                tags.add(position)
                annotation = members[0]
                continue
            # A registry-dispatched field (agent, faults) puts no tag in the location: follow the field.
            candidates = [_unwrap(member).model_fields.get(str(segment)) for member in get_args(annotation)]
            found = [info for info in candidates if info is not None]
            if not found:
                return frozenset(tags), None
            annotation = _field_annotation(found[0])
        elif get_origin(annotation) in (tuple, list) and isinstance(segment, int):
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return frozenset(tags), None
    annotation = _unwrap(annotation)
    if isinstance(annotation, _Dispatched):
        names = dict.fromkeys(name for spec in annotation.specs for name in _fields(spec))
        return frozenset(tags), list(names)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return frozenset(tags), list(_fields(annotation))
    return frozenset(tags), None


@dataclass(frozen=True)
class _Dispatched:
    """A field the registry validates by its ``kind`` (:class:`by_kind`): one of these spec classes."""

    specs: tuple[type[BaseModel], ...]


def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _field_annotation(info: FieldInfo) -> Any:
    """A field's annotation, with the registry's spec classes where the registry dispatches it by kind."""
    dispatch = next((meta for meta in info.metadata if isinstance(meta, by_kind)), None)
    if dispatch is not None:
        return _Dispatched(tuple(dispatch.specs().values()))
    return info.annotation


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``| None`` from an annotation."""
    while True:
        if get_origin(annotation) is Annotated:
            dispatch = next((meta for meta in get_args(annotation)[1:] if isinstance(meta, by_kind)), None)
            if dispatch is not None:
                return _Dispatched(tuple(dispatch.specs().values()))
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
        if kind is not None and isinstance(kind.default, str):
            return kind.default
    return None


def _locate(root: yaml.Node, loc: Location) -> tuple[int, str]:
    """Return the line of the YAML node at ``loc`` and the path as the user wrote it, union tags left out."""
    tags, _ = _walk_models(loc)
    markers = {position for position, segment in enumerate(loc) if segment == "[key]"}  # an invalid mapping key
    return locate_node(root, loc, skip=set(tags) | markers)


def _kind_of(data: object) -> str:
    if isinstance(data, list):
        return "a list"
    if isinstance(data, str):
        return "a string"
    return type(data).__name__


def _check_finite(value: object, loc: Location) -> None:
    """Refuse a non-finite float anywhere in the validated scenario (e.g. ``deadline_s: "inf"``, text
    that pydantic reads as a float); non-finite YAML floats (``.inf``) never get this far."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FieldError(f"{value} is not a finite number; give a finite one", loc=loc)
    elif isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            _check_finite(getattr(value, name), (*loc, info.alias or name))
        for name, inner in (value.__pydantic_extra__ or {}).items():
            _check_finite(inner, (*loc, name))
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _check_finite(inner, (*loc, str(key)))
    elif isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            _check_finite(inner, (*loc, index))


def _check_images(scenario: Scenario) -> None:
    """Check that the images a scenario names exist on this machine, and are images."""
    images = scenario.scene.images
    if images is None:
        return
    if images.packaged is not None:
        available = packaged_images()
        for index, name in enumerate(images.packaged):
            if name not in available:
                known = ", ".join(available) or "none installed"
                close = difflib.get_close_matches(name, list(available), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise FieldError(
                    f"no packaged image {name!r}{hint} (available: {known})", loc=("scene", "images", "packaged", index)
                )
    for index, file in enumerate(images.paths or ()):
        loc: Location = ("scene", "images", "paths", index)
        if not file.is_file():
            raise FieldError(f"no such image file: {file}", loc=loc)
        problem = _image_problem(file)
        if problem is not None:
            raise FieldError(f"{file} is not an image: {problem}", loc=loc)
    folder = images.folder
    if folder is None:
        return
    if not folder.is_dir():
        raise FieldError(f"no such folder: {folder}", loc=("scene", "images", "folder"))
    try:
        found = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    except OSError as error:
        raise FieldError(
            f"cannot list {folder}: {error.strerror or error}", loc=("scene", "images", "folder")
        ) from None
    if not found:
        raise FieldError(
            f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})", loc=("scene", "images", "folder")
        )
    for file in found:
        problem = _image_problem(file, whole=False)
        if problem is not None:
            raise FieldError(f"{file.name} in {folder} is not an image: {problem}", loc=("scene", "images", "folder"))


def _image_problem(file: Path, *, whole: bool = True) -> str | None:
    """Why ``file`` cannot be decoded as an image, or ``None``; no pixels are decoded.

    ``whole`` checks the file's structure through to its end (for the few files a scenario names);
    otherwise only the header is read (for every file of a folder, which may hold thousands).
    """
    try:
        with Image.open(file) as image:
            if whole:
                image.verify()
    except Image.DecompressionBombError as error:
        return str(error)
    except (UnidentifiedImageError, ImportError):
        # Once Ultralytics is imported it patches Image.open to try the optional pi_heif package on an
        # unidentified file; without that package the same verdict arrives as an ImportError.
        return "its content is not in an image format Pillow reads"
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # Pillow's plug-ins raise these for damaged files
        return str(error) or type(error).__name__
    return None


def _check_expect(scenario: Scenario) -> None:
    """Check each expected violation ID against the catalog."""
    for index, violation_id in enumerate(scenario.expect):
        if violation_id not in CATALOG:
            close = difflib.get_close_matches(violation_id, list(CATALOG), n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise FieldError(
                f"{violation_id!r} is not in the violation catalog{hint} (see testbed.catalog.CATALOG)",
                loc=("expect", index),
            )


def _check_fault_schedule(scenario: Scenario) -> None:
    """Check that faults are scheduled in runs the scenario makes and on nodes its workflow has."""
    workflow = scenario.workflow
    for index, fault in enumerate(scenario.faults):
        for position, run in enumerate(fault.runs or ()):
            if run >= scenario.runs:
                raise FieldError(
                    f"run {run} is not one of the scenario's {scenario.runs} runs (0 to {scenario.runs - 1})",
                    loc=("faults", index, "runs", position),
                )
        if workflow is None:
            continue  # an agent that plans names its nodes at run time
        for position, node in enumerate(fault.nodes or ()):
            if node not in workflow.node_ids:
                close = difflib.get_close_matches(node, workflow.node_ids, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise FieldError(
                    f"node {node!r} is not a workflow node{hint} (nodes: {', '.join(workflow.node_ids)})",
                    loc=("faults", index, "nodes", position),
                )


def _fail(root: yaml.Node, source: str, loc: Location, message: str) -> NoReturn:
    line, path = _locate(root, loc)
    raise ScenarioError(message, source=source, line=line, path=path)
