"""Declared adapters: the tracked conventions conversions a workflow puts on an argument.

An adapter is a pure function of the argument's value and the image size. It
makes a bridging conversion explicit in the workflow (so it can be recorded and
checked) instead of leaving it hidden inside an agent or a server.
"""

from __future__ import annotations

from numbers import Real
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from testbed._errors import TestbedError
from testbed.conventions import (
    BoxConvention,
    ImageSize,
    MaskEncoding,
    MaskResolution,
    convert_boxes,
    decode_masks,
    encode_masks,
    resize_masks,
)

__all__ = [
    "Adapter",
    "AdapterError",
    "BoxAdapter",
    "BoxConventionName",
    "MaskAdapter",
    "MaskConvention",
]


class AdapterError(TestbedError):
    """An adapter applied to a value that does not have the shape its ``from`` convention promises."""


def _box_convention(value: object) -> object:
    if isinstance(value, str):
        try:
            return BoxConvention.from_name(value)
        except TestbedError as error:
            raise ValueError(str(error)) from None
    return value


BoxConventionName = Annotated[
    BoxConvention,
    BeforeValidator(_box_convention),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(xyxy|xywh|cxcywh)/(pixel|normalized|per_mille)(/(xy|yx)(/(top_left|bottom_left))?)?$",
            "description": "A box convention 'format/units[/axis_order[/origin]]', e.g. 'xyxy/pixel/xy/top_left'.",
        }
    ),
]
"""A :class:`~testbed.conventions.BoxConvention` written as its name, e.g. ``"xywh/pixel"``."""

_ADAPTER_CONFIG = ConfigDict(
    frozen=True,
    extra="forbid",
    use_attribute_docstrings=True,
    validate_by_name=True,
    validate_by_alias=True,
    serialize_by_alias=True,
)


class BoxAdapter(BaseModel):
    """Convert boxes between two conventions (:func:`~testbed.conventions.convert_boxes`)."""

    model_config = _ADAPTER_CONFIG

    kind: Literal["box"] = "box"
    """Discriminator."""
    from_: BoxConventionName = Field(alias="from")
    """The convention the argument's value is written in (YAML key ``from``)."""
    to: BoxConventionName
    """The convention the called tool expects."""

    @model_validator(mode="after")
    def _check_differs(self) -> Self:
        if self.from_ == self.to:
            raise ValueError(f"adapter converts {self.to} to itself; remove it")
        return self

    @classmethod
    def between(cls, source: BoxConvention | str, target: BoxConvention | str) -> Self:
        """Build the adapter from ``source`` to ``target`` (conventions or their names).

        Raises:
            pydantic.ValidationError: a name is not a convention, or the two are the same.
        """
        return cls.model_validate({"kind": "box", "from": source, "to": target})

    def __str__(self) -> str:
        return f"box {self.from_} -> {self.to}"

    def apply(self, value: Any, *, image_size: ImageSize) -> Any:
        """Convert one box (four numbers) or a list of boxes.

        Returns:
            Lists of floats of the same shape as ``value``.

        Raises:
            AdapterError: ``value`` is neither four numbers nor a list of four-number lists.
        """
        single = isinstance(value, list | tuple) and len(value) == 4 and all(_is_number(v) for v in value)
        try:
            converted = convert_boxes([value] if single else value, self.from_, self.to, image_size)
        except ValueError:
            raise AdapterError(
                f"{self} adapter: expected a box [4 numbers] or a list of boxes, got {_preview(value)}"
            ) from None
        boxes: list[list[float]] = converted.tolist()
        return boxes[0] if single else boxes

    def apply_each(self, values: list[Any], *, image_size: ImageSize) -> list[Any]:
        """:meth:`apply` to each of ``values`` (one per item of a fan-out): single boxes are converted together.

        Each box gives the numbers :meth:`apply` gives it alone (the conversion is elementwise).

        Raises:
            AdapterError: a value is neither four numbers nor a list of four-number lists.
        """
        if not all(isinstance(v, list | tuple) and len(v) == 4 and all(_is_number(n) for n in v) for v in values):
            return [self.apply(value, image_size=image_size) for value in values]
        try:
            converted = convert_boxes(values, self.from_, self.to, image_size)
        except ValueError:
            return [self.apply(value, image_size=image_size) for value in values]  # names the first value at fault
        boxes: list[list[float]] = converted.tolist()
        return boxes


class MaskConvention(BaseModel):
    """How masks are written: an encoding on a grid."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    encoding: MaskEncoding
    """The payload format (``coco_rle``, ``polygon``, ``png_base64`` or ``label_map``)."""
    resolution: MaskResolution = MaskResolution.IMAGE
    """Whether the masks are on the image's grid or on the model's (``model_size``)."""
    normalized_polygons: bool = False
    """For ``polygon``: whether coordinates are fractions of the grid size instead of pixels."""

    def __str__(self) -> str:
        normalized = "/normalized" if self.encoding is MaskEncoding.POLYGON and self.normalized_polygons else ""
        return f"{self.encoding}{normalized}@{self.resolution}"


class MaskAdapter(BaseModel):
    """Convert masks between encodings and resolutions (decode, resize by nearest neighbour, encode)."""

    model_config = _ADAPTER_CONFIG

    kind: Literal["mask"] = "mask"
    """Discriminator."""
    from_: MaskConvention = Field(alias="from")
    """How the argument's value is written (YAML key ``from``)."""
    to: MaskConvention
    """How the called tool expects it."""
    model_size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None = None
    """The model's grid as ``[width, height]``; required when either side is at ``model`` resolution."""

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        uses_model = MaskResolution.MODEL in (self.from_.resolution, self.to.resolution)
        if uses_model and self.model_size is None:
            raise ValueError("model_size [width, height] is required when a side is at model resolution")
        if not uses_model and self.model_size is not None:
            raise ValueError("model_size is only used when a side is at model resolution")
        if self.from_ == self.to:
            raise ValueError(f"adapter converts {self.to} to itself; remove it")
        return self

    @classmethod
    def between(
        cls, source: MaskConvention, target: MaskConvention, *, model_size: tuple[int, int] | None = None
    ) -> Self:
        """Build the adapter from ``source`` to ``target``; ``model_size`` is ``(width, height)``.

        Raises:
            pydantic.ValidationError: ``model_size`` is missing or superfluous, or the two sides are the same.
        """
        return cls.model_validate({"kind": "mask", "from": source, "to": target, "model_size": model_size})

    def __str__(self) -> str:
        return f"mask {self.from_} -> {self.to}"

    def apply(self, value: Any, *, image_size: ImageSize) -> Any:
        """Convert one object's mask or a whole payload from ``from`` to ``to``.

        A single object's mask (a COCO RLE dict, one PNG string, or one object's list of
        polygons) comes back as a single mask, except when ``to`` is ``label_map``, which
        always holds a stack.

        Raises:
            AdapterError: ``value`` does not have the ``from`` encoding's shape or grid size.
        """
        single = _is_single_mask(value, self.from_.encoding)
        source, target = self._grid(self.from_, image_size), self._grid(self.to, image_size)
        try:
            masks = decode_masks(
                [value] if single else value,
                self.from_.encoding,
                source,
                normalized_polygons=self.from_.normalized_polygons,
            )
        except ValueError as error:
            raise AdapterError(f"{self} adapter: {error}") from None
        if source != target:
            masks = resize_masks(masks, target)
        encoded = encode_masks(masks, self.to.encoding, normalized_polygons=self.to.normalized_polygons)
        if single and isinstance(encoded, list):
            return encoded[0]
        return encoded

    def apply_each(self, values: list[Any], *, image_size: ImageSize) -> list[Any]:
        """:meth:`apply` to each of ``values`` (one per item of a fan-out)."""
        return [self.apply(value, image_size=image_size) for value in values]

    def _grid(self, side: MaskConvention, image_size: ImageSize) -> ImageSize:
        if side.resolution is MaskResolution.IMAGE or self.model_size is None:
            return image_size
        width, height = self.model_size
        return ImageSize(width=width, height=height)


Adapter = Annotated[BoxAdapter | MaskAdapter, Field(discriminator="kind")]
"""A declared conversion on one argument, selected by ``kind`` (``box`` or ``mask``)."""


def _is_number(value: object) -> bool:
    kind = type(value)
    if kind is float or kind is int:  # nearly every value, told without the (slower) abstract-class check
        return True
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_single_mask(value: object, encoding: MaskEncoding) -> bool:
    """Whether ``value`` is one object's mask rather than a payload holding a list of objects."""
    if encoding is MaskEncoding.COCO_RLE:
        return isinstance(value, dict)
    if encoding is MaskEncoding.PNG_BASE64:
        return isinstance(value, str)
    if encoding is MaskEncoding.POLYGON:
        # One object: [[x1, y1, ...], ...]; a payload: [[[x1, y1, ...], ...], ...].
        return (
            isinstance(value, list)
            and bool(value)
            and isinstance(value[0], list)
            and bool(value[0])
            and _is_number(value[0][0])
        )
    return False  # label_map is always a stack


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
