"""``case-fhir-study``: an imaging study source that declares its pixel spacing (the FHIR case).

A FHIR ImagingStudy carries the acquisition's physical scale (DICOM PixelSpacing). ``get_study`` serves
the study's image and declares, on the image it returns, that one pixel is :data:`ACQUISITION_SPACING_MM`
millimetres (the ``pixel_spacing`` extension keyword). A measuring tool downstream that assumes another
spacing, and does not say so, reports sizes at the wrong scale: ``coords.scale_mismatch``.
"""

from __future__ import annotations

from typing import Final

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument
from servers._schemas import declare_image, declare_role
from servers._tools import CallInfo, ToolDef, build_mcp_server, structured_result
from testbed.protocol import (
    MemoryScope,
    Modality,
    SchemaStyle,
    SemanticRole,
    ServerTruth,
    ToolTruth,
    declare_pixel_spacing,
)
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME: Final = "case-fhir-study"
ACQUISITION_SPACING_MM: Final = 0.7
"""Millimetres per pixel of every study this source serves (a CT-like in-plane spacing)."""


class StudyArguments(BaseModel):
    """The acquired image, by value."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(
        description="The acquired image, base64.", json_schema_extra=declare_image(MemoryScope.BY_VALUE)
    )


OUTPUT_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "image": {
            "type": "string",
            "description": "The study's image, base64 PNG.",
            **declare_role(SemanticRole.IMAGE, Modality.IMAGE),
            **declare_pixel_spacing(ACQUISITION_SPACING_MM),
        },
        "modality": {"type": "string"},
    },
    "required": ["image", "modality"],
}

TRUTH: Final = ServerTruth(
    name=NAME,
    kind="measuring",
    summary=f"Case FHIR: serves study images declaring {ACQUISITION_SPACING_MM:g} mm per pixel.",
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="get_study",
            schema_style=SchemaStyle.FULL,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE: "image_b64"},
            paths={SemanticRole.IMAGE: "image"},
        ),
    ),
)


@server(NAME, truth=TRUTH)
def build(config: ServerConfig) -> MCPServer:
    """Build ``case-fhir-study``."""

    def get_study(arguments: StudyArguments, call: CallInfo) -> CallToolResult:
        decode_image_argument(arguments.image_b64, argument="image_b64", config=config)  # refuse a non-image
        return structured_result({"image": arguments.image_b64, "modality": "CT"})

    return build_mcp_server(
        NAME,
        instructions="An imaging study source; study images carry their pixel spacing.",
        tools=[
            ToolDef(
                name="get_study",
                description=f"The study's image, at {ACQUISITION_SPACING_MM:g} mm per pixel.",
                arguments=StudyArguments,
                handler=get_study,
                output_schema=OUTPUT_SCHEMA,
            )
        ],
    )
