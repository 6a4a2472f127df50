"""The protocol-extension vocabulary servers declare, and the truth manifests the testbed keeps."""

from testbed.protocol._truth import (
    AGENT_META_KEY,
    CLOCK_META_KEY,
    SCOPE_META_KEY,
    ErrorStyle,
    SchemaStyle,
    ServerTruth,
    ToolTruth,
)
from testbed.protocol._vocabulary import (
    EXTENSION_KEYWORDS,
    MemoryScope,
    Modality,
    SemanticRole,
    declare_box,
    declare_handle,
    declare_image_size,
    declare_mask,
    declared_box_convention,
    extension_keywords,
)

__all__ = [
    "AGENT_META_KEY",
    "CLOCK_META_KEY",
    "EXTENSION_KEYWORDS",
    "SCOPE_META_KEY",
    "ErrorStyle",
    "MemoryScope",
    "Modality",
    "SchemaStyle",
    "SemanticRole",
    "ServerTruth",
    "ToolTruth",
    "declare_box",
    "declare_handle",
    "declare_image_size",
    "declare_mask",
    "declared_box_convention",
    "extension_keywords",
]
