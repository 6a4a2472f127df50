"""JSON Schema helpers: self-contained schemas from pydantic models, and the declarations servers add.

Published schemas are inlined (no ``$ref``/``$defs``) so that a client can find
a property, and the extension keywords on it, by walking ``properties`` and
``items`` along a truth path such as ``detections[*].bbox``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from testbed.protocol import MemoryScope, Modality, SemanticRole

__all__ = ["LOOSE_OUTPUT_SCHEMA", "declare_image", "declare_role", "declare_size_object", "inline_schema"]

LOOSE_OUTPUT_SCHEMA: dict[str, Any] = {"type": "object"}
"""The ``outputSchema`` of a loose tool: an object, and nothing said about its properties."""


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model`` with every ``$ref`` replaced by its definition.

    Raises:
        ValueError: the model is recursive (a recursive schema cannot be inlined).
    """
    schema = model.model_json_schema()
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                name = reference.removeprefix("#/$defs/")
                if name in seen:
                    raise ValueError(f"{model.__name__}: recursive schema through {name!r} cannot be inlined")
                siblings = {key: value for key, value in node.items() if key != "$ref"}
                return {**resolve(definitions[name], (*seen, name)), **resolve(siblings, seen)}
            return {key: resolve(value, seen) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema, ())
    return resolved


def declare_role(role: SemanticRole, modality: Modality) -> dict[str, Any]:
    """Extension keywords naming a property's role and modality only."""
    return {"semantic_role": role.value, "modality": modality.value}


def declare_image(scope: MemoryScope) -> dict[str, Any]:
    """Extension keywords for an image argument passed by value (base64) or as a path or handle."""
    role = {
        MemoryScope.BY_VALUE: SemanticRole.IMAGE,
        MemoryScope.FILE: SemanticRole.IMAGE_PATH,
    }.get(scope, SemanticRole.IMAGE_HANDLE)
    modality = Modality.IMAGE if scope is MemoryScope.BY_VALUE else Modality.HANDLE
    return {**declare_role(role, modality), "scope": scope.value}


def declare_size_object() -> dict[str, Any]:
    """Extension keywords for an image size written as ``{"width": ..., "height": ...}``.

    No ``shape_order``: the keys name the axes, so there is no pair to order.
    """
    return declare_role(SemanticRole.IMAGE_SIZE, Modality.SIZE)
