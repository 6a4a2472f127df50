"""The protocol-extension vocabulary servers declare, and the truth manifests the testbed keeps."""

from testbed.protocol._declared import DECLARED_SUMMARY, declared_truth, schema_at
from testbed.protocol._truth import (
    AGENT_META_KEY,
    CLOCK_META_KEY,
    SCOPE_META_KEY,
    ErrorStyle,
    SchemaStyle,
    ServerTruth,
    ToolTruth,
)
from testbed.protocol._truth_file import (
    TruthFileError,
    load_truth_file,
    truth_json_schema,
    write_truth_json_schema,
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
    declare_pixel_spacing,
    declared_box_convention,
    extension_keywords,
)

__all__ = [
    "AGENT_META_KEY",
    "CLOCK_META_KEY",
    "DECLARED_SUMMARY",
    "EXTENSION_KEYWORDS",
    "SCOPE_META_KEY",
    "ErrorStyle",
    "MemoryScope",
    "Modality",
    "SchemaStyle",
    "SemanticRole",
    "ServerTruth",
    "ToolTruth",
    "TruthFileError",
    "declare_box",
    "declare_handle",
    "declare_image_size",
    "declare_mask",
    "declare_pixel_spacing",
    "declared_box_convention",
    "declared_truth",
    "extension_keywords",
    "load_truth_file",
    "schema_at",
    "truth_json_schema",
    "write_truth_json_schema",
]
