"""The scenario file's JSON Schema, for editors (e.g. YAML language servers) and other tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from testbed.scenario._model import Scenario

__all__ = ["scenario_json_schema", "write_json_schema"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def scenario_json_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of a scenario file.

    The schema checks structure and types. Cross-field rules (references between
    nodes, cycles, server aliases, task node) are checked only by the loader.
    """
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def write_json_schema(path: str | Path) -> Path:
    """Write :func:`scenario_json_schema` to ``path`` as indented JSON with sorted keys; return the path."""
    target = Path(path)
    target.write_text(json.dumps(scenario_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target
