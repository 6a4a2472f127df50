"""Convention profiles: how one server writes boxes, masks, schemas, errors and memory, as data.

A :class:`ConventionProfile` is everything a reference server of one
*capability* (``detect``, ``segment``, ``crop``, ``crop-mask``, ``measure``)
may vary in the way the paper's audit counts it: the box convention and size
order, the mask encoding and resolution, the schema style and field names,
the error style, whether extension keywords are declared, the memory scope
with its declared and actual lifetimes, whether outputs are validated before
they are sent, a declared fallback, and an out-of-band bridging helper tool.
:func:`truth_manifest` derives the truth manifest a server built from it has;
:data:`PRESETS` writes nine of the eleven named servers as profiles.

The parametric servers that implement a profile are plug-ins (``servers.parametric``);
this module is data only and never imports them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from testbed._errors import LocatedError, UnsupportedEncodingError
from testbed.conventions import CANONICAL, BoxConvention, MaskEncoding, MaskResolution, ShapeOrder
from testbed.protocol import ErrorStyle, MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth

__all__ = [
    "CAPABILITIES",
    "PRESETS",
    "Capability",
    "ConventionProfile",
    "FieldNames",
    "MaskProfile",
    "MemoryProfile",
    "Preset",
    "ProfileError",
    "box_name",
    "check_profile",
    "default_tool_name",
    "handle_role",
    "truth_manifest",
    "writes_one_label_map",
]

Capability = Literal["detect", "segment", "crop", "crop-mask", "measure"]
"""What a parametric server does; also its registry name."""

CAPABILITIES: Final[tuple[Capability, ...]] = get_args(Capability)

_KINDS: Final[dict[Capability, Literal["detection", "segmentation", "cropping", "measuring"]]] = {
    "detect": "detection",
    "segment": "segmentation",
    "crop": "cropping",
    "crop-mask": "cropping",
    "measure": "measuring",
}
_ITEMS: Final[dict[Capability, str]] = {"detect": "detections", "segment": "instances"}
_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class ProfileError(LocatedError):
    """A profile that no server of the capability can have; ``loc`` is the offending field of the profile."""


def _identifier(value: str) -> str:
    if not value.isidentifier():
        raise ValueError(f"{value!r} is not a field name: use letters, digits and underscores")
    return value


Name = Annotated[str, AfterValidator(_identifier)]
"""A tool, argument or output field name."""


DEFAULT_BRIDGE_TOOL: Final = "forward_call"


class FieldNames(BaseModel):
    """What the tools and fields are called (real servers say ``bbox``, ``box`` or ``bounding_box``)."""

    model_config = _CONFIG

    tool: Name | None = None
    """The capability's tool; default: ``detect``, ``segment``, ``crop``, ``crop_mask`` or ``measure``."""
    store_tool: Name = "load_image"
    """The tool that takes an image by value and returns a handle or path (memory scopes other than by value)."""
    image: Name = "image"
    """The by-value image argument (of the capability's tool, or of the store tool)."""
    handle: Name = "handle"
    """The handle or path: the store tool's output field and the capability tool's argument."""
    box: Name | None = None
    """Each result's box field (detect, segment; default ``bbox``), or the box argument (crop, measure; ``box``)."""
    prompts: Name | None = None
    """The optional box-prompts argument of ``segment``; ``None``: it takes none."""
    items: Name | None = None
    """The list of results (detect, segment); default ``detections`` or ``instances``."""
    label: Name | None = "label"
    """Each result's class name; ``None``: not reported."""
    score: Name | None = "score"
    """Each result's confidence; ``None``: not reported."""
    mask: Name = "mask"
    """Each result's mask (segment), or the mask argument (crop-mask)."""
    image_size: Name | None = "image_size"
    """The reported image size (detect, segment); ``None``: not reported."""
    crop: Name = "crop"
    """The base64 PNG crop in a JSON result (crop, crop-mask, unless the schema style is ``content``)."""
    bridge_tool: Name = DEFAULT_BRIDGE_TOOL
    """The out-of-band helper tool of a server that ``bridges`` (see :attr:`ConventionProfile.bridges`)."""

    @model_serializer(mode="wrap")
    def _leave_out_default_bridge_tool(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Left out at its default, so profiles written before bridging dump, and hash, as they did."""
        data: dict[str, Any] = handler(self)
        if self.bridge_tool == DEFAULT_BRIDGE_TOOL:
            data.pop("bridge_tool", None)
        return data


class MaskProfile(BaseModel):
    """How masks are written (segment) or read (crop-mask)."""

    model_config = _CONFIG

    encoding: MaskEncoding = MaskEncoding.COCO_RLE
    """One of the five payload formats, ``resource_uri`` included."""
    resolution: MaskResolution = MaskResolution.IMAGE
    """The image's grid or the model's letterboxed input grid."""
    normalized_polygons: bool = False
    """For polygons: coordinates as fractions of the grid."""


_LIFETIME_SCOPES: Final = (MemoryScope.TTL, MemoryScope.CONTEXT)
"""The scopes whose entries may have a lifetime."""


class MemoryProfile(BaseModel):
    """How the image reaches the capability's tool, and how long a server keeps what it was given."""

    model_config = _CONFIG

    scope: MemoryScope = MemoryScope.BY_VALUE
    """``by_value``: the tool takes the image itself. Any other scope adds the store tool, which returns a handle
    (``session``, ``global``, ``ttl``), a sandbox path (``file``) or a ``context://`` reference into the
    protocol-native context store (``context``, see :mod:`testbed.memory`) that the tool then takes."""
    ttl_seconds: float | None = Field(default=None, gt=0)
    """For ``ttl``: how long the store actually keeps an image, on the run's logical clock. For ``context``
    (optional): each entry's lifetime; without it an entry lives as long as its run's memory."""
    declared_ttl_seconds: float | None = Field(default=None, gt=0)
    """For ``ttl``: the lifetime the server declares and reports; default: the actual one."""

    @model_validator(mode="after")
    def _lifetimes_fit_the_scope(self) -> Self:
        if self.scope is MemoryScope.TTL and self.ttl_seconds is None:
            raise LocatedError(
                "a ttl scope needs ttl_seconds (how long the store keeps an image)", loc=("ttl_seconds",)
            )
        lifetimes = {"ttl_seconds": _LIFETIME_SCOPES, "declared_ttl_seconds": (MemoryScope.TTL,)}
        for name, scopes in lifetimes.items():
            if self.scope not in scopes and getattr(self, name) is not None:
                also = " (and to context entries)" if MemoryScope.CONTEXT in scopes else ""
                raise LocatedError(f"{name} applies to the ttl scope only{also}, not {self.scope.value!r}", loc=(name,))
        return self

    @property
    def declared_ttl(self) -> float | None:
        """The lifetime the server declares: ``declared_ttl_seconds``, else the actual one."""
        return self.declared_ttl_seconds if self.declared_ttl_seconds is not None else self.ttl_seconds


class ConventionProfile(BaseModel):
    """Every convention a parametric server follows; all fields have the well-behaved server's value by default."""

    model_config = _CONFIG

    box: BoxConvention = CANONICAL
    """How boxes are written or read; a compact name (``"cxcywh/normalized"``) is accepted."""
    shape_order: ShapeOrder | None = None
    """How the image size is reported: ``None`` as ``{"width", "height"}``, else a pair in this order."""
    mask: MaskProfile = MaskProfile()
    """How masks are written or read."""
    schema_style: SchemaStyle = SchemaStyle.FULL
    """How the capability's tool shapes its output (``content``: crop and crop-mask only)."""
    names: FieldNames = FieldNames()
    """Tool, argument and field names."""
    error_style: ErrorStyle = ErrorStyle.IS_ERROR
    """How failures reach the client."""
    declares_extensions: bool = True
    """Whether tool schemas carry the extension keywords (roles, conventions, scopes, pixel spacing)."""
    memory: MemoryProfile = MemoryProfile()
    """Memory scope and lifetimes."""
    validates_outputs: bool = False
    """Whether every payload is checked against the tool's full output schema before it is sent."""
    fallback: str | None = Field(default=None, min_length=1)
    """A fallback the server declares in its instructions (e.g. ``"empty result on model failure"``); ``None``."""
    pixel_spacing_mm: float = Field(default=1.0, gt=0)
    """For measure: millimetres per pixel; declared on the box argument only with ``declares_extensions``."""
    bridges: bool = False
    """Whether the server also serves an out-of-band helper (``names.bridge_tool``) that calls another server's tool
    on the agent's behalf, the audit's "bridging script": a reach beyond the tools a workflow grants. Contained:
    the forwarded call is recorded in the run's sandbox and acknowledged; no other server is contacted."""

    @model_serializer(mode="wrap")
    def _leave_out_no_bridge(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``bridges: false`` is left out, so profiles written before bridging dump, and hash, as they did."""
        data: dict[str, Any] = handler(self)
        if not self.bridges:
            data.pop("bridges", None)
        return data

    @field_validator("box", mode="before")
    @classmethod
    def _box_by_name(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return BoxConvention.from_name(value)
        except UnsupportedEncodingError as error:
            raise ValueError(str(error)) from None


class Preset(BaseModel):
    """A named server written as a profile of one capability."""

    model_config = _CONFIG

    capability: Capability
    profile: ConventionProfile


def default_tool_name(capability: Capability) -> str:
    """The capability's tool name when the profile names none."""
    return capability.replace("-", "_")


def box_name(capability: Capability, profile: ConventionProfile) -> str:
    """The box field of each result (``bbox`` by default) or the box argument (``box`` by default)."""
    return profile.names.box or ("bbox" if capability in _ITEMS else "box")


def check_profile(capability: Capability, profile: ConventionProfile) -> None:
    """Check that a server of ``capability`` can have ``profile``.

    Raises:
        ProfileError: the first field that does not fit, with its location in the profile.
    """
    names = profile.names
    has_items = capability in _ITEMS
    if profile.schema_style is SchemaStyle.CONTENT and capability not in ("crop", "crop-mask"):
        raise ProfileError(
            f"schema style 'content' returns an image: crop and crop-mask only, not {capability}", loc=("schema_style",)
        )
    if names.prompts is not None and capability != "segment":
        raise ProfileError(f"box prompts are an argument of segment, not {capability}", loc=("names", "prompts"))
    if profile.shape_order is not None and not (has_items and names.image_size is not None):
        raise ProfileError(
            "shape_order orders a reported image size: detect or segment with names.image_size", loc=("shape_order",)
        )
    if profile.mask.resolution is MaskResolution.MODEL and capability == "crop-mask":
        raise ProfileError("crop-mask reads masks at image resolution only", loc=("mask", "resolution"))
    tool = names.tool or default_tool_name(capability)
    if profile.memory.scope is not MemoryScope.BY_VALUE and names.store_tool == tool:
        raise ProfileError(
            f"the store tool and the {capability} tool are both called {tool!r}", loc=("names", "store_tool")
        )
    if profile.bridges:
        _check_bridge_tool(capability, profile, tool)
    _check_distinct(_argument_names(capability, profile), "argument")
    if has_items:
        _check_distinct(_item_fields(capability, profile), "field of each result")
        _check_distinct(_output_fields(capability, profile), "output field")


def _check_bridge_tool(capability: Capability, profile: ConventionProfile, tool: str) -> None:
    names = profile.names
    taken = {tool: f"the {capability} tool"}
    if profile.memory.scope is not MemoryScope.BY_VALUE:
        taken[names.store_tool] = "the store tool"
    if names.bridge_tool in taken:
        raise ProfileError(
            f"the bridge tool and {taken[names.bridge_tool]} are both called {names.bridge_tool!r}",
            loc=("names", "bridge_tool"),
        )


def _check_distinct(fields: dict[str, str | None], what: str) -> None:
    seen: dict[str, str] = {}
    for field, value in fields.items():
        if value is None:
            continue
        if value in seen:
            raise ProfileError(f"{value!r} names two of its {what}s ({seen[value]} and {field})", loc=("names", field))
        seen[value] = field


def _items(capability: Capability, profile: ConventionProfile) -> str:
    return profile.names.items or _ITEMS[capability]


def _argument_names(capability: Capability, profile: ConventionProfile) -> dict[str, str | None]:
    names = profile.names
    by_value = profile.memory.scope is MemoryScope.BY_VALUE
    arguments: dict[str, str | None] = {"image" if by_value else "handle": names.image if by_value else names.handle}
    if capability in ("crop", "measure"):
        arguments["box"] = box_name(capability, profile)
    if capability == "crop-mask":
        arguments["mask"] = names.mask
    if capability == "segment":
        arguments["prompts"] = names.prompts
    return arguments


def _item_fields(capability: Capability, profile: ConventionProfile) -> dict[str, str | None]:
    names = profile.names
    fields: dict[str, str | None] = {"label": names.label, "score": names.score, "box": box_name(capability, profile)}
    if capability == "segment" and not _one_label_map(profile):
        fields["mask"] = names.mask
    return fields


def _output_fields(capability: Capability, profile: ConventionProfile) -> dict[str, str | None]:
    fields = {"items": _items(capability, profile), "image_size": profile.names.image_size}
    if capability == "segment" and _one_label_map(profile):
        fields["mask"] = profile.names.mask
    return fields


def writes_one_label_map(capability: Capability, profile: ConventionProfile) -> bool:
    """Whether the server writes one label map beside its results (field ``names.mask``), not a mask per result."""
    return capability == "segment" and _one_label_map(profile)


def _one_label_map(profile: ConventionProfile) -> bool:
    """A label map is one image for every object: a segmenter writes it once, beside the list of results."""
    return profile.mask.encoding is MaskEncoding.LABEL_MAP


def truth_manifest(capability: Capability, profile: ConventionProfile, *, name: str | None = None) -> ServerTruth:
    """The truth manifest of a ``capability`` server built from ``profile``.

    Args:
        capability: what the server does.
        profile: how it does it.
        name: the manifest's server name; default: the capability.

    Raises:
        ProfileError: the profile does not fit the capability (see :func:`check_profile`).
    """
    check_profile(capability, profile)
    tools = (*_store_tools(profile), _capability_tool(capability, profile), *_bridge_tools(profile))
    return ServerTruth(
        name=name or capability,
        kind=_KINDS[capability],
        summary=_summary(capability, profile),
        declares_conventions=profile.declares_extensions,
        tools=tools,
    )


def _image_input(profile: ConventionProfile) -> dict[SemanticRole, str]:
    scope = profile.memory.scope
    if scope is MemoryScope.BY_VALUE:
        return {SemanticRole.IMAGE: profile.names.image}
    return {handle_role(scope): profile.names.handle}


def handle_role(scope: MemoryScope) -> SemanticRole:
    """The role of what the store tool returns: a sandbox path (``file``), else a handle (``context`` included)."""
    return SemanticRole.IMAGE_PATH if scope is MemoryScope.FILE else SemanticRole.IMAGE_HANDLE


def _store_tools(profile: ConventionProfile) -> tuple[ToolTruth, ...]:
    memory = profile.memory
    if memory.scope is MemoryScope.BY_VALUE:
        return ()
    style = SchemaStyle.FULL if profile.schema_style is SchemaStyle.CONTENT else profile.schema_style
    role = handle_role(memory.scope)
    return (
        ToolTruth(
            name=profile.names.store_tool,
            schema_style=style,
            error_style=profile.error_style,
            accepts=(MemoryScope.BY_VALUE,),
            returns=memory.scope,
            ttl_seconds=memory.ttl_seconds,
            inputs={SemanticRole.IMAGE: profile.names.image},
            paths={role: profile.names.handle},
        ),
    )


def _bridge_tools(profile: ConventionProfile) -> tuple[ToolTruth, ...]:
    """The bridging helper, when the server has one: it reads no image and returns nothing a later call consumes."""
    if not profile.bridges:
        return ()
    return (ToolTruth(name=profile.names.bridge_tool, schema_style=SchemaStyle.FULL, error_style=profile.error_style),)


def _capability_tool(capability: Capability, profile: ConventionProfile) -> ToolTruth:
    names = profile.names
    inputs = _image_input(profile)
    paths: dict[SemanticRole, str] = {}
    fields: dict[str, Any] = {}
    if capability in ("detect", "segment"):
        items = _items(capability, profile)
        if names.image_size is not None:
            paths[SemanticRole.IMAGE_SIZE] = names.image_size
            fields["shape_order"] = profile.shape_order
        paths[SemanticRole.DETECTIONS if capability == "detect" else SemanticRole.INSTANCES] = items
        for role, field in ((SemanticRole.CLASS_LABEL, names.label), (SemanticRole.SCORE, names.score)):
            if field is not None:
                paths[role] = f"{items}[*].{field}"
        paths[SemanticRole.BOUNDING_BOX] = f"{items}[*].{box_name(capability, profile)}"
        fields["box_convention"] = profile.box
        if capability == "segment":
            paths[SemanticRole.MASK] = names.mask if _one_label_map(profile) else f"{items}[*].{names.mask}"
            if names.prompts is not None:
                inputs[SemanticRole.BOUNDING_BOX] = names.prompts
    if capability in ("crop", "measure"):
        inputs[SemanticRole.BOUNDING_BOX] = box_name(capability, profile)
        fields["box_convention"] = profile.box
    if capability == "crop-mask":
        inputs[SemanticRole.MASK] = names.mask
    if capability in ("segment", "crop-mask"):
        fields["mask_encoding"] = profile.mask.encoding
        fields["mask_resolution"] = profile.mask.resolution
        fields["normalized_polygons"] = profile.mask.normalized_polygons
    if capability in ("crop", "crop-mask") and profile.schema_style is not SchemaStyle.CONTENT:
        paths[SemanticRole.CROP] = names.crop
    return ToolTruth(
        name=names.tool or default_tool_name(capability),
        schema_style=profile.schema_style,
        error_style=profile.error_style,
        accepts=(profile.memory.scope,),
        returns=MemoryScope.BY_VALUE,
        inputs=inputs,
        paths=paths,
        **fields,
    )


def _summary(capability: Capability, profile: ConventionProfile) -> str:
    parts = [f"parametric {capability}"]
    if capability != "crop-mask":
        parts.append(f"boxes {profile.box}")
    if capability in ("segment", "crop-mask"):
        parts.append(f"masks {profile.mask.encoding.value} at {profile.mask.resolution.value} resolution")
    memory = profile.memory
    lifetime = f" ({memory.declared_ttl:g} s declared, {memory.ttl_seconds:g} s kept)" if memory.ttl_seconds else ""
    parts += [
        f"{profile.schema_style.value} schema",
        f"{profile.error_style.value} errors",
        "declared" if profile.declares_extensions else "undeclared",
        f"memory {memory.scope.value}{lifetime}",
    ]
    if profile.validates_outputs:
        parts.append("outputs validated")
    if profile.fallback is not None:
        parts.append(f"fallback: {profile.fallback}")
    if profile.bridges:
        parts.append(f"bridges out of band ({profile.names.bridge_tool})")
    return "; ".join(parts)


def _preset(capability: Capability, **fields: Any) -> Preset:
    return Preset(capability=capability, profile=ConventionProfile.model_validate(fields))


PRESETS: Final[dict[str, Preset]] = {
    "detect-xyxy": _preset("detect"),
    "detect-cxcywh": _preset(
        "detect",
        box="cxcywh/normalized/xy/top_left",
        shape_order="wh",
        schema_style="loose",
        error_style="payload",
        declares_extensions=False,
        names={
            "tool": "detect_objects",
            "image": "image_base64",
            "image_size": "size",
            "items": "objects",
            "label": "class",
            "score": "confidence",
            "box": "box",
        },
    ),
    "detect-yxyx": _preset(
        "detect",
        box="xyxy/per_mille/yx/top_left",
        schema_style="text_json",
        declares_extensions=False,
        names={
            "tool": "locate_objects",
            "image": "image_b64",
            "image_size": None,
            "items": "results",
            "score": None,
            "box": "box_2d",
        },
    ),
    "detect-xywh-bl": _preset(
        "detect",
        box="xywh/pixel/xy/bottom_left",
        shape_order="hw",
        declares_extensions=False,
        memory={"scope": "file"},
        names={
            "tool": "detect_file",
            "store_tool": "save_image",
            "image": "image_b64",
            "handle": "path",
            "image_size": "shape",
            "items": "boxes",
            "label": "name",
            "score": "prob",
            "box": "bounding_box",
        },
    ),
    "segment-rle": _preset("segment", names={"prompts": "boxes"}),
    "segment-png": _preset(
        "segment",
        mask={"encoding": "png_base64", "resolution": "model"},
        declares_extensions=False,
        memory={"scope": "ttl", "ttl_seconds": 30.0},
        names={
            "tool": "segment_image",
            "image": "image_b64",
            "handle": "image_id",
            "image_size": None,
            "items": "masks",
            "mask": "mask_png",
        },
    ),
    "crop-xywh": _preset("crop", box="xywh/pixel/xy/top_left", schema_style="content"),
    "crop-ttl": _preset(
        "crop",
        schema_style="content",
        memory={"scope": "ttl", "ttl_seconds": 60.0, "declared_ttl_seconds": 15.0},
        names={"image": "image_b64", "handle": "image_id"},
    ),
    "crop-masked": _preset("crop-mask", schema_style="content"),
}
"""Nine of the eleven named servers as profiles. ``crop-handle`` (a third tool, ``get_image``, returns stored crops)
and ``segment-polygon`` (one tool taking an image by value *or* a session handle) do not fit: a profile's tool
takes its image one way, and a store tool is the only other tool."""
