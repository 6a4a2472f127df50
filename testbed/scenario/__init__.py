"""Scenario files: YAML documents validated as frozen pydantic models, with one-line errors.

``load_scenario(path)`` reads a file; every problem is a :class:`ScenarioError`
reading ``FILE:LINE: field.path: message``. ``scenario_json_schema()`` gives
the file format as JSON Schema for editors.
"""

from testbed.scenario._load import ScenarioError, load_scenario, load_scenario_text
from testbed.scenario._model import (
    MAX_RUNS,
    FieldError,
    Scenario,
    SceneSource,
    ServerAlias,
    ServerRef,
    Task,
    TaskKind,
    Transport,
    ViolationId,
)
from testbed.scenario._schema import scenario_json_schema, write_json_schema
from testbed.scenes import ImageSet

__all__ = [
    "MAX_RUNS",
    "FieldError",
    "ImageSet",
    "Scenario",
    "ScenarioError",
    "SceneSource",
    "ServerAlias",
    "ServerRef",
    "Task",
    "TaskKind",
    "Transport",
    "ViolationId",
    "load_scenario",
    "load_scenario_text",
    "scenario_json_schema",
    "write_json_schema",
]
